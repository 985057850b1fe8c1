package revocation

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/store/postgres"
	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// within waits up to d for cond.
func within(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestNotifyAcrossNodes: a revocation on node a reaches node b's mirror
// through NOTIFY, well inside a second although b, while notifications
// are live, polls only every NotifiedPoll; after PostgreSQL restarts, the
// mirror listens again and catches up.
func TestNotifyAcrossNodes(t *testing.T) {
	srv := pgtest.Get(t)
	url := pgtest.URL(t)
	open := func() *postgres.Store {
		s, err := postgres.Open(context.Background(), postgres.Config{URL: url, MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New(b, nil)
	done := make(chan struct{})
	go func() { m.Run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	defer func() { cancel(); <-done }()

	revoke := func(jti string) time.Duration {
		t.Helper()
		start := time.Now()
		if err := a.RevokeAccessToken(context.Background(), jti, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if !within(time.Second, func() bool { return m.Covers(&identity.Principal{TokenID: jti}) }) {
			t.Fatalf("revocation of %s not seen by the other node within 1s", jti)
		}
		return time.Since(start)
	}
	time.Sleep(500 * time.Millisecond) // listening, first load done
	for i, jti := range []string{"j1", "j2", "j3"} {
		d := revoke(jti)
		t.Logf("revocation %d seen after %v", i, d)
		time.Sleep(300 * time.Millisecond) // past a Poll tick: only NOTIFY wakes it
	}

	srv.Stop()
	time.Sleep(300 * time.Millisecond)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if !m.Covers(&identity.Principal{TokenID: "j1"}) {
		t.Fatal("the mirror forgot a revocation during the outage")
	}
	// The pool reconnects on its own; the revoking node may need a retry
	// for a connection that died with the server.
	if !within(5*time.Second, func() bool {
		return a.RevokeAccessToken(context.Background(), "after", time.Now().Add(time.Hour)) == nil
	}) {
		t.Fatal("node a cannot write after the restart")
	}
	if !within(time.Second+NotifiedPoll, func() bool { return m.Covers(&identity.Principal{TokenID: "after"}) }) {
		t.Fatal("revocation after the restart not seen")
	}
}
