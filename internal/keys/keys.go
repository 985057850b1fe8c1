// Package keys is mcpgate's token signing key set, kept in
// <state_dir>/keys/ and shared by every worker process.
//
// The algorithm is pinned: RS256 with 2048-bit RSA keys (OIDC discovery
// requires RS256, and it verifies fastest of the algorithms golang-jwt
// offers). Each key is one immutable file named <kid>.json, written
// atomically, mode 0600, in a 0700 directory; the kid is the key's RFC 7638
// JWK thumbprint. The newest key signs; older keys stay for verification and
// in the JWKS until every token they signed has expired, then they are
// deleted. Creation, rotation and deletion happen under an exclusive flock
// on <state_dir>/keys/.lock, so workers starting together on a fresh
// state_dir agree on a single first key.
package keys

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/store"
)

// Algorithm is the only JWS algorithm mcpgate signs and accepts.
const Algorithm = "RS256"

// Bits is the size of the RSA keys mcpgate generates.
const Bits = 2048

// Defaults for the zero values in Options.
const (
	DefaultRotateAfter = 30 * 24 * time.Hour
	DefaultRetainFor   = 24 * time.Hour
)

// RefreshInterval is how often a worker calls Refresh to pick up keys that
// another process rotated or retired.
const RefreshInterval = time.Minute

// RetainFor is the Options.RetainFor for access tokens living accessTTL: a
// worker that has not refreshed yet signs with the replaced key for up to
// RefreshInterval, and its tokens then live accessTTL; one more interval
// is margin. Every process opening a state directory must use the same
// value, or the one with the shortest retention deletes keys early.
func RetainFor(accessTTL time.Duration) time.Duration { return accessTTL + 2*RefreshInterval }

// changeCheck bounds how often Signer, JWKS and Keys look at the key
// directory's modification time, so a key rotated by another process
// (`mcpgate keys rotate`) signs new tokens within this interval rather
// than at the next Refresh.
const changeCheck = 200 * time.Millisecond

const (
	dirName    = "keys"
	lockName   = ".lock"
	tmpPrefix  = ".tmp-"
	fileSuffix = ".json"
)

