package extprom

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/computetools/compute-tools/internal/extstats"
)

// recordCollector is how compute-api uses the package: the latest stats, read at
// scrape time.
type recordCollector struct{ stats *extstats.Stats }

func (c *recordCollector) Describe(ch chan<- *prometheus.Desc) { ch <- Desc }

func (c *recordCollector) Collect(ch chan<- prometheus.Metric) {
	ms, _ := Metrics(c.stats)
	for _, m := range ms {
		ch <- m
	}
}

func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestGaugeFollowsTheLatestStats(t *testing.T) {
	c := &recordCollector{}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	if got := scrape(t, reg); got != "" {
		t.Errorf("before any collection:\n%s", got)
	}

	var tl extstats.Tally
	tl.AddDatabase([]extstats.Installed{{Name: "plpgsql", Version: "1.0", Owner: 10}, {Name: "pg_trgm", Version: "1.5", Owner: 10}})
	tl.AddDatabase([]extstats.Installed{{Name: "plpgsql", Version: "1.0", Owner: 10}, {Name: "hstore", Version: "1.8", Owner: 16384}})
	s := tl.Stats(t0())
	c.stats = &s
	want := `# HELP compute_installed_extensions Number of databases where the version of extension is installed
# TYPE compute_installed_extensions gauge
compute_installed_extensions{extension_name="hstore",owned_by_superuser="0",version="1.8"} 1
compute_installed_extensions{extension_name="pg_trgm",owned_by_superuser="1",version="1.5"} 1
compute_installed_extensions{extension_name="plpgsql",owned_by_superuser="1",version="1.0"} 2
`
	if got := scrape(t, reg); got != want {
		t.Errorf("scrape\n%s\nwant\n%s", got, want)
	}

	// pg_trgm updated to 1.6 and hstore dropped: the old series go away (the
	// reference's gauge would keep them).
	var tl2 extstats.Tally
	tl2.AddDatabase([]extstats.Installed{{Name: "plpgsql", Version: "1.0", Owner: 10}, {Name: "pg_trgm", Version: "1.6", Owner: 10}})
	tl2.AddDatabase([]extstats.Installed{{Name: "plpgsql", Version: "1.0", Owner: 10}})
	s2 := tl2.Stats(t0())
	c.stats = &s2
	want = `# HELP compute_installed_extensions Number of databases where the version of extension is installed
# TYPE compute_installed_extensions gauge
compute_installed_extensions{extension_name="pg_trgm",owned_by_superuser="1",version="1.6"} 1
compute_installed_extensions{extension_name="plpgsql",owned_by_superuser="1",version="1.0"} 2
`
	if got := scrape(t, reg); got != want {
		t.Errorf("scrape\n%s\nwant\n%s", got, want)
	}
}

func TestMetricsLeavesOutLabelsPrometheusRefuses(t *testing.T) {
	s := &extstats.Stats{Extensions: []extstats.Extension{
		{Name: "good", Version: "1.0", NDatabases: 1, OwnedBySuperuser: "1"},
		{Name: "bad", Version: "1.\xff", NDatabases: 1, OwnedBySuperuser: "1"},
	}}
	ms, err := Metrics(s)
	if len(ms) != 1 {
		t.Errorf("%d metrics, want 1", len(ms))
	}
	if err == nil || !strings.Contains(err.Error(), `compute_installed_extensions "bad"`) {
		t.Errorf("err %v", err)
	}
	if ms, err := Metrics(nil); ms != nil || err != nil {
		t.Errorf("Metrics(nil) = %v, %v", ms, err)
	}
}

func t0() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
