package supervisor

import (
	"sync"

	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// revocationRelay tells every worker when a revocation was committed to
// the SQLite store: the worker that wrote it (or the admin command, over
// the control socket) announces it, and the relay sends KindRevoked to all
// live workers, which read the revocation log at once.
//
// Without it each worker polled the log four times a second, or watched the
// database with inotify: at 500 proxies 372 workers were past the default
// limit of 128 inotify instances and polled, 36 % of a core on an idle
// host, and a watch woke on every write to the database, not only on
// revocations. An announcement is sent after the commit, so the read it
// triggers sees the revocation.
//
// The PostgreSQL store announces revocations to every node itself
// (LISTEN/NOTIFY); the relay carries only SQLite's.
type revocationRelay struct {
	mu    sync.Mutex
	procs map[*proc]struct{} // guarded by mu; every live worker, ready or not
	kick  chan struct{}      // one pending broadcast
}

func newRevocationRelay() *revocationRelay {
	return &revocationRelay{procs: map[*proc]struct{}{}, kick: make(chan struct{}, 1)}
}

// add includes p in every broadcast until remove: from its start, so a
// worker whose first read of the log came before a commit still hears of
// it before it is ready.
func (r *revocationRelay) add(p *proc) {
	r.mu.Lock()
	r.procs[p] = struct{}{}
	r.mu.Unlock()
}

func (r *revocationRelay) remove(p *proc) {
	r.mu.Lock()
	delete(r.procs, p)
	r.mu.Unlock()
}

// announce asks for a broadcast. Announcements that arrive while one is
// being sent are folded into one more, which starts after all of them: a
// revocation admin command revoking 100 grants costs two rounds, not 100,
// and each announcement is followed by a round that began after it.
func (r *revocationRelay) announce() {
	if r == nil {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run broadcasts until done is closed.
func (r *revocationRelay) run(done <-chan struct{}) {
	if r == nil {
		return
	}
	var targets []*proc
	for {
		select {
		case <-done:
			return
		case <-r.kick:
		}
		r.mu.Lock()
		targets = targets[:0]
		for p := range r.procs {
			targets = append(targets, p)
		}
		r.mu.Unlock()
		for _, p := range targets {
			// A worker that is gone has closed its end: nothing to tell.
			// One that stopped reading is skipped, not waited for: the
			// others must not wait with it (it reads the log by itself
			// every revocation.NotifiedPoll).
			if err := p.hc.TrySend(wire.KindRevoked, nil); err != nil && !handoff.IsClosed(err) {
				p.log.Warn("relaying a revocation", "err", err)
			}
		}
		clear(targets) // no exited worker kept alive by the slice
	}
}
