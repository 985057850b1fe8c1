package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/storetest"
)

// helperEnv selects the child-process mode of the test binary, the usual
// re-exec pattern: TestMultiProcess starts os.Args[0] with it set.
const helperEnv = "MCPGATE_SQLITE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := raceHelper(os.Getenv(helperEnv), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "oauth.db"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// raceHelper is one child of TestMultiProcess. It opens the database when
// told "open" on stdin (all children at once, on a file that may not exist
// yet), answers "opened", and on "race" consumes the shared code, rotates
// the shared refresh token to its own successor and takes the shared
// pending authorization, and reports one line of outcomes.
func raceHelper(path string, in io.Reader, out io.Writer) error {
	id := os.Getenv("MCPGATE_SQLITE_TEST_ID")
	lines := bufio.NewScanner(in)
	expect := func(want string) error {
		if !lines.Scan() {
			return fmt.Errorf("stdin closed before %q", want)
		}
		if got := lines.Text(); got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
	if err := expect("open"); err != nil {
		return err
	}
	s, err := Open(path)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintln(out, "opened")
	if err := expect("race"); err != nil {
		return err
	}

	ctx := context.Background()
	now := time.Now()
	outcome := func(err error) string {
		switch {
		case err == nil:
			return "won"
		case errors.Is(err, store.ErrAlreadyUsed), errors.Is(err, store.ErrAlreadyRotated), errors.Is(err, store.ErrNotFound):
			return "lost"
		default:
			return "error:" + strings.ReplaceAll(err.Error(), " ", "_")
		}
	}
	_, err = s.ConsumeAuthCode(ctx, hash("shared-code"), now)
	consume := outcome(err)
	err = s.RotateRefreshToken(ctx, hash("shared-rt"), "nonce-"+id, &store.RefreshToken{
		TokenHash: hash("next-" + id), GrantID: "g1", ClientID: "c1",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}, now)
	rotate := outcome(err)
	_, err = s.TakePending(ctx, "shared-pending")
	take := outcome(err)
	n, err := s.CountEvent(ctx, "shared-key", time.Minute, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "consume=%s rotate=%s take=%s count=%d\n", consume, rotate, take, n)
	return s.Close()
}

// TestMultiProcess runs the races across processes, as the workers do:
// four children open one fresh file at the same moment (schema creation
// races), then race for one code, one refresh token and one pending
// authorization. Each race has exactly one winner.
func TestMultiProcess(t *testing.T) {
	const children = 4
	path := filepath.Join(t.TempDir(), "oauth.db")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	type child struct {
		cmd    *exec.Cmd
		in     io.WriteCloser
		out    *bufio.Scanner
		stderr bytes.Buffer
	}
	kids := make([]*child, children)
	for i := range kids {
		c := &child{cmd: exec.CommandContext(ctx, os.Args[0], "-test.run=^$")}
		c.cmd.Env = append(os.Environ(), helperEnv+"="+path, fmt.Sprintf("MCPGATE_SQLITE_TEST_ID=%d", i))
		c.cmd.Stderr = &c.stderr
		var err error
		if c.in, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		c.out = bufio.NewScanner(stdout)
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kids[i] = c
	}
	defer func() {
		for i, c := range kids {
			c.in.Close()
			if err := c.cmd.Wait(); err != nil {
				t.Errorf("child %d: %v\n%s", i, err, c.stderr.String())
			}
		}
	}()
	tell := func(msg string) {
		for i, c := range kids {
			if _, err := fmt.Fprintln(c.in, msg); err != nil {
				t.Fatalf("child %d: %v", i, err)
			}
		}
	}
	read := func(i int) string {
		c := kids[i]
		if !c.out.Scan() {
			c.in.Close()
			c.cmd.Wait()
			t.Fatalf("child %d said nothing: %v\n%s", i, c.out.Err(), c.stderr.String())
		}
		return c.out.Text()
	}

	tell("open")
	for i := range kids {
		if got := read(i); got != "opened" {
			t.Fatalf("child %d: %q", i, got)
		}
	}

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	if err := s.CreateAuthCode(ctx, &store.AuthCode{CodeHash: hash("shared-code"), GrantID: "g1",
		ClientID: "c1", ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshToken(ctx, &store.RefreshToken{TokenHash: hash("shared-rt"), GrantID: "g1",
		ClientID: "c1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPending(ctx, &store.Pending{ID: "shared-pending", ClientID: "c1",
		ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}

	tell("race")
	wins := map[string]int{}
	counts := map[string]bool{}
	rotateWinner := -1
	for i := range kids {
		line := read(i)
		t.Logf("child %d: %s", i, line)
		for _, f := range strings.Fields(line) {
			race, outcome, _ := strings.Cut(f, "=")
			if race == "count" {
				counts[outcome] = true
				continue
			}
			switch outcome {
			case "won":
				wins[race]++
				if race == "rotate" {
					rotateWinner = i
				}
			case "lost":
			default:
				t.Errorf("child %d: %s: %s", i, race, outcome)
			}
		}
	}
	for _, race := range []string{"consume", "rotate", "take"} {
		if wins[race] != 1 {
			t.Errorf("%s: %d winners, want 1", race, wins[race])
		}
	}
	// One shared counter: the children saw 1..children, each once.
	for n := 1; n <= children; n++ {
		if !counts[fmt.Sprint(n)] {
			t.Errorf("no child counted %d: the counts were %v; one counter per process?", n, counts)
		}
	}
	for i := range kids {
		_, err := s.GetRefreshToken(ctx, hash(fmt.Sprint("next-", i)))
		if (err == nil) != (i == rotateWinner) {
			t.Errorf("successor of child %d (winner %d): %v", i, rotateWinner, err)
		}
	}
}

// TestCountEventTwoStores: two Store instances on one file (as two
// worker processes have) draw on one rate-limit budget, also when they
// count at the same moment.
func TestCountEventTwoStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oauth.db")
	var stores [2]*Store
	for i := range stores {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	const per = 10
	now := time.Now()
	seen := make(chan int64, 2*per)
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Go(func() {
			for range per {
				n, err := s.CountEvent(t.Context(), "register:192.0.2.1", time.Minute, now)
				if err != nil {
					t.Error(err)
					return
				}
				seen <- n
			}
		})
	}
	wg.Wait()
	close(seen)
	got := map[int64]bool{}
	for n := range seen {
		if got[n] {
			t.Errorf("count %d returned twice: the increments were not atomic", n)
		}
		got[n] = true
	}
	for n := int64(1); n <= 2*per; n++ {
		if !got[n] {
			t.Errorf("count %d never returned; got %v", n, got)
		}
	}
}

// TestMigrateFromVersion1: a database of the first schema, with a client
// and a refresh token in it, opens migrated: the client's unused period
// starts at its last change (not at the epoch, which would collect every
// client at once) and the family's login time is its newest token's
// creation.
func TestMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oauth.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	created, updated := time.UnixMilli(1_700_000_000_000).UTC(), time.UnixMilli(1_700_000_500_000).UTC()
	for _, q := range []string{
		migrations[0],
		"PRAGMA user_version = 1",
		fmt.Sprintf(`INSERT INTO clients VALUES ('c1', '', 0, '[]', 'n', '[]', '[]', 'none', '', '', NULL, 'x', %d, %d)`,
			created.UnixMilli(), updated.UnixMilli()),
		fmt.Sprintf(`INSERT INTO refresh_tokens VALUES ('%s', 'g1', 'c1', 's', 'alice', 'mcp', 'https://r/mcp', 'r', %d, %d, 0)`,
			hash("rt"), created.UnixMilli(), time.Now().Add(time.Hour).UnixMilli()),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.GetClient(t.Context(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !c.LastUsedAt.Equal(updated) {
		t.Errorf("migrated client's last use %v, want its last change %v", c.LastUsedAt, updated)
	}
	rt, err := s.GetRefreshToken(t.Context(), hash("rt"))
	if err != nil {
		t.Fatal(err)
	}
	if !rt.AuthTime.Equal(created) || rt.Orgs != nil || rt.RotationNonce != "" {
		t.Errorf("migrated refresh token: %+v, want auth time %v and no memberships", rt, created)
	}
	n, err := s.CountEvent(t.Context(), "k", time.Minute, time.Now())
	if err != nil || n != 1 {
		t.Errorf("CountEvent on a migrated database: %d, %v", n, err)
	}
}

// TestDurability: what was written is there after Close and a new Open,
// as after a restart.
func TestDurability(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "oauth.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	client := &store.Client{ID: "c1", SecretHash: hash("secret"), RedirectURIs: []string{"https://a.example/cb"},
		GrantTypes: []string{"authorization_code"}, Metadata: []byte(`{}`), CreatedAt: now, UpdatedAt: now}
	rt1 := &store.RefreshToken{TokenHash: hash("rt1"), GrantID: "g1", ClientID: "c1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	rt2 := &store.RefreshToken{TokenHash: hash("rt2"), GrantID: "g1", ClientID: "c1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	for _, err := range []error{
		s.CreateClient(ctx, client),
		s.CreateRefreshToken(ctx, rt1),
		s.RotateRefreshToken(ctx, rt1.TokenHash, "n1", rt2, now),
		s.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: "c1", Scope: "mcp", GrantedAt: now}),
		s.RevokeAccessToken(ctx, "jti", now.Add(time.Hour)),
		s.CreateAuthCode(ctx, &store.AuthCode{CodeHash: hash("code"), ClientID: "c1", ExpiresAt: now.Add(time.Minute)}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ConsumeAuthCode(ctx, hash("code"), now); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetClient(ctx, "c1")
	if err != nil || got.SecretHash != client.SecretHash || len(got.RedirectURIs) != 1 || !got.CreatedAt.Equal(now) {
		t.Errorf("client after reopen: %+v, %v", got, err)
	}
	old, err := s.GetRefreshToken(ctx, rt1.TokenHash)
	if err != nil || !old.RotatedAt.Equal(now) {
		t.Errorf("rotated token after reopen: %+v, %v", old, err)
	}
	if _, err := s.GetRefreshToken(ctx, rt2.TokenHash); err != nil {
		t.Errorf("current token after reopen: %v", err)
	}
	if _, err := s.GetConsent(ctx, "alice", "c1"); err != nil {
		t.Errorf("consent after reopen: %v", err)
	}
	if r, err := s.Revocations(ctx, 0, 10); err != nil || len(r) != 1 {
		t.Errorf("revocations after reopen: %+v, %v", r, err)
	}
	if _, err := s.ConsumeAuthCode(ctx, hash("code"), now); !errors.Is(err, store.ErrAlreadyUsed) {
		t.Errorf("used code after reopen: %v, want ErrAlreadyUsed", err)
	}
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "oauth.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RevokeAccessToken(t.Context(), "jti", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err) // a write, so the -wal and -shm files exist
	}
	for _, name := range []string{"oauth.db", "oauth.db-wal", "oauth.db-shm"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, perm)
		}
	}

	// An existing file that others can read is tightened.
	loose := filepath.Join(dir, "loose.db")
	if err := os.WriteFile(loose, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	s2, err := Open(loose)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if fi, err := os.Stat(loose); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("loose file after Open: %v, %v", fi.Mode(), err)
	}
}

func TestPragmas(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	for _, db := range []struct {
		name string
		q    func(string) (string, error)
	}{
		{"writer", func(p string) (v string, err error) { err = s.w.QueryRowContext(ctx, "PRAGMA "+p).Scan(&v); return }},
		{"reader", func(p string) (v string, err error) { err = s.r.QueryRowContext(ctx, "PRAGMA "+p).Scan(&v); return }},
	} {
		want := map[string]string{
			"journal_mode": "wal",
			"synchronous":  "2", // FULL
			"busy_timeout": "5000",
			"foreign_keys": "1",
			"user_version": fmt.Sprint(schemaVersion),
			"query_only":   map[string]string{"writer": "0", "reader": "1"}[db.name],
		}
		for p, w := range want {
			got, err := db.q(p)
			if err != nil || got != w {
				t.Errorf("%s: PRAGMA %s = %q, %v; want %q", db.name, p, got, err, w)
			}
		}
	}
	if _, err := s.r.ExecContext(ctx, `DELETE FROM clients`); err == nil {
		t.Error("the read pool can write")
	}
}

// TestRevocationsPlan: the poll is a primary-key range scan from the
// cursor, not an index scan plus sort.
func TestRevocationsPlan(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	plan := queryPlan(t, s, `SELECT seq, kind, value, expires_at, at FROM revocations
		WHERE seq > ? AND +expires_at > ? ORDER BY seq LIMIT ?`, 0, 0, 10)
	if len(plan) != 1 || !strings.Contains(plan[0], "USING INTEGER PRIMARY KEY (rowid>?)") {
		t.Errorf("query plan %q, want a rowid range search", plan)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oauth.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(fmt.Sprintf("PRAGMA user_version = %d", schemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer version succeeded")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("error %v", err)
	}
}

func TestOpenMissingDir(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "oauth.db"))
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}

// TestOddPath: the path goes into a file: URI escaped, so characters that
// mean something in a URI name the file literally.
func TestOddPath(t *testing.T) {
	dir := t.TempDir()
	name := "a b?c#d%20e&_txlock=x.db"
	s, err := Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RevokeAccessToken(t.Context(), "jti", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 { // the file, -wal, -shm
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("files %q", names)
	}
}

// TestInputChecks: values that would be stored as "never happened" are
// refused instead.
func TestInputChecks(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	now := time.Now()
	for name, err := range map[string]error{
		"RevokeAccessToken without expiry":  s.RevokeAccessToken(ctx, "jti", time.Time{}),
		"RevokeGrant without expiry":        s.RevokeGrant(ctx, "g", time.Time{}),
		"CreateAuthCode without expiry":     s.CreateAuthCode(ctx, &store.AuthCode{CodeHash: hash("c")}),
		"CreateRefreshToken without expiry": s.CreateRefreshToken(ctx, &store.RefreshToken{TokenHash: hash("t")}),
		"PutPending without expiry":         s.PutPending(ctx, &store.Pending{ID: "p"}),
		"RotateRefreshToken at zero time": s.RotateRefreshToken(ctx, hash("t"), "n",
			&store.RefreshToken{TokenHash: hash("u"), ExpiresAt: now.Add(time.Hour)}, time.Time{}),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := s.ConsumeAuthCode(ctx, hash("c"), time.Time{}); err == nil {
		t.Error("ConsumeAuthCode at zero time: no error")
	}
	if _, err := s.Revocations(ctx, 0, 0); err == nil {
		t.Error("Revocations with limit 0: no error")
	}
}

func TestCloseTwice(t *testing.T) {
	s := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// Benchmarks.

// fillRevocations inserts n revocations in one transaction (the benchmarks
// measure reads, not n fsyncs).
func fillRevocations(b *testing.B, s *Store, n int) {
	b.Helper()
	exp := ms(time.Now().Add(time.Hour))
	err := s.inTx(b.Context(), func(tx *sql.Tx) error {
		for i := range n {
			if _, err := tx.ExecContext(b.Context(), `INSERT INTO revocations (kind, value, expires_at, at)
				VALUES ('token', ?, ?, ?)`, fmt.Sprint("jti-", i), exp, exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func BenchmarkRevocationsPoll(b *testing.B) {
	ctx := b.Context()
	b.Run("empty", func(b *testing.B) {
		s := openTemp(b)
		defer s.Close()
		for b.Loop() {
			if _, err := s.Revocations(ctx, 0, 100); err != nil {
				b.Fatal(err)
			}
		}
	})
	s := openTemp(b)
	defer s.Close()
	fillRevocations(b, s, 1000)
	all, err := s.Revocations(ctx, 0, 1000)
	if err != nil || len(all) != 1000 {
		b.Fatal(len(all), err)
	}
	last := all[len(all)-1].Seq
	// The steady state: a worker that is up to date polls and finds nothing.
	b.Run("1000/caught-up", func(b *testing.B) {
		for b.Loop() {
			if r, err := s.Revocations(ctx, last, 100); err != nil || len(r) != 0 {
				b.Fatal(len(r), err)
			}
		}
	})
	// A worker's first poll after start reads the whole log.
	b.Run("1000/from-start", func(b *testing.B) {
		for b.Loop() {
			if r, err := s.Revocations(ctx, 0, 1000); err != nil || len(r) != 1000 {
				b.Fatal(len(r), err)
			}
		}
	})
}

func BenchmarkConsumeAuthCode(b *testing.B) {
	ctx := b.Context()
	s := openTemp(b)
	defer s.Close()
	exp := ms(time.Now().Add(time.Hour))
	codes := make([]string, b.N)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for i := range codes {
			codes[i] = hash(fmt.Sprint("code-", i))
			if _, err := tx.ExecContext(ctx, `INSERT INTO auth_codes (`+codeCols+`)
				VALUES (?, 'g', 'c', '', '', '', '', '', '', '', ?, 0, '[]', '[]', 0)`, codes[i], exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.ConsumeAuthCode(ctx, codes[i], time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIdleMaintenanceOpensNoWriter: the clean-up every worker runs each
// minute finds nothing due through a read connection and leaves the
// writer connection unopened (its SQLite memory stays unallocated); once
// something has expired it is deleted as before.
func TestIdleMaintenanceOpensNoWriter(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "oauth.db")
	s, err := Open(path) // a new file: WAL and the schema need the writer
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writers := func() int { return s.w.Stats().OpenConnections }
	if n := writers(); n != 0 {
		t.Fatalf("after Open: %d writer connections, want 0", n)
	}
	now := time.Now()
	if err := s.Cleanup(ctx, now); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteUnusedClients(ctx, now.Add(-time.Hour), now.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("DeleteUnusedClients = %d, %v; want 0, nil", n, err)
	}
	if n := writers(); n != 0 {
		t.Fatalf("after a clean-up with nothing due: %d writer connections, want 0", n)
	}

	// A window that expires in a second, cleaned up as of two seconds on.
	if _, err := s.CountEvent(ctx, "k", time.Second, now); err != nil {
		t.Fatal(err)
	}
	rows := func() (n int) {
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM rate_limits`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := s.Cleanup(ctx, now); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 1 {
		t.Fatalf("a live window: %d rows after Cleanup, want 1", n)
	}
	if err := s.Cleanup(ctx, now.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 0 {
		t.Errorf("an expired window: %d rows after Cleanup, want 0", n)
	}
}

// TestCleanupDue: the read that decides whether Cleanup writes asks about
// every table Cleanup deletes from, each through its expires_at index.
func TestCleanupDue(t *testing.T) {
	if n, want := strings.Count(cleanupDue, "EXISTS"), len(cleanupTables); n != want {
		t.Errorf("cleanupDue has %d EXISTS clauses, want one per table (%d)", n, want)
	}
	s := openTemp(t)
	defer s.Close()
	plan := queryPlan(t, s, cleanupDue, 0)
	all := strings.Join(plan, "\n")
	for _, table := range cleanupTables {
		if want := "SEARCH " + table + " USING COVERING INDEX " + table + "_expires_at (expires_at<?)"; !strings.Contains(all, want) {
			t.Errorf("query plan lacks %q:\n%s", want, all)
		}
	}
}

// queryPlan is the detail column of EXPLAIN QUERY PLAN for query, one
// entry per step.
func queryPlan(t *testing.T, s *Store, query string, args ...any) []string {
	t.Helper()
	rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}
