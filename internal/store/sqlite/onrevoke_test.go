package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

// TestOnRevoke: the function runs once after each write that logged a
// revocation, when another connection (another worker) already sees it,
// and never for a write that logged none or failed: the supervisor relays
// exactly these announcements, and workers no longer poll.
func TestOnRevoke(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "oauth.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	now := time.Now()
	until := now.Add(time.Hour)
	var calls int
	var seen []store.Revocation
	var seq int64
	s.OnRevoke(func() {
		calls++
		// Committed: the other connection reads it in the callback.
		got, err := other.Revocations(ctx, seq, 100)
		if err != nil {
			t.Errorf("reading from the other connection: %v", err)
		}
		seen = append(seen, got...)
		if len(got) > 0 {
			seq = got[len(got)-1].Seq
		}
	})
	client := func(id string, lastUsed time.Time) {
		t.Helper()
		c := &store.Client{ID: id, RedirectURIs: []string{"http://127.0.0.1/cb"}, GrantTypes: []string{"authorization_code"},
			ResponseTypes: []string{"code"}, TokenEndpointAuthMethod: "none", CreatedAt: lastUsed, LastUsedAt: lastUsed}
		if err := s.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	refresh := func(hash, grant, clientID string) {
		t.Helper()
		rt := &store.RefreshToken{TokenHash: hash, GrantID: grant, ClientID: clientID, Subject: "1", Login: "alice",
			Scope: "mcp", Resource: "https://a.test/mcp", Host: "a.test", AuthTime: now, CreatedAt: now, ExpiresAt: until}
		if err := s.CreateRefreshToken(ctx, rt); err != nil {
			t.Fatal(err)
		}
	}
	client("c1", now)
	client("c2", now)
	client("old", now.Add(-48*time.Hour))
	refresh(hash("r1"), "g1", "c1")
	refresh(hash("r2"), "g2", "c2")

	cases := []struct {
		name  string
		write func() error
		want  []store.RevocationKind // revocations the write logs, and so the calls it makes (one)
	}{
		{"a write that logs none", func() error { return s.TouchClient(ctx, "c1", now) }, nil},
		{"revoke an access token", func() error { return s.RevokeAccessToken(ctx, "jti-1", until) }, []store.RevocationKind{store.RevokeToken}},
		{"revoke a grant", func() error { return s.RevokeGrant(ctx, "g1", until) }, []store.RevocationKind{store.RevokeGrant}},
		{"revoke a client's grants", func() error { _, err := s.RevokeClientGrants(ctx, "c2", until); return err }, []store.RevocationKind{store.RevokeGrant}},
		{"revoke the grants of a client that has none", func() error { _, err := s.RevokeClientGrants(ctx, "c2", until); return err }, nil},
		{"delete a client", func() error { return s.DeleteClient(ctx, "c1", until) }, []store.RevocationKind{store.RevokeClient}},
		{"delete a client that does not exist (fails)", func() error {
			if err := s.DeleteClient(ctx, "nope", until); !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		}, nil},
		{"delete unused clients", func() error { _, err := s.DeleteUnusedClients(ctx, now.Add(-time.Hour), until); return err }, []store.RevocationKind{store.RevokeClient}},
		{"delete unused clients when none is", func() error { _, err := s.DeleteUnusedClients(ctx, now.Add(-time.Hour), until); return err }, nil},
		{"a failed revocation (no expiry)", func() error {
			if err := s.RevokeAccessToken(ctx, "jti-2", time.Time{}); err == nil {
				return errors.New("a revocation without expiry was accepted")
			}
			return nil
		}, nil},
	}
	for _, c := range cases {
		calls, seen = 0, nil
		if err := c.write(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		wantCalls := 0
		if len(c.want) > 0 {
			wantCalls = 1
		}
		if calls != wantCalls {
			t.Errorf("%s: %d calls, want %d", c.name, calls, wantCalls)
		}
		var kinds []store.RevocationKind
		for _, r := range seen {
			kinds = append(kinds, r.Kind)
		}
		if len(kinds) != len(c.want) || (len(kinds) > 0 && kinds[0] != c.want[0]) {
			t.Errorf("%s: the other connection saw %v in the callback, want %v", c.name, kinds, c.want)
		}
	}
}
