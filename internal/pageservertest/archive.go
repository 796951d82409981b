package pageservertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pgtest"
)

// NeonSignal is the content of the neon.signal file added to the served archive.
const NeonSignal = "PREV LSN: none\n"

// BinDir is where the PostgreSQL 15 tools are: $PGBIN_DIR or pgtest.DefaultBinDir.
func BinDir() string {
	if d := os.Getenv("PGBIN_DIR"); d != "" {
		return d
	}
	return pgtest.DefaultBinDir
}

var archiveOnce struct {
	sync.Once
	data []byte
	err  error
}

// BasebackupArchive returns a gzip'd tar of a real PostgreSQL 15 basebackup shaped like
// a pageserver's (see MakeBasebackupArchive), built once per test process. It skips t
// when PostgreSQL cannot run here.
func BasebackupArchive(t testing.TB) []byte {
	t.Helper()
	if err := pgtest.Available(); err != nil {
		t.Skip(err.Error())
	}
	if _, err := os.Stat(filepath.Join(BinDir(), "pg_basebackup")); err != nil {
		t.Skipf("pageservertest: no pg_basebackup: %v", err)
	}
	archiveOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		archiveOnce.data, archiveOnce.err = MakeBasebackupArchive(ctx, BinDir())
	})
	if archiveOnce.err != nil {
		t.Fatalf("pageservertest: %v", archiveOnce.err)
	}
	return archiveOnce.data
}

// ArchiveOptions change the cluster MakeBasebackupArchiveWith takes the backup of.
type ArchiveOptions struct {
	// AuthHost is initdb's --auth-host for the TCP lines of pg_hba.conf (for example
	// "md5", so that roles log in with their passwords); "" means trust. Local (unix
	// socket) connections are always trusted: the admin role connects over the socket
	// without a password, which a fake archive may allow.
	AuthHost string
	// SetupSQL runs, statement by statement, as the admin role in database postgres
	// before the backup is taken: for example a marker table a test can look for.
	SetupSQL []string
}

// MakeBasebackupArchive runs initdb (admin role cloud_admin, trust auth), starts the
// server on a private unix socket, takes `pg_basebackup -Ft -X fetch` (WAL included, so
// the result can start), stops the server and turns the tar into what a pageserver
// sends: no postgresql.conf, an empty pg_dynshmem/, a neon.signal file; gzip'd. It must
// run as root (the tools run as the postgres OS user).
func MakeBasebackupArchive(ctx context.Context, binDir string) ([]byte, error) {
	return MakeBasebackupArchiveWith(ctx, binDir, ArchiveOptions{})
}

// MakeBasebackupArchiveWith is MakeBasebackupArchive with options.
func MakeBasebackupArchiveWith(ctx context.Context, binDir string, o ArchiveOptions) ([]byte, error) {
	u, err := user.Lookup(pgtest.OSUser)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", pgtest.OSUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	root, err := os.MkdirTemp("/tmp", "pageservertest-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(root)
	if err := os.Chown(root, uid, gid); err != nil {
		return nil, fmt.Errorf("chown temp dir: %w", err)
	}
	data := filepath.Join(root, "data")
	out := filepath.Join(root, "out")
	run := func(tool string, args ...string) error {
		_, err := execx.Run(ctx, execx.Cmd{Path: filepath.Join(binDir, tool), Args: args, User: pgtest.OSUser})
		return err
	}
	authHost := o.AuthHost
	if authHost == "" {
		authHost = "trust"
	}
	if err := run("initdb", "-D", data, "-U", pgtest.AdminUser, "--auth-local=trust", "--auth-host="+authHost,
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"); err != nil {
		return nil, fmt.Errorf("initdb: %w", err)
	}
	// Only a unix socket in our private directory: no port can clash.
	const port = "5432"
	opts := "-p " + port + " -k " + root + " -c listen_addresses='' -c fsync=off"
	if err := run("pg_ctl", "start", "-w", "-D", data, "-l", filepath.Join(root, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(root, "log"))
		return nil, fmt.Errorf("pg_ctl start: %w; log: %s", err, log)
	}
	var archive []byte
	bbErr := setup(ctx, root, port, o.SetupSQL)
	if bbErr == nil {
		archive, bbErr = basebackupInto(ctx, binDir, out, root, port, pgtest.AdminUser)
	}
	stopErr := run("pg_ctl", "stop", "-w", "-m", "fast", "-D", data)
	if bbErr != nil {
		return nil, bbErr
	}
	if stopErr != nil {
		return nil, fmt.Errorf("pg_ctl stop: %w", stopErr)
	}
	return archive, nil
}

