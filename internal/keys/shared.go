package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

// Keys in a shared store (PostgreSQL, issue 14): every node signs with the
// same newest key and verifies with the same set, and one node at a time
// rotates (store.KeyStore's lock). Private keys are sealed with AES-256-GCM
// under a key derived by HKDF-SHA256 from the operator's key-encryption
// key, so a database dump alone does not let anyone mint tokens.

// MinKEK is the least key-encryption key material OpenShared accepts.
const MinKEK = 32

// sealVersion is the first byte of a sealed key: the format (HKDF info,
// AES-256-GCM, 12-byte nonce).
const sealVersion = 1

// ErrWrongKEK: a stored key cannot be opened with this node's
// key-encryption key.
var ErrWrongKEK = errors.New("keys: a stored signing key cannot be decrypted: key_encryption_key must be the same file on every node")

// sharedTimeout bounds one read or update of the shared keys; Refresh is
// called on the request path for unknown kids.
const sharedTimeout = 5 * time.Second

// OpenShared loads the key set kept in ks, creating the first key when
// there is none and rotating or deleting keys that are due, like Open.
// kek is the key-encryption key material (at least MinKEK bytes).
func OpenShared(ks store.KeyStore, kek []byte, opts Options) (*Set, error) {
	if len(kek) < MinKEK {
		return nil, fmt.Errorf("keys: key-encryption key of %d bytes, want at least %d", len(kek), MinKEK)
	}
	if opts.RotateAfter < 0 || opts.RetainFor < 0 {
		return nil, errors.New("keys: negative RotateAfter or RetainFor")
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	s := &Set{shared: ks, aead: aead, rotateAfter: opts.RotateAfter, retainFor: opts.RetainFor, now: opts.Now}
	if s.rotateAfter == 0 {
		s.rotateAfter = DefaultRotateAfter
	}
	if s.retainFor == 0 {
		s.retainFor = DefaultRetainFor
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.Refresh(); err != nil {
		return nil, err
	}
	return s, nil
}

func newAEAD(kek []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, kek, nil, "mcpgate signing keys v1", 32)
	if err != nil {
		return nil, fmt.Errorf("keys: derive: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return cipher.NewGCM(block)
}

// aad binds a sealed key to its kid and creation time: rows cannot be
// swapped or re-dated in the database without failing to open.
func aad(kid string, created time.Time) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(created.UnixMilli()))
	return append(b, kid...)
}

func (s *Set) seal(k *key) (store.SealedKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return store.SealedKey{}, fmt.Errorf("keys: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	out := append([]byte{sealVersion}, nonce...)
	out = s.aead.Seal(out, nonce, der, aad(k.kid, k.created))
	return store.SealedKey{Kid: k.kid, Created: k.created, Sealed: out}, nil
}

func (s *Set) open(sk store.SealedKey) (*key, error) {
	ns := s.aead.NonceSize()
	if len(sk.Sealed) < 1+ns || sk.Sealed[0] != sealVersion {
		return nil, fmt.Errorf("keys: stored key %s: unknown format", sk.Kid)
	}
	der, err := s.aead.Open(nil, sk.Sealed[1:1+ns], sk.Sealed[1+ns:], aad(sk.Kid, sk.Created))
	if err != nil {
		return nil, fmt.Errorf("%w (kid %s)", ErrWrongKEK, sk.Kid)
	}
	pk, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("keys: stored key %s: %w", sk.Kid, err)
	}
	priv, ok := pk.(*rsa.PrivateKey)
	if !ok || priv.N.BitLen() < Bits {
		return nil, fmt.Errorf("keys: stored key %s: not an RSA key of at least %d bits", sk.Kid, Bits)
	}
	if Thumbprint(&priv.PublicKey) != sk.Kid {
		return nil, fmt.Errorf("keys: stored key %s: kid does not match the key", sk.Kid)
	}
	return &key{kid: sk.Kid, created: sk.Created, priv: priv}, nil
}

// readShared builds a snapshot from the store, reusing the keys prev has
// already opened (stored keys never change, they are only added and
// deleted), and returns prev itself when nothing changed.
func (s *Set) readShared(prev *snapshot) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	stored, err := s.shared.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return s.snapshotOf(stored, prev)
}

