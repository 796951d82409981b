package api

import "net/http"

// routeEntry is one entry of the route table.
type routeEntry struct {
	// port is "external" or "internal".
	port    string
	pattern string
	// open: no token needed (external port only; the internal port has no token, its
	// callers are checked by Options.InternalCaller).
	open bool
	// long: the route blocks until the compute moved (or streams its answer), for longer
	// than the server's write timeout: it lifts the connection's write deadline, and its
	// read deadline once the request is read (deadlines.go). Unauthorized requests keep
	// both deadlines.
	long bool
	// admin: an internal route that acts as the admin role; its callers are checked
	// against the admin users (Options.InternalCaller's admin argument).
	admin   bool
	handler http.Handler
}

// routeTable lists every route of both ports. A new route is a line here, its handler in
// this package and its behaviour in internal/control.
func (s *Server) routeTable() []routeEntry {
	return []routeEntry{
		{port: "external", pattern: "GET /status", handler: http.HandlerFunc(s.handleStatus)},
		{port: "external", pattern: "GET /metrics.json", handler: http.HandlerFunc(s.handleMetricsJSON)},
		{port: "external", pattern: "GET /metrics", open: true, handler: s.metricsHandler()},
		{port: "external", pattern: "POST /configure", long: true, handler: http.HandlerFunc(s.handleConfigure)},
		{port: "external", pattern: "POST /terminate", long: true, handler: http.HandlerFunc(s.handleTerminate)},
		{port: "external", pattern: "GET /lfc/prewarm", handler: http.HandlerFunc(s.handleLFCPrewarmStatus)},
		{port: "external", pattern: "POST /lfc/prewarm", handler: http.HandlerFunc(s.handleLFCPrewarm)},
		{port: "external", pattern: "DELETE /lfc/prewarm", handler: http.HandlerFunc(s.handleLFCCancelPrewarm)},
		{port: "external", pattern: "GET /lfc/offload", handler: http.HandlerFunc(s.handleLFCOffloadStatus)},
		{port: "external", pattern: "POST /lfc/offload", handler: http.HandlerFunc(s.handleLFCOffload)},
		{port: "external", pattern: "POST /check_writability", handler: http.HandlerFunc(s.handleCheckWritability)},
		{port: "external", pattern: "GET /insights", handler: http.HandlerFunc(s.handleInsights)},
		{port: "external", pattern: "GET /dbs_and_roles", handler: http.HandlerFunc(s.handleDBsAndRoles)},
		// A schema dump streams for as long as pg_dump writes (each write has its own
		// deadline, in the handler).
		{port: "external", pattern: "GET /database_schema", long: true, handler: http.HandlerFunc(s.handleDatabaseSchema)},
		// Waits for the replay (up to about 20 s) and for the reconfiguration.
		{port: "external", pattern: "POST /promote", long: true, handler: http.HandlerFunc(s.handlePromote)},
		// The neon extension's call when its pageserver stops answering (Neon main).
		{port: "internal", pattern: "POST /refresh_configuration", handler: http.HandlerFunc(s.handleRefreshConfiguration)},
		// local_proxy's calls (Neon's proxy/src/compute_ctl).
		{port: "internal", pattern: "POST /extensions", admin: true, handler: http.HandlerFunc(s.handleExtensions)},
		{port: "internal", pattern: "POST /grants", admin: true, handler: http.HandlerFunc(s.handleGrants)},
		// The neon extension's call when Postgres lacks a file (extensions.NewHandler,
		// which reads the wildcard extensions.FilenameParam). Not served without a handler.
		{port: "internal", pattern: "POST /extension_server/{filename...}", long: true, handler: s.cfg.ExtensionServer},
	}
}

// routes builds the handlers of the external and the internal port from routeTable.
func (s *Server) routes() (external, internal http.Handler) {
	muxes := map[string]*http.ServeMux{"external": http.NewServeMux(), "internal": http.NewServeMux()}
	s.adminRoutes = map[string]bool{}
	for _, r := range s.routeTable() {
		if r.handler == nil {
			continue
		}
		if r.admin {
			s.adminRoutes[r.pattern] = true
		}
		h := r.handler
		if r.long {
			h = liftDeadlines(h)
		}
		if r.port == "external" && !r.open {
			h = s.authed(h)
		}
		muxes[r.port].Handle(r.pattern, h)
	}
	return &portHandler{port: "external", Handler: s.middleware("external", muxes["external"])},
		&portHandler{port: "internal", Handler: s.middleware("internal", muxes["internal"])}
}

// portHandler is the handler of one port; it names the port (tests check each answer
// against the port's part of api/openapi.yaml).
type portHandler struct {
	port string
	http.Handler
}
