// Package pgbouncer hands the spec's pgbouncer_settings to a pgbouncer running beside
// Postgres, as compute_ctl's tune_pgbouncer does: connect to pgbouncer's admin console
// (a few tries a second apart), add the TLS settings when the compute has TLS, write every
// setting into the [pgbouncer] section of pgbouncer's ini file (so that a restarted
// pgbouncer keeps them) and apply them with the admin console's RELOAD.
//
// Nothing here fails a compute: the caller logs the error. Differences from the
// reference: the ini file is edited line by line (comments, order and the other sections
// stay as they were; the reference's ini crate rewrites the file without its comments),
// a setting name or value that would break the file (a newline, a name that is not a
// pgbouncer setting name) refuses the whole update before anything is written, and the
// file and the admin connection string are settings (PGBOUNCER_INI, PGBOUNCER_CONNSTR)
// instead of being chosen by AUTOSCALING.
package pgbouncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/spec"
)

// Defaults of the reference (compute_ctl's retry of the admin connection).
const (
	DefaultAttempts = 4
	DefaultDelay    = time.Second
	// DefaultKeyWait bounds the wait for the TLS key file (the reference waits without a
	// bound; this runs off the start path, but should end).
	DefaultKeyWait = 5 * time.Minute
)

// Options says where pgbouncer is.
type Options struct {
	// IniPath is pgbouncer's configuration file.
	IniPath string
	// Connstr reaches the admin console (database pgbouncer), a URL or key=value list.
	Connstr string
	// Password, when set, is the admin connection's password (PGBOUNCER_PASSWORD, as the
	// reference reads it); never logged.
	Password string
	// Attempts and Delay bound the connection tries (0: the defaults).
	Attempts int
	Delay    time.Duration
	// KeyWait bounds the wait for the TLS key file (0: DefaultKeyWait).
	KeyWait time.Duration
	// Log receives the progress (nil: slog.Default()).
	Log *slog.Logger
}

func (o Options) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.Default()
}

// ErrRefused is returned (wrapped) when pgbouncer answers RELOAD with an error or its
// SHOW CONFIG afterwards does not hold a setting's value (pgbouncer logs why): the file
// holds the settings, but pgbouncer did not take them.
var ErrRefused = errors.New("pgbouncer refused the reload")

// Apply connects to pgbouncer's admin console, adds the TLS settings when tls is not nil
// (waiting for its key file), writes settings into the ini file and sends RELOAD. An
// unreachable pgbouncer leaves the file alone; a refused RELOAD is returned wrapping
// ErrRefused after the file was written (as the reference, which only logs it).
func Apply(ctx context.Context, o Options, settings spec.OrderedStringMap, tls *spec.TLSConfig) error {
	settings = append(spec.OrderedStringMap(nil), settings...)
	if tls != nil {
		settings = append(settings,
			spec.StringPair{Key: "client_tls_cert_file", Value: tls.CertPath},
			spec.StringPair{Key: "client_tls_key_file", Value: tls.KeyPath},
			spec.StringPair{Key: "client_tls_sslmode", Value: "allow"})
	}
	if err := validate(settings); err != nil {
		return err
	}
	conn, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if tls != nil {
		// pgbouncer starts without TLS; the key may come later (a certificate manager).
		if err := waitFile(ctx, tls.KeyPath, o); err != nil {
			return err
		}
	}
	if err := UpdateIni(o.IniPath, settings); err != nil {
		return err
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, "RELOAD"); err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	// pgbouncer answers RELOAD without an error when it cannot load the file (it logs
	// "config file loading failed" and keeps its settings): what it took is read back.
	if err := verify(ctx, conn, settings); err != nil {
		return err
	}
	o.log().Info("pgbouncer settings applied", "ini", o.IniPath, "settings", len(settings), "reload_ms", time.Since(start).Milliseconds())
	return nil
}

