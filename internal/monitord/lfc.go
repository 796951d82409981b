package monitord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/lfc"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// The LFC side of the monitor. While a lifecycle is monitored, an lfcRun holds its
// lfc.Machine and lfc.Core: the D-Bus methods (LFC, served by Main) start prewarms and
// offloads on it, autoprewarm starts one at once, and a ticker runs the periodic offload
// and publishes a running prewarm's progress. Every change of the machine is written into
// the state record (Record.LFC and Counters.LFC) before the method that made it answers,
// so a GET right after a 202 shows it; then the Changed signal is emitted.

// DefaultLFCTick is how often the LFC ticker looks at the periodic offload and at a
// running prewarm's progress.
const DefaultLFCTick = time.Second

// LFC answers the monitor's D-Bus LFC methods (bus.LFCHandler) with the machine of the
// lifecycle being monitored; between lifecycles it refuses them (the compute is not
// running). It is safe for concurrent use.
type LFC struct {
	mu  sync.Mutex
	cur *lfcRun
}

// NewLFC returns an LFC with no lifecycle yet.
func NewLFC() *LFC { return &LFC{} }

var errNotRunning = &lfcstate.RefusedError{Refusal: lfcstate.RefusedNotRunning, Msg: "compute is not running: the LFC can be prewarmed or offloaded only while it runs"}

func (l *LFC) set(r *lfcRun) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur = r
}

func (l *LFC) current() *lfcRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// Prewarm takes a prewarm from fromEndpoint's state ("" = this compute's).
func (l *LFC) Prewarm(fromEndpoint string) error {
	if fromEndpoint != "" && !lfc.ValidEndpointID(fromEndpoint) {
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedInvalid, Msg: "invalid endpoint id: only letters, digits, '-' and '_' are allowed"}
	}
	r := l.current()
	if r == nil {
		return errNotRunning
	}
	// A refusal that needs no Postgres comes first (StartPrewarm checks again).
	if r.core.Machine().Prewarm().Status == lfcstate.PrewarmPrewarming {
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: lfc.MsgPrewarmRunning}
	}
	if err := r.checkExtension(); err != nil {
		return err
	}
	return r.startPrewarm(fromEndpoint)
}

// Offload takes a manual offload.
func (l *LFC) Offload() error {
	r := l.current()
	if r == nil {
		return errNotRunning
	}
	// Refusals that need no Postgres come first (StartOffload checks again).
	switch snap := r.core.Machine().Snapshot(); {
	case snap.Offload.Status == lfcstate.OffloadOffloading:
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: lfc.MsgOffloadRunning}
	case snap.Prewarm.Status == lfcstate.PrewarmPrewarming:
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: lfc.ErrPrewarmInProgress.Error()}
	}
	if err := r.checkExtension(); err != nil {
		return err
	}
	return r.startOffload()
}

// LFCPostgres is the Postgres side of the LFC (lfc.PG in production): the neon extension's
// functions, whether the extension is there, and the cancel of queries a killed monitor
// left running.
type LFCPostgres interface {
	lfc.Postgres
	CheckExtension(ctx context.Context) error
	CancelOrphans(ctx context.Context) (int, error)
}

// checkTimeout bounds the extension check of a request and the cancel of leftover queries.
const checkTimeout = 5 * time.Second

var errNoExtension = &lfcstate.RefusedError{Refusal: lfcstate.RefusedNoExtension, Msg: lfc.ErrNoNeonExtension.Error() + ": the LFC functions are Neon's"}

// checkExtension refuses a request when the neon extension is not installed (the
// operation could only fail; the reference takes it and records it failed).
func (r *lfcRun) checkExtension() error {
	ctx, cancel := context.WithTimeout(r.ctx, checkTimeout)
	defer cancel()
	err := r.pg.CheckExtension(ctx)
	switch {
	case errors.Is(err, lfc.ErrNoNeonExtension):
		return errNoExtension
	case err != nil && r.ctx.Err() != nil:
		return errNotRunning // the lifecycle ended during the check
	}
	return err
}

// CancelPrewarm cancels a running prewarm.
func (l *LFC) CancelPrewarm() (bool, error) {
	r := l.current()
	if r == nil {
		return false, nil
	}
	ok := r.core.CancelPrewarm()
	if ok {
		r.log.Info("LFC prewarm cancel requested")
	}
	return ok, nil
}

// lfcOptions are what the applied config says about LFC.
type lfcOptions struct {
	autoprewarm     bool
	offloadInterval time.Duration
}

