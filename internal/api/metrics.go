package api

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/computetools/compute-tools/internal/extstats/extprom"
	"github.com/computetools/compute-tools/internal/state"
)

// The /metrics endpoint uses Prometheus' own client library rather than hand-written
// text: it gets the exposition format (escaping, HELP/TYPE lines, ordering) right,
// negotiates the format with the scraper (text 0.0.4, the format Neon serves, or protobuf) and brings
// the standard Go and process collectors. Metrics live in a private registry, so nothing
// registered globally by a dependency leaks into the compute's metrics.

// upCollector reports compute_ctl_up{build_tag,status} = 1 for the current status, read
// from the state record at scrape time (so it is right whichever unit changed it).
type upCollector struct {
	s    *Server
	desc *prometheus.Desc
}

func (c *upCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- migrationFailedDesc
	ch <- cplaneRequestsDesc
	ch <- remoteExtRequestsDesc
	ch <- pgCurrentDowntimeDesc
	ch <- pgDowntimeTotalDesc
	ch <- lfcPrewarmsDesc
	ch <- lfcPrewarmErrorsDesc
	ch <- lfcOffloadsDesc
	ch <- lfcOffloadErrorsDesc
	ch <- extprom.Desc
	ch <- auditLogDirSizeDesc
}

func (c *upCollector) Collect(ch chan<- prometheus.Metric) {
	rec, err := c.s.record()
	if err != nil {
		c.s.log.Warn("metrics: read state", "err", err)
		return
	}
	m, err := prometheus.NewConstMetric(c.desc, prometheus.GaugeValue, 1, c.s.cfg.BuildTag, rec.Status.Display())
	if err != nil {
		c.s.log.Warn("metrics: compute_ctl_up", "err", err)
		return
	}
	ch <- m
	counter := func(d *prometheus.Desc, n uint64, labels ...string) {
		if m, err := prometheus.NewConstMetric(d, prometheus.CounterValue, float64(n), labels...); err == nil {
			ch <- m
		}
	}
	cs := rec.Counters
	// Neon registers both at start, so they are always there (0 until an outage).
	if m, err := prometheus.NewConstMetric(pgCurrentDowntimeDesc, prometheus.GaugeValue, float64(currentDowntimeMs(rec))); err == nil {
		ch <- m
	}
	counter(pgDowntimeTotalDesc, cs.PGDowntimeMsTotal)
	// Neon registers the LFC counters at start too.
	counter(lfcPrewarmsDesc, cs.LFC.Prewarms)
	counter(lfcPrewarmErrorsDesc, cs.LFC.PrewarmErrors)
	counter(lfcOffloadsDesc, cs.LFC.Offloads)
	counter(lfcOffloadErrorsDesc, cs.LFC.OffloadErrors)
	// Neon registers the audit gauge at start too: 0 until compute-monitor measured.
	var auditSize uint64
	if rec.AuditLogDirSize != nil {
		auditSize = *rec.AuditLogDirSize
	}
	if m, err := prometheus.NewConstMetric(auditLogDirSizeDesc, prometheus.GaugeValue, float64(auditSize)); err == nil {
		ch <- m
	}
	// The latest installed extensions collection of this lifecycle (none before it).
	ms, err := extprom.Metrics(rec.InstalledExtensions)
	if err != nil {
		c.s.log.Warn("metrics: compute_installed_extensions", "err", err)
	}
	for _, m := range ms {
		ch <- m
	}
	for id, n := range cs.MigrationFailures {
		counter(migrationFailedDesc, n, id)
	}
	for rpc, byStatus := range cs.CplaneRequests {
		for status, n := range byStatus {
			counter(cplaneRequestsDesc, n, rpc, status)
		}
	}
	for status, byFile := range cs.RemoteExtRequests {
		for file, n := range byFile {
			counter(remoteExtRequestsDesc, n, status, file)
		}
	}
}

// The counters that other units count in the state record (state.Counters).
var (
	migrationFailedDesc = prometheus.NewDesc("compute_ctl_db_migration_failed_total",
		"Failed runs of a database migration, by migration id.", []string{"migration_id"}, nil)
	cplaneRequestsDesc = prometheus.NewDesc("compute_ctl_cplane_requests_total",
		"Requests to the control plane, by rpc and HTTP status (\"unknown\" when no response came).",
		[]string{"rpc", "http_status"}, nil)
	remoteExtRequestsDesc = prometheus.NewDesc("compute_ctl_remote_ext_requests_total",
		"Requests to the extension gateway, by HTTP status and file.", []string{"http_status", "filename"}, nil)
	// The downtime figures compute-monitor writes (coalesced: at most once a second during
	// an outage, and at recovery); names and types as Neon's compute_tools/src/metrics.rs.
	pgCurrentDowntimeDesc = prometheus.NewDesc("compute_pg_current_downtime_ms",
		"Time since the last successful check of Postgres by the monitor, while it is unreachable (0 when it answers).", nil, nil)
	pgDowntimeTotalDesc = prometheus.NewDesc("compute_pg_downtime_ms_total",
		"Total time Postgres could not be reached by the monitor.", nil, nil)
	// The LFC counters compute-monitor writes with each LFC state change.
	lfcPrewarmsDesc = prometheus.NewDesc("compute_ctl_lfc_prewarms_total",
		"LFC prewarms taken.", nil, nil)
	lfcPrewarmErrorsDesc = prometheus.NewDesc("compute_ctl_lfc_prewarm_errors_total",
		"LFC prewarms that failed.", nil, nil)
	lfcOffloadsDesc = prometheus.NewDesc("compute_ctl_lfc_offloads_total",
		"LFC offloads taken, manual and periodic.", nil, nil)
	lfcOffloadErrorsDesc = prometheus.NewDesc("compute_ctl_lfc_offload_errors_total",
		"LFC offloads that failed.", nil, nil)
	// The audit log directory's size compute-monitor measures after each clean-up.
	auditLogDirSizeDesc = prometheus.NewDesc("compute_audit_log_dir_size",
		"Size of audit log directory in bytes", nil, nil)
)

func (s *Server) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		&upCollector{s: s, desc: prometheus.NewDesc("compute_ctl_up",
			"Compute status: 1 for the current status (label status, hyphenated as in compute_ctl).",
			[]string{"build_tag", "status"}, nil)},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Registry is the private registry behind /metrics; other metrics of compute-api can be
// registered on it.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// currentDowntimeMs is compute_pg_current_downtime_ms: the monitor's figure while it
// monitors (running, or being reconfigured), 0 otherwise. The monitor stops writing when
// the compute leaves running, so the record may still hold the last figure of an outage
// that ended with a failed or terminated compute: that is not a current downtime.
func currentDowntimeMs(rec state.Record) uint64 {
	if rec.Status.Serving() {
		return rec.PGCurrentDowntimeMs
	}
	return 0
}