// TakeBasebackup makes a pageserver-shaped archive (see MakeBasebackupArchive) of a
// running server, reached as user over the unix socket in socketDir: a fake pageserver
// serving it starts the next compute with that server's data, as Neon's storage keeps a
// compute's data across restarts. The server must allow the user replication
// connections over the socket. It must run as root.
func TakeBasebackup(ctx context.Context, binDir, socketDir, port, user string) ([]byte, error) {
	out, err := os.MkdirTemp("/tmp", "pageservertest-bb-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(out)
	if err := os.Chmod(out, 0o777); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	return basebackupInto(ctx, binDir, filepath.Join(out, "bb"), socketDir, port, user)
}

// basebackupInto runs pg_basebackup (as the postgres OS user, WAL included so the result
// can start) into the new directory out and returns its base.tar, pageserver-shaped.
func basebackupInto(ctx context.Context, binDir, out, socketDir, port, user string) ([]byte, error) {
	if _, err := execx.Run(ctx, execx.Cmd{Path: filepath.Join(binDir, "pg_basebackup"), User: pgtest.OSUser,
		Args: []string{"-h", socketDir, "-p", port, "-U", user, "-D", out, "-Ft", "-X", "fetch", "--no-sync", "--checkpoint=fast"}}); err != nil {
		return nil, fmt.Errorf("pg_basebackup: %w", err)
	}
	f, err := os.Open(filepath.Join(out, "base.tar"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return pageserverShape(f)
}

// setup runs the setup statements over the private socket in socketDir.
func setup(ctx context.Context, socketDir, port string, stmts []string) error {
	if len(stmts) == 0 {
		return nil
	}
	cfg, err := pgx.ParseConfig("dbname=postgres sslmode=disable")
	if err != nil {
		return fmt.Errorf("setup sql: %w", err)
	}
	cfg.Host, cfg.User = socketDir, pgtest.AdminUser
	cfg.Port = 5432
	if p, err := strconv.Atoi(port); err == nil {
		cfg.Port = uint16(p)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("setup sql: connect: %w", err)
	}
	defer conn.Close(context.Background())
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("setup sql: %w", err)
		}
	}
	return nil
}

// pageserverShape rewrites a pg_basebackup tar like a pageserver basebackup, gzip'd.
func pageserverShape(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tr := tar.NewReader(r)
	haveDynShmem := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read base.tar: %w", err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		switch {
		case name == "postgresql.conf", name == "neon.signal", name == "zenith.signal":
			continue
		case name == "compute_ctl_temp_override.conf", name == "standby.signal":
			// Files a compute keeps beside its data: a pageserver has only relation
			// data and WAL, and hands none of these back.
			continue
		case name == "pg_dynshmem" || name == "pg_dynshmem/":
			haveDynShmem = true
		case strings.HasPrefix(name, "pg_dynshmem/"):
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if !haveDynShmem {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "pg_dynshmem/", Mode: 0o700, ModTime: time.Now()}); err != nil {
			return nil, err
		}
	}
	if err := writeFile(tw, "neon.signal", []byte(NeonSignal), 0o600); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, body []byte, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: time.Now()}); err != nil {
		return err
	}
	_, err := tw.Write(body)
	return err
}

// Entry is one member of a hand-made archive.
type Entry struct {
	Name string
	// Type is a tar type flag (tar.TypeReg when zero).
	Type byte
	Body string
	// Linkname is the target of a symbolic or hard link.
	Linkname string
	// Mode defaults to 0600 for files and 0700 for directories.
	Mode int64
}

// BuildArchive makes a gzip'd tar of entries, in order, with no checks: for tests of
// what a client does with a hostile or odd archive.
func BuildArchive(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o600
			if typ == tar.TypeDir {
				mode = 0o700
			}
		}
		hdr := &tar.Header{Typeflag: typ, Name: e.Name, Linkname: e.Linkname, Mode: mode, ModTime: time.Now(), Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("entry %q: %w", e.Name, err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// MustBuildArchive is BuildArchive failing t on error.
func MustBuildArchive(t testing.TB, entries []Entry) []byte {
	t.Helper()
	b, err := BuildArchive(entries)
	if err != nil {
		t.Fatalf("pageservertest: %v", err)
	}
	return b
}
