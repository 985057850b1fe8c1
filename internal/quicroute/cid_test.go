package quicroute

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

var testKey = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1700000000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func ident(b []byte) []byte { return bytes.Clone(b) }

func TestConnectionIDRoundTrip(t *testing.T) {
	otherKey := testKey
	otherKey[0] ^= 1
	for w := range 256 {
		g := NewGenerator(uint8(w), testKey, ident)
		if g.ConnectionIDLen() != CIDLen {
			t.Fatal("length")
		}
		for range 20 {
			cid, err := g.GenerateConnectionID()
			if err != nil || len(cid) != CIDLen || cid[0]>>5 != cidConfig {
				t.Fatalf("cid % x: %v", cid, err)
			}
			if got, ok := DecodeWorker(cid, testKey); !ok || got != uint8(w) {
				t.Fatalf("worker %d: decoded %d %v", w, got, ok)
			}
			if _, ok := DecodeWorker(cid[:7], testKey); ok {
				t.Fatal("7-byte id decoded")
			}
		}
	}
}

// TestConnectionIDOpacity: without the key, ids look random. The worker
// byte is spread over all values for one worker, ids do not repeat, and
// other keys (or random ids) decode only at the 1/256 rate of the check.
func TestConnectionIDOpacity(t *testing.T) {
	const n = 1 << 14
	g := NewGenerator(5, testKey, ident)
	otherKey := testKey
	otherKey[15] ^= 0x80
	var byte1 [256]int
	seen := map[string]bool{}
	falseOK := 0
	for range n {
		cid, _ := g.GenerateConnectionID()
		byte1[cid[1]]++
		if seen[string(cid)] {
			t.Fatalf("duplicate id % x", cid)
		}
		seen[string(cid)] = true
		if _, ok := DecodeWorker(cid, otherKey); ok {
			falseOK++
		}
	}
	for v, c := range byte1 {
		// Expected 64 per value; a worker id in the clear would put all
		// 16384 in one bucket.
		if c < 20 || c > 130 {
			t.Fatalf("byte 1 value %#x appears %d times of %d", v, c, n)
		}
	}
	// Expected n/32 (the config bits are right; the 5-bit check is not).
	if falseOK > n/32*2 {
		t.Fatalf("%d of %d ids decode under another key", falseOK, n)
	}
	var c codecScratch
	random := 0
	for i := range n {
		var id [CIDLen]byte
		for j := range id {
			id[j] = byte((i*2654435761 + j*40503) >> (j % 3 * 5))
		}
		if _, ok := c.decode(id[:]); ok {
			random++
		}
	}
	if random > n/256*3 {
		t.Fatalf("%d of %d arbitrary ids decode", random, n)
	}
}

type codecScratch struct{ in, out [16]byte }

func (c *codecScratch) decode(id []byte) (uint8, bool) {
	return newCIDCodec(testKey).decode(id, &c.in, &c.out)
}

func TestGeneratorConcurrent(t *testing.T) {
	g := NewGenerator(9, testKey, ident)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				cid, _ := g.GenerateConnectionID()
				if w, ok := DecodeWorker(cid, testKey); !ok || w != 9 {
					t.Error("bad id")
					return
				}
			}
		})
	}
	wg.Wait()
}
