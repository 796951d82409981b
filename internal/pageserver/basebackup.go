// Package pageserver is compute-init's client of Neon's pageserver: it fetches a
// basebackup over the Postgres wire protocol (libpq) or over gRPC (page_api, Neon main's
// newer protocol; grpc.go) and unpacks it into PGDATA (prepared and finished by package
// pgdata), and leases LSNs for static computes over either protocol (the renewal loop is
// its subpackage lsnlease). Subpackage pageapi holds our description of the gRPC wire
// contract and the code generated from it, for the tests' fake pageserver only.
//
// Unlike compute_ctl, every pageserver connection has an idle bound (DefaultIdleTimeout,
// idle.go): a pageserver that goes silent fails the attempt instead of keeping the
// compute in init for good; a slow transfer that keeps moving is not cut.
package pageserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/spec"
)

// Defaults of BasebackupOptions, those of compute_ctl: 11 attempts (10 retries), the
// pause growing from 500 ms by half each time.
const (
	DefaultAttempts = 11
	DefaultBackoff  = 500 * time.Millisecond
)

// ErrGRPCInLibpq is returned for a grpc:// URL where a libpq connstring is needed (the
// legacy pageserver_connstring): gRPC URLs go into pageserver_connection_info.
var ErrGRPCInLibpq = errors.New("a grpc:// URL is not a libpq connstring: give it as grpc_url in pageserver_connection_info")

// BasebackupOptions say what to fetch and where to put it.
type BasebackupOptions struct {
	// PGData is the directory to unpack into; it is created (0700) if missing. It should
	// be empty (see pgdata.Dir.PrepareFresh).
	PGData string
	// Protocol is how to talk to the pageserver: libpq ("" too) or grpc.
	Protocol spec.PageserverProtocol
	// Connstr is shard 0's pageserver: for libpq a postgresql:// or postgres:// URL or
	// a key=value string (only the first comma-separated element is used, so the whole
	// legacy pageserver_connstring may be passed); for grpc its grpc://host:port URL.
	Connstr string
	// ShardID is shard 0's neon-shard-id for gRPC ("0000" when empty: unsharded).
	ShardID string
	// Token is the storage auth token, sent as the password; it overrides any password
	// in Connstr. Secret: never logged.
	Token string
	// TenantID and TimelineID are hex ids.
	TenantID, TimelineID string
	// LSN is "HI/LO"; "" or "0/0" means the latest, and is left out of the query.
	LSN string
	// Mode is primary, static or replica; any non-primary mode adds --replica.
	Mode spec.ModeType
	// Attempts is how many times to try (DefaultAttempts when <= 0).
	Attempts int
	// Backoff is the first pause between attempts (DefaultBackoff when <= 0); each next
	// pause is 1.5 times longer.
	Backoff time.Duration
	// IdleTimeout fails an attempt when the pageserver sends nothing for this long
	// (DefaultIdleTimeout when <= 0): an idle bound, not a deadline, so a slow but moving
	// transfer goes on. A stalled attempt is retried like any other failure.
	IdleTimeout time.Duration
	// Logger receives one warning per failed attempt (slog.Default() when nil).
	Logger *slog.Logger
}

// Stats describe a basebackup, in the terms of compute_ctl's startup metrics.
type Stats struct {
	// ConnectMicros is the connect time of the successful attempt
	// (pageserver_connect_micros).
	ConnectMicros int64
	// Bytes is the compressed size received by the successful attempt (basebackup_bytes).
	Bytes int64
	// Duration is the time of the successful attempt, connect included (basebackup_ms).
	Duration time.Duration
	// Attempts is how many attempts were made, the successful one included.
	Attempts int
}