// Options tune rotation. Zero values take the defaults.
type Options struct {
	// RotateAfter is the age at which the active key is replaced by a new
	// one (default DefaultRotateAfter).
	RotateAfter time.Duration
	// RetainFor is how long a key is kept after a newer key replaced it
	// (default DefaultRetainFor). It must exceed the longest access token
	// lifetime plus the interval at which workers call Refresh: a worker
	// that has not refreshed yet still signs with the previous key.
	RetainFor time.Duration
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Info describes one key, for listings.
type Info struct {
	Kid     string
	Created time.Time
	Active  bool // the key that signs
	// Retires is when the key leaves the JWKS and is deleted: RetainFor
	// after the next newer key replaced it. Zero for the active key.
	Retires time.Time
}

// Set is the key set of one state_dir. It is safe for concurrent use; the
// accessors read an immutable snapshot and never block.
type Set struct {
	dir         string
	rotateAfter time.Duration
	retainFor   time.Duration
	now         func() time.Time

	// shared, when set, holds the keys instead of dir (OpenShared); aead
	// seals and opens their private keys.
	shared store.KeyStore
	aead   cipher.AEAD

	mu   sync.Mutex // serialises Refresh and Rotate within this process
	snap atomic.Pointer[snapshot]

	lastCheck atomic.Int64 // monotonic nanoseconds (since start) of the last directory stat in fresh
	dirMtime  atomic.Int64 // the key directory's mtime (unix ns) at that stat
}

// snapshot is the set as last read from disk. Never modified once published.
type snapshot struct {
	keys  []*key // newest first; never empty once published
	byKid map[string]*key
	names []string // sorted key file names: unchanged names mean unchanged keys
	jwks  []byte
}

type key struct {
	kid     string
	created time.Time
	priv    *rsa.PrivateKey
}

// keyFile is the on-disk form of one key.
type keyFile struct {
	Kid        string    `json:"kid"`
	Alg        string    `json:"alg"`
	Created    time.Time `json:"created"`
	PrivateKey string    `json:"private_key"` // PKCS#8 PEM
}

// Open loads the key set of stateDir, creating <stateDir>/keys and the first
// key when there is none, and rotating or deleting keys that are due.
func Open(stateDir string, opts Options) (*Set, error) {
	if stateDir == "" {
		return nil, errors.New("keys: empty state directory")
	}
	if opts.RotateAfter < 0 || opts.RetainFor < 0 {
		return nil, errors.New("keys: negative RotateAfter or RetainFor")
	}
	s := &Set{
		dir:         filepath.Join(stateDir, dirName),
		rotateAfter: opts.RotateAfter,
		retainFor:   opts.RetainFor,
		now:         opts.Now,
	}
	if s.rotateAfter == 0 {
		s.rotateAfter = DefaultRotateAfter
	}
	if s.retainFor == 0 {
		s.retainFor = DefaultRetainFor
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	// MkdirAll leaves an existing directory alone; this one holds private
	// keys and is ours alone.
	fi, err := os.Stat(s.dir)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
	}
	if err := s.Refresh(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the directory holding the key files; "" when the keys are kept
// in a shared store.
func (s *Set) Dir() string { return s.dir }

// Signer returns the active key: the newest. A key another process added
// is picked up within changeCheck (see fresh).
func (s *Set) Signer() (kid string, key *rsa.PrivateKey) {
	s.fresh()
	k := s.snap.Load().keys[0]
	return k.kid, k.priv
}

// start is the origin of lastCheck's monotonic clock.
var start = time.Now()

// fresh refreshes the set when the key directory changed since it last
// looked, at most every changeCheck. Creating or deleting a key file
// renames or removes a directory entry, which updates the directory's
// mtime. An mtime less than a second old is treated as changed every
// time: a coarse file system clock can give two changes the same stamp.
// Errors keep the current keys, as Refresh does; the periodic Refresh
// reports them and retries. The mtime is remembered even then, so a
// failing Refresh (a rotation that cannot be written, which costs a key
// generation) is not retried at every request to the public JWKS.
func (s *Set) fresh() {
	now := int64(time.Since(start))
	last := s.lastCheck.Load()
	if now-last < int64(changeCheck) || !s.lastCheck.CompareAndSwap(last, now) {
		return
	}
	fi, err := os.Stat(s.dir)
	if err != nil {
		return
	}
	m := fi.ModTime().UnixNano()
	if m == s.dirMtime.Load() && time.Since(fi.ModTime()) > time.Second {
		return
	}
	s.dirMtime.Store(m)
	s.Refresh()
}

// PublicKey returns the public key with the given kid, if the set holds it.
func (s *Set) PublicKey(kid string) (*rsa.PublicKey, bool) {
	k, ok := s.snap.Load().byKid[kid]
	if !ok {
		return nil, false
	}
	return &k.priv.PublicKey, true
}

// JWKS returns the public keys as an RFC 7517 JWK Set, newest first.
func (s *Set) JWKS() []byte {
	s.fresh()
	return slices.Clone(s.snap.Load().jwks)
}

// Keys lists the keys, newest (the active one) first.
func (s *Set) Keys() []Info {
	s.fresh()
	sn := s.snap.Load()
	out := make([]Info, len(sn.keys))
	for i, k := range sn.keys {
		out[i] = Info{Kid: k.kid, Created: k.created, Active: i == 0}
		if i > 0 {
			out[i].Retires = sn.keys[i-1].created.Add(s.retainFor)
		}
	}
	return out
}

// Refresh re-reads the directory, picking up keys that other processes
// created and dropping keys they deleted, then rotates the active key or
// deletes retired keys if that is due. When nothing changed and nothing is
// due it costs one directory listing. On error the previous keys stay in
// use.
func (s *Set) Refresh() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.snap.Load()
	sn, err := s.read(prev)
	if err != nil {
		return err
	}
	if rotate, prune := s.due(sn); rotate || len(prune) > 0 {
		msn, merr := s.maintain(false)
		if merr != nil {
			// Keep what other processes did visible even if we cannot
			// write; an empty directory is the one thing not to publish.
			return errors.Join(merr, s.publish(sn))
		}
		sn = msn
	}
	return s.publish(sn)
}

// Rotate creates a new active key now, whatever the age of the current one,
// and returns its kid. Older keys keep verifying until retired.
func (s *Set) Rotate() (kid string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, err := s.maintain(true)
	if err != nil {
		return "", err
	}
	if err := s.publish(sn); err != nil {
		return "", err
	}
	return sn.keys[0].kid, nil
}

func (s *Set) publish(sn *snapshot) error {
	if len(sn.keys) == 0 {
		if s.shared != nil {
			return errors.New("keys: the store holds no key")
		}
		return fmt.Errorf("keys: %s holds no key", s.dir)
	}
	s.snap.Store(sn)
	return nil
}

// due reports whether the active key must be replaced and which keys are
// retired: a key retires RetainFor after the next newer key replaced it
// (not RotateAfter+RetainFor after its own creation, which would delete a
// key at once if the gateway was down when it should have rotated).
func (s *Set) due(sn *snapshot) (rotate bool, prune []*key) {
	now := s.now()
	if len(sn.keys) == 0 || !now.Before(sn.keys[0].created.Add(s.rotateAfter)) {
		rotate = true
	}
	for i := 1; i < len(sn.keys); i++ {
		if !now.Before(sn.keys[i-1].created.Add(s.retainFor)) {
			prune = append(prune, sn.keys[i])
		}
	}
	return rotate, prune
}

// read loads the keys from wherever they are kept.
func (s *Set) read(prev *snapshot) (*snapshot, error) {
	if s.shared != nil {
		return s.readShared(prev)
	}
	return load(s.dir, prev)
}

// maintain takes the directory lock, re-reads the keys (another process may
// have done the work meanwhile), creates a key if forced or due, deletes
// retired keys and returns the result. Called with s.mu held.
func (s *Set) maintain(force bool) (*snapshot, error) {
	if s.shared != nil {
		return s.maintainShared(force)
	}
	unlock, err := lockDir(s.dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	removeTemps(s.dir) // under the lock nobody is writing one

	sn, err := load(s.dir, s.snap.Load())
	if err != nil {
		return nil, err
	}
	rotate, _ := s.due(sn)
	if force || rotate {
		created := s.now()
		if len(sn.keys) > 0 && !created.After(sn.keys[0].created) {
			// The newest key signs: a new key must be strictly newest even
			// if the clock stood still or went back.
			created = sn.keys[0].created.Add(time.Nanosecond)
		}
		k, err := generate(created)
		if err != nil {
			return nil, err
		}
		if err := writeKey(s.dir, k); err != nil {
			return nil, err
		}
		if sn, err = load(s.dir, sn); err != nil {
			return nil, err
		}
	}
	if _, prune := s.due(sn); len(prune) > 0 {
		var errs []error
		for _, k := range prune {
			if err := os.Remove(filepath.Join(s.dir, k.kid+fileSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("keys: %w", err))
			}
		}
		if err := syncDir(s.dir); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		if sn, err = load(s.dir, sn); err != nil {
			return nil, err
		}
	}
	return sn, nil
}

// load reads the key files of dir, reusing the parsed keys of prev for
// files it already knew (key files are never modified, only created and
// deleted), and returns prev itself when the listing is unchanged.
func load(dir string, prev *snapshot) (*snapshot, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, fileSuffix) && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	if prev != nil && slices.Equal(names, prev.names) {
		return prev, nil
	}
	sn := &snapshot{names: names, byKid: make(map[string]*key, len(names))}
	for _, n := range names {
		kid := strings.TrimSuffix(n, fileSuffix)
		k := (*key)(nil)
		if prev != nil {
			k = prev.byKid[kid]
		}
		if k == nil {
			k, err = readKey(filepath.Join(dir, n), kid)
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted by another process since the listing
			}
			if err != nil {
				return nil, err
			}
		}
		sn.keys = append(sn.keys, k)
		sn.byKid[kid] = k
	}
	slices.SortFunc(sn.keys, func(a, b *key) int {
		if c := b.created.Compare(a.created); c != 0 {
			return c
		}
		return strings.Compare(a.kid, b.kid)
	})
	sn.jwks = buildJWKS(sn.keys)
	return sn, nil
}

func readKey(path, kid string) (*key, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keys: %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("keys: %s: mode %#o, want 0600: the file holds a private key", path, perm)
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	bad := func(msg string) error { return fmt.Errorf("keys: %s: %s", path, msg) }
	if kf.Alg != Algorithm {
		return nil, bad(fmt.Sprintf("alg %q, want %q", kf.Alg, Algorithm))
	}
	if kf.Created.IsZero() {
		return nil, bad("no created time")
	}
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, bad("private_key is not a PKCS#8 PEM block")
	}
	pk, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, bad(err.Error())
	}
	priv, ok := pk.(*rsa.PrivateKey)
	if !ok {
		return nil, bad(fmt.Sprintf("%T is not an RSA key", pk))
	}
	if priv.N.BitLen() < Bits {
		return nil, bad(fmt.Sprintf("RSA key of %d bits, want at least %d", priv.N.BitLen(), Bits))
	}
	if t := Thumbprint(&priv.PublicKey); kf.Kid != kid || t != kid {
		return nil, bad(fmt.Sprintf("kid %q and thumbprint %q do not match the file name", kf.Kid, t))
	}
	return &key{kid: kid, created: kf.Created, priv: priv}, nil
}

