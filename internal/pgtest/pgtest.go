// Package pgtest starts throwaway real PostgreSQL 15 servers for tests. It is imported only
// by _test files. The server runs as the `postgres` OS user (Postgres refuses root) from a
// temporary directory under /tmp that holds the data directory, the unix socket and the
// server log; everything is stopped and removed when the test (or test binary) ends.
//
// Tests that cannot run here (not root, no PostgreSQL 15, no `postgres` user) are skipped
// with a message saying why.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
)

const (
	// DefaultBinDir is where Debian's PostgreSQL 15 lives; PGBIN_DIR overrides it.
	DefaultBinDir = "/usr/lib/postgresql/15/bin"
	// AdminUser is the bootstrap superuser created by initdb, as on a Neon compute.
	AdminUser = "cloud_admin"
	// OSUser runs the server.
	OSUser = "postgres"
)

// Instance is a running throwaway server.
type Instance struct {
	// Port is the TCP port (listening on 127.0.0.1) and the socket's port number.
	Port int
	// SocketDir holds the unix socket; it is also the instance's root temp directory.
	SocketDir string
	// DataDir is PGDATA.
	DataDir string
	// LogFile receives the server's stderr.
	LogFile string
	// BinDir holds postgres, initdb and pg_ctl.
	BinDir string

	cfg      config
	stopOnce sync.Once
}

// Option changes how an instance is started.
type Option func(*config)

type config struct {
	settings  [][2]string
	superuser string
}

// WithSuperuser makes initdb's bootstrap superuser name instead of AdminUser (e.g. an old
// Neon timeline's zenith_admin). Connstr still names AdminUser, which then does not exist.
func WithSuperuser(name string) Option {
	return func(c *config) { c.superuser = name }
}

// WithSetting passes `-c name=value` to the server at start, e.g.
// WithSetting("log_statement", "all").
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// Connstr is a postgresql URL for cloud_admin over the unix socket, database postgres.
func (i *Instance) Connstr() string { return i.ConnstrDB("postgres") }

// ConnstrDB is like Connstr for another database.
func (i *Instance) ConnstrDB(db string) string {
	q := url.Values{}
	q.Set("host", i.SocketDir)
	q.Set("port", strconv.Itoa(i.Port))
	u := url.URL{Scheme: "postgresql", User: url.User(AdminUser), Host: "", Path: "/" + db, RawQuery: q.Encode()}
	// url.URL renders an empty host as "postgresql://cloud_admin@/db".
	return u.String()
}

// TCPConnstr is a postgresql URL for user (and password, if not empty) over TCP to
// 127.0.0.1, database db, with TLS disabled.
func (i *Instance) TCPConnstr(usr, password, db string) string {
	u := url.URL{Scheme: "postgresql", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(i.Port)), Path: "/" + db, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword(usr, password)
	} else {
		u.User = url.User(usr)
	}
	return u.String()
}

// Available reports why a server cannot be started here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("pgtest: needs root (to run PostgreSQL as the postgres OS user)")
	}
	if _, err := user.Lookup(OSUser); err != nil {
		return fmt.Errorf("pgtest: no %q OS user: %w", OSUser, err)
	}
	bin := binDir()
	for _, tool := range []string{"postgres", "initdb", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			return fmt.Errorf("pgtest: PostgreSQL 15 not found in %s (set PGBIN_DIR): %w", bin, err)
		}
	}
	return nil
}

func binDir() string {
	if d := os.Getenv("PGBIN_DIR"); d != "" {
		return d
	}
	return DefaultBinDir
}

// Start starts a fresh server for t and stops and removes it in t.Cleanup. It skips t when
// the machine cannot run one.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
	inst, err := start(context.Background(), opts...)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(inst.Stop)
	return inst
}

var shared struct {
	sync.Mutex
	inst    *Instance
	err     error
	started bool
	inMain  bool
}

// Main runs a test binary whose tests share one server (see Shared) and stops that server
// afterwards. Call it from TestMain: `func TestMain(m *testing.M) { pgtest.Main(m) }`.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that does more after the tests: it returns the exit code.
func Run(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	if shared.inst != nil {
		shared.inst.Stop()
	}
	shared.Unlock()
	return code
}

// Shared returns the test binary's shared server, starting it on first use (settings in
// opts apply only to that first start). Without Main, it falls back to Start(t, opts...).
// Tests that use the shared server must not leave state that other tests depend on not
// existing; use unique names.
func Shared(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		return Start(t, opts...)
	}
	if !shared.started {
		shared.started = true
		shared.inst, shared.err = start(context.Background(), opts...)
	}
	if shared.err != nil {
		t.Fatalf("pgtest: shared instance: %v", shared.err)
	}
	return shared.inst
}

