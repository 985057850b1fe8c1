package supervisor

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/dispatch"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// Restart backoff for a worker that dies, and how long things may take;
// the defaults of a slot's timing.
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

// slotTiming is how long a slot waits for what; tests shorten it.
type slotTiming struct {
	minBackoff, maxBackoff time.Duration
	stableAfter            time.Duration
	readyTimeout           time.Duration
	// drain is the drain schedule; the slot enforces its Kill offset.
	drain wire.DrainSchedule
}

func defaultTiming(spec wire.Spec) slotTiming {
	return slotTiming{minBackoff: minBackoff, maxBackoff: maxBackoff, stableAfter: stableAfter,
		readyTimeout: readyTimeout, drain: spec.Drain()}
}

// slot keeps one proxy's worker running: it starts it, restarts it with
// backoff when it dies, and drains it when told to stop. It is the
// dispatch.Target for that proxy's hostnames. Its lifecycle is the state
// machine in lifecycle.go; run drives it.
type slot struct {
	spec    wire.Spec
	spawner spawner
	log     *slog.Logger
	timing  slotTiming

	// sendMu orders hand-offs before the drain message: Deliver holds it
	// shared while sending, retire holds it exclusively while it detaches
	// the worker, so no connection is sent after the worker was told to
	// drain.
	sendMu  sync.RWMutex
	mu      sync.Mutex
	state   slotState     // guarded by mu
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

func newSlot(spec wire.Spec, sp spawner, log *slog.Logger) *slot {
	return &slot{
		spec:    spec,
		timing:  defaultTiming(spec),
		spawner: sp,
		log:     log.With("proxy", spec.Proxy.Name),
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		first:   make(chan struct{}),
	}
}

func (sl *slot) Name() string { return sl.spec.Proxy.Name }

var errNotRunning = errors.New("worker not running")

// Deliver hands a connection to the current worker, waiting briefly when
// the worker is being restarted so clients see a delay, not an error. A
// retired slot answers dispatch.ErrRetired, and the dispatcher routes the
// connection again with the current table.
func (sl *slot) Deliver(kind wire.Kind, c dispatch.Conn, header, peeked []byte) error {
	// The timer is armed only when there is a wait: a ready worker (every
	// connection but those of a restart) takes the connection at once.
	var deadline <-chan time.Time
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
		if deadline == nil {
			t := time.NewTimer(deliverWait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-changed:
		case <-deadline:
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