func lfcOptionsOf(l *spec.Loaded) lfcOptions {
	if l == nil {
		return lfcOptions{}
	}
	s := l.ComputeSpec()
	o := lfcOptions{autoprewarm: s.Autoprewarm}
	if s.OffloadLFCIntervalSeconds != nil && *s.OffloadLFCIntervalSeconds > 0 {
		o.offloadInterval = time.Duration(*s.OffloadLFCIntervalSeconds) * time.Second
	}
	return o
}

// interrupted reports whether rec shows a prewarm or an offload running: a monitor that
// ran it was killed.
func interrupted(rec state.Record) bool {
	return rec.LFC != nil && (rec.LFC.Prewarm.Status == lfcstate.PrewarmPrewarming || rec.LFC.Offload.Status == lfcstate.OffloadOffloading)
}

// lfcRun is the LFC side of one monitored lifecycle.
type lfcRun struct {
	core  *lfc.Core
	pg    LFCPostgres
	pub   *lfcPublisher
	ctx   context.Context // the lifecycle's: ends when the compute leaves running
	log   *slog.Logger
	clock func() time.Time

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup

	interval    time.Duration // offload_lfc_interval_seconds
	noExtUntil  time.Time     // the ticker's goroutine only
	noExtLogged bool          // the ticker's goroutine only
}

// startLFC builds the LFC side of the lifecycle of rec, restoring what the record holds
// (a restarted monitor: a prewarm or offload it shows running is recorded failed,
// lfc.Interrupted), starts its ticker and, with autoprewarm, a prewarm.
func (m *runner) startLFC(ctx context.Context, rec state.Record, opts lfcOptions) *lfcRun {
	log := m.log.With("component", "lfc")
	pub := &lfcPublisher{store: m.d.Store, start: rec.StartTime, log: log, changed: m.d.LFCChanged}
	restore := lfc.Snapshot{
		Prewarm:  lfcstate.PrewarmState{Status: lfcstate.PrewarmNotPrewarmed},
		Offload:  lfcstate.OffloadState{Status: lfcstate.OffloadNotOffloaded},
		Counters: rec.Counters.LFC,
	}
	var pgc LFCPostgres = lfc.PG{Connstr: m.s.Connstr}
	if m.d.LFCPostgres != nil {
		pgc = m.d.LFCPostgres
	}
	if rec.LFC != nil {
		restore.Seq, restore.Prewarm, restore.Offload = rec.LFC.Seq, rec.LFC.Prewarm, rec.LFC.Offload
		pub.written = rec.LFC.Seq
		pub.writtenPrewarm = rec.LFC.Prewarm.Status
		if interrupted(rec) {
			// A monitor that was killed (a watchdog restart) left its query running in
			// Postgres: a prewarm still loading what the record will call interrupted,
			// which a new prewarm would overlap and an offload would read half-done.
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			n, err := pgc.CancelOrphans(cctx)
			cancel()
			if err != nil {
				log.Warn("could not cancel the LFC queries of the interrupted run", "err", err)
			} else if n > 0 {
				log.Warn("cancelled LFC queries left running by the interrupted run", "queries", n)
			}
		}
	}
	machine := lfc.NewMachine(lfc.MachineOptions{
		Now:             m.d.Clock.Now,
		OffloadInterval: opts.offloadInterval,
		OnChange:        pub.publish,
		Restore:         &restore,
	})
	store := m.d.LFCStorage
	if store == nil {
		store = &appliedStorage{read: m.appliedConfig, log: log}
	}
	r := &lfcRun{
		core: lfc.NewCore(machine, store, pgc, lfc.CoreOptions{Logger: log}),
		pg:   pgc, pub: pub, ctx: ctx, log: log, clock: m.d.Clock.Now, interval: opts.offloadInterval,
	}
	if opts.offloadInterval > 0 {
		log.Info("periodic LFC offload", "interval_ms", opts.offloadInterval.Milliseconds())
	}
	tick := m.s.LFCTick
	if tick <= 0 {
		tick = DefaultLFCTick
	}
	// autoprewarm: right after running, once per lifecycle (a record that holds LFC states
	// is a lifecycle this or an earlier monitor process has entered already: a restarted
	// monitor must not load an old state over a warm cache). It runs first in the ticker's
	// goroutine, so that its extension check does not hold up the rounds, and before the
	// first periodic offload can be considered.
	autoprewarm := opts.autoprewarm && rec.LFC == nil
	r.wg.Add(1)
	go r.ticker(tick, opts.offloadInterval > 0, autoprewarm)
	return r
}