func (s *Set) snapshotOf(stored []store.SealedKey, prev *snapshot) (*snapshot, error) {
	names := make([]string, 0, len(stored))
	for _, sk := range stored {
		names = append(names, sk.Kid)
	}
	slices.Sort(names)
	if prev != nil && slices.Equal(names, prev.names) {
		return prev, nil
	}
	sn := &snapshot{names: names, byKid: make(map[string]*key, len(stored))}
	for _, sk := range stored {
		var k *key
		if prev != nil {
			k = prev.byKid[sk.Kid]
		}
		if k == nil {
			var err error
			if k, err = s.open(sk); err != nil {
				return nil, err
			}
		}
		sn.keys = append(sn.keys, k)
		sn.byKid[k.kid] = k
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

// maintainShared is maintain on the store: under the store's lock it
// re-reads the keys (another node may have rotated meanwhile), adds a key
// if forced or due and deletes retired ones. Called with s.mu held.
func (s *Set) maintainShared(force bool) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	var result []store.SealedKey
	err := s.shared.UpdateSigningKeys(ctx, func(cur []store.SealedKey) ([]store.SealedKey, []string, error) {
		sn, err := s.snapshotOf(cur, s.snap.Load())
		if err != nil {
			return nil, nil, err
		}
		var add []store.SealedKey
		rotate, _ := s.due(sn)
		if force || rotate {
			// Milliseconds: what the store keeps. The newest key signs, so
			// a new one must be strictly newest even if clocks disagree.
			created := s.now().UTC().Truncate(time.Millisecond)
			if len(sn.keys) > 0 && !created.After(sn.keys[0].created) {
				created = sn.keys[0].created.Add(time.Millisecond)
			}
			k, err := generate(created)
			if err != nil {
				return nil, nil, err
			}
			k.created = created
			sk, err := s.seal(k)
			if err != nil {
				return nil, nil, err
			}
			add = append(add, sk)
			cur = append(cur, sk)
			if sn, err = s.snapshotOf(cur, sn); err != nil {
				return nil, nil, err
			}
		}
		var del []string
		_, prune := s.due(sn)
		for _, k := range prune {
			del = append(del, k.kid)
		}
		result = slices.DeleteFunc(cur, func(sk store.SealedKey) bool { return slices.Contains(del, sk.Kid) })
		return add, del, nil
	})
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return s.snapshotOf(result, s.snap.Load())
}

// Adopt adds every key of from that s does not hold, with its creation
// time, so tokens either set signed keep verifying after a move between
// state_dir files and a shared store (mcpgate store import). The newest
// key of the union signs. It returns how many keys it added.
func (s *Set) Adopt(from *Set) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var missing []*key
	have := s.snap.Load()
	for _, k := range from.snap.Load().keys {
		if have.byKid[k.kid] == nil {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return 0, nil
	}
	if s.shared != nil {
		var sealed []store.SealedKey
		for _, k := range missing {
			// The store keeps milliseconds; so must the authenticated data.
			c := *k
			c.created = k.created.UTC().Truncate(time.Millisecond)
			sk, err := s.seal(&c)
			if err != nil {
				return 0, err
			}
			sealed = append(sealed, sk)
		}
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		defer cancel()
		err := s.shared.UpdateSigningKeys(ctx, func([]store.SealedKey) ([]store.SealedKey, []string, error) {
			return sealed, nil, nil
		})
		if err != nil {
			return 0, fmt.Errorf("keys: %w", err)
		}
	} else {
		unlock, err := lockDir(s.dir)
		if err != nil {
			return 0, err
		}
		for _, k := range missing {
			if err := writeKey(s.dir, k); err != nil {
				unlock()
				return 0, err
			}
		}
		unlock()
	}
	sn, err := s.read(s.snap.Load())
	if err != nil {
		return 0, err
	}
	return len(missing), s.publish(sn)
}