// newInstanceDir applies opts and makes a temporary directory owned by OSUser for an
// instance (its socket, data directory and log).
func newInstanceDir(prefix string, opts []Option) (cfg config, root string, err error) {
	for _, o := range opts {
		o(&cfg)
	}
	u, err := user.Lookup(OSUser)
	if err != nil {
		return cfg, "", fmt.Errorf("look up %s: %w", OSUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	root, err = os.MkdirTemp("/tmp", prefix)
	if err != nil {
		return cfg, "", fmt.Errorf("temp dir: %w", err)
	}
	if err := os.Chown(root, uid, gid); err != nil {
		os.RemoveAll(root)
		return cfg, "", fmt.Errorf("chown temp dir: %w", err)
	}
	return cfg, root, nil
}

func start(ctx context.Context, opts ...Option) (*Instance, error) {
	cfg, root, err := newInstanceDir("pgtest-", opts)
	if err != nil {
		return nil, err
	}
	inst := &Instance{
		SocketDir: root,
		DataDir:   filepath.Join(root, "data"),
		LogFile:   filepath.Join(root, "postgres.log"),
		BinDir:    binDir(),
	}
	fail := func(err error) (*Instance, error) {
		os.RemoveAll(root)
		return nil, err
	}
	superuser := AdminUser
	if cfg.superuser != "" {
		superuser = cfg.superuser
	}
	if _, err := execx.Run(ctx, execx.Cmd{
		Path: filepath.Join(inst.BinDir, "initdb"),
		Args: []string{"-D", inst.DataDir, "-U", superuser, "--auth=trust", "-E", "UTF8",
			"--locale=C.UTF-8", "--no-sync", "--no-instructions"},
		User: OSUser,
	}); err != nil {
		return fail(fmt.Errorf("initdb: %w", err))
	}
	if err := inst.startOnFreePort(ctx, cfg); err != nil {
		return fail(err)
	}
	return inst, nil
}

// StartStandby makes a streaming standby of primary with `pg_basebackup -R` (over
// primary's unix socket, as the postgres OS user) and starts it, with opts; it is stopped
// and removed in t.Cleanup. The standby replays what primary writes from then on.
func StartStandby(t testing.TB, primary *Instance, opts ...Option) *Instance {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
	inst, err := startStandby(context.Background(), primary, opts...)
	if err != nil {
		t.Fatalf("pgtest: standby: %v", err)
	}
	t.Cleanup(inst.Stop)
	return inst
}

func startStandby(ctx context.Context, primary *Instance, opts ...Option) (*Instance, error) {
	cfg, root, err := newInstanceDir("pgtest-standby-", opts)
	if err != nil {
		return nil, err
	}
	inst := &Instance{
		SocketDir: root,
		DataDir:   filepath.Join(root, "data"),
		LogFile:   filepath.Join(root, "postgres.log"),
		BinDir:    primary.BinDir,
	}
	fail := func(err error) (*Instance, error) {
		os.RemoveAll(root)
		return nil, err
	}
	if _, err := execx.Run(ctx, execx.Cmd{
		Path: filepath.Join(inst.BinDir, "pg_basebackup"),
		Args: []string{"-D", inst.DataDir, "-h", primary.SocketDir, "-p", strconv.Itoa(primary.Port),
			"-U", AdminUser, "-R", "-X", "stream", "--no-sync", "-c", "fast"},
		User: OSUser,
	}); err != nil {
		return fail(fmt.Errorf("pg_basebackup: %w", err))
	}
	if err := inst.startOnFreePort(ctx, cfg); err != nil {
		return fail(err)
	}
	return inst, nil
}

// startOnFreePort starts the server on a port the kernel picked. Such a port may be taken
// again before the server binds it: up to 5 tries.
func (i *Instance) startOnFreePort(ctx context.Context, cfg config) error {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		i.Port = port
		i.cfg = cfg
		if lastErr = i.pgctlStart(ctx, cfg); lastErr == nil {
			return nil
		}
	}
	return lastErr
}

func (i *Instance) pgctlStart(ctx context.Context, cfg config) error {
	serverOpts := []string{
		"-p", strconv.Itoa(i.Port),
		"-k", i.SocketDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
	}
	for _, s := range cfg.settings {
		serverOpts = append(serverOpts, "-c", s[0]+"="+s[1])
	}
	for k, o := range serverOpts {
		serverOpts[k] = shellQuote(o)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, err := execx.Run(ctx, execx.Cmd{
		Path: filepath.Join(i.BinDir, "pg_ctl"),
		Args: []string{"start", "-w", "-D", i.DataDir, "-l", i.LogFile, "-o", strings.Join(serverOpts, " ")},
		User: OSUser,
	})
	if err != nil {
		log, _ := os.ReadFile(i.LogFile)
		return fmt.Errorf("pg_ctl start: %w; server log:\n%s", err, lastLines(string(log), 10))
	}
	return nil
}

// shellQuote quotes s for the shell that pg_ctl hands the -o string to.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Reload makes the server re-read its configuration files (pg_ctl reload). The reload is
// asynchronous, as in production; a test that depends on it must wait for its effect.
func (i *Instance) Reload(t testing.TB) {
	t.Helper()
	if _, err := execx.Run(context.Background(), execx.Cmd{
		Path: filepath.Join(i.BinDir, "pg_ctl"),
		Args: []string{"reload", "-D", i.DataDir},
		User: OSUser,
	}); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// WriteHBA replaces pg_hba.conf with content and reloads the server.
func (i *Instance) WriteHBA(t testing.TB, content string) {
	t.Helper()
	path := filepath.Join(i.DataDir, "pg_hba.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("pgtest: write pg_hba.conf: %v", err)
	}
	u, err := user.Lookup(OSUser)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatalf("pgtest: chown pg_hba.conf: %v", err)
	}
	i.Reload(t)
}

// OwnedDir makes a directory under /tmp that belongs to the postgres OS user (short: it
// may hold a unix socket) and removes it when the test ends. t.TempDir's parents are
// private to root.
func OwnedDir(t testing.TB, prefix string) string {
	t.Helper()
	uid, gid := OSUserIDs(t)
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// OSUserIDs returns the uid and gid of the postgres OS user; the test is skipped
// without one.
func OSUserIDs(t testing.TB) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup(OSUser)
	if err != nil {
		t.Skipf("pgtest: no %s user: %v", OSUser, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// Halt stops the server (fast shutdown) and keeps its data directory for Resume.
func (i *Instance) Halt(t testing.TB) {
	t.Helper()
	if _, err := execx.Run(context.Background(), execx.Cmd{
		Path: filepath.Join(i.BinDir, "pg_ctl"),
		Args: []string{"stop", "-w", "-m", "fast", "-D", i.DataDir},
		User: OSUser,
	}); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Resume starts a halted server again, with the same port, socket and settings.
func (i *Instance) Resume(t testing.TB) {
	t.Helper()
	if err := i.pgctlStart(context.Background(), i.cfg); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Stop stops the server immediately and removes its directory. It is idempotent.
func (i *Instance) Stop() {
	i.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = execx.Run(ctx, execx.Cmd{
			Path: filepath.Join(i.BinDir, "pg_ctl"),
			Args: []string{"stop", "-w", "-m", "immediate", "-D", i.DataDir},
			User: OSUser,
		})
		os.RemoveAll(i.SocketDir)
	})
}

// ReadLog returns the server log so far.
func (i *Instance) ReadLog(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(i.LogFile)
	if err != nil {
		t.Fatalf("pgtest: read server log: %v", err)
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// StrangerUser is an OS user that is neither postgres nor root (Debian's nobody), for
// tests that check who may log in as the admin role.
const StrangerUser = "nobody"

// CheckStrangerRefused tries, as StrangerUser, to log in as AdminUser to the server on
// port: over the unix socket in socketDir (which must be searchable by everyone, so that
// the server itself refuses) and over TCP on 127.0.0.1. It fails t unless the socket
// login is refused by peer authentication and the TCP login asks for a password that
// psql (-w) does not have.
func CheckStrangerRefused(t testing.TB, socketDir string, port int) {
	t.Helper()
	if _, err := user.Lookup(StrangerUser); err != nil {
		t.Skipf("pgtest: no %s user: %v", StrangerUser, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ host, want string }{
		{socketDir, "Peer authentication failed"},
		{"127.0.0.1", "no password supplied"},
	} {
		res, err := execx.Run(ctx, execx.Cmd{Path: filepath.Join(binDir(), "psql"), User: StrangerUser,
			Args: []string{"-X", "-w", "-A", "-t", "-h", c.host, "-p", strconv.Itoa(port), "-U", AdminUser, "-d", "postgres", "-c", "SELECT current_user"}})
		switch {
		case err == nil:
			t.Errorf("OS user %s logged in as %s over %s: %q", StrangerUser, AdminUser, c.host, strings.TrimSpace(string(res.Stdout)))
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("OS user %s as %s over %s: %v; want %q (did it reach the server?)", StrangerUser, AdminUser, c.host, err, c.want)
		}
	}
}