// stop ends the lifecycle's LFC side: no new operation is taken, the running ones are
// cancelled (ctx must be done already or be cancelled by the caller) and waited for.
func (r *lfcRun) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
}

// spawn takes an operation through start and runs it in the background, unless the
// lifecycle's LFC side has stopped.
func (r *lfcRun) spawn(start func() (func(), error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.ctx.Err() != nil {
		return errNotRunning
	}
	run, err := start()
	if err != nil {
		return err
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		run()
	}()
	return nil
}

func (r *lfcRun) startPrewarm(from string) error {
	err := r.spawn(func() (func(), error) { return r.core.StartPrewarm(r.ctx, from) })
	if errors.Is(err, lfc.ErrPrewarmRunning) {
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: lfc.MsgPrewarmRunning}
	}
	return err
}

func (r *lfcRun) startOffload() error {
	err := r.spawn(func() (func(), error) { return r.core.StartOffload(r.ctx) })
	switch {
	case errors.Is(err, lfc.ErrOffloadRunning):
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: lfc.MsgOffloadRunning}
	case errors.Is(err, lfc.ErrPrewarmInProgress):
		return &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: lfc.ErrPrewarmInProgress.Error()}
	}
	return err
}

// autoprewarm starts the prewarm of autoprewarm. Only a missing neon extension skips it
// (nothing to prewarm into); any other failure of the check (Postgres slow or out of
// connections right after running) still takes the prewarm, whose run then ends failed
// if the trouble lasts: left not_prewarmed, the state would let the periodic offload
// upload a cold cache over the stored one.
func (r *lfcRun) autoprewarm() {
	err := r.checkExtension()
	if errors.Is(err, errNoExtension) {
		r.log.Warn("autoprewarm skipped", "err", err)
		return
	}
	if err != nil {
		r.log.Warn("autoprewarm: could not look for the neon extension; prewarming anyway", "err", err)
	}
	if err := r.startPrewarm(""); err != nil {
		r.log.Warn("autoprewarm not started", "err", err)
		return
	}
	r.log.Info("autoprewarm started")
}

// ticker runs autoprewarm first when asked, then every tick the periodic offload when it
// is due and the publication of a running prewarm's progress, until the lifecycle ends.
func (r *lfcRun) ticker(every time.Duration, periodic, autoprewarm bool) {
	defer r.wg.Done()
	if autoprewarm {
		r.autoprewarm()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if periodic {
			r.periodicOffload()
		}
		// A state whose write failed is written again.
		r.pub.publish(r.core.Machine().Snapshot())
		if snap := r.core.Machine().Snapshot(); snap.Prewarm.Status == lfcstate.PrewarmPrewarming {
			ctx, cancel := context.WithTimeout(r.ctx, lfc.InfoTimeout)
			p, err := r.pg.PrewarmInfo(ctx)
			cancel()
			if err != nil {
				r.log.Debug("no LFC prewarm progress", "err", err)
				continue
			}
			r.pub.progress(snap.Seq, p)
		}
	}
}

// errNoOffload: the periodic tick started no offload.
var errNoOffload = errors.New("no periodic offload")

// periodicOffload starts the periodic offload when it is due and allowed. A due tick
// that the prewarm state (or a running offload) forbids is logged and skipped; so is one
// on a Postgres without the neon extension (it could only fail, every interval).
func (r *lfcRun) periodicOffload() {
	now := r.clock()
	if next := r.core.Machine().NextPeriodicOffload(); next.IsZero() || now.Before(next) || now.Before(r.noExtUntil) {
		return // not due, or the extension was missing less than an interval ago
	}
	if err := r.checkExtension(); errors.Is(err, errNoExtension) {
		r.noExtUntil = now.Add(r.interval)
		if !r.noExtLogged {
			r.noExtLogged = true
			r.log.Info("periodic LFC offload skipped: the neon extension is not installed (looked for again every interval)")
		}
		return
	}
	var why string
	err := r.spawn(func() (func(), error) {
		run, w := r.core.StartPeriodicOffload(r.ctx)
		if run == nil {
			why = w
			return nil, errNoOffload
		}
		return run, nil
	})
	switch {
	case err == nil:
		r.log.Info("periodic LFC offload started")
	case errors.Is(err, errNoOffload) && why != "not due":
		r.log.Info("periodic LFC offload skipped", "why", why)
	}
}

// lfcPublisher writes the machine's snapshots into the state record, in Seq order.
type lfcPublisher struct {
	store   *state.Store
	start   time.Time
	log     *slog.Logger
	changed func(seq uint64)

	mu             sync.Mutex
	written        uint64                 // the Seq in the record
	writtenPrewarm lfcstate.PrewarmStatus // the prewarm status in the record
	lastProgress   lfcstate.Progress      // the progress last published of the running prewarm
	failing        bool
}

