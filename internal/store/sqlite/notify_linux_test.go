package sqlite

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/revocation"
)

// Notify wakes a mirror when another connection (another worker) writes a
// revocation, is live (the mirror stops polling) while nobody writes, and
// a mirror on it sees a revocation well within a second.
func TestNotifyWakesOnWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oauth.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake, live := a.Notify(ctx)
	if live() {
		t.Error("live at once: the first startWindow must poll")
	}
	deadline := time.Now().Add(startWindow + 2*time.Second)
	for !live() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !live() {
		t.Fatal("not live without writes")
	}
	for len(wake) > 0 {
		<-wake
	}
	if err := b.RevokeAccessToken(ctx, "jti-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(time.Second):
		t.Fatal("no wake after another connection's write")
	}
	if live() {
		t.Error("live right after a write: the mirror must poll through the window")
	}

	m := revocation.New(a)
	go m.Run(ctx, slog.New(slog.DiscardHandler))
	time.Sleep(activeWindow + 500*time.Millisecond) // quiet again
	if err := b.RevokeAccessToken(ctx, "jti-2", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for !m.Covers(&identity.Principal{TokenID: "jti-2"}) {
		if time.Since(start) > time.Second {
			t.Fatal("revocation not seen within a second")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
