// Command neonfakes runs protocol-level fakes of a compute's Neon neighbours for the
// system test (test/system, inside the container of scripts/e2e.sh): one fake pageserver
// (internal/pageservertest) serving a real PostgreSQL 15 basebackup over libpq and over
// gRPC (page_api, its grpc:// URL in the address file), fake safekeepers
// (internal/sktest) and a fake control plane (net/http) serving
// GET /compute/api/v2/computes/{id}/spec. All listen on 127.0.0.1 on free ports; the
// chosen addresses go to the JSON file named by --addr-file once everything is up. It
// runs until SIGINT or SIGTERM.
//
// A small control API on the control plane's port lets the test steer the fakes and read
// what they saw:
//
//	GET  /fake/log          what the pageserver, the safekeepers and the control plane saw
//	PUT  /fake/cplane       the ComputeConfig body the control plane answers with
//	PUT  /fake/safekeepers  ?lsn=X/Y: report the timeline synced at X/Y; no lsn: unknown;
//	                        ?down=1: answer every TIMELINE_STATUS with an error
//	PUT  /fake/pageserver   the pageserver's faults (none without parameters): refuse=1,
//	                        drop_after=N, error_after_data=1, stall=1, stall_after=N
//	PUT  /fake/cplane-fault ?status=N: answer the spec request with N; ?garbage=1: 200
//	                        with a body that is not JSON; no parameter: answer normally
//	PUT  /fake/archive      ?host=DIR&port=N&user=U: take a basebackup of the running
//	                        Postgres at that unix socket and serve it from now on, as
//	                        Neon's storage keeps a compute's data across restarts
//	DELETE /fake/archive    serve the archive made at startup again
//
// With --sync-shim DIR it also writes the `postgres` shim of sktest.WriteSyncShim into
// DIR (owned by --shim-owner, so that compute-init, running as that user, can record its
// runs there); with --sync-shim and no --tenant it only writes the shim and exits.
//
// It must run as root: the archive is made by running initdb and pg_basebackup as the
// postgres OS user. The fake archive trusts local (unix socket) connections, so that the
// compute's admin role connects over the socket without a password; TCP connections use
// --auth-host (md5 by default).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/sktest"
	"github.com/computetools/compute-tools/internal/spec"
)

// Addrs is what --addr-file receives.
type Addrs struct {
	Pageserver           string   `json:"pageserver"`
	PageserverConnstring string   `json:"pageserver_connstring"`
	PageserverGRPC       string   `json:"pageserver_grpc_url"`
	Safekeepers          []string `json:"safekeepers"`
	ControlPlane         string   `json:"control_plane"`
	SyncShim             string   `json:"sync_shim,omitempty"`
	ArchiveBytes         int      `json:"archive_bytes"`
}

// Log is what GET /fake/log answers.
type Log struct {
	Pageserver     []pageservertest.Session  `json:"pageserver"`
	PageserverGRPC []pageservertest.GRPCCall `json:"pageserver_grpc"`
	Safekeepers    []SafekeeperLog           `json:"safekeepers"`
	ControlPlane   []CplaneRequest           `json:"control_plane"`
}

// SafekeeperLog counts what one fake safekeeper saw.
type SafekeeperLog struct {
	Addr           string `json:"addr"`
	Queries        int    `json:"queries"`
	AuthFailures   int    `json:"auth_failures"`
	OptionFailures int    `json:"option_failures"`
}

// CplaneRequest is one request to the fake control plane's spec endpoint.
type CplaneRequest struct {
	ComputeID  string `json:"compute_id"`
	Authorized bool   `json:"authorized"`
	Status     int    `json:"status"`
}

type options struct {
	tenant, timeline, token string
	binDir                  string
	addrFile                string
	httpAddr                string
	safekeepers             int
	skLSN                   string
	authHost                string
	marker                  string
	cplaneToken             string
	cplaneConfig            string
	syncShim                string
	shimLSN                 string
	shimOwner               string
}