// errOtherLifecycle: the record belongs to another lifecycle now.
var errOtherLifecycle = errors.New("the compute began a new lifecycle")

// publish writes s (the machine's OnChange). A prewarm that ended failed or cancelled
// keeps the progress it had reached (as the reference's GET, which reads it live).
func (p *lfcPublisher) publish(s lfc.Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Seq <= p.written {
		return
	}
	st := lfcstate.States{Seq: s.Seq, Prewarm: s.Prewarm, Offload: s.Offload}
	if s.Prewarm.Status == lfcstate.PrewarmPrewarming && p.writtenPrewarm != lfcstate.PrewarmPrewarming {
		p.lastProgress = lfcstate.Progress{} // a new prewarm: nothing of the last one's count
	}
	switch s.Prewarm.Status {
	case lfcstate.PrewarmFailed, lfcstate.PrewarmCancelled:
		if st.Prewarm.Progress == (lfcstate.Progress{}) {
			st.Prewarm.Progress = p.lastProgress
		}
	case lfcstate.PrewarmPrewarming:
		if st.Prewarm.Progress == (lfcstate.Progress{}) {
			st.Prewarm.Progress = p.lastProgress
		}
	default:
		p.lastProgress = lfcstate.Progress{}
	}
	if p.write(func(r *state.Record) bool {
		if r.LFC != nil && r.LFC.Seq >= st.Seq {
			return false
		}
		r.LFC = &st
		r.Counters.LFC = s.Counters
		return true
	}) {
		p.written, p.writtenPrewarm = s.Seq, s.Prewarm.Status
	}
}

// progress publishes a running prewarm's progress, if the record still shows that
// prewarm (seq) and the progress moved.
func (p *lfcPublisher) progress(seq uint64, pr lfcstate.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr == p.lastProgress || seq != p.written {
		return
	}
	if p.write(func(r *state.Record) bool {
		if r.LFC == nil || r.LFC.Seq != seq || r.LFC.Prewarm.Status != lfcstate.PrewarmPrewarming {
			return false
		}
		r.LFC.Prewarm.Progress = pr
		return true
	}) {
		p.lastProgress = pr
	}
}

// errNoChange: the record needs no write (it holds newer news).
var errNoChange = errors.New("no change")

// write applies fn to the record of this lifecycle (fn reports whether it changed
// anything; if not, nothing is written); it reports whether the record now holds it. Call
// with mu held.
func (p *lfcPublisher) write(fn func(*state.Record) bool) bool {
	rec, err := p.store.Update(func(r *state.Record) error {
		if !r.StartTime.Equal(p.start) {
			return errOtherLifecycle
		}
		if !fn(r) {
			return errNoChange
		}
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		return true
	case errors.Is(err, errOtherLifecycle):
		p.log.Debug("LFC state not published: the compute began a new lifecycle")
		return false
	}
	if err != nil {
		if !p.failing {
			p.log.Warn("could not publish the LFC state into the state record", "err", err)
		}
		p.failing = true
		return false
	}
	p.failing = false
	if p.changed != nil && rec.LFC != nil {
		p.changed(rec.LFC.Seq)
	}
	return true
}

// appliedStorage is endpoint storage as the applied config names it, read again at each
// call: a reconfiguration may bring a new endpoint_storage_token (it expires).
type appliedStorage struct {
	read func() (*spec.Loaded, error)
	log  *slog.Logger
}

func (s *appliedStorage) client() (*lfc.Client, error) {
	l, err := s.read()
	if err != nil {
		return nil, fmt.Errorf("endpoint storage: %w", err)
	}
	ep := lfc.Endpoint{
		Addr:       l.Spec.EndpointStorageAddr,
		Token:      l.Spec.EndpointStorageToken,
		TenantID:   l.Spec.TenantID,
		TimelineID: l.Spec.TimelineID,
	}
	if id := l.ComputeSpec().EndpointID; id != nil {
		ep.EndpointID = *id
	}
	return lfc.NewClient(ep, lfc.ClientOptions{Logger: s.log}), nil
}

// Get implements lfc.Store.
func (s *appliedStorage) Get(ctx context.Context, endpointID string) ([]byte, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	return c.Get(ctx, endpointID)
}

// Put implements lfc.Store.
func (s *appliedStorage) Put(ctx context.Context, body []byte) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	return c.Put(ctx, body)
}
