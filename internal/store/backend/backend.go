// Package backend opens the OAuth store and the signing keys a
// configuration names: SQLite and key files in state_dir without [store],
// PostgreSQL with the keys inside it with [store]. The worker and the
// `mcpgate store` commands call it, so the choice is made in one place.
package backend

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/postgres"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
)

// SQLiteFile is the embedded store's file name in state_dir.
const SQLiteFile = "oauth.db"

// Options modify Open.
type Options struct {
	// NoMigrate opens PostgreSQL without applying migrations (dry runs).
	NoMigrate bool
}

// OpenStore opens the configured store: cfg nil means SQLite in stateDir.
func OpenStore(ctx context.Context, stateDir string, cfg *config.Store, o Options) (store.Store, error) {
	if cfg == nil {
		return sqlite.Open(filepath.Join(stateDir, SQLiteFile))
	}
	pw, err := config.ReadStorePassword(cfg.PasswordFile)
	if err != nil {
		return nil, err
	}
	return postgres.Open(ctx, postgres.Config{
		URL: cfg.URL, Password: pw, MaxConns: int32(cfg.MaxConnections), NoMigrate: o.NoMigrate,
	})
}

// OpenKeys opens the signing keys that go with st: files in stateDir for
// SQLite, the sealed keys in the store for PostgreSQL.
func OpenKeys(st store.Store, stateDir string, cfg *config.Store, opts keys.Options) (*keys.Set, error) {
	if cfg == nil {
		return keys.Open(stateDir, opts)
	}
	ks, ok := st.(store.KeyStore)
	if !ok {
		return nil, fmt.Errorf("backend: %T keeps no signing keys", st)
	}
	kek, err := config.ReadKeyEncryptionKey(cfg.KeyEncryptionKeyFile)
	if err != nil {
		return nil, err
	}
	return keys.OpenShared(ks, kek, opts)
}

// Open opens both; on error nothing stays open.
func Open(ctx context.Context, stateDir string, cfg *config.Store, opts keys.Options) (store.Store, *keys.Set, error) {
	st, err := OpenStore(ctx, stateDir, cfg, Options{})
	if err != nil {
		return nil, nil, err
	}
	ks, err := OpenKeys(st, stateDir, cfg, opts)
	if err != nil {
		return nil, nil, errors.Join(err, st.Close())
	}
	return st, ks, nil
}
