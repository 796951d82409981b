// Package extprom turns installed-extensions statistics (internal/extstats) into
// Neon's compute_installed_extensions gauge for compute-api's /metrics: one series per
// (extension_name, version, owned_by_superuser) with the number of databases as its
// value, name, help and labels as compute_tools/src/metrics.rs (reference commit
// 53a05e8ccb). The series are built from the latest published collection at each scrape
// (const metrics), so an extension no longer installed disappears; the reference's
// gauge is never cleared (see internal/extstats).
package extprom

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/computetools/compute-tools/internal/extstats"
)

// Desc describes compute_installed_extensions; a collector sends it from Describe.
var Desc = prometheus.NewDesc("compute_installed_extensions",
	"Number of databases where the version of extension is installed",
	[]string{"extension_name", "version", "owned_by_superuser"}, nil)

// Metrics returns one gauge per extension of s (none for a nil s: nothing collected
// yet). An extension whose labels Prometheus refuses (text that is not UTF-8, from a
// database in another encoding) is left out, and named in the error; the others are
// returned all the same.
func Metrics(s *extstats.Stats) ([]prometheus.Metric, error) {
	if s == nil {
		return nil, nil
	}
	ms := make([]prometheus.Metric, 0, len(s.Extensions))
	var errs []error
	for _, e := range s.Extensions {
		m, err := prometheus.NewConstMetric(Desc, prometheus.GaugeValue, float64(e.NDatabases),
			e.Name, e.Version, e.OwnedBySuperuser)
		if err != nil {
			errs = append(errs, fmt.Errorf("compute_installed_extensions %q %q: %w", e.Name, e.Version, err))
			continue
		}
		ms = append(ms, m)
	}
	return ms, errors.Join(errs...)
}
