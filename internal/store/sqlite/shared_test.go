package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/storetest"
)

// TestShared: two Stores on one file, as two worker processes have (the
// separate-process race is TestMultiProcess).
func TestShared(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T) (store.Store, store.Store) {
		path := filepath.Join(t.TempDir(), "oauth.db")
		a, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	})
}

func TestPorter(t *testing.T) {
	storetest.RunPorter(t,
		func(t *testing.T) store.Store { return openTemp(t) },
		func(t *testing.T) store.Store { return openTemp(t) })
}
