package keys

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store/postgres"
	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
)

var kek = []byte(strings.Repeat("k", 44))

// nodes opens n stores on one fresh PostgreSQL database: n nodes.
func nodes(t *testing.T, n int) []*postgres.Store {
	t.Helper()
	url := pgtest.URL(t)
	var out []*postgres.Store
	for range n {
		s, err := postgres.Open(context.Background(), postgres.Config{URL: url, MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// TestSharedNodesAgree: nodes starting together on an empty store agree
// on one first key; a rotation on one is seen by the others at their next
// Refresh; retired keys go for everyone.
func TestSharedNodesAgree(t *testing.T) {
	st := nodes(t, 4)
	clk := newClock()
	opts := Options{RotateAfter: 30 * 24 * time.Hour, RetainFor: 2 * time.Hour, Now: clk.Now}
	sets := make([]*Set, len(st))
	errs := make([]error, len(st))
	var wg sync.WaitGroup
	for i := range st {
		wg.Go(func() { sets[i], errs[i] = OpenShared(st[i], kek, opts) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	k0, _ := sets[0].Signer()
	for i, s := range sets {
		if kid, _ := s.Signer(); kid != k0 || len(s.Keys()) != 1 {
			t.Fatalf("node %d signs with %s (%d keys), node 0 with %s", i, kid, len(s.Keys()), k0)
		}
	}

	k1, err := sets[1].Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if err := sets[2].Refresh(); err != nil {
		t.Fatal(err)
	}
	if kid, _ := sets[2].Signer(); kid != k1 {
		t.Fatalf("after a rotation on node 1, node 2 signs with %s, want %s", kid, k1)
	}
	if _, ok := sets[2].PublicKey(k0); !ok {
		t.Fatal("the replaced key no longer verifies on node 2")
	}
	if string(sets[2].JWKS()) != string(sets[1].JWKS()) {
		t.Fatal("nodes publish different JWKS")
	}

	// Past RetainFor every node drops the old key; the first to refresh
	// deletes it from the store for all.
	clk.Add(2*time.Hour + time.Millisecond)
	for i, s := range sets {
		if err := s.Refresh(); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if _, ok := s.PublicKey(k0); ok {
			t.Fatalf("node %d still has the retired key", i)
		}
	}
	stored, err := st[0].SigningKeys(context.Background())
	if err != nil || len(stored) != 1 || stored[0].Kid != k1 {
		t.Fatalf("stored keys %v, %v; want only %s", stored, err, k1)
	}

	// Scheduled rotation from one node only, however many refresh.
	clk.Add(30 * 24 * time.Hour)
	wg = sync.WaitGroup{}
	for _, s := range sets {
		wg.Go(func() { s.Refresh() })
	}
	wg.Wait()
	stored, _ = st[0].SigningKeys(context.Background())
	if len(stored) != 2 {
		t.Fatalf("after concurrent scheduled rotations: %d keys, want 2 (one rotation)", len(stored))
	}
}

// TestSharedSealed: the store holds no private key in the clear, and a
// node with another key-encryption key refuses to start rather than
// signing with keys of its own.
func TestSharedSealed(t *testing.T) {
	st := nodes(t, 2)
	a, err := OpenShared(st[0], kek, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, priv := a.Signer()
	stored, err := st[0].SigningKeys(context.Background())
	if err != nil || len(stored) != 1 {
		t.Fatal(stored, err)
	}
	if strings.Contains(string(stored[0].Sealed), string(priv.D.Bytes()[:16])) {
		t.Fatal("the private key is stored in the clear")
	}
	_, err = OpenShared(st[1], []byte(strings.Repeat("x", 32)), Options{})
	if !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("OpenShared with another KEK: %v, want ErrWrongKEK", err)
	}
	if _, err := OpenShared(st[1], []byte("short"), Options{}); err == nil {
		t.Fatal("OpenShared accepted a 5-byte KEK")
	}
}

// TestSharedRefreshErrorKeepsKeys: with the database unreachable, Refresh
// fails and the node keeps signing and verifying with what it has.
func TestSharedRefreshErrorKeepsKeys(t *testing.T) {
	st := nodes(t, 1)
	a, err := OpenShared(st[0], kek, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k0, _ := a.Signer()
	st[0].Close()
	if err := a.Refresh(); err == nil {
		t.Fatal("Refresh on a closed store succeeded")
	}
	if kid, _ := a.Signer(); kid != k0 {
		t.Fatal("lost the signing key")
	}
}
