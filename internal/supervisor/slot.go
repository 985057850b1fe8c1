package supervisor

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/dispatch"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// Restart backoff for a worker that dies.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 30 * time.Second
	// A worker that ran this long before dying is considered healthy: the
	// backoff starts over.
	stableAfter = 30 * time.Second
	// How long a worker may take to report ready.
	readyTimeout = 30 * time.Second
	// How long a connection may wait for its proxy's worker to come back.
	deliverWait = 5 * time.Second
)

// slot keeps one proxy's worker running: it starts it, restarts it with
// backoff when it dies, and drains it when told to stop. It is the
// dispatch.Target for that proxy's hostnames.
type slot struct {
	spec         wire.Spec
	spawner      *spawner
	log          *slog.Logger
	readyTimeout time.Duration

	// sendMu orders hand-offs before the drain message: Deliver holds it
	// shared while sending, retire holds it exclusively while it detaches
	// the worker, so no connection is sent after the worker was told to
	// drain.
	sendMu  sync.RWMutex
	mu      sync.Mutex
	cur     *proc         // guarded by mu; the ready worker, or nil
	retired bool          // guarded by mu; no more connections for this slot
	changed chan struct{} // guarded by mu; closed and replaced when cur changes
	last    *proc         // guarded by mu; the latest worker started, ready or not
	adopted *proc         // a ready worker inherited across an upgrade; run starts with it

	stop      chan struct{}
	done      chan struct{}
	firstOnce sync.Once
	first     chan struct{} // closed after the first start attempt settled
	firstOK   bool          // written before first closes
	firstErr  string        // written before first closes, when !firstOK
}

var _ dispatch.Target = (*slot)(nil)

func newSlot(spec wire.Spec, sp *spawner, log *slog.Logger) *slot {
	return &slot{
		spec:         spec,
		readyTimeout: readyTimeout,
		spawner:      sp,
		log:          log.With("proxy", spec.Proxy.Name),
		changed:      make(chan struct{}),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		first:        make(chan struct{}),
	}
}

func (sl *slot) Name() string { return sl.spec.Proxy.Name }

var errNotRunning = errors.New("worker not running")

// Deliver hands a connection to the current worker, waiting briefly when
// the worker is being restarted so clients see a delay, not an error. A
// retired slot answers dispatch.ErrRetired, and the dispatcher routes the
// connection again with the current table.
func (sl *slot) Deliver(kind wire.Kind, c dispatch.Conn, header, peeked []byte) error {
	deadline := time.NewTimer(deliverWait)
	defer deadline.Stop()
	for {
		sl.sendMu.RLock()
		sl.mu.Lock()
		p, changed, retired := sl.cur, sl.changed, sl.retired
		sl.mu.Unlock()
		if retired {
			sl.sendMu.RUnlock()
			return dispatch.ErrRetired
		}
		if p != nil {
			err := p.hc.SendConn(kind, c, header, peeked)
			sl.sendMu.RUnlock()
			if err == nil {
				return nil
			}
			// The worker died under us; wait for its successor.
			sl.setCur(p, nil)
		} else {
			sl.sendMu.RUnlock()
		}
		select {
		case <-changed:
		case <-deadline.C:
			return errNotRunning
		}
	}
}

// retire stops routing to the slot; connections already sent stay ordered
// before anything sent to the worker afterwards.
func (sl *slot) retire() {
	sl.sendMu.Lock()
	sl.mu.Lock()
	sl.retired = true
	close(sl.changed)
	sl.changed = make(chan struct{})
	sl.mu.Unlock()
	sl.sendMu.Unlock()
}

// setCur replaces old with p as the current worker (if old is current).
func (sl *slot) setCur(old, p *proc) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.cur != old {
		return
	}
	sl.cur = p
	close(sl.changed)
	sl.changed = make(chan struct{})
}

func (sl *slot) current() *proc {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.cur
}

func (sl *slot) latest() *proc {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.last
}

func (sl *slot) settleFirst(ok bool, reason string) {
	sl.firstOnce.Do(func() {
		sl.firstOK = ok
		sl.firstErr = reason
		close(sl.first)
	})
}

// run keeps a worker going until stop is closed.
func (sl *slot) run() {
	defer close(sl.done)
	defer sl.settleFirst(false, "stopped before it was ready")
	backoff := minBackoff
	for gen := uint64(1); ; gen++ {
		spec := sl.spec
		spec.Generation = gen
		var p *proc
		var err error
		if sl.adopted != nil {
			p, sl.adopted = sl.adopted, nil
		} else {
			p, err = sl.spawner.start(spec)
		}
		if err == nil {
			sl.mu.Lock()
			sl.last = p
			sl.mu.Unlock()
		}
		if err != nil {
			sl.log.Error("cannot start worker", "err", err, "retry_in", backoff)
			sl.settleFirst(false, err.Error())
			if !sl.sleep(&backoff) {
				return
			}
			continue
		}
		if reason := sl.awaitReady(p); reason != "" {
			sl.settleFirst(false, reason)
			select {
			case <-sl.stop:
				return
			default:
			}
			if !sl.sleep(&backoff) {
				return
			}
			continue
		}
		info := p.info()
		sl.log.Info("worker ready", "pid", p.pid(), "build_id", info.BuildID, "version", info.Version, "generation", gen)
		sl.setCur(nil, p)
		sl.settleFirst(true, "")
		select {
		case <-p.exited:
			sl.setCur(p, nil)
			ran := time.Since(p.started)
			if ran > stableAfter {
				backoff = minBackoff
			}
			sl.log.Error("worker died; restarting", "pid", p.pid(), "err", describeExit(p.exitErr()), "ran", ran.Round(time.Millisecond), "retry_in", backoff)
			if !sl.sleep(&backoff) {
				return
			}
		case <-sl.stop:
			sl.retire()
			sl.setCur(p, nil)
			sl.log.Info("draining worker", "pid", p.pid())
			p.drain(sl.spec.Drain())
			sl.log.Info("worker exited", "pid", p.pid(), "err", describeExit(p.exitErr()))
			return
		}
	}
}

// awaitReady waits for p to become ready, and kills it if it does not. It
// returns why p failed, or "" when it is ready.
func (sl *slot) awaitReady(p *proc) string {
	t := time.NewTimer(sl.readyTimeout)
	defer t.Stop()
	select {
	case <-p.readyCh:
		return ""
	case <-p.exited:
		reason := exitedBeforeReady(p)
		sl.log.Error(reason, "pid", p.pid())
		return reason
	case <-t.C:
		sl.log.Error("worker not ready in time; killing it", "pid", p.pid(), "timeout", sl.readyTimeout.String())
		p.kill()
		<-p.exited
		return "worker not ready within " + sl.readyTimeout.String()
	case <-sl.stop:
		p.kill()
		<-p.exited
		return "stopped before it was ready"
	}
}

// exitedBeforeReady is the one description of a worker that died during
// start-up, whichever step noticed it.
func exitedBeforeReady(p *proc) string {
	return "worker exited before it was ready: " + describeExit(p.exitErr())
}

// sleep waits out the backoff (doubling it) unless told to stop.
func (sl *slot) sleep(backoff *time.Duration) bool {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, maxBackoff)
	select {
	case <-t.C:
		return true
	case <-sl.stop:
		return false
	}
}

// shutdown retires the slot, drains its worker and waits until it exited.
func (sl *slot) shutdown() {
	sl.retire()
	select {
	case <-sl.stop:
	default:
		close(sl.stop)
	}
	<-sl.done
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
