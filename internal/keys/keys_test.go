package keys

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
)

// helperEnv makes the test binary a helper process that opens the key set
// of the named state directory and prints the active kid.
const helperEnv = "MCPGATE_KEYS_TEST_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		s, err := Open(dir, Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		kid, _ := s.Signer()
		fmt.Println(kid)
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m))
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// keyFiles lists the kids on disk.
func keyFiles(t *testing.T, s *Set) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.Dir(), "*"+fileSuffix))
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, p := range m {
		kids = append(kids, strings.TrimSuffix(filepath.Base(p), fileSuffix))
	}
	slices.Sort(kids)
	return kids
}

func jwksKids(t *testing.T, s *Set) []string {
	t.Helper()
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k["kid"])
	}
	return kids
}

func mustOpen(t *testing.T, dir string, opts Options) *Set {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenCreatesFirstKey(t *testing.T) {
	state := t.TempDir()
	s := mustOpen(t, state, Options{})
	kid, priv := s.Signer()
	if priv == nil || priv.N.BitLen() != Bits {
		t.Fatalf("signer key: %v", priv)
	}
	if got := keyFiles(t, s); !slices.Equal(got, []string{kid}) {
		t.Fatalf("files %v, want [%s]", got, kid)
	}
	if kid != Thumbprint(&priv.PublicKey) {
		t.Fatalf("kid %s is not the thumbprint", kid)
	}
	pub, ok := s.PublicKey(kid)
	if !ok || !pub.Equal(&priv.PublicKey) {
		t.Fatal("PublicKey(kid) does not return the signer's public key")
	}
	if _, ok := s.PublicKey("nope"); ok {
		t.Fatal("PublicKey of an unknown kid")
	}

	// Permissions: the directory and the key file are private.
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{s.Dir(), 0o700}, {filepath.Join(s.Dir(), kid+fileSuffix), 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want {
			t.Errorf("%s: mode %#o, want %#o", c.path, got, c.want)
		}
	}

	// JWKS: one RS256 signing key whose n and e are the signer's.
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys", len(set.Keys))
	}
	k := set.Keys[0]
	if k.Kty != "RSA" || k.Use != "sig" || k.Alg != "RS256" || k.Kid != kid || k.E != "AQAB" {
		t.Fatalf("JWK %+v", k)
	}
	n, err := base64.RawURLEncoding.DecodeString(k.N)
	if err != nil || new(big.Int).SetBytes(n).Cmp(priv.N) != 0 {
		t.Fatalf("JWK n does not match the key (%v)", err)
	}

	// Reopening loads the same key instead of making another.
	s2 := mustOpen(t, state, Options{})
	if kid2, _ := s2.Signer(); kid2 != kid {
		t.Fatalf("reopened signer %s, want %s", kid2, kid)
	}
	if got := keyFiles(t, s2); len(got) != 1 {
		t.Fatalf("reopen made keys: %v", got)
	}
}

// Goroutines opening separate Sets take separate flocks, exactly like
// separate processes.
func TestConcurrentFirstCreation(t *testing.T) {
	state := t.TempDir()
	const n = 6
	kids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := Open(state, Options{})
			if err != nil {
				t.Error(err)
				return
			}
			kids[i], _ = s.Signer()
		})
	}
	wg.Wait()
	for _, k := range kids[1:] {
		if k != kids[0] {
			t.Fatalf("Sets disagree on the first key: %v", kids)
		}
	}
	s := mustOpen(t, state, Options{})
	if got := keyFiles(t, s); len(got) != 1 {
		t.Fatalf("%d key files after a concurrent first start: %v", len(got), got)
	}
}

func TestProcessesRaceFirstCreation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	state := t.TempDir()
	const n = 3
	cmds := make([]*exec.Cmd, n)
	outs := make([]strings.Builder, n)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^$")
		cmds[i].Env = append(os.Environ(), helperEnv+"="+state)
		cmds[i].Stdout = &outs[i]
		cmds[i].Stderr = os.Stderr
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	var kids []string
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper %d: %v", i, err)
		}
		kids = append(kids, strings.TrimSpace(outs[i].String()))
	}
	s := mustOpen(t, state, Options{})
	files := keyFiles(t, s)
	if len(files) != 1 {
		t.Fatalf("%d key files after %d processes started at once: %v", len(files), n, files)
	}
	for _, k := range kids {
		if k != files[0] {
			t.Fatalf("process kids %v, file %s", kids, files[0])
		}
	}
}