// Basebackup fetches a gzip'd tar basebackup from the pageserver with the query
// `basebackup <tenant> <timeline> [<lsn>] --gzip [--replica]` (COPY OUT) and unpacks it
// into opts.PGData as it streams in: no temporary file, no buffering of the archive.
// The whole COPY stream is read, so an error the server sends after the data fails the
// attempt. Failed attempts are retried with a growing pause; PGData is not cleaned in
// between (as in compute_ctl), so a retry overwrites what a failed attempt left, and a
// file that only the failed attempt's archive had would stay. An archive entry that
// would write outside PGDATA (or a device, fifo, ...) fails at once without retrying.
//
// Call pgdata.Dir.FinishNeon afterwards.
func Basebackup(ctx context.Context, opts BasebackupOptions) (Stats, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	query, err := basebackupQuery(opts)
	if err != nil {
		return Stats{}, err
	}
	if opts.PGData == "" {
		return Stats{}, errors.New("basebackup: empty PGDATA path")
	}
	once, host, err := attemptFunc(opts, query, idleOf(opts.IdleTimeout))
	if err != nil {
		return Stats{}, err
	}
	attempts := opts.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	backoff := opts.Backoff
	if backoff <= 0 {
		backoff = DefaultBackoff
	}
	var st Stats
	n := 0
	policy := retry.Policy{Attempts: attempts, Delay: backoff, Factor: 1.5, Retryable: func(err error) bool {
		var unsafe *UnsafeEntryError
		return !errors.As(err, &unsafe)
	}}
	err = retry.Do(ctx, policy, func(ctx context.Context, attempt int) error {
		n = attempt
		s, err := once(ctx)
		if err != nil {
			log.Warn("basebackup attempt failed", "attempt", n, "attempts", attempts,
				"protocol", protocolOf(opts), "pageserver", host, "err", err)
			return err
		}
		st = s
		return nil
	})
	var re *retry.Error
	switch {
	case err == nil:
		st.Attempts = n
		log.Info("basebackup done", "protocol", protocolOf(opts), "attempt", n, "bytes", st.Bytes,
			"basebackup_ms", st.Duration.Milliseconds(), "connect_us", st.ConnectMicros)
		return st, nil
	case !errors.As(err, &re):
		return Stats{Attempts: n}, err // an entry that would escape PGDATA: not retried
	case re.Ctx != nil:
		return Stats{Attempts: n}, fmt.Errorf("basebackup: %w", err)
	}
	return Stats{Attempts: n}, fmt.Errorf("basebackup failed after %d attempts: %w", n, re.Last)
}

func idleOf(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultIdleTimeout
	}
	return d
}

func protocolOf(opts BasebackupOptions) spec.PageserverProtocol {
	if opts.Protocol == "" {
		return spec.ProtocolLibpq
	}
	return opts.Protocol
}

// attemptFunc checks the pageserver address of opts and returns one attempt of the
// basebackup over the chosen protocol, and the pageserver's address for the logs. An
// address that cannot work fails here, before any attempt.
func attemptFunc(opts BasebackupOptions, query string, idle time.Duration) (func(context.Context) (Stats, error), string, error) {
	switch protocolOf(opts) {
	case spec.ProtocolLibpq:
		cfg, err := connConfig(opts.Connstr, opts.Token, opts.Mode)
		if err != nil {
			return nil, "", err
		}
		return func(ctx context.Context) (Stats, error) {
			return basebackupOnce(ctx, cfg, idle, query, opts.PGData)
		}, fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), nil
	case spec.ProtocolGRPC:
		addr, err := spec.GRPCAddr(strings.TrimSpace(opts.Connstr))
		if err != nil {
			return nil, "", fmt.Errorf("pageserver: %w", err)
		}
		var lsn uint64
		if s := strings.TrimSpace(opts.LSN); s != "" {
			l, err := spec.ParseLsn(s)
			if err != nil {
				return nil, "", fmt.Errorf("basebackup: %w", err)
			}
			lsn = uint64(l)
		}
		shard := opts.ShardID
		if shard == "" {
			shard = spec.ShardIndex(0, 0)
		}
		t := GRPCTarget{URL: strings.TrimSpace(opts.Connstr), TenantID: opts.TenantID, TimelineID: opts.TimelineID,
			ShardID: shard, Token: opts.Token}
		replica := opts.Mode != spec.ModeTypePrimary
		return func(ctx context.Context) (Stats, error) {
			return grpcBasebackupOnce(ctx, t, idle, lsn, replica, opts.PGData)
		}, addr, nil
	}
	return nil, "", fmt.Errorf("unknown pageserver protocol %q (want libpq or grpc)", opts.Protocol)
}

// basebackupQuery builds the pageserver command for opts.
func basebackupQuery(opts BasebackupOptions) (string, error) {
	if err := checkHexID("tenant", opts.TenantID); err != nil {
		return "", err
	}
	if err := checkHexID("timeline", opts.TimelineID); err != nil {
		return "", err
	}
	if err := checkMode(opts.Mode); err != nil {
		return "", err
	}
	q := "basebackup " + opts.TenantID + " " + opts.TimelineID
	if s := strings.TrimSpace(opts.LSN); s != "" {
		lsn, err := spec.ParseLsn(s)
		if err != nil {
			return "", fmt.Errorf("basebackup: %w", err)
		}
		if lsn != 0 {
			q += " " + lsn.String()
		}
	}
	q += " --gzip"
	if opts.Mode != spec.ModeTypePrimary {
		q += " --replica"
	}
	return q, nil
}

func checkMode(mode spec.ModeType) error {
	switch mode {
	case spec.ModeTypePrimary, spec.ModeTypeStatic, spec.ModeTypeReplica:
		return nil
	}
	return fmt.Errorf("unknown compute mode %q (want primary, static or replica)", mode)
}

// checkHexID accepts a non-empty hex string (Neon ids are 32 lowercase hex digits; the
// spec package checks that, this only keeps the query well-formed).
func checkHexID(what, id string) error {
	if id == "" {
		return fmt.Errorf("empty %s id", what)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return fmt.Errorf("%s id %q: not hex", what, id)
		}
	}
	return nil
}

