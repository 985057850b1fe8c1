package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/backend"
	"github.com/mcpgate/mcpgate/internal/store/postgres"
)

// mcpgate store: the OAuth store's schema and moving its state between
// backends (issue 14). The export is JSON lines, one store.Record each; it
// holds hashes of codes and tokens, never the values, and no signing key:
// import copies the keys itself, from where the source keeps them.

var storeCommands = []command{
	{name: "migrate", args: "[--dry-run] [--config-dir DIR]",
		summary: "apply the pending schema migrations of the [store] database (the gateway also does on start); --dry-run prints them", run: cmdStoreMigrate},
	{name: "export", args: "[--sqlite] [--config-dir DIR] > FILE",
		summary: "write the OAuth state as JSON lines (--sqlite: state_dir's SQLite file, whatever [store] says)", run: cmdStoreExport},
	{name: "import", args: "[--sqlite] [--config-dir DIR] < FILE",
		summary: "read an export into the configured store (--sqlite: state_dir's SQLite file), keeping what exists, and copy the signing keys", run: cmdStoreImport},
}

// To move from SQLite to PostgreSQL: add [store] to mcpgate.toml, then
// `mcpgate store export --sqlite | mcpgate store import` before starting
// the nodes; back: `mcpgate store export | mcpgate store import --sqlite`.

// storeTimeout bounds a whole store command.
const storeTimeout = 10 * time.Minute

func cmdStoreMigrate(fs *flag.FlagSet, args []string) int {
	dryRun := fs.Bool("dry-run", false, "print the pending migrations without applying them")
	return storeCommand(fs, args, "migrate", func(ctx context.Context, cfg *config.Config) error {
		return storeMigrate(ctx, cfg, *dryRun, stdout)
	})
}

func cmdStoreExport(fs *flag.FlagSet, args []string) int {
	useSQLite := fs.Bool("sqlite", false, "use state_dir's SQLite file, whatever [store] says")
	return storeCommand(fs, args, "export", func(ctx context.Context, cfg *config.Config) error {
		return storeExport(ctx, cfg, *useSQLite, stdout)
	})
}

func cmdStoreImport(fs *flag.FlagSet, args []string) int {
	useSQLite := fs.Bool("sqlite", false, "use state_dir's SQLite file, whatever [store] says")
	return storeCommand(fs, args, "import", func(ctx context.Context, cfg *config.Config) error {
		return storeImport(ctx, cfg, *useSQLite, os.Stdin, stdout)
	})
}

// storeCommand parses the flags (no positional arguments), loads the
// configuration and runs do under storeTimeout.
func storeCommand(fs *flag.FlagSet, args []string, sub string, do func(context.Context, *config.Config) error) int {
	dir := configDirFlag(fs)
	if ok, code := parse(fs, args); !ok {
		return code
	}
	cfg, err := config.Load(*dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := do(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "mcpgate store %s: %v\n", sub, err)
		return 1
	}
	return 0
}

func storeMigrate(ctx context.Context, cfg *config.Config, dryRun bool, out io.Writer) error {
	if cfg.Store == nil {
		fmt.Fprintln(out, "no [store]: the SQLite store in state_dir migrates itself when opened")
		return nil
	}
	st, err := backend.OpenStore(ctx, cfg.Server.StateDir, cfg.Store, backend.Options{NoMigrate: true})
	if err != nil {
		return err
	}
	defer st.Close()
	pg := st.(*postgres.Store)
	var ms []postgres.Migration
	if dryRun {
		ms, err = pg.Pending(ctx)
	} else {
		ms, err = pg.Migrate(ctx)
	}
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		fmt.Fprintln(out, "the schema is up to date")
		return nil
	}
	for _, m := range ms {
		if dryRun {
			fmt.Fprintf(out, "-- would apply migration %d: %s\n%s\n", m.Version, m.Name, m.SQL)
		} else {
			fmt.Fprintf(out, "applied migration %d: %s\n", m.Version, m.Name)
		}
	}
	return nil
}

// openFor opens the store an export or import works on: the configured
// one, or with useSQLite the SQLite file in state_dir.
func openFor(ctx context.Context, cfg *config.Config, useSQLite bool) (store.Store, *config.Store, error) {
	sc := cfg.Store
	if useSQLite {
		sc = nil
	}
	st, err := backend.OpenStore(ctx, cfg.Server.StateDir, sc, backend.Options{})
	return st, sc, err
}

func storeExport(ctx context.Context, cfg *config.Config, useSQLite bool, out io.Writer) error {
	st, _, err := openFor(ctx, cfg, useSQLite)
	if err != nil {
		return err
	}
	defer st.Close()
	p, ok := st.(store.Porter)
	if !ok {
		return fmt.Errorf("%T cannot export", st)
	}
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	if err := p.Export(ctx, func(r *store.Record) error { return enc.Encode(r) }); err != nil {
		return err
	}
	return w.Flush()
}

func storeImport(ctx context.Context, cfg *config.Config, useSQLite bool, in io.Reader, out io.Writer) error {
	st, sc, err := openFor(ctx, cfg, useSQLite)
	if err != nil {
		return err
	}
	defer st.Close()
	p, ok := st.(store.Porter)
	if !ok {
		return fmt.Errorf("%T cannot import", st)
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	n := 0
	for {
		var r store.Record
		err := dec.Decode(&r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", n+1, err)
		}
		if err := p.Import(ctx, &r); err != nil {
			return fmt.Errorf("record %d: %w", n+1, err)
		}
		n++
	}
	fmt.Fprintf(out, "imported %d records\n", n)
	if cfg.Store == nil || cfg.OAuth == nil {
		return nil // one backend only: the keys are where they were
	}
	// The signing keys of the other side, so access tokens it signed keep
	// verifying: state_dir's files into PostgreSQL, or back.
	opts := keys.Options{RetainFor: cfg.OAuth.AccessTokenTTL + 2*time.Minute}
	dst, err := backend.OpenKeys(st, cfg.Server.StateDir, sc, opts)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	other, otherCfg := cfg.Store, cfg.Store
	var src *keys.Set
	if sc == nil { // into SQLite: from PostgreSQL
		ost, err := backend.OpenStore(ctx, cfg.Server.StateDir, other, backend.Options{})
		if err != nil {
			return fmt.Errorf("signing keys: %w", err)
		}
		defer ost.Close()
		src, err = backend.OpenKeys(ost, cfg.Server.StateDir, otherCfg, opts)
		if err != nil {
			return fmt.Errorf("signing keys: %w", err)
		}
	} else { // into PostgreSQL: from state_dir
		src, err = keys.Open(cfg.Server.StateDir, opts)
		if err != nil {
			return fmt.Errorf("signing keys: %w", err)
		}
	}
	added, err := dst.Adopt(src)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	fmt.Fprintf(out, "copied %d signing keys\n", added)
	return nil
}
