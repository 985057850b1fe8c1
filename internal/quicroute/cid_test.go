package quicroute

import (
	"bytes"
	"encoding/hex"
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
	var workers []uint16
	for w := 0; w < 1<<16; w += 97 {
		workers = append(workers, uint16(w))
	}
	workers = append(workers, 1, 255, 256, 4095, 4096, 65535)
	for _, w := range workers {
		checkGenerator(t, NewGenerator(w, testKey, ident), w, cidWide)
	}
	for w := range 256 {
		checkGenerator(t, NewNarrowGenerator(uint8(w), testKey, ident), uint16(w), cidNarrow)
	}
}

func checkGenerator(t *testing.T, g *Generator[[]byte], w uint16, config byte) {
	t.Helper()
	if g.ConnectionIDLen() != CIDLen {
		t.Fatal("length")
	}
	for range 20 {
		cid, err := g.GenerateConnectionID()
		if err != nil || len(cid) != CIDLen || cid[0]>>5 != config {
			t.Fatalf("cid % x: %v", cid, err)
		}
		if got, ok := DecodeWorker(cid, testKey); !ok || got != w {
			t.Fatalf("worker %d: decoded %d %v", w, got, ok)
		}
		if _, ok := DecodeWorker(cid[:7], testKey); ok {
			t.Fatal("7-byte id decoded")
		}
	}
}

// TestPreviousBuildIDs: ids a previous build's worker made (8-bit layout,
// config 0; vectors from that build's encoder with nonce a1b2c3d4e5f6)
// still decode, so an upgraded supervisor routes the workers it adopts.
func TestPreviousBuildIDs(t *testing.T) {
	for hexID, want := range map[string]uint16{"1a6ca1b2c3d4e5f6": 7, "1aa3a1b2c3d4e5f6": 200} {
		id, _ := hex.DecodeString(hexID)
		if got, ok := DecodeWorker(id, testKey); !ok || got != want {
			t.Errorf("%s: decoded %d %v, want worker %d", hexID, got, ok, want)
		}
		var nonce [6]byte
		copy(nonce[:], id[2:])
		if again := newCIDCodec(testKey).encode(want, true, nonce); hex.EncodeToString(again[:]) != hexID {
			t.Errorf("narrow encoder made %x, the previous build %s", again, hexID)
		}
	}
}

// TestConnectionIDOpacity: without the key, ids look random. Both worker
// bytes are spread over all values for one worker, ids do not repeat, and
// other keys (or random ids) decode only at the rate of the check (1/32
// with the right config bits, 2/256 for arbitrary bytes: two configs).
func TestConnectionIDOpacity(t *testing.T) {
	const n = 1 << 14
	g := NewGenerator(0x0105, testKey, ident)
	otherKey := testKey
	otherKey[15] ^= 0x80
	var byte1, byte2 [256]int
	seen := map[string]bool{}
	falseOK := 0
	for range n {
		cid, _ := g.GenerateConnectionID()
		byte1[cid[1]]++
		byte2[cid[2]]++
		if seen[string(cid)] {
			t.Fatalf("duplicate id % x", cid)
		}
		seen[string(cid)] = true
		if _, ok := DecodeWorker(cid, otherKey); ok {
			falseOK++
		}
	}
	for v := range 256 {
		// Expected 64 per value; a worker id in the clear would put all
		// 16384 in one bucket.
		if c1, c2 := byte1[v], byte2[v]; c1 < 20 || c1 > 130 || c2 < 20 || c2 > 130 {
			t.Fatalf("value %#x appears %d times in byte 1, %d in byte 2, of %d", v, c1, c2, n)
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
	if random > n/128*2 {
		t.Fatalf("%d of %d arbitrary ids decode", random, n)
	}
}

type codecScratch struct{ in, out [16]byte }

func (c *codecScratch) decode(id []byte) (uint16, bool) {
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
