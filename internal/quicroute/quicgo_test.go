package quicroute

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/internal/peek"
	"github.com/quic-go/quic-go"
)

// checkFlight makes sure the capture has the shape the tests rely on:
// a ClientHello over two Initial packets, retransmitted at least once.
func checkFlight(t *testing.T, f *flight) []*Initial {
	t.Helper()
	if len(f.datagrams) < 4 {
		t.Fatalf("%v: captured %d datagrams, want the first flight and a retransmission", f.version, len(f.datagrams))
	}
	var ins []*Initial
	for i, d := range f.datagrams {
		in, err := ParseInitial(d)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if in.Version != uint32(f.version) || !bytes.Equal(in.DCID, f.datagrams0DCID(t)) || in.PacketNumber != uint64(i) {
			t.Fatalf("datagram %d: %+v", i, in)
		}
		ins = append(ins, in)
	}
	if _, err := SNI(f.datagrams[0]); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("first packet alone: %v (the ClientHello no longer spans two packets?)", err)
	}
	// quic-go cuts the ClientHello and sends the pieces out of order: the
	// first packet leaves a hole that a later packet fills.
	var a Assembler
	if _, done, _ := a.Add(ins[0].Crypto); done || a.contig >= len(a.buf) {
		t.Fatalf("first packet holds a contiguous prefix: %+v", ins[0].Crypto)
	}
	for i, in := range ins[:2] {
		for _, c := range in.Crypto {
			t.Logf("packet %d: CRYPTO [%d, %d)", i, c.Offset, c.Offset+uint64(len(c.Data)))
		}
	}
	return ins
}

func (f *flight) datagrams0DCID(t *testing.T) []byte {
	h, err := parseLongHeader(f.datagrams[0])
	if err != nil {
		t.Fatal(err)
	}
	return h.dcid
}

// TestQuicGoClientHello reassembles real quic-go client Initials (v1 and
// v2, X25519MLKEM768 key share): both orders, duplicates, a lost packet
// replaced by quic-go's own retransmission, and every order of the first
// four datagrams.
func TestQuicGoClientHello(t *testing.T) {
	for _, f := range quicGoFlights(t) {
		t.Run(f.version.String(), func(t *testing.T) {
			ins := checkFlight(t, f)
			d := f.datagrams
			for _, order := range [][]int{{0, 1}, {1, 0}, {0, 0, 1}, {1, 1, 1, 0}, {0, 2, 1}, {0, 3}, {1, 2}, {3, 2}, {4, 1}, {5, 2}} {
				var a Assembler
				var hello []byte
				for i, k := range order {
					h, done, err := a.Add(ins[k].Crypto)
					if err != nil {
						t.Fatalf("order %v: %v", order, err)
					}
					if done != (i == len(order)-1) {
						t.Fatalf("order %v: done=%v after %d packets", order, done, i+1)
					}
					hello = h
				}
				info, err := peek.ParseClientHello(hello)
				if err != nil || info.ServerName != f.sni || !slices.Equal(info.ALPN, []string{"h3"}) {
					t.Fatalf("order %v: %+v %v", order, info, err)
				}
			}
			perm := []int{0, 1, 2, 3}
			for range 24 {
				var ds [][]byte
				for _, k := range perm {
					ds = append(ds, d[k])
				}
				if sni, err := SNI(ds...); sni != f.sni || err != nil {
					t.Fatalf("order %v: %q %v", perm, sni, err)
				}
				nextPerm(perm)
			}
		})
	}
}

func nextPerm(p []int) {
	i := len(p) - 2
	for i >= 0 && p[i] >= p[i+1] {
		i--
	}
	if i < 0 {
		slices.Reverse(p)
		return
	}
	j := len(p) - 1
	for p[j] <= p[i] {
		j--
	}
	p[i], p[j] = p[j], p[i]
	slices.Reverse(p[i+1:])
}

var clientAddr = netip.MustParseAddrPort("192.0.2.7:4433")

