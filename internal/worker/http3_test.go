package worker

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mcpgate/mcpgate/internal/quicroute"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// TestQUICKeysShared: workers starting at once on a fresh state directory
// all end up with the same keys, and a restarted worker reads them again.
func TestQUICKeysShared(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	type keys struct{ reset, token [32]byte }
	got := make([]keys, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, tk, err := quicKeys(dir)
			got[i], errs[i] = keys{r, tk}, err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("worker %d got different keys", i)
		}
	}
	if got[0].reset == got[0].token || got[0].reset == ([32]byte{}) {
		t.Fatal("keys are not independent random values")
	}
	r, tk, err := quicKeys(dir)
	if err != nil || (keys{r, tk}) != got[0] {
		t.Fatalf("a restarted worker got other keys (%v)", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "quic.keys"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("quic.keys mode %v, %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %d entries", len(entries))
	}
}

// TestCIDGenerator: a worker writes the ids its supervisor decodes: wide
// ones for this build's supervisor, the previous 8-bit layout for a spec
// without the flag (a previous supervisor reloading onto this binary), and
// refuses an id that layout cannot hold.
func TestCIDGenerator(t *testing.T) {
	key := [16]byte{9}
	for _, tc := range []struct {
		q      wire.QUICSpec
		config byte // of the ids, 0 narrow, 1 wide
	}{
		{wire.QUICSpec{WorkerID: 4097, CIDKey: key, WideCIDs: true}, 1},
		{wire.QUICSpec{WorkerID: 7, CIDKey: key, WideCIDs: true}, 1},
		{wire.QUICSpec{WorkerID: 7, CIDKey: key}, 0},
	} {
		g, err := cidGenerator(&tc.q)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := g.GenerateConnectionID()
		b := id.Bytes()
		if w, ok := quicroute.DecodeWorker(b, key); !ok || w != tc.q.WorkerID || b[0]>>5 != tc.config {
			t.Errorf("%+v: id % x decodes to %d %v", tc.q, b, w, ok)
		}
	}
	if _, err := cidGenerator(&wire.QUICSpec{WorkerID: 256}); err == nil {
		t.Error("narrow generator accepted worker id 256")
	}
}
