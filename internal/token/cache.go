package token

import (
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
)

// The verified-token cache. Only tokens whose signature verified and whose
// required claims are present are stored; failures are not, because an
// attacker can make unlimited distinct bad tokens (a negative cache would
// only grow), malformed ones are rejected before any RSA work anyway, and
// expiry or revocation must be decided afresh on every call.

const (
	shards = 16 // a power of two; lookups on different shards never contend
	// sweepInterval limits full-shard scans for expired entries when a
	// shard is full of live ones.
	sweepInterval = time.Second
)

type entry struct {
	claims  *Claims             // immutable
	who     *identity.Principal // immutable; what Verify returns
	kid     string
	pub     *rsa.PublicKey // the key that verified it, compared by identity
	expires time.Time      // exp + leeway: useless afterwards
}

type cache struct {
	perShard int
	shards   [shards]shard
}

type shard struct {
	mu        sync.RWMutex
	m         map[[sha256.Size]byte]*entry // guarded by mu
	lastSweep time.Time                    // guarded by mu
	_         [64]byte                     // keep shards' locks on separate cache lines
}

func newCache(size int) *cache {
	c := &cache{perShard: max(1, (size+shards-1)/shards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[sha256.Size]byte]*entry)
	}
	return c
}

func (c *cache) shard(k *[sha256.Size]byte) *shard { return &c.shards[k[0]&(shards-1)] }

func (c *cache) get(k *[sha256.Size]byte) *entry {
	s := c.shard(k)
	s.mu.RLock()
	e := s.m[*k]
	s.mu.RUnlock()
	return e
}

func (c *cache) del(k *[sha256.Size]byte) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, *k)
	s.mu.Unlock()
}

// put stores e; a full shard first drops its expired entries (at most once
// per sweepInterval), then an arbitrary one: Go randomizes where map
// iteration starts.
func (c *cache) put(k *[sha256.Size]byte, e *entry, now time.Time) {
	if !now.Before(e.expires) {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.perShard {
		if now.Sub(s.lastSweep) >= sweepInterval {
			s.lastSweep = now
			for h, old := range s.m {
				if !now.Before(old.expires) {
					delete(s.m, h)
				}
			}
		}
		for h := range s.m {
			if len(s.m) < c.perShard {
				break
			}
			delete(s.m, h)
		}
	}
	s.m[*k] = e
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
