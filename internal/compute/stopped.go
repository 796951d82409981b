package compute

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
)

// StopInfo is what systemd tells an ExecStopPost= command about how the service ended.
type StopInfo struct {
	ServiceResult string // SERVICE_RESULT: success, exit-code, signal, timeout, ...
	ExitCode      string // EXIT_CODE: exited, killed, dumped
	ExitStatus    string // EXIT_STATUS: a number or a signal name
	InvocationID  string // INVOCATION_ID of the postgres unit run
}

// finalSyncBudget bounds the final --sync-safekeepers of a terminating neon primary: the
// stop hook runs within compute-postgres's TimeoutStopSec= (60 s).
const finalSyncBudget = 45 * time.Second

// PostgresStopped is the ExecStopPost= hook of compute-postgres.service. After
// /terminate it completes the termination (status terminated; the LSN is null in
// standalone mode). Otherwise Postgres ended on its own or failed to start: the status
// becomes failed with the reason, taken from systemd and the unit's journal.
func PostgresStopped(ctx context.Context, cfg Settings, info StopInfo, d *Deps) error {
	d = d.as(state.ActorStopHook)
	rec, err := d.Store.Load()
	if err != nil {
		return fmt.Errorf("postgres-stopped: %w", err)
	}
	// After the status is recorded (whatever it is): a backtrace takes time.
	defer coreReport{Dir: cfg.PGData, PGBin: cfg.PGBin, GDB: orPath(cfg.GDB, paths.GDB), CorePattern: readCorePattern(),
		Since: rec.StartTime, Dumped: info.ExitCode == "dumped", Log: d.logger()}.run(ctx)
	switch {
	case rec.Status.TerminationPending():
		var lsn *string
		if rec.NeedsFinalSync() {
			// The safekeepers' LSN after the shutdown is what /terminate answers. If the
			// sync fails the compute is failed with the reason (compute_ctl exits without
			// ever reporting terminated).
			// The hook runs within compute-postgres's TimeoutStopSec= (60 s, shared with
			// Postgres's shutdown): a longer sync would be killed by systemd without a
			// reason, so it gets at most finalSyncBudget.
			if t := cfg.SyncSafekeepersTimeout; t <= 0 || t > finalSyncBudget {
				cfg.SyncSafekeepersTimeout = finalSyncBudget
			}
			l, err := finalSync(ctx, cfg, d.Log)
			if err != nil {
				err = fmt.Errorf("terminate: final safekeeper sync: %w", err)
				cur, failed, terr := d.Store.Fail(d.actor, err.Error(), state.TerminationPendingFast, state.TerminationPendingImmediate)
				if terr == nil && !failed {
					terr = &state.TransitionError{From: cur.Status, To: state.Failed}
				}
				if terr != nil {
					return fmt.Errorf("%w (and recording it: %v)", err, terr)
				}
				logx.Milestone(d.logger(), logx.MsgFailed, "compute failed", "err", err)
				d.status("failed: " + err.Error())
				return err
			}
			lsn = &l
		}
		if cur, done, err := d.Store.CompleteTermination(d.actor, lsn); err != nil {
			return fmt.Errorf("postgres-stopped: %w", err)
		} else if !done {
			return fmt.Errorf("postgres-stopped: %w", &state.TransitionError{From: cur.Status, To: state.Terminated})
		}
		// Log the LSN itself: a *string would be printed as a pointer address.
		lsnText := "null"
		if lsn != nil {
			lsnText = *lsn
		}
		logx.Milestone(d.logger(), logx.MsgTerminated, "postgres stopped after /terminate; compute terminated", "result", info.ServiceResult, "lsn", lsnText)
		return nil
	case rec.Status == state.Empty || rec.Status == state.Failed || rec.Status == state.Terminated:
		d.logger().Info("postgres stopped", "status", rec.Status, "result", info.ServiceResult)
		return nil
	}
	reason := describeStop(info)
	if info.ServiceResult != "success" && info.ServiceResult != "" {
		if detail := journalErrors(ctx, info.InvocationID, d.logger()); detail != "" {
			reason += ": " + detail
		}
		d.logger().Error("postgres failed", "status", rec.Status, "reason", reason)
	} else {
		d.logger().Warn("postgres stopped outside /terminate", "status", rec.Status)
	}
	_ = d.fail(fmt.Errorf("%s", reason))
	return nil
}

func orPath(p, def string) string {
	if p != "" {
		return p
	}
	return def
}

func describeStop(i StopInfo) string {
	if i.ServiceResult == "success" || i.ServiceResult == "" {
		return "postgres was stopped outside /terminate"
	}
	s := "postgres failed (" + i.ServiceResult
	if i.ExitCode != "" {
		s += ", " + i.ExitCode + " " + i.ExitStatus
	}
	return s + "; see journalctl -u " + paths.UnitPostgres + ")"
}

// journalErrors returns the FATAL/PANIC lines Postgres logged in this run of the unit,
// each with the line before it (which usually says what was wrong, e.g. `invalid value for
// parameter`), if the journal can be read (the unit's user is in group systemd-journal).
func journalErrors(ctx context.Context, invocation string, log *slog.Logger) string {
	if invocation == "" {
		return ""
	}
	// Its stderr only (the stdout transport): with logs_export_host Postgres also sends
	// each line to syslog, and journald keeps that copy under the unit too.
	res, err := execx.Run(ctx, execx.Cmd{Path: "/usr/bin/journalctl",
		Args: []string{"--no-pager", "-o", "cat", "_SYSTEMD_INVOCATION_ID=" + invocation, "_TRANSPORT=stdout"}, Log: log})
	if err != nil {
		log.Debug("could not read the postgres journal", "err", err)
		return ""
	}
	return fatalLines(string(res.Stdout))
}

// logPrefix is Postgres's default log_line_prefix ("%m [%p] ").
var logPrefix = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \S+ \[\d+\] `)

func fatalLines(log string) string {
	all := strings.Split(log, "\n")
	var out []string
	for i, l := range all {
		if !strings.Contains(l, "FATAL:") && !strings.Contains(l, "PANIC:") {
			continue
		}
		if i > 0 && !strings.Contains(all[i-1], "FATAL:") && strings.Contains(all[i-1], ":  ") {
			out = append(out, clean(all[i-1]))
		}
		out = append(out, clean(l))
	}
	if len(out) > 4 {
		out = out[len(out)-4:]
	}
	return strings.Join(out, "; ")
}

func clean(l string) string {
	l = logPrefix.ReplaceAllString(strings.TrimSpace(l), "")
	return strings.Join(strings.Fields(l), " ")
}
