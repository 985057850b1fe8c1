package quicroute

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// FuzzParseInitial checks that ParseInitial never panics (Go checks every
// index, so an out-of-bounds read would), never modifies its input, and
// returns consistent results. mode%3 selects how data becomes a datagram:
//
//	0: data itself (random bytes);
//	1: data is the plaintext payload of a correctly sealed Initial, since
//	   mutated ciphertext never gets past the AEAD and the frame parser
//	   would go unfuzzed (mode bits choose version, packet number length,
//	   coalesced junk);
//	2: a real Initial (RFC vectors, captured quic-go datagrams; mode/3
//	   picks one) edited by data: 3-byte ops (position, value) XOR a byte,
//	   value 0 truncates.
//
// Real Initials are ≥1200 bytes of ciphertext that the fuzzer's minimizer
// cannot shrink (its byte-subset pass is quadratic), so they enter as
// edit scripts rather than raw seeds. Inputs the mutator grows still can
// be slow to minimize: use -fuzzminimizetime 2s (see the package doc).
func FuzzParseInitial(f *testing.F) {
	bases := [][]byte{readHex(f, "rfc9001_client_initial.hex"), readHex(f, "rfc9369_client_initial.hex")}
	bases = append(bases, quicGoFixture(f)...)
	for i := range bases {
		f.Add(uint8(2+3*i), []byte{})
		f.Add(uint8(2+3*i), []byte{0, 5, 0x40, 0, 20, 0x80}) // version, length field
	}
	f.Add(uint8(0), []byte{0x40, 1, 2, 3})
	f.Add(uint8(0), []byte{0xc0, 0xff, 0, 0, 0x1d, 1, 1, 1, 1})
	f.Add(uint8(1), readHex(f, "rfc_client_hello_crypto.hex")[:40])
	for _, d := range quicGoFixture(f) {
		in, err := ParseInitial(d)
		if err != nil {
			f.Fatal(err)
		}
		var payload []byte
		for _, c := range in.Crypto {
			payload = append(payload, cryptoFrame(c.Offset, c.Data[:min(len(c.Data), 16)])...)
		}
		f.Add(uint8(1), payload)
	}
	f.Add(uint8(4), []byte{2, 10, 0, 1, 2, 3, 4, 3, 10, 0, 0, 0, 1, 2, 3, 6, 0, 1, 'x'})
	f.Add(uint8(7), []byte{0, 0, 1, 0x1c, 0x0a, 0x06, 3, 'b', 'y', 'e', 0x08})
	f.Add(uint8(16), []byte{6, 0x80, 0, 0, 1, 0x40, 2, 1, 2})
	f.Add(uint8(1), []byte{2, 0x80, 0xff, 0xff, 0xff, 0, 0xbf, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, mode uint8, data []byte) {
		switch mode % 3 {
		case 0:
			orig := bytes.Clone(data)
			in, err := ParseInitial(data)
			if !bytes.Equal(data, orig) {
				t.Fatal("input modified")
			}
			checkParsed(t, data, in, err)

		case 1:
			if len(data) > 4000 {
				data = data[:4000]
			}
			o := sealOpts{dcid: []byte("fuzzdcid"), scid: []byte{1, 2}, pnLen: int(mode>>2&3) + 1}
			o.pn = uint64(len(data)) & (1<<(8*o.pnLen) - 1)
			if mode&0x10 != 0 {
				o.version = Version2
			}
			pkt := sealInitial(o, data)
			plen := len(pkt)
			if mode&0x20 != 0 {
				pkt = append(pkt, data...) // coalesced junk
			}
			in, err := ParseInitial(pkt)
			checkParsed(t, pkt, in, err)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("valid packet, error %v", err)
				}
				return
			}
			if in.PacketLen != plen || in.PacketNumber != o.pn || !bytes.Equal(in.DCID, o.dcid) || !bytes.Equal(in.SCID, o.scid) {
				t.Fatalf("got %+v", in)
			}

		case 2:
			base := bases[int(mode/3)%len(bases)]
			d := bytes.Clone(base)
			for ; len(data) >= 3; data = data[3:] {
				pos, v := int(binary.BigEndian.Uint16(data)), data[2]
				if v == 0 {
					d = d[:pos%(len(d)+1)]
				} else if len(d) > 0 {
					d[pos%len(d)] ^= v
				}
			}
			orig := bytes.Clone(d)
			in, err := ParseInitial(d)
			if !bytes.Equal(d, orig) {
				t.Fatal("input modified")
			}
			checkParsed(t, d, in, err)
			if bytes.Equal(d, base) && err != nil {
				t.Fatalf("unedited base: %v", err)
			}
		}
	})
}

