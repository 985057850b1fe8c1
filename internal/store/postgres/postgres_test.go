package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
	"github.com/mcpgate/mcpgate/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(helperEnv); url != "" {
		// A child of TestMultiProcess: it only races.
		if err := raceHelper(url, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m))
}

func open(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{URL: url, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) })
}

// TestShared: two pools on one database are two nodes: separate
// connections, separate sessions, only PostgreSQL in common.
func TestShared(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T) (store.Store, store.Store) {
		url := pgtest.URL(t)
		return open(t, url), open(t, url)
	})
}

func TestPorter(t *testing.T) {
	storetest.RunPorter(t,
		func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) },
		func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) })
}

func TestKeyStore(t *testing.T) {
	storetest.RunKeyStore(t, func(t *testing.T) (store.KeyStore, store.KeyStore) {
		url := pgtest.URL(t)
		a, b := open(t, url), open(t, url)
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	})
}

// TestMigrateConcurrently: nodes starting at once on an empty database
// take turns under the advisory lock; all open, the schema is applied once.
func TestMigrateConcurrently(t *testing.T) {
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(context.Background(), Config{URL: url, MaxConns: 2})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	s := open(t, url)
	defer s.Close()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM mcpgate_schema`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != schemaVersion {
		t.Fatalf("%d schema rows, want %d", n, schemaVersion)
	}
	p, err := s.Pending(context.Background())
	if err != nil || len(p) != 0 {
		t.Fatalf("Pending after migrating: %v, %v", p, err)
	}
}

// TestNewerSchema: a node of the previous release starts on a database a
// newer node already migrated (rolling upgrade), and leaves it alone.
func TestNewerSchema(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	defer s.Close()
	if _, err := s.pool.Exec(context.Background(), `INSERT INTO mcpgate_schema (version, name) VALUES ($1, 'from the future')`, schemaVersion+1); err != nil {
		t.Fatal(err)
	}
	old, err := Open(context.Background(), Config{URL: url})
	if err != nil {
		t.Fatalf("an older node cannot open a newer schema: %v", err)
	}
	defer old.Close()
	if p, err := old.Pending(context.Background()); err != nil || len(p) != 0 {
		t.Fatalf("Pending on a newer schema: %v, %v", p, err)
	}
	if _, err := old.CountEvent(context.Background(), "k", time.Minute, nowMS()); err != nil {
		t.Fatal(err)
	}
}

// TestDryRun: Pending lists the migrations without applying them.
func TestDryRun(t *testing.T) {
	s, err := Open(context.Background(), Config{URL: pgtest.URL(t), NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		p, err := s.Pending(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != schemaVersion || p[0].Version != 1 {
			t.Fatalf("Pending: %d migrations, want %d", len(p), schemaVersion)
		}
	}
	if _, err := s.GetClient(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("the dry run created tables? GetClient: %v", err)
	}
}

// TestMigrationsNotDestructive: during a rolling upgrade the old release
// runs on the new schema, so a migration only adds.
func TestMigrationsNotDestructive(t *testing.T) {
	bad := regexp.MustCompile(`(?i)\b(DROP|TRUNCATE|DELETE|RENAME|ALTER\s+COLUMN)\b`)
	// A column the previous release does not write must have a default.
	addNotNull := regexp.MustCompile(`(?i)ADD\s+COLUMN[^,;]*NOT\s+NULL[^,;]*`)
	for i, m := range migrations {
		if loc := bad.FindString(m.sql); loc != "" {
			t.Errorf("migration %d (%s) contains %q", i+1, m.name, loc)
		}
		for _, c := range addNotNull.FindAllString(m.sql, -1) {
			if !regexp.MustCompile(`(?i)\bDEFAULT\b`).MatchString(c) {
				t.Errorf("migration %d (%s) adds a NOT NULL column without a default: %q", i+1, m.name, c)
			}
		}
	}
}

// TestUnavailable: with the database gone, operations fail quickly with
// store.ErrUnavailable (the 503 of the token endpoint), and work again
// once it is back, on the same pool.
func TestUnavailable(t *testing.T) {
	srv := pgtest.Get(t)
	s := open(t, pgtest.URL(t))
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CountEvent(ctx, "k", 60e9, nowMS()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	restarted := false
	defer func() {
		if !restarted {
			srv.Start()
		}
	}()
	_, err := s.CountEvent(ctx, "k", 60e9, nowMS())
	if !errorsIs(err, store.ErrUnavailable) {
		t.Fatalf("CountEvent with the database down: %v, want ErrUnavailable", err)
	}
	_, err = s.GetClient(ctx, "x")
	if !errorsIs(err, store.ErrUnavailable) {
		t.Fatalf("GetClient with the database down: %v, want ErrUnavailable", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	n, err := s.CountEvent(ctx, "k", 60e9, nowMS())
	if err != nil || n != 2 {
		t.Fatalf("CountEvent after the restart: %d, %v; want 2 (nothing lost)", n, err)
	}
}

func nowMS() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

var errorsIs = errors.Is

// TestPorterAcrossBackends: SQLite to PostgreSQL and back, the switch of
// an existing installation (mcpgate store export | mcpgate store import).
func TestPorterAcrossBackends(t *testing.T) {
	lite := func(t *testing.T) store.Store {
		s, err := sqlite.Open(filepath.Join(t.TempDir(), "oauth.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pg := func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) }
	t.Run("SQLiteToPostgreSQL", func(t *testing.T) { storetest.RunPorter(t, lite, pg) })
	t.Run("PostgreSQLToSQLite", func(t *testing.T) { storetest.RunPorter(t, pg, lite) })
}
