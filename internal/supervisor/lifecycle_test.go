package supervisor

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// TestSlotTransitionTable: the table is complete where it must be and
// refuses the rest. Every state but stopped has a way to stopped; stop is
// accepted wherever a worker is not already being stopped; stopped is
// final; and a pair not in the table is an error, never a silent guess.
func TestSlotTransitionTable(t *testing.T) {
	states := []slotState{stateStarting, stateReady, stateBackoff, stateDraining, stateStopped}
	events := []slotEvent{evReady, evStartFailed, evExited, evBackoffOver, evStop, evDrained}
	if len(slotTransitions[stateStopped]) != 0 {
		t.Errorf("stopped has transitions: %v", slotTransitions[stateStopped])
	}
	for _, s := range states[:4] {
		// Reachability of stopped by breadth-first search.
		seen := map[slotState]bool{s: true}
		queue := []slotState{s}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			for _, n := range slotTransitions[cur] {
				if !seen[n] {
					seen[n] = true
					queue = append(queue, n)
				}
			}
		}
		if !seen[stateStopped] {
			t.Errorf("stopped is unreachable from %v", s)
		}
		if _, ok := slotTransitions[s][evStop]; !ok && s != stateDraining {
			t.Errorf("%v does not accept stop", s)
		}
	}
	for _, s := range states {
		for _, e := range events {
			n, err := nextState(s, e)
			want, ok := slotTransitions[s][e]
			if ok != (err == nil) || (ok && n != want) {
				t.Errorf("nextState(%v, %v) = %v, %v", s, e, n, err)
			}
		}
	}
	if _, err := nextState(stateReady, evReady); err == nil || err.Error() != "slot: no transition from ready on ready" {
		t.Errorf("a missing transition reads %v", err)
	}
}

// TestSlotStartServeDrain: the ordinary life: the worker starts, serves,
// is asked to drain when the slot stops, exits, and is not restarted.
func TestSlotStartServeDrain(t *testing.T) {
	fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{} })
	sl := newTestSlot(fs, testTiming(), discardLog())
	go sl.run()
	waitFirst(t, sl)
	if !sl.firstOK || sl.current() == nil || sl.getState() != stateReady {
		t.Fatalf("first start: ok=%v err=%q state %v", sl.firstOK, sl.firstErr, sl.getState())
	}
	shutdownWithin(t, sl, 5*time.Second)
	w := fs.worker(1)
	select {
	case <-w.drained:
	default:
		t.Error("the worker was never asked to drain")
	}
	if w.wasKilled() || sl.getState() != stateStopped || fs.count() != 1 || sl.current() != nil {
		t.Errorf("after shutdown: killed=%v state %v spawns %d", w.wasKilled(), sl.getState(), fs.count())
	}
}

// TestSlotNewWorkerFailsReadiness: a worker that fails to become ready is
// reported with one cause, and the slot keeps trying in the background.
func TestSlotNewWorkerFailsReadiness(t *testing.T) {
	t.Run("exits before ready", func(t *testing.T) {
		fs := newFakeSpawner(t, func(n int) fakeBehavior { return fakeBehavior{exitBeforeReady: n == 1} })
		sl := newTestSlot(fs, testTiming(), discardLog())
		go sl.run()
		defer sl.shutdown()
		waitFirst(t, sl)
		if sl.firstOK || sl.firstErr != "worker exited before it was ready: exit status 1" {
			t.Errorf("first start: ok=%v err=%q", sl.firstOK, sl.firstErr)
		}
		fs.waitSpawn(2)
		waitFor(t, "the second worker serves", func() bool { return sl.current() != nil })
	})
	t.Run("not ready in time", func(t *testing.T) {
		fs := newFakeSpawner(t, func(n int) fakeBehavior { return fakeBehavior{neverReady: n == 1} })
		timing := testTiming()
		timing.readyTimeout = 100 * time.Millisecond
		sl := newTestSlot(fs, timing, discardLog())
		go sl.run()
		defer sl.shutdown()
		waitFirst(t, sl)
		if sl.firstOK || sl.firstErr != "worker not ready within 100ms" {
			t.Errorf("first start: ok=%v err=%q", sl.firstOK, sl.firstErr)
		}
		if !fs.worker(1).wasKilled() {
			t.Error("the worker that was not ready was not killed")
		}
		waitFor(t, "the second worker serves", func() bool { return sl.current() != nil })
	})
	t.Run("spawn fails", func(t *testing.T) {
		fs := newFakeSpawner(t, func(n int) fakeBehavior {
			if n == 1 {
				return fakeBehavior{spawnErr: errors.New("starting worker alpha: no such file")}
			}
			return fakeBehavior{}
		})
		sl := newTestSlot(fs, testTiming(), discardLog())
		go sl.run()
		defer sl.shutdown()
		waitFirst(t, sl)
		if sl.firstOK || sl.firstErr != "starting worker alpha: no such file" {
			t.Errorf("first start: ok=%v err=%q", sl.firstOK, sl.firstErr)
		}
		waitFor(t, "the second worker serves", func() bool { return sl.current() != nil })
	})
}

