package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/backend"
	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// storeConfig writes a configuration with [oauth] and a [store] on a fresh
// PostgreSQL database, and loads it.
func storeConfig(t *testing.T) *config.Config {
	t.Helper()
	srv := pgtest.Get(t)
	db := srv.NewDatabase(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	files := map[string]string{
		"mcpgate.toml": `[server]
state_dir = "state"
[oauth]
callback_url = "https://auth.example.com/oauth/callback"
allowed_users = ["*"]
[idp.github]
client_id = "Iv1.0123"
client_secret_file = "github.secret"
[store]
url = "` + srv.URL(db) + `"
password_file = "db.password"
key_encryption_key_file = "kek"
`,
		"auth.toml":     "hostnames = [\"auth.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nself_signed = true\n",
		"github.secret": "s3cret\n",
		"db.password":   pgtest.Password + "\n",
		"kek":           strings.Repeat("k", 44) + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestStoreMigrateDryRun: --dry-run prints the migrations and applies
// nothing; migrate applies them; then there is nothing left to do.
func TestStoreMigrateDryRun(t *testing.T) {
	cfg := storeConfig(t)
	ctx := context.Background()
	var out bytes.Buffer
	for range 2 {
		out.Reset()
		if err := storeMigrate(ctx, cfg, true, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "-- would apply migration 1: initial schema\n") {
			t.Fatalf("dry run printed:\n%s", out.String())
		}
	}
	out.Reset()
	if err := storeMigrate(ctx, cfg, false, &out); err != nil || out.String() != "applied migration 1: initial schema\n" {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := storeMigrate(ctx, cfg, true, &out); err != nil || out.String() != "the schema is up to date\n" {
		t.Fatalf("dry run after migrating: %v\n%s", err, out.String())
	}
}

// TestStoreExportImport: an installation on SQLite moves to PostgreSQL
// (export --sqlite | import) with its refresh tokens and signing keys, and
// back.
func TestStoreExportImport(t *testing.T) {
	cfg := storeConfig(t)
	ctx := context.Background()
	state := cfg.Server.StateDir
	lite, err := sqlite.Open(filepath.Join(state, backend.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	rt := &store.RefreshToken{TokenHash: "h1", GrantID: "g1", ClientID: "c1", Subject: "1", Login: "alice",
		Scope: "mcp", Resource: "https://x/mcp", Host: "x", AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := lite.CreateRefreshToken(ctx, rt); err != nil {
		t.Fatal(err)
	}
	lite.Close()
	fileKeys, err := keys.Open(state, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	oldKid, _ := fileKeys.Signer()

	var dump, out bytes.Buffer
	if err := storeExport(ctx, cfg, true, &dump); err != nil {
		t.Fatal(err)
	}
	if err := storeImport(ctx, cfg, false, bytes.NewReader(dump.Bytes()), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "imported 1 records\ncopied 1 signing keys\n" {
		t.Fatalf("import said:\n%s", out.String())
	}
	pg, ks, err := backend.Open(ctx, state, cfg.Store, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if got, err := pg.GetRefreshToken(ctx, "h1"); err != nil || got.Login != "alice" {
		t.Fatalf("refresh token in PostgreSQL: %+v, %v", got, err)
	}
	if _, ok := ks.PublicKey(oldKid); !ok {
		t.Fatal("the SQLite installation's signing key does not verify on PostgreSQL")
	}

	// And back, into an empty state_dir.
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(state, 0o700)
	dump.Reset()
	out.Reset()
	if err := storeExport(ctx, cfg, false, &dump); err != nil {
		t.Fatal(err)
	}
	if err := storeImport(ctx, cfg, true, bytes.NewReader(dump.Bytes()), &out); err != nil {
		t.Fatal(err)
	}
	back, err := sqlite.Open(filepath.Join(state, backend.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := back.GetRefreshToken(ctx, "h1"); err != nil {
		t.Fatalf("refresh token back in SQLite: %v", err)
	}
	fk, err := keys.Open(state, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fk.PublicKey(oldKid); !ok {
		t.Fatal("the key did not come back to state_dir")
	}
}
