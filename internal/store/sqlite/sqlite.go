// Package sqlite is the embedded store.Store: one SQLite database file
// (state_dir/oauth.db) that the supervisor and every proxy's worker process
// open at the same time.
//
// Several processes share the file through SQLite's own locking in WAL mode:
// readers never block and are never blocked, writers take turns. Every
// read-modify-write runs in a BEGIN IMMEDIATE transaction, which takes the
// write lock before the first read, so the check and the change see the
// same state and exactly one of several racing processes wins. Inside one
// process writes go through a single connection, so goroutines queue in
// database/sql instead of sleeping in SQLite's busy handler; reads use a
// small pool of read-only connections.
//
// The driver is modernc.org/sqlite, which keeps the build free of cgo.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/repr"
)

const (
	// busyTimeout is how long a statement waits for another connection's
	// lock (another process's write transaction) before SQLITE_BUSY. Write
	// transactions here last milliseconds; 5 s only matters when a disk
	// stalls, and then failing one request beats piling up.
	busyTimeout = 5 * time.Second
	// openTimeout bounds the retries of Open's one-time setup (WAL switch,
	// schema creation) while other processes do the same.
	openTimeout = 30 * time.Second
	// maxReaders is the read connection pool per process. Reads are short
	// point lookups and the revocation poll; more connections would only
	// add file descriptors and page caches.
	maxReaders = 4
	// journalSizeLimit truncates the WAL file back to this size after a
	// checkpoint, so one burst of writes does not keep a large file around.
	journalSizeLimit = 8 << 20
)

