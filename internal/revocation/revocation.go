// Package revocation mirrors the store's revocation log in a worker's
// memory, so that the bearer check, which runs on every request, decides
// "revoked?" with map lookups while revocations made by any worker reach
// every other one within a poll interval.
package revocation

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/store"
)

// Poll is how often the log is read: revocations take effect in every
// worker within a second.
const Poll = 250 * time.Millisecond

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
	log Log

	mu      sync.RWMutex
	after   int64             // guarded by mu
	entries map[key]time.Time // guarded by mu; → expiry of the entry
}

// New returns an empty mirror of log; call Load or Run to fill it.
func New(log Log) *Mirror {
	return &Mirror{log: log, entries: map[key]time.Time{}}
}

// Covers reports whether a revocation covers the token of who: its jti, its
// grant or its client.
func (m *Mirror) Covers(who *identity.Principal) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.entries) == 0 {
		return false
	}
	_, a := m.entries[key{store.RevokeToken, who.TokenID}]
	_, b := m.entries[key{store.RevokeGrant, who.GrantID}]
	_, c := m.entries[key{store.RevokeClient, who.ClientID}]
	return a || b || c
}

// Run loads the log every Poll until ctx ends.
func (m *Mirror) Run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(Poll)
	defer t.Stop()
	for {
		if err := m.Load(ctx); err != nil && ctx.Err() == nil {
			log.Warn("reading revocations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
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
		m.mu.Unlock()
		if len(batch) < batchSize {
			return nil
		}
	}
}