// verify compares the settings with the admin console's SHOW CONFIG: a setting pgbouncer
// does not know or holds with another value was not taken.
func verify(ctx context.Context, conn *pgx.Conn, settings spec.OrderedStringMap) error {
	rows, err := conn.Query(ctx, "SHOW CONFIG")
	if err != nil {
		return fmt.Errorf("pgbouncer: SHOW CONFIG: %w", err)
	}
	have := map[string]string{}
	for rows.Next() {
		vals := rows.RawValues()
		if len(vals) >= 2 {
			have[strings.ToLower(string(vals[0]))] = string(vals[1])
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgbouncer: SHOW CONFIG: %w", err)
	}
	var bad []string
	for _, p := range settings {
		v, ok := have[strings.ToLower(p.Key)]
		switch {
		case !ok:
			bad = append(bad, p.Key+" (unknown to pgbouncer)")
		case !strings.EqualFold(strings.TrimSpace(v), strings.TrimSpace(p.Value)):
			bad = append(bad, fmt.Sprintf("%s (wanted %q, has %q)", p.Key, p.Value, v))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: settings not taken (see pgbouncer's log): %s", ErrRefused, strings.Join(bad, ", "))
	}
	return nil
}

// connect opens the admin console connection in the simple query protocol (the only
// one pgbouncer's console speaks), trying o.Attempts times.
func connect(ctx context.Context, o Options) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(o.Connstr)
	if err != nil {
		// The text could hold a password: not repeated.
		return nil, errors.New("pgbouncer: admin connection string is not a valid postgres URL or key=value list")
	}
	if o.Password != "" {
		cfg.Password = o.Password
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.StatementCacheCapacity = 0
	cfg.DescriptionCacheCapacity = 0
	attempts, delay := o.Attempts, o.Delay
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if delay <= 0 {
		delay = DefaultDelay
	}
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(delay):
			}
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, fmt.Errorf("connect to pgbouncer (%d tries): %w", attempts, last)
}

// waitFile waits until path exists, at most o.KeyWait.
func waitFile(ctx context.Context, path string, o Options) error {
	wait := o.KeyWait
	if wait <= 0 {
		wait = DefaultKeyWait
	}
	deadline := time.Now().Add(wait)
	logged := false
	for {
		_, err := os.Stat(path)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgbouncer: TLS key file: %w", err)
		}
		if !logged {
			o.log().Info("pgbouncer: waiting for the TLS key file", "path", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// settingName is what pgbouncer accepts as a setting name.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validate refuses what cannot be written as one `name = value` line.
func validate(settings spec.OrderedStringMap) error {
	for _, p := range settings {
		if !settingName.MatchString(p.Key) {
			return fmt.Errorf("pgbouncer: setting name %q is not a pgbouncer setting name; nothing written", p.Key)
		}
		if strings.ContainsAny(p.Value, "\r\n\x00") {
			return fmt.Errorf("pgbouncer: setting %s: the value holds a line break; nothing written", p.Key)
		}
	}
	return nil
}

// UpdateIni sets every setting in the [pgbouncer] section of the ini file at path: a line
// that sets the name already (names compare without case, as pgbouncer does) gets the new
// value, the others are added at the end of the section (a section is added when there
// is none). The rest of the file stays as it was. The file is rewritten in place (its
// directory need not be writable, as Debian's /etc/pgbouncer); it must exist.
func UpdateIni(path string, settings spec.OrderedStringMap) error {
	if err := validate(settings); err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pgbouncer ini: %w", err)
	}
	out := updateIni(string(old), settings)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("pgbouncer ini: %w", err)
	}
	_, werr := f.WriteString(out)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("pgbouncer ini: write %s: %w", path, werr)
	}
	return nil
}

// updateIni is UpdateIni on the file's text.
func updateIni(text string, settings spec.OrderedStringMap) string {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	want := make(map[string]string, len(settings))
	for _, p := range settings {
		want[strings.ToLower(p.Key)] = p.Value
	}
	done := make(map[string]bool, len(settings))
	var out []string
	in := false
	end := -1 // index in out after the last non-blank line of the section
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			name := strings.ToLower(strings.TrimSpace(strings.Trim(t, "[]")))
			in = name == "pgbouncer"
			out = append(out, l)
			if in {
				end = len(out)
			}
			continue
		}
		if in && t != "" && t[0] != ';' && t[0] != '#' {
			if k, _, ok := strings.Cut(t, "="); ok {
				key := strings.ToLower(strings.TrimSpace(k))
				if v, ok := want[key]; ok {
					if !done[key] {
						out = append(out, strings.TrimSpace(k)+" = "+v+"\n")
						done[key] = true
					}
					// A repeated line for the name is dropped: pgbouncer would take the last.
					end = len(out)
					continue
				}
			}
		}
		out = append(out, l)
		if in && t != "" {
			end = len(out)
		}
	}
	var add []string
	for _, p := range settings {
		k := strings.ToLower(p.Key)
		if !done[k] {
			add = append(add, p.Key+" = "+want[k]+"\n")
			done[k] = true
		}
	}
	if len(add) == 0 {
		return strings.Join(out, "")
	}
	if end < 0 {
		if n := len(out); n > 0 && !strings.HasSuffix(out[n-1], "\n") {
			out[n-1] += "\n"
		}
		out = append(out, "[pgbouncer]\n")
		end = len(out)
	} else if !strings.HasSuffix(out[end-1], "\n") {
		out[end-1] += "\n"
	}
	res := append(append(append([]string(nil), out[:end]...), add...), out[end:]...)
	return strings.Join(res, "")
}