// TestSlotStopWhileStarting: a slot stopped while its worker is not ready
// kills that worker and stops at once, without waiting for readiness.
func TestSlotStopWhileStarting(t *testing.T) {
	fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{neverReady: true} })
	sl := newTestSlot(fs, testTiming(), discardLog())
	go sl.run()
	fs.waitSpawn(1)
	shutdownWithin(t, sl, 2*time.Second)
	if !fs.worker(1).wasKilled() || sl.firstOK || sl.firstErr != "stopped before it was ready" || fs.count() != 1 {
		t.Errorf("killed=%v ok=%v err=%q spawns=%d", fs.worker(1).wasKilled(), sl.firstOK, sl.firstErr, fs.count())
	}
}

// TestSlotCrashDuringDrain: a worker that dies while draining ends the
// drain there: no restart, no kill, no waiting for the deadline.
func TestSlotCrashDuringDrain(t *testing.T) {
	fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{onDrain: drainCrashes} })
	sl := newTestSlot(fs, testTiming(), discardLog())
	go sl.run()
	waitFirst(t, sl)
	took := shutdownWithin(t, sl, 5*time.Second)
	w := fs.worker(1)
	if w.wasKilled() {
		t.Error("the crashed worker was killed")
	}
	if took >= sl.timing.drain.Kill {
		t.Errorf("shutdown took %v: waited for the kill deadline %v after the worker had died", took, sl.timing.drain.Kill)
	}
	time.Sleep(3 * sl.timing.maxBackoff) // a restart would happen by now
	if fs.count() != 1 || sl.getState() != stateStopped {
		t.Errorf("after a crash during drain: %d spawns, state %v", fs.count(), sl.getState())
	}
}

// TestSlotWorkerIgnoresDrainDeadline: a worker that never exits after the
// drain request is killed at the schedule's Kill offset, not earlier.
func TestSlotWorkerIgnoresDrainDeadline(t *testing.T) {
	fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{onDrain: drainIgnored} })
	sl := newTestSlot(fs, testTiming(), discardLog())
	go sl.run()
	waitFirst(t, sl)
	took := shutdownWithin(t, sl, 10*time.Second)
	if !fs.worker(1).wasKilled() {
		t.Fatal("the worker ignoring its drain deadline was not killed")
	}
	if took < sl.timing.drain.Kill {
		t.Errorf("killed after %v, before the Kill offset %v", took, sl.timing.drain.Kill)
	}
	if sl.getState() != stateStopped || fs.count() != 1 {
		t.Errorf("state %v, %d spawns", sl.getState(), fs.count())
	}
}