func main() {
	var o options
	flag.StringVar(&o.tenant, "tenant", "", "tenant ID the safekeepers serve (hex)")
	flag.StringVar(&o.timeline, "timeline", "", "timeline ID the safekeepers serve (hex)")
	flag.StringVar(&o.token, "token", "", "storage token: the password the pageserver and safekeepers expect (empty: the pageserver accepts any)")
	flag.StringVar(&o.binDir, "pgbin-dir", pageservertest.BinDir(), "PostgreSQL 15 bin directory (initdb, pg_basebackup, postgres)")
	flag.StringVar(&o.addrFile, "addr-file", "", "write the chosen addresses here (JSON) once everything is up")
	flag.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:0", "address of the fake control plane and the control API")
	flag.IntVar(&o.safekeepers, "safekeepers", 3, "number of fake safekeepers")
	flag.StringVar(&o.skLSN, "sk-lsn", "", "safekeepers report the timeline synced at this LSN (default: unknown timeline, so the compute runs --sync-safekeepers)")
	flag.StringVar(&o.authHost, "auth-host", "md5", "initdb --auth-host of the archive's cluster (TCP lines of pg_hba.conf)")
	flag.StringVar(&o.marker, "marker", "", "create table neonfakes_marker(tenant, timeline, marker) with this marker in the archive's cluster")
	flag.StringVar(&o.cplaneToken, "cplane-token", "", "bearer token the control plane requires (empty: any)")
	flag.StringVar(&o.cplaneConfig, "cplane-config", "", "file with the ComputeConfig body the control plane answers with (default: {\"status\":\"empty\"})")
	flag.StringVar(&o.syncShim, "sync-shim", "", "write the sync-safekeepers postgres shim into this directory")
	flag.StringVar(&o.shimLSN, "shim-lsn", "0/16B9188", "LSN the shim prints for --sync-safekeepers")
	flag.StringVar(&o.shimOwner, "shim-owner", "postgres", "owner of the shim directory (the user that runs the shim)")
	flag.Parse()
	// Tokens may come from the environment instead (NEONFAKES_TOKEN,
	// NEONFAKES_CPLANE_TOKEN): a command line is kept in the journal (_CMDLINE of every
	// entry the process logs), and the system test checks the journal for secrets.
	if o.token == "" {
		o.token = os.Getenv("NEONFAKES_TOKEN")
	}
	if o.cplaneToken == "" {
		o.cplaneToken = os.Getenv("NEONFAKES_CPLANE_TOKEN")
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		slog.Error("neonfakes failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	var shim string
	if o.syncShim != "" {
		var err error
		if shim, err = writeShim(o); err != nil {
			return err
		}
		slog.Info("sync shim written", "path", shim, "lsn", o.shimLSN)
		if o.tenant == "" {
			return nil
		}
	}
	if o.tenant == "" || o.timeline == "" {
		return errors.New("--tenant and --timeline are required")
	}
	if o.skLSN != "" {
		if _, err := spec.ParseLsn(o.skLSN); err != nil {
			return fmt.Errorf("--sk-lsn: %w", err)
		}
	}

	start := time.Now()
	archive, err := pageservertest.MakeBasebackupArchiveWith(ctx, o.binDir, pageservertest.ArchiveOptions{
		AuthHost: o.authHost,
		SetupSQL: markerSQL(o),
	})
	if err != nil {
		return fmt.Errorf("make basebackup archive: %w", err)
	}
	slog.Info("basebackup archive ready", "bytes", len(archive), "build_ms", time.Since(start).Milliseconds())

	ps, err := pageservertest.New(pageservertest.Options{Password: o.token, Archive: archive})
	if err != nil {
		return err
	}
	defer ps.Close()
	gps, err := pageservertest.NewGRPC(pageservertest.GRPCOptions{Token: o.token, Archive: archive})
	if err != nil {
		return err
	}
	defer gps.Close()

	var sks []*sktest.FakeSafekeeper
	defer func() {
		for _, sk := range sks {
			sk.Close()
		}
	}()
	for i := 0; i < o.safekeepers; i++ {
		sk, err := sktest.NewFakeSafekeeperServer(o.tenant, o.timeline, o.token)
		if err != nil {
			return err
		}
		sks = append(sks, sk)
	}
	f := &fakes{ps: ps, gps: gps, sks: sks, binDir: o.binDir, original: archive, cplaneToken: o.cplaneToken, cplane: []byte(`{"status":"empty"}`)}
	f.setSafekeepers(o.skLSN)
	if o.cplaneConfig != "" {
		b, err := os.ReadFile(o.cplaneConfig)
		if err != nil {
			return fmt.Errorf("read --cplane-config: %w", err)
		}
		f.cplane = b
	}

	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: f.routes(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	defer srv.Close()

	addrs := Addrs{
		Pageserver:           ps.Addr,
		PageserverConnstring: ps.Connstr(),
		PageserverGRPC:       gps.URL(),
		ControlPlane:         "http://" + ln.Addr().String(),
		SyncShim:             shim,
		ArchiveBytes:         len(archive),
	}
	for _, sk := range sks {
		addrs.Safekeepers = append(addrs.Safekeepers, sk.Addr)
	}
	b, err := json.MarshalIndent(addrs, "", "  ")
	if err != nil {
		return err
	}
	if o.addrFile != "" {
		if err := atomicfile.Write(o.addrFile, append(b, '\n'), atomicfile.Options{Mode: 0o644}); err != nil {
			return fmt.Errorf("write --addr-file: %w", err)
		}
	}
	slog.Info("neonfakes up", "pageserver", ps.Addr, "safekeepers", addrs.Safekeepers, "control_plane", addrs.ControlPlane)

	select {
	case <-ctx.Done():
		slog.Info("neonfakes stopping")
		return nil
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	}
}

// markerSQL makes the marker table (readable by every role) when --marker is set.
func markerSQL(o options) []string {
	if o.marker == "" {
		return nil
	}
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	table := pgx.Identifier{"neonfakes_marker"}.Sanitize()
	return []string{
		"CREATE TABLE " + table + " (tenant text, timeline text, marker text)",
		"INSERT INTO " + table + " VALUES (" + lit(o.tenant) + ", " + lit(o.timeline) + ", " + lit(o.marker) + ")",
		"GRANT SELECT ON " + table + " TO PUBLIC",
	}
}

// writeShim writes the shim into its directory, owned by the shim owner (the shim records
// its runs next to itself), with initdb and pg_ctl linked beside it so that tools found
// as siblings of PGBIN still work.
func writeShim(o options) (string, error) {
	dir := o.syncShim
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("sync shim: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("sync shim: %w", err)
	}
	path, err := sktest.WriteSyncShimFile(dir, o.shimLSN, filepath.Join(o.binDir, "postgres"))
	if err != nil {
		return "", err
	}
	for _, tool := range []string{"initdb", "pg_ctl"} {
		link := filepath.Join(dir, tool)
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join(o.binDir, tool), link); err != nil {
			return "", fmt.Errorf("sync shim: %w", err)
		}
	}
	if o.shimOwner != "" {
		u, err := user.Lookup(o.shimOwner)
		if err != nil {
			return "", fmt.Errorf("sync shim: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return "", fmt.Errorf("sync shim: %w", err)
		}
		for _, e := range append([]string{dir}, names(dir, ents)...) {
			if err := os.Lchown(e, uid, gid); err != nil {
				return "", fmt.Errorf("sync shim: %w", err)
			}
		}
	}
	return path, nil
}

func names(dir string, ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

type fakes struct {
	ps          *pageservertest.FakePageserver
	gps         *pageservertest.FakeGRPC
	binDir      string
	original    []byte // the archive made at startup
	sks         []*sktest.FakeSafekeeper
	cplaneToken string

	mu       sync.Mutex
	cplane   []byte
	requests []CplaneRequest
	// cplaneFault: 0 answers normally, -1 answers 200 with garbage, else that status.
	cplaneFault int
}

func (f *fakes) setSafekeepers(lsn string) {
	for _, sk := range f.sks {
		if lsn == "" {
			sk.SetUnknownTimeline()
		} else {
			sk.SetStatus(lsn, lsn)
		}
	}
}

func (f *fakes) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /compute/api/v2/computes/{id}/spec", f.handleSpec)
	mux.HandleFunc("GET /fake/log", f.handleLog)
	mux.HandleFunc("PUT /fake/cplane", f.handleSetCplane)
	mux.HandleFunc("PUT /fake/safekeepers", f.handleSetSafekeepers)
	mux.HandleFunc("PUT /fake/pageserver", f.handleSetPageserver)
	mux.HandleFunc("PUT /fake/cplane-fault", f.handleSetCplaneFault)
	mux.HandleFunc("PUT /fake/archive", f.handleTakeArchive)
	mux.HandleFunc("DELETE /fake/archive", f.handleResetArchive)
	return mux
}

func (f *fakes) handleSpec(w http.ResponseWriter, r *http.Request) {
	req := CplaneRequest{ComputeID: r.PathValue("id"), Status: http.StatusOK}
	req.Authorized = f.cplaneToken == "" || r.Header.Get("Authorization") == "Bearer "+f.cplaneToken
	if !req.Authorized {
		req.Status = http.StatusUnauthorized
	}
	f.mu.Lock()
	fault := f.cplaneFault
	if req.Authorized && fault > 0 {
		req.Status = fault
	}
	f.requests = append(f.requests, req)
	body := f.cplane
	f.mu.Unlock()
	switch {
	case !req.Authorized:
	case fault < 0:
		slog.Info("control plane spec request: answering garbage (fault)", "compute_id", req.ComputeID)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("<html>not a config</html>"))
		return
	case fault > 0:
		slog.Info("control plane spec request: answering an error (fault)", "compute_id", req.ComputeID, "status", fault)
		http.Error(w, "fake control plane fault", fault)
		return
	}
	slog.Info("control plane spec request", "compute_id", req.ComputeID, "authorized", req.Authorized)
	if !req.Authorized {
		http.Error(w, "unauthorized", req.Status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func (f *fakes) handleLog(w http.ResponseWriter, _ *http.Request) {
	l := Log{Pageserver: f.ps.Sessions(), PageserverGRPC: f.gps.Calls()}
	for _, sk := range f.sks {
		l.Safekeepers = append(l.Safekeepers, SafekeeperLog{
			Addr: sk.Addr, Queries: sk.Queries(), AuthFailures: sk.AuthFailures(), OptionFailures: sk.OptionFailures(),
		})
	}
	f.mu.Lock()
	l.ControlPlane = append([]CplaneRequest{}, f.requests...)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(l)
}

func (f *fakes) handleSetCplane(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil || !json.Valid(b) {
		http.Error(w, "want a JSON body", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.cplane = b
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakes) handleSetSafekeepers(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("down") == "1" {
		for _, sk := range f.sks {
			sk.SetError("fake safekeeper: down")
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	lsn := r.URL.Query().Get("lsn")
	if lsn != "" {
		if _, err := spec.ParseLsn(lsn); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	f.setSafekeepers(lsn)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakes) handleSetPageserver(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	num := func(k string) (int, bool) {
		if q.Get(k) == "" {
			return 0, true
		}
		n, err := strconv.Atoi(q.Get(k))
		return n, err == nil && n >= 0
	}
	drop, ok1 := num("drop_after")
	stallAfter, ok2 := num("stall_after")
	if !ok1 || !ok2 {
		http.Error(w, "drop_after and stall_after are byte counts", http.StatusBadRequest)
		return
	}
	fl := pageservertest.Faults{
		RefuseStartup:   q.Get("refuse") == "1",
		DropAfterBytes:  drop,
		ErrorAfterData:  q.Get("error_after_data") == "1",
		Stall:           q.Get("stall") == "1",
		StallAfterBytes: stallAfter,
	}
	f.ps.SetFaults(fl)
	slog.Info("pageserver faults set", "faults", fmt.Sprintf("%+v", fl))
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakes) handleSetCplaneFault(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fault := 0
	switch {
	case q.Get("garbage") == "1":
		fault = -1
	case q.Get("status") != "":
		n, err := strconv.Atoi(q.Get("status"))
		if err != nil || n < 200 || n > 599 {
			http.Error(w, "status: an HTTP status code", http.StatusBadRequest)
			return
		}
		fault = n
	}
	f.mu.Lock()
	f.cplaneFault = fault
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakes) handleTakeArchive(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	host, port, user := q.Get("host"), q.Get("port"), q.Get("user")
	if !filepath.IsAbs(host) || port == "" || user == "" {
		http.Error(w, "want host (a socket directory), port and user", http.StatusBadRequest)
		return
	}
	start := time.Now()
	b, err := pageservertest.TakeBasebackup(r.Context(), f.binDir, host, port, user)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	f.ps.SetArchive(b)
	f.gps.SetArchive(b)
	slog.Info("serving a basebackup of the running compute", "bytes", len(b), "basebackup_ms", time.Since(start).Milliseconds())
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakes) handleResetArchive(w http.ResponseWriter, _ *http.Request) {
	f.ps.SetArchive(f.original)
	f.gps.SetArchive(f.original)
	w.WriteHeader(http.StatusNoContent)
}
