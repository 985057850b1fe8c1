package supervisor

import (
	"fmt"
	"time"
)

// The lifecycle of a proxy slot, in one place: its states, the events that
// move it, and the one table of transitions. slot.run performs each
// state's work and looks the next state up here; a pair missing from
// the table is a bug and stops the slot loudly rather than guessing. Each
// state's work is one method: starting, ready, backingOff, draining.
//
//	starting --ready---------> ready   --stop----------> draining --drained--> stopped
//	starting --start failed--> backoff --backoff over--> starting
//	ready    --exited--------> backoff
//	starting --stop----------> stopped   (a worker not ready yet is killed)
//	backoff  --stop----------> stopped
//
// Reload and upgrade act on slots from outside: a reload starts fresh
// slots and stops the replaced ones (ready → draining → stopped); an
// upgrade hands the ready and draining workers to the next binary, which
// adopts them (a slot whose first worker is adopted starts in starting,
// and its step finds the worker already ready).

type slotState uint8

const (
	// starting: a worker is being spawned, then awaited until it reports
	// ready (at most timing.readyTimeout).
	stateStarting slotState = iota
	// ready: the worker serves; connections are delivered to it.
	stateReady
	// backoff: the last worker failed to start or died; the next starts
	// after the backoff, which doubles up to maxBackoff and starts over
	// after a worker that ran stableAfter.
	stateBackoff
	// draining: told to stop with a ready worker: no connection is sent
	// any more, the worker was asked to drain, and is killed at the
	// schedule's Kill offset if it has not exited.
	stateDraining
	// stopped: no worker, for good. run returns.
	stateStopped
)

func (s slotState) String() string {
	switch s {
	case stateStarting:
		return "starting"
	case stateReady:
		return "ready"
	case stateBackoff:
		return "backoff"
	case stateDraining:
		return "draining"
	case stateStopped:
		return "stopped"
	}
	return fmt.Sprintf("slotState(%d)", s)
}

type slotEvent uint8

const (
	evReady       slotEvent = iota // the new worker reported ready
	evStartFailed                  // spawn failed, the worker exited before ready, or was not ready in time
	evExited                       // the ready worker exited
	evBackoffOver                  // the backoff has passed
	evStop                         // shutdown was asked for
	evDrained                      // the draining worker has exited (on its own or killed)
)

func (e slotEvent) String() string {
	switch e {
	case evReady:
		return "ready"
	case evStartFailed:
		return "start failed"
	case evExited:
		return "exited"
	case evBackoffOver:
		return "backoff over"
	case evStop:
		return "stop"
	case evDrained:
		return "drained"
	}
	return fmt.Sprintf("slotEvent(%d)", e)
}

// slotTransitions is every allowed transition.
var slotTransitions = map[slotState]map[slotEvent]slotState{
	stateStarting: {evReady: stateReady, evStartFailed: stateBackoff, evStop: stateStopped},
	stateReady:    {evExited: stateBackoff, evStop: stateDraining},
	stateBackoff:  {evBackoffOver: stateStarting, evStop: stateStopped},
	stateDraining: {evDrained: stateStopped},
}

// nextState looks a transition up.
func nextState(s slotState, e slotEvent) (slotState, error) {
	if n, ok := slotTransitions[s][e]; ok {
		return n, nil
	}
	return s, fmt.Errorf("slot: no transition from %v on %v", s, e)
}