// Store is a store.Store on one SQLite file. It is safe for concurrent use
// by goroutines and by other processes that open the same file.
type Store struct {
	path   string    // absolute
	w      *sql.DB   // one connection; _txlock=immediate
	r      *sql.DB   // read-only pool
	revoke *sql.Stmt // the read of the revocation log, prepared once: every worker runs it

	onRevoke atomic.Pointer[func()] // OnRevoke

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// OnRevoke sets f to be called after each committed transaction that
// logged a revocation, for the processes sharing the file to hear of it
// (a worker tells the supervisor, which tells every worker). It is not
// called when the transaction failed; one whose commit the caller could
// not confirm is found by the readers' slow poll. f must not block.
func (s *Store) OnRevoke(f func()) { s.onRevoke.Store(&f) }

// revoked runs the OnRevoke function, if any.
func (s *Store) revoked() {
	if f := s.onRevoke.Load(); f != nil && *f != nil {
		(*f)()
	}
}

// Open opens (creating if needed) the database at path, switches it to WAL
// mode and creates or migrates the schema. Several processes may call Open
// on the same path at once, also on a file that does not exist yet. The
// directory must exist; the file is created with mode 0600 and an existing
// file with looser permissions is tightened to 0600.
func Open(path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := prepareFile(abs); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	// Connection pragmas run on every new connection (they are not stored
	// in the file):
	//   busy_timeout: wait for other processes' locks instead of failing.
	//   synchronous=FULL: in WAL mode NORMAL survives a process crash but
	//     not a power loss or kernel crash, which can roll back the last
	//     commits. Here that could resurrect a revoked grant, un-use a
	//     redeemed code or forget a rotated refresh token, and writes are
	//     rare (logins, refreshes, revocations), so one fsync per commit
	//     is a cheap price. Reads pay nothing for it.
	//   foreign_keys: no foreign keys yet (see schema.go); on so that any
	//     a later migration declares are enforced.
	//   journal_size_limit: see journalSizeLimit.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", journalSizeLimit))
	rq := cloneValues(q)
	q.Set("_txlock", "immediate") // every db.BeginTx on the writer is BEGIN IMMEDIATE
	rq.Add("_pragma", "query_only(1)")
	// A file: URI with an escaped path, so a '?' or '#' in the path is
	// not taken for the start of the parameters.
	wdsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
	rdsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: rq.Encode()}).String()

	s := &Store{path: abs}
	if s.w, err = sql.Open("sqlite", wdsn); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	if s.r, err = sql.Open("sqlite", rdsn); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.r.SetMaxOpenConns(maxReaders)
	s.r.SetMaxIdleConns(maxReaders)
	s.r.SetConnMaxLifetime(0)

	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	if err := s.setup(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

// prepareFile creates the database file with mode 0600 before SQLite does
// (SQLite would use 0644 less the umask; its -wal and -shm files copy the
// database file's mode). It does not open an existing file: closing any
// descriptor of a file drops every POSIX lock this process holds on it,
// SQLite's included.
func prepareFile(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return nil // another process was faster; it used 0600 too
		}
		if err != nil {
			return err
		}
		return f.Close()
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return os.Chmod(path, fi.Mode().Perm()&0o700)
	}
	return nil
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// setup switches the file to WAL and creates or migrates the schema. Both
// need locks that a process opening the file at the same moment may hold;
// the busy timeout covers most of that, but SQLite skips the busy handler
// where waiting could deadlock and reports SQLITE_BUSY at once, so
// SQLITE_BUSY is retried here until ctx ends.
func (s *Store) setup(ctx context.Context) error {
	if err := retryBusy(ctx, s.enableWAL); err != nil {
		return fmt.Errorf("enable WAL: %w", err)
	}
	if err := retryBusy(ctx, s.migrate); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	var err error
	s.revoke, err = s.r.PrepareContext(ctx, `SELECT seq, kind, value, expires_at, at FROM revocations
		WHERE seq > ? AND +expires_at > ? ORDER BY seq LIMIT ?`)
	// The unary + keeps the planner off the expires_at index: the poll must
	// be a range scan of the primary key from the cursor, which finds
	// nothing in O(log n) when the worker is up to date.
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

func (s *Store) enableWAL(ctx context.Context) error {
	var mode string
	// The usual case, a file already in WAL mode, through a read
	// connection: the migration check and the revocation poll use that
	// one too, so a worker opens no writer connection at start-up (one
	// SQLite connection fewer to open in each of hundreds of workers
	// starting; the writer opens at the first write).
	if err := s.r.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err == nil && mode == "wal" {
		return nil
	}
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if mode == "wal" {
		return nil // persistent in the file: set by whoever opened it first
	}
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		// For example on a file system without shared memory support.
		return fmt.Errorf("journal_mode is %q, not wal", mode)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	// The usual case first, without the write lock: at a reload every
	// worker opens the store at once, and hundreds of them queueing for the
	// write lock only to read a number slowed start-up (make bench-scale).
	// Anything else is decided again under the lock below.
	var current int
	if err := s.r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&current); err == nil && current == schemaVersion {
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > schemaVersion {
		// A downgrade: the newer binary may store what this one would
		// misread.
		return fmt.Errorf("database schema version %d is newer than this mcpgate supports (%d)", v, schemaVersion)
	}
	if v == schemaVersion {
		return nil // the usual case, and the loser of a race to create it
	}
	for i := v; i < schemaVersion; i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migrate to version %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

func retryBusy(ctx context.Context, f func(context.Context) error) error {
	delay := 5 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil || !isBusy(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func isBusy(err error) bool {
	var e interface{ Code() int }
	if !errors.As(err, &e) {
		return false
	}
	c := e.Code() & 0xff // primary result code of an extended one
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

// Close closes both connection pools. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.revoke != nil {
			errs = append(errs, s.revoke.Close())
		}
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		if s.w != nil {
			errs = append(errs, s.w.Close())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("sqlite: close: %w", err)
		}
	})
	return s.closeErr
}

// Argument checks every operation shares.

// requireExpiry rejects a zero expiry, which would otherwise be stored as
// "expired at the epoch" and vanish silently.
func requireExpiry(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("sqlite: %s: expiry time not set", what)
	}
	return nil
}

func errZeroNow(op string) error {
	return fmt.Errorf("sqlite: %s: now is the zero time", op)
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func notFound(op string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
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