// TestRouterQuicGo routes real quic-go Initials through the Router.
func TestRouterQuicGo(t *testing.T) {
	for _, f := range quicGoFlights(t) {
		t.Run(f.version.String(), func(t *testing.T) {
			checkFlight(t, f)
			d := f.datagrams
			for _, tc := range []struct {
				name     string
				order    []int // the last one completes the ClientHello
				buffered []int
			}{
				{"in order", []int{0, 1}, []int{0, 1}},
				{"reversed", []int{1, 0}, []int{1, 0}},
				{"duplicated", []int{1, 1, 0}, []int{1, 0}},
				{"lost, retransmitted", []int{0, 2, 3}, []int{0, 2, 3}},
				{"first lost", []int{1, 3, 2}, []int{1, 3, 2}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					clk := newFakeClock()
					r := NewRouter(RouterConfig{Key: testKey, Now: clk.Now})
					var dec Decision
					for i, k := range tc.order {
						dec = r.Route(d[k], clientAddr)
						if i < len(tc.order)-1 && dec.Action != Pending {
							t.Fatalf("datagram %d: %+v", k, dec)
						}
					}
					if dec.Action != NewConnection || dec.SNI != f.sni || !slices.Equal(dec.ALPN, []string{"h3"}) ||
						!bytes.Equal(dec.DCID, f.datagrams0DCID(t)) || len(dec.Buffered) != len(tc.buffered) {
						t.Fatalf("decision %+v", dec)
					}
					for i, k := range tc.buffered {
						if !bytes.Equal(dec.Buffered[i].Data, d[k]) || dec.Buffered[i].From != clientAddr {
							t.Fatalf("buffered[%d] is not datagram %d", i, k)
						}
					}
					r.Bind(dec.DCID, 3)
					// Retransmissions of the first flight follow the binding.
					for _, k := range []int{0, 1, 4, 5} {
						if dec := r.Route(d[k], clientAddr); dec.Action != Forward || dec.Worker != 3 {
							t.Fatalf("after Bind, datagram %d: %+v", k, dec)
						}
					}
					if s := r.Stats(); s.Pending != 0 || s.Bound != 1 || s.BufferedBytes != 0 {
						t.Fatalf("stats %+v", s)
					}
				})
			}
		})
	}
}

var _ quic.ConnectionIDGenerator = NewGenerator(0, testKey, quic.ConnectionIDFromBytes)

// quicGoFixture returns the first two datagrams of a quic-go v1 client
// ("a.example") and of a v2 client ("b.example") captured once into
// testdata, so fuzz seeds and corpus entries stay reproducible (a live
// capture has a fresh DCID and key share every run). Regenerate with
// QUICROUTE_REGEN=1 go test -run TestQuicGoFixture.
func quicGoFixture(tb testing.TB) [][]byte {
	tb.Helper()
	var ds [][]byte
	for _, name := range []string{"quicgo_v1_initials.hex", "quicgo_v2_initials.hex"} {
		b := readHex(tb, name)
		ds = append(ds, b[:len(b)/2], b[len(b)/2:])
	}
	return ds
}

func TestQuicGoFixture(t *testing.T) {
	if os.Getenv("QUICROUTE_REGEN") != "" {
		fl := quicGoFlights(t)
		for name, v := range map[string]quic.Version{"quicgo_v1_initials.hex": quic.Version1, "quicgo_v2_initials.hex": quic.Version2} {
			d := fl[v].datagrams
			if len(d[0]) != len(d[1]) {
				t.Fatal("datagrams of different sizes")
			}
			var sb strings.Builder
			fmt.Fprintf(&sb, "# quic-go %s client Initials (ServerName %q, ALPN h3): two %d-byte datagrams\n", v, fl[v].sni, len(d[0]))
			for chunk := range slices.Chunk(slices.Concat(d[0], d[1]), 32) {
				fmt.Fprintf(&sb, "%x\n", chunk)
			}
			if err := os.WriteFile("testdata/"+name, []byte(sb.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ds := quicGoFixture(t)
	for i, sni := range []string{"a.example", "b.example"} {
		a, b := ds[2*i], ds[2*i+1]
		if got, err := SNI(b, a); got != sni || err != nil {
			t.Fatalf("fixture %d: %q %v", i, got, err)
		}
		if _, err := SNI(a); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("fixture %d: first datagram alone: %v", i, err)
		}
	}
}
