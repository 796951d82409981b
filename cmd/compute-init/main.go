// Command compute-init prepares and configures the compute: `prepare` (unit
// compute-init.service), `configure` (compute-configure.service), `postgres-stopped`
// (ExecStopPost= of compute-postgres.service) and `status` for operators.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/statusview"
	"github.com/computetools/compute-tools/internal/sysd"
)

// common flags mirror compute_ctl's names; each can come from /etc/default/compute-tools.
type common struct {
	StateDir           string `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"/run/compute" help:"Directory of the shared state record."`
	Config             string `short:"c" name:"config" env:"COMPUTE_CONFIG" default:"/etc/compute/config.json" help:"ComputeConfig JSON file; without a spec in it, wait for POST /configure."`
	PGData             string `short:"D" name:"pgdata" env:"PGDATA" default:"/var/db/postgres/compute" help:"Postgres data directory."`
	PGBin              string `short:"b" name:"pgbin" env:"PGBIN" default:"/usr/lib/postgresql/15/bin/postgres" help:"Path of the postgres binary."`
	Connstr            string `short:"C" name:"connstr" env:"COMPUTE_CONNSTR" default:"postgresql://cloud_admin@localhost:55432/postgres?host=/run/compute-postgres" help:"How to connect as the admin role."`
	ComputeID          string `short:"i" name:"compute-id" env:"COMPUTE_ID" default:"compute-local" help:"Compute ID."`
	PrivilegedRoleName string `name:"privileged-role-name" env:"PRIVILEGED_ROLE_NAME" default:"neon_superuser" help:"Privileged role given to spec roles (^[a-z_]+$)."`
	InternalHTTPPort   int    `name:"internal-http-port" env:"INTERNAL_HTTP_PORT" default:"3081" help:"Internal API port (written as neon.extension_server_port)."`
	RemoteExtBaseURL   string `short:"r" name:"remote-ext-base-url" env:"REMOTE_EXT_BASE_URL" help:"Base URL of the extension gateway for remote extensions."`
	ControlPlaneURI    string `short:"p" name:"control-plane-uri" env:"CONTROL_PLANE_URI" help:"Get the config from the control plane (GET {uri}/compute/api/v2/computes/{id}/spec, bearer token from NEON_CONTROL_PLANE_TOKEN) instead of the config file."`
}

type cli struct {
	common
	Prepare         prepareCmd   `cmd:"" help:"Get the config and prepare PGDATA (compute-init.service)."`
	Configure       configureCmd `cmd:"" help:"Apply the spec once Postgres is ready (compute-configure.service)."`
	PostgresStopped stoppedCmd   `cmd:"" name:"postgres-stopped" help:"Record how Postgres ended (ExecStopPost= of compute-postgres.service)."`
	Status          statusCmd    `cmd:"" help:"Print the compute status without a token."`
	LSNLease        leaseCmd     `cmd:"" name:"lsn-lease" help:"Keep a Static compute's LSN leased on the pageservers (compute-lsn-lease.service)."`
}

var privRoleRe = regexp.MustCompile(`^[a-z_]+$`)

func (c *common) config() (compute.Config, error) {
	if !privRoleRe.MatchString(c.PrivilegedRoleName) {
		return compute.Config{}, fmt.Errorf("--privileged-role-name %q must match ^[a-z_]+$", c.PrivilegedRoleName)
	}
	extURL := ""
	if c.RemoteExtBaseURL != "" {
		u, err := controlplane.NormalizeRemoteExtURL(c.RemoteExtBaseURL)
		if err != nil {
			return compute.Config{}, fmt.Errorf("--remote-ext-base-url: %w", err)
		}
		extURL = u
	}
	return compute.Config{
		RemoteExtBaseURL: extURL,
		StateDir:         c.StateDir, ConfigFile: c.Config, PGData: c.PGData, PGBin: c.PGBin,
		Connstr: c.Connstr, PrivilegedRole: c.PrivilegedRoleName, OSUser: paths.DefaultPGUser,
		InternalHTTPPort: c.InternalHTTPPort,
		ControlPlaneURI:  c.ControlPlaneURI, ComputeID: c.ComputeID,
		ControlPlaneToken: os.Getenv("NEON_CONTROL_PLANE_TOKEN"),
	}, nil
}

// deps builds the store and its D-Bus and systemd collaborators. D-Bus is best effort:
// without it, waiters fall back to re-reading the state file every few seconds.
// withUnits adds the systemd manager connection, made in the background so that it costs
// the step no time.
func (c *common) deps(ctx context.Context, withUnits bool) (*compute.Deps, func(), error) {
	store, err := state.Open(c.StateDir)
	if err != nil {
		return nil, nil, err
	}
	d := &compute.Deps{Store: store, Notifier: notifier{}}
	closers := []func(){}
	if conn, err := bus.Connect(ctx); err != nil {
		slog.Warn("no D-Bus: status changes are not announced", "err", err)
	} else {
		closers = append(closers, conn.Close)
		d.Waker = conn
		store.OnChange = func(r state.Record) {
			if err := conn.EmitStatusChanged(string(r.Status), r.Seq); err != nil {
				slog.Warn("announce status", "err", err)
			}
		}
	}
	if withUnits {
		u := connectUnits(ctx)
		closers = append(closers, u.Close)
		d.Units = u
	}
	return d, func() {
		for _, f := range closers {
			f()
		}
	}, nil
}

// lazyUnits connects to systemd in the background; calls wait for the connection.
type lazyUnits struct {
	ready chan struct{}
	m     *sysd.Manager
	err   error
}