func generate(now time.Time) (*key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, Bits)
	if err != nil {
		return nil, fmt.Errorf("keys: generate: %w", err)
	}
	return &key{kid: Thumbprint(&priv.PublicKey), created: now.UTC().Round(0), priv: priv}, nil
}

// writeKey writes k atomically: a temporary file, fsynced, renamed into
// place, and the directory fsynced, so a crash leaves no partial key.
func writeKey(dir string, k *key) (err error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	data, err := json.MarshalIndent(keyFile{
		Kid:        k.kid,
		Alg:        Algorithm,
		Created:    k.created,
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*") // mode 0600
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err = chownLikeDir(f, dir); err != nil {
		return err
	}
	if _, err = f.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, k.kid+fileSuffix)); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keys: sync %s: %w", dir, err)
	}
	return nil
}

// chownLikeDir gives f the owner of dir when this process runs as root:
// `mcpgate keys rotate` run by root must not leave a key file or lock
// that the service user cannot open. Other users cannot chown, and need
// not: their files are the service's only if they are the service user.
func chownLikeDir(f *os.File, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// removeTemps deletes temporary files left by a crash during writeKey.
func removeTemps(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// lockDir takes the exclusive lock of the key directory. flock locks belong
// to the open file description, so they exclude other processes and other
// Sets of this process alike; closing the file releases the lock, and so
// does the death of the process.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if err := chownLikeDir(f, dir); err != nil {
		f.Close()
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("keys: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// Thumbprint is the RFC 7638 JWK thumbprint of pub: the unpadded base64url
// SHA-256 of its required members in lexicographic order, no whitespace.
func Thumbprint(pub *rsa.PublicKey) string {
	n, e := jwkNE(pub)
	sum := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func jwkNE(pub *rsa.PublicKey) (n, e string) {
	return base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
}

type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func buildJWKS(ks []*key) []byte {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: make([]jwk, 0, len(ks))}
	for _, k := range ks {
		n, e := jwkNE(&k.priv.PublicKey)
		set.Keys = append(set.Keys, jwk{Kty: "RSA", Use: "sig", Alg: Algorithm, Kid: k.kid, N: n, E: e})
	}
	b, _ := json.Marshal(set) // strings only: cannot fail
	return b
}