// run keeps a worker going until stop is closed: the state machine's loop.
func (sl *slot) run() {
	defer close(sl.done)
	defer sl.settleFirst(false, "stopped before it was ready")
	var (
		p       *proc // the worker of the current state
		gen     uint64
		backoff = sl.timing.minBackoff
	)
	for state := stateStarting; state != stateStopped; {
		var ev slotEvent
		switch state {
		case stateStarting:
			gen++
			p, ev = sl.starting(gen)
		case stateReady:
			ev = sl.ready(p, &backoff)
		case stateBackoff:
			ev = sl.backingOff(&backoff)
		case stateDraining:
			ev = sl.draining(p)
		}
		next, err := nextState(state, ev)
		if err != nil {
			// Unreachable unless the table and the steps disagree: stop
			// rather than run a worker nobody tracks.
			sl.log.Error("slot lifecycle broken; stopping", "err", err)
			if p != nil {
				p.kill()
				<-p.exited
			}
			next = stateStopped
		}
		sl.log.Debug("slot transition", "from", state.String(), "event", ev.String(), "to", next.String())
		state = next
		sl.mu.Lock()
		sl.state = state
		sl.mu.Unlock()
		if state == stateReady {
			// Only now: whoever waits for the first start must find the
			// slot ready, not still starting.
			sl.settleFirst(true, "")
		}
	}
}

// starting spawns the worker of generation gen (or takes the adopted one)
// and waits for it to be ready.
func (sl *slot) starting(gen uint64) (*proc, slotEvent) {
	spec := sl.spec
	spec.Generation = gen
	p := sl.adopted
	sl.adopted = nil
	if p == nil {
		var err error
		if p, err = sl.spawner.start(spec); err != nil {
			sl.log.Error("cannot start worker", "err", err)
			sl.settleFirst(false, err.Error())
			if sl.stopped() {
				return nil, evStop
			}
			return nil, evStartFailed
		}
	}
	sl.mu.Lock()
	sl.last = p
	sl.mu.Unlock()
	if reason := sl.awaitReady(p); reason != "" {
		sl.settleFirst(false, reason)
		if sl.stopped() {
			return nil, evStop
		}
		return nil, evStartFailed
	}
	info := p.info()
	sl.log.Info("worker ready", "pid", p.pid(), "build_id", info.BuildID, "version", info.Version, "generation", gen)
	sl.setCur(nil, p)
	return p, evReady
}

// ready serves until the worker exits or the slot is stopped.
func (sl *slot) ready(p *proc, backoff *time.Duration) slotEvent {
	select {
	case <-p.exited:
		sl.setCur(p, nil)
		ran := time.Since(p.started)
		if ran > sl.timing.stableAfter {
			*backoff = sl.timing.minBackoff
		}
		sl.log.Error("worker died; restarting", "pid", p.pid(), "err", describeExit(p.exitErr()), "ran", ran.Round(time.Millisecond), "retry_in", *backoff)
		return evExited
	case <-sl.stop:
		return evStop
	}
}

// backingOff waits out the backoff (doubling it) unless told to stop.
func (sl *slot) backingOff(backoff *time.Duration) slotEvent {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, sl.timing.maxBackoff)
	select {
	case <-t.C:
		return evBackoffOver
	case <-sl.stop:
		return evStop
	}
}

// draining detaches the worker, asks it to drain and waits for its exit,
// killing it at the schedule's Kill offset.
func (sl *slot) draining(p *proc) slotEvent {
	sl.retire()
	sl.setCur(p, nil)
	sl.log.Info("draining worker", "pid", p.pid())
	p.drain(sl.timing.drain)
	sl.log.Info("worker exited", "pid", p.pid(), "err", describeExit(p.exitErr()))
	return evDrained
}

func (sl *slot) stopped() bool {
	select {
	case <-sl.stop:
		return true
	default:
		return false
	}
}

// awaitReady waits for p to become ready, and kills it if it does not. It
// returns why p failed, or "" when it is ready.
func (sl *slot) awaitReady(p *proc) string {
	t := time.NewTimer(sl.timing.readyTimeout)
	defer t.Stop()
	select {
	case <-p.readyCh:
		return ""
	case <-p.exited:
		reason := exitedBeforeReady(p)
		sl.log.Error(reason, "pid", p.pid())
		return reason
	case <-t.C:
		sl.log.Error("worker not ready in time; killing it", "pid", p.pid(), "timeout", sl.timing.readyTimeout.String())
		p.kill()
		<-p.exited
		return "worker not ready within " + sl.timing.readyTimeout.String()
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