func checkParsed(t *testing.T, data []byte, in *Initial, err error) {
	t.Helper()
	if err != nil {
		if in != nil {
			t.Fatal("Initial with error")
		}
		return
	}
	if in.PacketLen > len(data) || in.HeaderLen >= in.PacketLen || in.HeaderLen < 7 ||
		!bytes.Equal(in.DCID, data[6:6+len(in.DCID)]) || len(data) < MinInitialDatagramSize {
		t.Fatalf("inconsistent %+v", in)
	}
	total := 0
	for _, c := range in.Crypto {
		total += len(c.Data)
		if c.Offset+uint64(len(c.Data)) > maxVarint {
			t.Fatal("CRYPTO beyond 2^62")
		}
	}
	if total > in.PacketLen-in.HeaderLen-tagLen {
		t.Fatalf("%d CRYPTO bytes in a %d-byte payload", total, in.PacketLen-in.HeaderLen-tagLen)
	}
}

// FuzzRoute drives a Router with small limits through a sequence of
// operations decoded from the input: raw datagrams, sealed Initials and
// 0-RTT packets for a few connections (some carrying pieces of a real
// ClientHello), 1-RTT packets with valid ids, clock jumps, Bind and
// Refuse. It checks that nothing panics, that decisions are well formed,
// and that the router's memory stays within its limits.
func FuzzRoute(f *testing.F) {
	hello := testHello(f, "fuzz.example")
	op := func(code byte, payload []byte) []byte {
		return append(binary.BigEndian.AppendUint16([]byte{code}, uint16(len(payload))), payload...)
	}
	piece := func(off, n int) []byte {
		return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, uint16(off)), uint16(n))
	}
	// Op 7 with 0x20: captured quic-go datagram (code>>3)&3, XOR-edited
	// by the payload (position, value) pairs.
	fixture := quicGoFixture(f)
	captured := func(k int, edits ...byte) []byte { return op(byte(7|0x20|k<<3), edits) }
	f.Add(slices.Concat(captured(1), captured(0)))
	f.Add(slices.Concat(captured(2), captured(2), op(5, nil), captured(3), captured(0)))
	f.Add(slices.Concat(captured(0), captured(1, 0, 100, 4)))
	f.Add(append(op(2, piece(0, 1000)), op(2, piece(1000, 2000))...))
	f.Add(append(append(op(2, piece(500, 2000)), op(4, nil)...), op(2, piece(0, 600))...))
	f.Add(append(append(op(2, piece(0, 3000)), op(6, nil)...), op(0x0c, nil)...))
	f.Add(append(op(3, []byte{1, 2, 3}), op(5, nil)...))
	f.Add(op(1, []byte{6, 0, 4, 1, 0, 0, 0}))
	f.Add(op(7, nil))

	const (
		maxPending = 3
		maxBound   = 4
		maxBytes   = 12000
	)
	dcids := [][]byte{[]byte("dcid-aaa"), []byte("dcid-bbb-long"), []byte("dcid-ccc")}
	f.Fuzz(func(t *testing.T, data []byte) {
		clk := newFakeClock()
		r := NewRouter(RouterConfig{Key: testKey, Now: clk.Now, MaxPending: maxPending, MaxBound: maxBound, MaxBufferedBytes: maxBytes})
		var pn uint64
		var last []byte
		for steps := 0; len(data) >= 3 && steps < 64; steps++ {
			code := data[0]
			n := min(int(binary.BigEndian.Uint16(data[1:3]))%2048, len(data)-3)
			payload := data[3 : 3+n]
			data = data[3+n:]
			dcid := dcids[int(code>>3)%len(dcids)]
			var d []byte
			wantWorker := -1
			switch code & 7 {
			case 0:
				d = payload
			case 1:
				pn++
				d = sealInitial(sealOpts{dcid: dcid, pn: pn}, payload)
			case 2: // a piece of the real ClientHello
				var off, l int
				if len(payload) >= 4 {
					off = int(binary.BigEndian.Uint16(payload)) % len(hello)
					l = int(binary.BigEndian.Uint16(payload[2:]))
				}
				end := min(off+l, len(hello), off+1100)
				pn++
				d = sealInitial(sealOpts{dcid: dcid, pn: pn}, cryptoFrame(uint64(off), hello[off:end]))
			case 3: // a 1-RTT packet for a worker, wide or narrow id
				w := uint16(code)<<8 | uint16(n)
				g := NewGenerator(w, testKey, ident)
				if n&1 == 1 {
					w = uint16(code)
					g = NewNarrowGenerator(code, testKey, ident)
				}
				cid, _ := g.GenerateConnectionID()
				d = append(append([]byte{0x40}, cid...), payload...)
				if len(d) >= 1+CIDLen+20 {
					wantWorker = int(w)
				}
			case 4:
				d = sealInitial(sealOpts{dcid: dcid, typ: type0RTT, size: len(payload)}, payload)
			case 5:
				clk.Advance(time.Duration(code) * 100 * time.Millisecond)
				continue
			case 6:
				r.Bind(dcid, uint16(code)<<5|uint16(n))
				continue
			case 7:
				switch {
				case code&0x40 != 0:
					r.Refuse(dcid)
					continue
				case code&0x20 != 0:
					d = bytes.Clone(fixture[int(code>>3)&3])
					for e := payload; len(e) >= 3; e = e[3:] {
						d[int(binary.BigEndian.Uint16(e))%len(d)] ^= e[2]
					}
				case len(last) == 0:
					continue
				default:
					d = bytes.Clone(last)
					d[int(code)%len(d)] ^= 1 << (code % 8)
				}
			}
			last = d
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, code}), 443)
			dec := r.Route(d, from)
			checkDecision(t, dec)
			if wantWorker >= 0 && (dec.Action != Forward || int(dec.Worker) != wantWorker) {
				t.Fatalf("1-RTT for worker %d: %+v", wantWorker, dec)
			}
			checkRouter(t, r, maxPending, maxBound, maxBytes)
		}
	})
}

