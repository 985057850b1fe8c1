package revocation

import (
	"context"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/store"
)

// fakeLog is a revocation log in memory, paged like the store's.
type fakeLog []store.Revocation

func (f fakeLog) Revocations(_ context.Context, after int64, limit int) ([]store.Revocation, error) {
	var out []store.Revocation
	for _, e := range f {
		if e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func TestMirror(t *testing.T) {
	future, past := time.Now().Add(time.Hour), time.Now().Add(-time.Second)
	var log fakeLog
	// More than one batch, so paging is exercised.
	for i := range 2500 {
		log = append(log, store.Revocation{Seq: int64(i + 1), Kind: store.RevokeToken, Value: "filler", ExpiresAt: future})
	}
	log = append(log,
		store.Revocation{Seq: 2501, Kind: store.RevokeToken, Value: "jti-1", ExpiresAt: future},
		store.Revocation{Seq: 2502, Kind: store.RevokeGrant, Value: "grant-2", ExpiresAt: future},
		store.Revocation{Seq: 2503, Kind: store.RevokeClient, Value: "client-3", ExpiresAt: future},
		store.Revocation{Seq: 2504, Kind: store.RevokeToken, Value: "expired", ExpiresAt: past},
	)
	m := New(log, nil)
	if m.Covers(&identity.Principal{TokenID: "jti-1"}) {
		t.Fatal("covered before any Load")
	}
	if err := m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		who  identity.Principal
		want bool
	}{
		{identity.Principal{TokenID: "jti-1", GrantID: "g", ClientID: "c"}, true},
		{identity.Principal{TokenID: "t", GrantID: "grant-2", ClientID: "c"}, true},
		{identity.Principal{TokenID: "t", GrantID: "g", ClientID: "client-3"}, true},
		{identity.Principal{TokenID: "expired", GrantID: "g", ClientID: "c"}, false},
		// A value revoked as one kind does not cover another kind.
		{identity.Principal{TokenID: "grant-2", GrantID: "jti-1", ClientID: "c"}, false},
		{identity.Principal{TokenID: "t", GrantID: "g", ClientID: "c"}, false},
	} {
		if got := m.Covers(&tc.who); got != tc.want {
			t.Errorf("Covers(%+v) = %v, want %v", tc.who, got, tc.want)
		}
	}
	if m.after != 2504 {
		t.Errorf("cursor %d after loading, want 2504", m.after)
	}
}

// growingLog is a fakeLog a test appends to between Loads.
type growingLog struct{ entries fakeLog }

func (g *growingLog) Revocations(ctx context.Context, after int64, limit int) ([]store.Revocation, error) {
	return g.entries.Revocations(ctx, after, limit)
}

// TestWatch: a watched principal's end runs once, when a revocation that
// covers it is read (its token, grant or client), at once when one is known
// already, never after stop, and not for revocations of others.
func TestWatch(t *testing.T) {
	future := time.Now().Add(time.Hour)
	log := &growingLog{entries: fakeLog{{Seq: 1, Kind: store.RevokeToken, Value: "old-jti", ExpiresAt: future}}}
	m := New(log, nil)
	ctx := context.Background()
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	count := func() (*int, func()) {
		n := new(int)
		return n, func() { *n++ }
	}
	already, end := count()
	m.Watch(&identity.Principal{TokenID: "old-jti", GrantID: "g0", ClientID: "c0"}, end)
	if *already != 1 {
		t.Errorf("a principal revoked before the watch: end ran %d times, want 1 at once", *already)
	}

	byToken, endToken := count()
	byGrant, endGrant := count()
	byClient, endClient := count()
	other, endOther := count()
	stopped, endStopped := count()
	m.Watch(&identity.Principal{TokenID: "jti-1", GrantID: "g1", ClientID: "c1"}, endToken)
	m.Watch(&identity.Principal{TokenID: "jti-2", GrantID: "g2", ClientID: "c2"}, endGrant)
	m.Watch(&identity.Principal{TokenID: "jti-3", GrantID: "g3", ClientID: "c3"}, endClient)
	m.Watch(&identity.Principal{TokenID: "jti-4", GrantID: "g4", ClientID: "c4"}, endOther)
	stop := m.Watch(&identity.Principal{TokenID: "jti-5", GrantID: "g5", ClientID: "c5"}, endStopped)
	stop()
	log.entries = append(log.entries,
		store.Revocation{Seq: 2, Kind: store.RevokeToken, Value: "jti-1", ExpiresAt: future},
		store.Revocation{Seq: 3, Kind: store.RevokeGrant, Value: "g2", ExpiresAt: future},
		store.Revocation{Seq: 4, Kind: store.RevokeClient, Value: "c3", ExpiresAt: future},
		store.Revocation{Seq: 5, Kind: store.RevokeToken, Value: "jti-5", ExpiresAt: future},
		store.Revocation{Seq: 6, Kind: store.RevokeGrant, Value: "jti-4", ExpiresAt: future}, // another kind
	)
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Load(ctx); err != nil { // nothing new: nothing ends twice
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		n    *int
		want int
	}{{"by token", byToken, 1}, {"by grant", byGrant, 1}, {"by client", byClient, 1}, {"not revoked", other, 0}, {"stopped", stopped, 0}} {
		if *c.n != c.want {
			t.Errorf("%s: end ran %d times, want %d", c.name, *c.n, c.want)
		}
	}
	m.mu.RLock()
	left := len(m.watches)
	m.mu.RUnlock()
	if left != 1 {
		t.Errorf("%d watches left, want 1 (the principal not revoked)", left)
	}
}
