// Package postgres is the store.Store that several nodes share: one
// PostgreSQL database reached through a pgxpool per process.
//
// Atomicity comes from PostgreSQL itself: single-row check-and-change
// operations (consume a code, rotate a refresh token) lock the row with
// SELECT ... FOR UPDATE in a transaction, so of several nodes racing for
// one item exactly one wins and the others see its result; upserts (rate
// limits) and DELETE ... RETURNING (pending flows) are atomic statements.
// Revocation inserts are serialized by an advisory lock so that their
// sequence numbers become visible in order (workers keep a cursor), and
// each insert sends a NOTIFY that wakes every node's revocation mirror at
// once (Notify).
//
// Every operation runs under a deadline; an error that means "the database
// cannot be reached" wraps store.ErrUnavailable, which the authorization
// server answers with 503 and Retry-After. The pool reconnects by itself.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/repr"
)

const (
	// opTimeout bounds every operation, so a request never hangs on an
	// unreachable database: it fails with ErrUnavailable instead.
	opTimeout = 5 * time.Second
	// connectTimeout is the default for a URL without connect_timeout.
	connectTimeout = 3 * time.Second
	// DefaultMaxConns is the pool size per process when Config leaves it 0.
	DefaultMaxConns = 8
	// channel is the NOTIFY channel of new revocations.
	channel = "mcpgate_revocations"
)

// Advisory lock keys, one per purpose; the high bits spell "mcpg".
const (
	lockMigrate    int64 = 0x6d637067_00000001
	lockRevocation int64 = 0x6d637067_00000002
	lockKeys       int64 = 0x6d637067_00000003
)

// Config says how to reach the database.
type Config struct {
	URL      string // postgres:// URL, without a password
	Password string // from password_file or password_credential; "" for none
	MaxConns int32  // 0: DefaultMaxConns
	// NoMigrate opens without applying migrations (mcpgate store migrate
	// --dry-run). The tables may be missing or old then: use such a store
	// for Pending and Migrate only.
	NoMigrate bool
}

// Store is a store.Store on one PostgreSQL database. It is safe for
// concurrent use, by goroutines and by other processes and nodes.
type Store struct {
	pool *pgxpool.Pool
	cfg  *pgxpool.Config

	closeOnce sync.Once
	listen    sync.Mutex           // guards stopL
	stopL     []context.CancelFunc // stops the Notify listeners, at Close
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.KeyStore = (*Store)(nil)
	_ store.Porter   = (*Store)(nil)
)

// Open connects to the database and applies pending migrations under an
// advisory lock, so nodes starting together take turns and the second finds
// nothing to do.
func Open(ctx context.Context, c Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		// The error quotes the URL, which holds no password: config
		// refuses one there (it comes from password_file), and pgconn
		// masks any it finds anyway.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if c.Password != "" {
		pc.ConnConfig.Password = c.Password
	}
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = connectTimeout
	}
	pc.MaxConns = c.MaxConns
	if pc.MaxConns <= 0 {
		pc.MaxConns = DefaultMaxConns
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "mcpgate"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, cfg: pc}
	if !c.NoMigrate {
		if _, err := s.migrate(ctx, false); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close stops the listeners and closes the pool. Safe to call twice.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.listen.Lock()
		for _, stop := range s.stopL {
			stop()
		}
		s.listen.Unlock()
		s.pool.Close()
	})
	return nil
}

// Migration is one schema step, for mcpgate store migrate --dry-run.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Pending lists the migrations the database lacks, without applying them.
func (s *Store) Pending(ctx context.Context) ([]Migration, error) {
	return s.migrate(ctx, true)
}

// Migrate applies the pending migrations and returns what it applied.
func (s *Store) Migrate(ctx context.Context) ([]Migration, error) {
	return s.migrate(ctx, false)
}

func (s *Store) migrate(ctx context.Context, dryRun bool) ([]Migration, error) {
	var done []Migration
	err := s.tx(ctx, "migrate", func(tx pgx.Tx) error {
		// A transaction-scoped lock: DDL is transactional in PostgreSQL,
		// so a node that dies half-way leaves nothing half-applied, and
		// the lock goes with its session.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockMigrate); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS mcpgate_schema (
			version    INTEGER PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM mcpgate_schema`).Scan(&v); err != nil {
			return err
		}
		// A newer schema is what the other nodes of a rolling upgrade
		// see while this one still runs the previous release. Migrations
		// only add (TestMigrationsNotDestructive), so the previous
		// release keeps working on it, and may restart.
		if v >= schemaVersion {
			return errRollback
		}
		for i := v; i < schemaVersion; i++ {
			m := Migration{Version: i + 1, Name: migrations[i].name, SQL: migrations[i].sql}
			done = append(done, m)
			if dryRun {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migrate to version %d: %w", m.Version, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO mcpgate_schema (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return err
			}
		}
		if dryRun {
			return errRollback
		}
		return nil
	})
	if err != nil && !errors.Is(err, errRollback) {
		return nil, err
	}
	return done, nil
}

// errRollback ends a transaction that must change nothing (a dry run).
var errRollback = errors.New("rollback")

// tx runs f in a transaction under the operation deadline; it commits if f
// returns nil.
func (s *Store) tx(ctx context.Context, op string, f func(tx pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, f)
	if err != nil {
		return wrap(op, err)
	}
	return nil
}

// wrap names the operation and classifies err: no rows → ErrNotFound,
// an unreachable database → ErrUnavailable; sentinels from inside a
// transaction pass through.
func wrap(op string, err error) error {
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("postgres: %s: %w", op, store.ErrNotFound)
	case errors.Is(err, errRollback), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrAlreadyExists),
		errors.Is(err, store.ErrAlreadyUsed), errors.Is(err, store.ErrAlreadyRotated):
		return fmt.Errorf("postgres: %s: %w", op, err)
	case unavailable(err):
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// unavailable reports whether err means the database could not be reached
// or went away, as opposed to a query it refused.
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutdown, starting up
			return true
		case pgErr.Code == "53300": // too many connections
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}

// Argument checks every operation shares.

func requireExpiry(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("postgres: %s: expiry time not set", what)
	}
	return nil
}

func errZeroNow(op string) error {
	return fmt.Errorf("postgres: %s: now is the zero time", op)
}

// The stored representation is package repr's, shared with the other SQL
// backend.
var (
	ms        = repr.MS
	fromMS    = repr.FromMS
	listJSON  = repr.ListJSON
	parseList = repr.ParseList
	hashID    = repr.HashID
)
