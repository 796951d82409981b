package apply

import (
	"bufio"
	"strconv"
	"strings"

	"github.com/computetools/compute-tools/internal/spec"
)

// DefaultConcurrency is used at startup when max_connections is not found in the spec.
const DefaultConcurrency = 10

// StartupConcurrency is the number of databases worked on at once during the first apply
// at startup, derived from max_connections as Neon does (compute_tools/src/spec_apply.rs): the value of
// cluster.settings, else the first `max_connections = N` line of cluster.postgresql_conf;
// N < 10 → N, 10–29 → 10, N ≥ 30 → N/3; not found → 10. (Neon's later cap of 100 for
// N ≥ 300 is not in the reference and not applied.)
func StartupConcurrency(s *spec.ComputeSpec) int {
	n, ok := maxConnections(s)
	switch {
	case !ok:
		return DefaultConcurrency
	case n < 1:
		return 1
	case n < 10:
		return n
	case n < 30:
		return 10
	default:
		return n / 3
	}
}

// ReconfigureConcurrency is the limit during a reconfiguration (/configure while running):
// spec.reconfigure_concurrency, at least 1.
func ReconfigureConcurrency(s *spec.ComputeSpec) int {
	if s == nil || s.ReconfigureConcurrency < 1 {
		return 1
	}
	return s.ReconfigureConcurrency
}

func maxConnections(s *spec.ComputeSpec) (int, bool) {
	if s == nil {
		return 0, false
	}
	if v, ok := s.Cluster.Settings.Find("max_connections"); ok {
		if n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(v), `'"`)); err == nil {
			return n, true
		}
	}
	if s.Cluster.PostgresqlConf == nil {
		return 0, false
	}
	sc := bufio.NewScanner(strings.NewReader(*s.Cluster.PostgresqlConf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		name, value, found := strings.Cut(line, "=")
		if !found || strings.TrimSpace(name) != "max_connections" {
			continue
		}
		value = strings.TrimSpace(value)
		if i := strings.IndexByte(value, '#'); i >= 0 {
			value = strings.TrimSpace(value[:i])
		}
		if n, err := strconv.Atoi(strings.Trim(value, `'"`)); err == nil {
			return n, true
		}
		return 0, false
	}
	return 0, false
}