func TestRotateAndRefresh(t *testing.T) {
	state := t.TempDir()
	a := mustOpen(t, state, Options{})
	b := mustOpen(t, state, Options{})
	old, _ := a.Signer()

	// Nothing changed: Refresh keeps the very same snapshot.
	before := a.snap.Load()
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	if a.snap.Load() != before {
		t.Fatal("Refresh rebuilt the set although nothing changed")
	}

	kid, err := b.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if kid == old {
		t.Fatal("Rotate kept the kid")
	}
	if got, _ := b.Signer(); got != kid {
		t.Fatalf("signer after Rotate %s, want %s", got, kid)
	}
	if _, ok := b.PublicKey(old); !ok {
		t.Fatal("old key dropped by Rotate")
	}
	if got := jwksKids(t, b); !slices.Equal(got, []string{kid, old}) {
		t.Fatalf("JWKS kids %v, want [%s %s]", got, kid, old)
	}

	// a does not know the new key until it refreshes.
	if _, ok := a.PublicKey(kid); ok {
		t.Fatal("a knows the new key before Refresh")
	}
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.PublicKey(kid); !ok {
		t.Fatal("Refresh did not pick up the key rotated by another Set")
	}
	if got, _ := a.Signer(); got != kid {
		t.Fatalf("a signs with %s after Refresh, want %s", got, kid)
	}
	// The key a already had is reused, not parsed again.
	if a.snap.Load().byKid[old] != before.byKid[old] {
		t.Fatal("Refresh re-parsed an unchanged key file")
	}
	if got := a.Keys(); len(got) != 2 || !got[0].Active || got[0].Kid != kid || got[1].Active {
		t.Fatalf("Keys() = %+v", got)
	}
}

func TestScheduledRotationAndRetirement(t *testing.T) {
	state := t.TempDir()
	clk := newClock()
	opts := Options{RotateAfter: 30 * 24 * time.Hour, RetainFor: 2 * time.Hour, Now: clk.Now}
	a := mustOpen(t, state, opts)
	b := mustOpen(t, state, opts)
	k0, _ := a.Signer()

	clk.Add(30*24*time.Hour - time.Second)
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Signer(); got != k0 {
		t.Fatal("rotated before RotateAfter")
	}

	clk.Add(time.Second)
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	k1, _ := a.Signer()
	if k1 == k0 {
		t.Fatal("not rotated after RotateAfter")
	}
	// b is due too, but finds a's new key under the lock and makes none.
	if err := b.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Signer(); got != k1 {
		t.Fatalf("b signs with %s, want %s", got, k1)
	}
	if got := keyFiles(t, a); len(got) != 2 {
		t.Fatalf("key files %v, want the old and the new", got)
	}

	// The old key stays RetainFor after it was replaced, then goes.
	clk.Add(2*time.Hour - time.Second)
	if err := b.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.PublicKey(k0); !ok {
		t.Fatal("old key deleted before RetainFor")
	}
	clk.Add(time.Second)
	if err := b.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.PublicKey(k0); ok {
		t.Fatal("old key kept after RetainFor")
	}
	if got := keyFiles(t, b); !slices.Equal(got, []string{k1}) {
		t.Fatalf("key files %v, want [%s]", got, k1)
	}
	// a learns of the deletion on its next Refresh.
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.PublicKey(k0); ok {
		t.Fatal("a still holds a key deleted by b")
	}
	if got := jwksKids(t, a); !slices.Equal(got, []string{k1}) {
		t.Fatalf("JWKS kids %v", got)
	}
}

// A gateway that was down past RotateAfter+RetainFor rotates on start but
// must keep the old key: it signed tokens until just now.
func TestLateRotationKeepsReplacedKey(t *testing.T) {
	state := t.TempDir()
	clk := newClock()
	opts := Options{RotateAfter: time.Hour, RetainFor: time.Hour, Now: clk.Now}
	k0, _ := mustOpen(t, state, opts).Signer()
	clk.Add(10 * time.Hour)
	s := mustOpen(t, state, opts)
	k1, _ := s.Signer()
	if k1 == k0 {
		t.Fatal("no rotation")
	}
	if _, ok := s.PublicKey(k0); !ok {
		t.Fatal("the key replaced just now was deleted")
	}
}

func TestThumbprintRFC7638(t *testing.T) {
	// RFC 7638 section 3.1.
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	if got, want := Thumbprint(pub), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint %s, want %s", got, want)
	}
}

