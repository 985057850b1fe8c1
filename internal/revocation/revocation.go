// Package revocation mirrors the store's revocation log in a worker's
// memory, so that the bearer check, which runs on every request, decides
// "revoked?" with map lookups while revocations made by any worker reach
// every other one within a poll interval.
//
// New entries are announced (Notifier), so they arrive at once and the
// mirror polls rarely: by PostgreSQL to every node (LISTEN/NOTIFY), and for
// SQLite by the supervisor, which relays each worker's revocations to all.
// While the announcements are down it polls every Poll again. The
// mirror keeps what it has when the log cannot be read: a node cut off
// from the database still refuses every token revoked before.
package revocation

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/store"
)

// Poll is how often the log is read without notifications: revocations take
// effect in every worker within a second.
const Poll = 250 * time.Millisecond

// NotifiedPoll is how often the log is read while notifications arrive: a
// safety net only, each notification triggers a read at once.
const NotifiedPoll = 5 * time.Second

// Notifier is implemented by logs that announce new entries. Notify
// listens until ctx ends; wake receives when entries may have been added
// (and after a reconnection); live reports whether announcements arrive
// right now.
type Notifier interface {
	Notify(ctx context.Context) (wake <-chan struct{}, live func() bool)
}

// Log is the part of the store the mirror reads.
type Log interface {
	Revocations(ctx context.Context, after int64, limit int) ([]store.Revocation, error)
}

type key struct {
	kind  store.RevocationKind
	value string
}

// Mirror is the in-memory copy. It is safe for concurrent use.
type Mirror struct {
	log    Log
	notify Notifier // nil: poll every Poll

	mu      sync.RWMutex
	after   int64               // guarded by mu
	entries map[key]time.Time   // guarded by mu; → expiry of the entry
	watches map[*watch]struct{} // guarded by mu
}

// watch is one Watch: a principal whose open stream ends when a
// revocation covers it.
type watch struct {
	who *identity.Principal
	end func()
}

// New returns an empty mirror of log; call Load or Run to fill it. n
// announces new entries to Run; when n is nil, log does if it is a
// Notifier (PostgreSQL), and otherwise Run polls.
func New(log Log, n Notifier) *Mirror {
	if n == nil {
		n, _ = log.(Notifier)
	}
	return &Mirror{log: log, notify: n, entries: map[key]time.Time{}}
}

// Covers reports whether a revocation covers the token of who: its jti, its
// grant or its client.
func (m *Mirror) Covers(who *identity.Principal) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.coversLocked(who)
}

// Watch calls end, once, when a revocation covering who's token is read:
// a stream opened with the token must not outlive it (the bearer check
// ran once, when the stream began). end runs at once if one is known
// already, and otherwise on the goroutine that reads the log; it must not
// block. stop ends the watch.
func (m *Mirror) Watch(who *identity.Principal, end func()) (stop func()) {
	w := &watch{who: who, end: end}
	m.mu.Lock()
	covered := m.coversLocked(who)
	if !covered {
		if m.watches == nil {
			m.watches = map[*watch]struct{}{}
		}
		m.watches[w] = struct{}{}
	}
	m.mu.Unlock()
	if covered {
		end()
		return func() {}
	}
	return func() {
		m.mu.Lock()
		delete(m.watches, w)
		m.mu.Unlock()
	}
}

func (m *Mirror) coversLocked(who *identity.Principal) bool {
	if len(m.entries) == 0 {
		return false
	}
	_, a := m.entries[key{store.RevokeToken, who.TokenID}]
	_, b := m.entries[key{store.RevokeGrant, who.GrantID}]
	_, c := m.entries[key{store.RevokeClient, who.ClientID}]
	return a || b || c
}

// Run loads the log until ctx ends: every Poll, or with a Notifier, on
// every notification and every NotifiedPoll while notifications are live.
func (m *Mirror) Run(ctx context.Context, log *slog.Logger) {
	var wake <-chan struct{}
	live := func() bool { return false }
	if m.notify != nil {
		wake, live = m.notify.Notify(ctx)
	}
	// A timer set for each wait rather than a ticker: while notifications
	// are live an idle worker sleeps NotifiedPoll, instead of waking four
	// times a second to find it has nothing to do (at 500 proxies, 2,000
	// wake-ups a second on an idle host).
	t := time.NewTimer(Poll)
	defer t.Stop()
	failing := false
	for {
		if err := m.Load(ctx); err != nil && ctx.Err() == nil {
			// Once per outage, not four times a second.
			if !failing {
				log.Warn("reading revocations; keeping the ones already read", "err", err)
			}
			failing = true
		} else if failing && ctx.Err() == nil {
			log.Info("reading revocations again")
			failing = false
		}
		// Not live (no notifier, a write within its active window, a
		// broken watch, a failing store): every Poll. Live turns false
		// only with a notification, which ends the long wait at once.
		d := Poll
		if live() && !failing {
			d = NotifiedPoll
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
	}
}

// Load reads the entries added since the last Load and drops expired ones.
func (m *Mirror) Load(ctx context.Context) error {
	const batchSize = 1000
	for {
		m.mu.RLock()
		after := m.after
		m.mu.RUnlock()
		batch, err := m.log.Revocations(ctx, after, batchSize)
		if err != nil {
			return err
		}
		now := time.Now()
		m.mu.Lock()
		for _, e := range batch {
			m.entries[key{e.Kind, e.Value}] = e.ExpiresAt
			m.after = e.Seq
		}
		for k, exp := range m.entries {
			if now.After(exp) {
				delete(m.entries, k)
			}
		}
		var ended []*watch
		if len(batch) > 0 {
			for w := range m.watches {
				if m.coversLocked(w.who) {
					ended = append(ended, w)
					delete(m.watches, w)
				}
			}
		}
		m.mu.Unlock()
		for _, w := range ended {
			w.end()
		}
		if len(batch) < batchSize {
			return nil
		}
	}
}
