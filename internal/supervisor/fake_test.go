package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// A fake spawner for lifecycle tests: each "worker" is a goroutine at the
// other end of a real hand-off socket pair, so the supervisor's side (proc,
// its messages, drain requests, kills) runs unchanged.

// fakeBehavior scripts one fake worker.
type fakeBehavior struct {
	spawnErr        error // start fails with this
	exitBeforeReady bool  // exits with status 1 without reporting ready
	neverReady      bool  // never reports ready (until killed)
	readyAfter      time.Duration
	onDrain         drainReaction
}

type drainReaction uint8

const (
	drainExits   drainReaction = iota // exits with status 0
	drainCrashes                      // exits with "exit status 2"
	drainIgnored                      // keeps running until killed
)

type fakeSpawner struct {
	t      *testing.T
	behave func(n int) fakeBehavior // by spawn number, from 1

	mu          sync.Mutex
	spawns      []time.Time   // guarded by mu
	workers     []*fakeWorker // guarded by mu
	starting    int           // guarded by mu; spawned, not ready yet
	maxStarting int           // guarded by mu; the most starting at once
	spawned     chan int      // spawn numbers, as they happen
}

func newFakeSpawner(t *testing.T, behave func(n int) fakeBehavior) *fakeSpawner {
	return &fakeSpawner{t: t, behave: behave, spawned: make(chan int, 100)}
}

var _ spawner = (*fakeSpawner)(nil)

func (f *fakeSpawner) start(spec wire.Spec) (*proc, error) {
	f.mu.Lock()
	f.spawns = append(f.spawns, time.Now())
	n := len(f.spawns)
	f.starting++
	f.maxStarting = max(f.maxStarting, f.starting)
	f.mu.Unlock()
	f.spawned <- n
	b := f.behave(n)
	if b.spawnErr != nil {
		return nil, b.spawnErr
	}
	hc, child, err := handoff.Pair()
	if err != nil {
		return nil, err
	}
	wc, err := handoff.FromFile(child)
	child.Close()
	if err != nil {
		hc.Close()
		return nil, err
	}
	w := &fakeWorker{pid: 1000 + n, hc: wc, exitCh: make(chan struct{}), drained: make(chan struct{}), spawner: f}
	f.mu.Lock()
	f.workers = append(f.workers, w)
	f.mu.Unlock()
	p := newProc(spec.Proxy.Name, w, spec, hc, time.Now(), discardLog())
	p.watch()
	go w.run(spec, b)
	return p, nil
}

func (f *fakeSpawner) worker(n int) *fakeWorker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.workers[n-1]
}

func (f *fakeSpawner) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.spawns)
}

// waitSpawn waits for spawn number n.
func (f *fakeSpawner) waitSpawn(n int) {
	f.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-f.spawned:
			if got >= n {
				return
			}
		case <-deadline:
			f.t.Fatalf("spawn %d never happened (%d so far)", n, f.count())
		}
	}
}

// fakeWorker is a process (for proc) and the worker's side of the socket.
type fakeWorker struct {
	pid int
	hc  *handoff.Conn

	mu      sync.Mutex
	err     error // guarded by mu; why it exited
	killed  bool  // guarded by mu
	exited  bool  // guarded by mu
	exitCh  chan struct{}
	drained chan struct{} // closed when the drain request arrived
	spawner *fakeSpawner
}

func (w *fakeWorker) Pid() int { return w.pid }

func (w *fakeWorker) Kill() error {
	w.mu.Lock()
	w.killed = true
	w.mu.Unlock()
	w.exit(errors.New("signal: killed"))
	return nil
}

func (w *fakeWorker) Wait() error {
	<-w.exitCh
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *fakeWorker) wasKilled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.killed
}

// exit ends the fake process once: its socket closes, as the kernel would.
func (w *fakeWorker) exit(err error) {
	w.mu.Lock()
	if w.exited {
		w.mu.Unlock()
		return
	}
	w.exited, w.err = true, err
	w.mu.Unlock()
	w.hc.Close()
	close(w.exitCh)
}

func (w *fakeWorker) run(spec wire.Spec, b fakeBehavior) {
	if b.exitBeforeReady {
		w.exit(errors.New("exit status 1"))
		return
	}
	if !b.neverReady {
		time.Sleep(b.readyAfter)
		w.spawner.mu.Lock()
		w.spawner.starting--
		w.spawner.mu.Unlock()
		ready, _ := json.Marshal(wire.Ready{Protocol: wire.Protocol, PID: w.pid, Proxy: spec.Proxy.Name, BuildID: "fake"})
		if err := w.hc.Send(wire.KindReady, ready); err != nil {
			return
		}
	}
	for {
		m, err := w.hc.Recv()
		if err != nil {
			return
		}
		if m.File != nil {
			m.File.Close()
		}
		if m.Kind != wire.KindDrain {
			continue
		}
		select {
		case <-w.drained:
		default:
			close(w.drained)
		}
		switch b.onDrain {
		case drainExits:
			w.exit(nil)
		case drainCrashes:
			w.exit(errors.New("exit status 2"))
		case drainIgnored:
		}
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// logRecorder keeps the slot's log records, for tests that check what it
// said (the restart back-off it announced).
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// attrs returns attribute key of every record with message msg.
func (l *logRecorder) attrs(msg, key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.recs {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value.String())
			}
			return true
		})
	}
	return out
}

// testTiming is short enough for tests, with the drain killed at 300ms.
func testTiming() slotTiming {
	return slotTiming{
		minBackoff: 10 * time.Millisecond, maxBackoff: 40 * time.Millisecond, stableAfter: time.Hour,
		readyTimeout: 5 * time.Second,
		drain:        wire.DrainSchedule{Timeout: 100 * time.Millisecond, Close: 200 * time.Millisecond, Kill: 300 * time.Millisecond},
	}
}

func newTestSlot(sp spawner, timing slotTiming, log *slog.Logger) *slot {
	spec := wire.Spec{Proxy: &config.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}}, DrainTimeout: timing.drain.Timeout}
	sl := newSlot(spec, sp, log)
	sl.timing = timing
	return sl
}

func (sl *slot) getState() slotState {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.state
}

// waitFirst waits for the slot's first start to settle.
func waitFirst(t *testing.T, sl *slot) {
	t.Helper()
	select {
	case <-sl.first:
	case <-time.After(10 * time.Second):
		t.Fatal("first start never settled")
	}
}

// shutdownWithin stops the slot and fails if that takes longer than d.
func shutdownWithin(t *testing.T, sl *slot, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { sl.shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("shutdown took more than %v (state %v)", d, sl.getState())
	}
	return time.Since(start)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func slogFrom(h slog.Handler) *slog.Logger { return slog.New(h) }