// Key files that are not exactly what mcpgate writes are refused.
func TestBadKeyFiles(t *testing.T) {
	good := t.TempDir()
	s := mustOpen(t, good, Options{})
	kid, _ := s.Signer()
	orig, err := os.ReadFile(filepath.Join(s.Dir(), kid+fileSuffix))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(*keyFile)) []byte {
		var kf keyFile
		if err := json.Unmarshal(orig, &kf); err != nil {
			t.Fatal(err)
		}
		f(&kf)
		b, _ := json.Marshal(kf)
		return b
	}
	cases := []struct {
		name string
		file string // file name in keys/; default <kid>.json
		data []byte
		mode os.FileMode
		want string
	}{
		{name: "world readable", data: orig, mode: 0o644, want: "want 0600"},
		{name: "group readable", data: orig, mode: 0o640, want: "want 0600"},
		{name: "renamed", file: "x" + kid + fileSuffix, data: orig, mode: 0o600, want: "do not match the file name"},
		{name: "kid field", data: edit(func(k *keyFile) { k.Kid = "other" }), mode: 0o600, want: "do not match"},
		{name: "alg", data: edit(func(k *keyFile) { k.Alg = "ES256" }), mode: 0o600, want: `alg "ES256"`},
		{name: "no created", data: edit(func(k *keyFile) { k.Created = time.Time{} }), mode: 0o600, want: "no created time"},
		{name: "not pem", data: edit(func(k *keyFile) { k.PrivateKey = "xx" }), mode: 0o600, want: "not a PKCS#8 PEM block"},
		{name: "not json", data: []byte("{"), mode: 0o600, want: "unexpected end of JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			dir := filepath.Join(state, dirName)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			name := c.file
			if name == "" {
				name = kid + fileSuffix
			}
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, c.data, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, c.mode); err != nil { // umask
				t.Fatal(err)
			}
			_, err := Open(state, Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open: %v, want an error containing %q", err, c.want)
			}
		})
	}

	// The untouched file, copied elsewhere, loads; a stale temporary file
	// from a crash is removed at the next write.
	state := t.TempDir()
	dir := filepath.Join(state, dirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, kid+fileSuffix), orig, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, tmpPrefix+"123")
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustOpen(t, state, Options{})
	if got, _ := c.Signer(); got != kid {
		t.Fatalf("copied key not used: %s", got)
	}
	if _, err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file left: %v", err)
	}
}

// A file that breaks after Open makes Refresh fail but keeps the keys in
// use.
func TestRefreshErrorKeepsKeys(t *testing.T) {
	state := t.TempDir()
	s := mustOpen(t, state, Options{})
	kid, _ := s.Signer()
	if err := os.WriteFile(filepath.Join(s.Dir(), "junk"+fileSuffix), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Refresh(); err == nil {
		t.Fatal("Refresh accepted a broken key file")
	}
	if got, _ := s.Signer(); got != kid {
		t.Fatal("signer changed after a failed Refresh")
	}
}

func TestOpenTightensDirectoryMode(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, dirName)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // umask
		t.Fatal(err)
	}
	mustOpen(t, state, Options{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Fatalf("keys directory mode %#o, want 0700", got)
	}
}

// TestSignerPicksUpRotationPromptly: a key rotated by another process (the
// `mcpgate keys rotate` command) signs this Set's next tokens within about
// changeCheck, without waiting for the periodic Refresh, and the JWKS
// lists it as soon.
func TestSignerPicksUpRotationPromptly(t *testing.T) {
	state := t.TempDir()
	worker := mustOpen(t, state, Options{})
	old, _ := worker.Signer()
	cli := mustOpen(t, state, Options{})
	kid, err := cli.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, _ := worker.Signer()
		if got == kid {
			break
		}
		if got != old {
			t.Fatalf("signer %s, want %s or %s", got, old, kid)
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker still signs with %s 2s after another process rotated to %s", old, kid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := jwksKids(t, worker); !slices.Equal(got, []string{kid, old}) {
		t.Fatalf("JWKS kids %v, want [%s %s]", got, kid, old)
	}
}

// TestKeysRetires: a replaced key retires RetainFor after its successor's
// creation; the active key has no retirement.
func TestKeysRetires(t *testing.T) {
	c := newClock()
	s := mustOpen(t, t.TempDir(), Options{Now: c.Now, RetainFor: time.Hour})
	c.Add(time.Minute)
	if _, err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	got := s.Keys()
	if len(got) != 2 || !got[0].Retires.IsZero() {
		t.Fatalf("Keys() = %+v, want two, the active one without retirement", got)
	}
	if want := got[0].Created.Add(time.Hour); !got[1].Retires.Equal(want) {
		t.Fatalf("replaced key retires %v, want %v", got[1].Retires, want)
	}
	if RetainFor(time.Hour) != time.Hour+2*RefreshInterval {
		t.Fatalf("RetainFor(1h) = %v", RetainFor(time.Hour))
	}
}

// TestRootWritesAsDirectoryOwner: root (the admin CLI) rotating in a key
// directory owned by the service user leaves files that user can open.
func TestRootWritesAsDirectoryOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	const uid, gid = 4242, 4343
	state := t.TempDir()
	s := mustOpen(t, state, Options{})
	if err := os.Chown(s.Dir(), uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.Dir(), lockName)); err != nil {
		t.Fatal(err)
	}
	kid, err := s.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{kid + fileSuffix, lockName} {
		fi, err := os.Stat(filepath.Join(s.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want the directory's %d:%d", name, st.Uid, st.Gid, uid, gid)
		}
	}
}
