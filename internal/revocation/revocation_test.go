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