func checkDecision(t *testing.T, dec Decision) {
	t.Helper()
	switch dec.Action {
	case Drop:
		if dec.Err == nil {
			t.Fatal("drop without error")
		}
		return
	case NewConnection:
		if len(dec.Buffered) == 0 || len(dec.DCID) < minClientDCIDLen {
			t.Fatalf("new connection %+v", dec)
		}
		for _, b := range dec.Buffered {
			if len(b.Data) == 0 {
				t.Fatal("empty buffered datagram")
			}
		}
	case Forward, Pending:
	default:
		t.Fatalf("action %v", dec.Action)
	}
	if dec.Err != nil {
		t.Fatalf("%v with error %v", dec.Action, dec.Err)
	}
}

// checkRouter verifies the router's bookkeeping against its contents.
func checkRouter(t *testing.T, r *Router, maxPending, maxBound, maxBytes int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := 0
	for _, e := range r.pending.m {
		sum += e.val.size()
		if e.val.bytes > maxPendingDatagramBytes {
			t.Fatalf("pending connection holds %d datagram bytes", e.val.bytes)
		}
	}
	if sum != r.buffered || r.buffered > maxBytes {
		t.Fatalf("buffered %d, actual %d, limit %d", r.buffered, sum, maxBytes)
	}
	if r.pending.len() > maxPending || r.bound.len() > maxBound {
		t.Fatalf("pending %d bound %d", r.pending.len(), r.bound.len())
	}
	if n := listLen(&r.pending); n != r.pending.len() {
		t.Fatalf("pending list %d, map %d", n, r.pending.len())
	}
	if n := listLen(&r.bound); n != r.bound.len() {
		t.Fatalf("bound list %d, map %d", n, r.bound.len())
	}
}

// listLen counts the list entries, or returns -1 if one is not the map's
// entry for its key.
func listLen[V any](l *lru[V]) int {
	n := 0
	for e := l.root.next; e != &l.root; e = e.next {
		if l.m[e.key] != e {
			return -1
		}
		n++
	}
	return n
}