// FirstShard returns the first comma-separated element of a pageserver connstring (the
// connstring of shard 0), trimmed.
func FirstShard(connstrs string) string {
	first, _, _ := strings.Cut(connstrs, ",")
	return strings.TrimSpace(first)
}

// connConfig parses the shard-0 connstring and applies what compute_ctl sets: the token
// as password, application_name=compute_ctl and, when mode is set, the startup options
// `-c neon.compute_mode=<mode>` (replacing options from the connstring, as compute_ctl
// does). Like compute_ctl (tokio-postgres with NoTls), TLS is not tried unless the
// connstring asks for it with sslmode.
func connConfig(connstrs, token string, mode spec.ModeType) (*pgconn.Config, error) {
	connstr := FirstShard(connstrs)
	if connstr == "" {
		return nil, errors.New("empty pageserver connstring")
	}
	if strings.HasPrefix(strings.ToLower(connstr), "grpc://") {
		return nil, ErrGRPCInLibpq
	}
	cfg, err := pgconn.ParseConfig(connstr)
	if err != nil {
		// pgconn redacts the password from its parse errors.
		return nil, fmt.Errorf("parse pageserver connstring: %w", err)
	}
	if token != "" {
		cfg.Password = token
	}
	if !strings.Contains(connstr, "sslmode") {
		cfg.TLSConfig = nil
		var fbs []*pgconn.FallbackConfig
		seen := map[string]bool{fmt.Sprintf("%s:%d", cfg.Host, cfg.Port): true}
		for _, fb := range cfg.Fallbacks {
			key := fmt.Sprintf("%s:%d", fb.Host, fb.Port)
			if fb.TLSConfig == nil && !seen[key] {
				seen[key] = true
				fbs = append(fbs, fb)
			}
		}
		cfg.Fallbacks = fbs
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "compute_ctl"
	if mode != "" {
		cfg.RuntimeParams["options"] = "-c neon.compute_mode=" + string(mode)
	}
	return cfg, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// basebackupOnce makes one attempt: connect, COPY OUT into the unpacker, wait for both.
// The connection fails when the pageserver is silent for idle (see idleConn).
func basebackupOnce(ctx context.Context, base *pgconn.Config, idle time.Duration, query, pgdata string) (Stats, error) {
	start := time.Now()
	cfg, dialer := withIdle(base, idle)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if serr := dialer.stallErr(); serr != nil {
			return Stats{}, fmt.Errorf("connect to pageserver: %w", serr)
		}
		return Stats{}, fmt.Errorf("connect to pageserver: %w", err)
	}
	connected := time.Since(start)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()

	n, err := unpackStream(pgdata, func(w io.Writer) error {
		_, err := conn.CopyTo(ctx, w, query)
		if serr := dialer.stallErr(); serr != nil && err != nil {
			err = serr
		}
		return err
	})
	if err != nil {
		return Stats{}, err
	}
	return Stats{
		ConnectMicros: connected.Microseconds(),
		Bytes:         n,
		Duration:      time.Since(start),
	}, nil
}

// unpackStream runs produce, which writes the compressed archive into w, and unpacks
// what it writes into pgdata as it streams in; it returns the bytes produced. The whole
// stream is consumed, so an error the pageserver sends after the archive fails it: the
// unpacker's error wins when it stopped first (or for an entry that escapes PGDATA),
// else produce's ("basebackup stream: ...").
func unpackStream(pgdata string, produce func(w io.Writer) error) (int64, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Untar(pr, pgdata)
		// Unblock the producer when we stop reading early, with our reason.
		if err != nil {
			pr.CloseWithError(err)
		} else {
			pr.Close()
		}
		done <- err
	}()
	cw := &countingWriter{w: pw}
	prodErr := produce(cw)
	pw.CloseWithError(prodErr) // nil closes with io.EOF
	untarErr := <-done

	switch {
	case untarErr != nil && (prodErr == nil || errors.Is(prodErr, untarErr) || isUnsafe(untarErr)):
		return 0, fmt.Errorf("unpack basebackup: %w", untarErr)
	case prodErr != nil:
		return 0, fmt.Errorf("basebackup stream: %w", prodErr)
	}
	return cw.n, nil
}

// withIdle returns a copy of cfg (and its fallbacks) whose connections fail after idle
// without a byte from the pageserver, and the dialer that tells whether that happened.
// A connect_timeout from the connstring still applies on its own.
func withIdle(cfg *pgconn.Config, idle time.Duration) (*pgconn.Config, *idleDialer) {
	d := &idleDialer{idle: idle}
	c := cfg.Copy()
	c.DialFunc = d.dial
	return c, d
}

func isUnsafe(err error) bool {
	var u *UnsafeEntryError
	return errors.As(err, &u)
}