func connectUnits(ctx context.Context) *lazyUnits {
	u := &lazyUnits{ready: make(chan struct{})}
	go func() {
		u.m, u.err = sysd.NewManager(ctx)
		close(u.ready)
	}()
	return u
}

func (u *lazyUnits) UnitTimestamps(ctx context.Context, name string) (time.Time, time.Time, error) {
	<-u.ready
	if u.err != nil {
		return time.Time{}, time.Time{}, u.err
	}
	return u.m.UnitTimestamps(ctx, name)
}

func (u *lazyUnits) Close() {
	<-u.ready
	if u.m != nil {
		u.m.Close()
	}
}

// step runs fn with the host config and the collaborators of a step.
func (c *common) step(ctx context.Context, withUnits bool, fn func(compute.Config, *compute.Deps) error) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	d, done, err := c.deps(ctx, withUnits)
	if err != nil {
		return err
	}
	defer done()
	return fn(cfg, d)
}

type notifier struct{}

func (notifier) Status(text string) { _ = sysd.Status(text) }

type prepareCmd struct{}

func (prepareCmd) Run(ctx context.Context, c *common) error {
	return c.step(ctx, false, func(cfg compute.Config, d *compute.Deps) error {
		return compute.Prepare(ctx, cfg, d)
	})
}

type configureCmd struct {
	Managed bool `help:"Run as compute-configure.service: apply the spec prepare left (or the one POST /configure sent) and record the status. Without it, apply the -c config file to the Postgres at -C by hand, without touching the compute's state."`
	DryRun  bool `name:"dry-run" help:"By hand: print the plan, change nothing."`
}

func (cc configureCmd) Run(ctx context.Context, c *common) error {
	if !cc.Managed {
		cfg, err := c.config()
		if err != nil {
			return err
		}
		return configureByHand(ctx, cfg, cc.DryRun)
	}
	if cc.DryRun {
		return fmt.Errorf("--dry-run goes with a run by hand, not --managed")
	}
	return c.step(ctx, true, func(cfg compute.Config, d *compute.Deps) error {
		return compute.Configure(ctx, cfg, d)
	})
}

func configureByHand(ctx context.Context, cfg compute.Config, dryRun bool) error {
	raw, err := os.ReadFile(cfg.ConfigFile)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if dryRun {
		plan, err := compute.DryRun(ctx, cfg, raw)
		if err != nil {
			return err
		}
		for _, line := range plan {
			fmt.Println(line)
		}
		fmt.Printf("%d actions (dry run: nothing was changed)\n", len(plan))
		return nil
	}
	res, err := compute.ApplyByHand(ctx, cfg, raw)
	if err != nil {
		return err
	}
	fmt.Printf("applied %d actions\n", res.Total)
	return nil
}

type leaseCmd struct{}

func (leaseCmd) Run(ctx context.Context, c *common) error {
	return c.step(ctx, false, func(cfg compute.Config, d *compute.Deps) error {
		return compute.LeaseLSN(ctx, cfg, d)
	})
}

type stoppedCmd struct{}

func (stoppedCmd) Run(ctx context.Context, c *common) error {
	return c.step(ctx, false, func(cfg compute.Config, d *compute.Deps) error {
		return compute.PostgresStopped(ctx, cfg, compute.StopInfo{
			ServiceResult: os.Getenv("SERVICE_RESULT"),
			ExitCode:      os.Getenv("EXIT_CODE"),
			ExitStatus:    os.Getenv("EXIT_STATUS"),
			InvocationID:  os.Getenv("INVOCATION_ID"),
		}, d)
	})
}

type statusCmd struct {
	Wait    string        `help:"Wait until the status is this one (or failed/terminated), then print it." placeholder:"STATUS"`
	Timeout time.Duration `default:"2m" help:"How long --wait waits."`
	Full    bool          `help:"Print the whole state record (metrics included)."`
}

func (s statusCmd) Run(ctx context.Context, c *common) error {
	store, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	rec, err := store.Load()
	if s.Wait != "" {
		want := state.Status(s.Wait)
		if !want.Valid() {
			return fmt.Errorf("--wait: unknown status %q", s.Wait)
		}
		var wake <-chan struct{}
		if conn, berr := bus.Connect(ctx); berr == nil {
			defer conn.Close()
			ch, cancel := conn.Subscribe()
			defer cancel()
			wake = ch
		}
		wctx, cancel := context.WithTimeout(ctx, s.Timeout)
		defer cancel()
		rec, err = store.Wait(wctx, wake, 200*time.Millisecond, func(r state.Record) bool {
			return r.Status == want || r.Status == state.Failed || r.Status == state.Terminated
		})
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("status is still %s after %s", rec.Status, s.Timeout)
		}
	}
	if errors.Is(err, state.ErrNoState) {
		rec = state.Record{Status: state.Empty}
	} else if err != nil {
		return err
	}
	var out any = statusview.Of(rec)
	if s.Full {
		out = rec
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
	if s.Wait != "" && rec.Status != state.Status(s.Wait) {
		return fmt.Errorf("status is %s, not %s", rec.Status, s.Wait)
	}
	return nil
}

func main() {
	logx.Setup(os.Stderr, "compute-init")
	var c cli
	kctx := kong.Parse(&c, kong.Name("compute-init"),
		kong.Description("Prepares and configures a serverless Postgres compute (Neon compute_ctl compatible)."),
		kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(&c.common); err != nil {
		slog.Error("compute-init "+kctx.Command()+" failed", "err", err)
		os.Exit(1)
	}
}