// TestSlotRestartBackoff: a worker that keeps dying is restarted after a
// back-off that doubles up to the maximum; a worker that ran longer than
// stableAfter resets it. The announced back-off is checked exactly, the
// real gaps as lower bounds (a busy machine only makes them longer).
func TestSlotRestartBackoff(t *testing.T) {
	// crashWhenReady lets worker n become ready, waits ran, then makes it
	// die, and returns when it died; a worker dying before the slot saw
	// it ready would be a failed start, not a restart.
	crashWhenReady := func(t *testing.T, fs *fakeSpawner, sl *slot, n int, ran time.Duration) time.Time {
		fs.waitSpawn(n)
		waitFor(t, "worker ready", func() bool { p := sl.current(); return p != nil && p.pid() == 1000+n })
		time.Sleep(ran)
		fs.worker(n).exit(errors.New("exit status 3"))
		return time.Now()
	}
	t.Run("doubles", func(t *testing.T) {
		fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{} })
		rec := &logRecorder{}
		sl := newTestSlot(fs, testTiming(), slogFrom(rec))
		go sl.run()
		defer sl.shutdown()
		var died []time.Time
		for n := 1; n <= 5; n++ {
			died = append(died, crashWhenReady(t, fs, sl, n, 0))
		}
		fs.waitSpawn(6)
		got := rec.attrs("worker died; restarting", "retry_in")
		want := []string{"10ms", "20ms", "40ms", "40ms", "40ms"}
		if !slices.Equal(got, want) {
			t.Errorf("announced back-offs %q, want %q", got, want)
		}
		fs.mu.Lock()
		defer fs.mu.Unlock()
		for i, b := range []time.Duration{10, 20, 40, 40, 40} {
			if gap := fs.spawns[i+1].Sub(died[i]); gap < b*time.Millisecond {
				t.Errorf("restart %d %v after the death, before its back-off %vms", i+1, gap, b)
			}
		}
	})
	t.Run("resets after a stable run", func(t *testing.T) {
		fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{} })
		rec := &logRecorder{}
		timing := testTiming()
		timing.stableAfter = 20 * time.Millisecond
		sl := newTestSlot(fs, timing, slogFrom(rec))
		go sl.run()
		defer sl.shutdown()
		for n := 1; n <= 3; n++ {
			crashWhenReady(t, fs, sl, n, 30*time.Millisecond)
		}
		fs.waitSpawn(4)
		got := rec.attrs("worker died; restarting", "retry_in")
		if want := []string{"10ms", "10ms", "10ms"}; !slices.Equal(got, want) {
			t.Errorf("announced back-offs %q, want %q", got, want)
		}
	})
	t.Run("stop during back-off", func(t *testing.T) {
		fs := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{spawnErr: errors.New("no binary")} })
		timing := testTiming()
		timing.minBackoff, timing.maxBackoff = time.Hour, time.Hour
		sl := newTestSlot(fs, timing, discardLog())
		go sl.run()
		fs.waitSpawn(1)
		waitFor(t, "back-off", func() bool { return sl.getState() == stateBackoff })
		shutdownWithin(t, sl, 2*time.Second)
		if fs.count() != 1 {
			t.Errorf("%d spawns", fs.count())
		}
	})
}

// TestStartAllBounded: a reload of many proxies starts at most
// startConcurrency workers at a time, so each gets ready within
// readyTimeout instead of all sharing the CPUs at once; every slot still
// starts, and startAll returns when all first starts settled.
func TestStartAllBounded(t *testing.T) {
	sp := newFakeSpawner(t, func(int) fakeBehavior { return fakeBehavior{readyAfter: 5 * time.Millisecond} })
	n := 3*startConcurrency() + 1
	slots := map[string]*slot{}
	for i := range n {
		spec := wire.Spec{Proxy: &config.Proxy{Name: fmt.Sprintf("p%03d", i), Hostnames: []string{fmt.Sprintf("p%03d.test", i)}}}
		sl := newSlot(spec, sp, discardLog())
		sl.timing = testTiming()
		slots[spec.Proxy.Name] = sl
	}
	startAll(slots)
	for name, sl := range slots {
		if !sl.firstOK || sl.getState() != stateReady {
			t.Errorf("%s: first start ok=%v, state %s; want ready", name, sl.firstOK, sl.getState())
		}
	}
	sp.mu.Lock()
	spawns, most := len(sp.spawns), sp.maxStarting
	sp.mu.Unlock()
	if spawns != n {
		t.Errorf("%d spawns for %d slots", spawns, n)
	}
	if most > startConcurrency() || most < 2 {
		t.Errorf("at most %d workers were starting at once; want 2..%d", most, startConcurrency())
	}
	for _, sl := range slots {
		sl.shutdown()
	}
}
