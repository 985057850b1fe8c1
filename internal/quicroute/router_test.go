package quicroute

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/peek"
)

// testHello returns a real crypto/tls ClientHello message for sni, large
// enough (post-quantum key share) to need two Initial packets.
func testHello(tb testing.TB, sni string) []byte {
	tb.Helper()
	rec := realClientHelloRecords(tb, sni)
	var msg []byte
	for len(rec) >= 5 {
		n := int(rec[3])<<8 | int(rec[4])
		msg = append(msg, rec[5:5+n]...)
		rec = rec[5+n:]
	}
	return msg
}

// twoInitials splits hello over two client Initials of connection dcid,
// the second holding the first 64 bytes (like quic-go).
func twoInitials(tb testing.TB, dcid []byte, sni string) (first, second []byte) {
	hello := testHello(tb, sni)
	if len(hello) < 1200 {
		tb.Fatalf("ClientHello of %d bytes fits one packet", len(hello))
	}
	first = sealInitial(sealOpts{dcid: dcid, pn: 0}, cryptoFrame(64, hello[64:1100]))
	second = sealInitial(sealOpts{dcid: dcid, pn: 1}, slices.Concat(cryptoFrame(1100, hello[1100:]), cryptoFrame(0, hello[:64])))
	return first, second
}

func shortPacket(cid []byte, n int) []byte {
	p := append([]byte{0x43}, cid...)
	return append(p, make([]byte, n)...)
}

func newTestRouter(cfg RouterConfig) (*Router, *fakeClock) {
	clk := newFakeClock()
	cfg.Key, cfg.Now = testKey, clk.Now
	return NewRouter(cfg), clk
}

func wantDecision(t *testing.T, what string, got Decision, action Action, worker uint16, err error) {
	t.Helper()
	if got.Action != action || (action == Forward && got.Worker != worker) || (err != nil && !errors.Is(got.Err, err)) ||
		(err == nil && got.Err != nil) {
		t.Fatalf("%s: got %v worker %d err %v; want %v worker %d err %v", what, got.Action, got.Worker, got.Err, action, worker, err)
	}
}

func TestRouterShortHeader(t *testing.T) {
	r, _ := newTestRouter(RouterConfig{})
	g := NewGenerator(42, testKey, ident)
	cid, _ := g.GenerateConnectionID()
	wantDecision(t, "short", r.Route(shortPacket(cid, 20), clientAddr), Forward, 42, nil)
	wantDecision(t, "too short", r.Route(shortPacket(cid, 19), clientAddr), Drop, 0, ErrMalformed)
	// An id of another key that fails the check.
	// An id of another key can pass the check by chance; a few tries find
	// one that does not (bounded: a check that passes every id is a bug).
	other := NewGenerator(42, [16]byte{9}, ident)
	for try := 0; ; try++ {
		if try == 100 {
			t.Fatal("100 ids of another key all passed this key's check")
		}
		cid, _ := other.GenerateConnectionID()
		if _, ok := DecodeWorker(cid, testKey); !ok {
			wantDecision(t, "foreign", r.Route(shortPacket(cid, 30), clientAddr), Drop, 0, ErrUnknownConnection)
			break
		}
	}
	wantDecision(t, "empty", r.Route(nil, clientAddr), Drop, 0, ErrMalformed)
}

func TestRouterNewConnection(t *testing.T) {
	r, _ := newTestRouter(RouterConfig{})
	dcid := []byte("client-dcid-1234")
	first, second := twoInitials(t, dcid, "mcp.example")
	zeroRTT := sealInitial(sealOpts{dcid: dcid, typ: type0RTT, size: 300}, []byte{1})
	from2 := netip.MustParseAddrPort("[2001:db8::1]:9")

	wantDecision(t, "first", r.Route(first, clientAddr), Pending, 0, nil)
	wantDecision(t, "0-RTT", r.Route(zeroRTT, from2), Pending, 0, nil)
	wantDecision(t, "first again", r.Route(first, clientAddr), Pending, 0, nil)
	if s := r.Stats(); s.Pending != 1 || s.BufferedBytes < len(first)+len(zeroRTT) {
		t.Fatalf("stats %+v", s)
	}
	dec := r.Route(second, clientAddr)
	if dec.Action != NewConnection || dec.SNI != "mcp.example" || !bytes.Equal(dec.DCID, dcid) ||
		len(dec.Buffered) != 3 || !bytes.Equal(dec.Buffered[0].Data, first) ||
		!bytes.Equal(dec.Buffered[1].Data, zeroRTT) || dec.Buffered[1].From != from2 || !bytes.Equal(dec.Buffered[2].Data, second) {
		t.Fatalf("decision %+v", dec)
	}
	if s := r.Stats(); s != (RouterStats{}) {
		t.Fatalf("stats after decision %+v", s)
	}
	// Copies: the caller may reuse its read buffer.
	first[100] ^= 1
	if bytes.Equal(dec.Buffered[0].Data, first) {
		t.Fatal("buffered datagram aliases the input")
	}
	first[100] ^= 1
	r.Bind(dec.DCID, 7)

	wantDecision(t, "retransmitted Initial", r.Route(second, clientAddr), Forward, 7, nil)
	wantDecision(t, "0-RTT after bind", r.Route(zeroRTT, clientAddr), Forward, 7, nil)

	// The worker answered from its own id; the client switches to it.
	serverCID, _ := NewGenerator(7, testKey, ident).GenerateConnectionID()
	ackInitial := sealInitial(sealOpts{dcid: serverCID, keyDCID: dcid, pn: 2}, []byte{2, 0, 0, 0, 0})
	wantDecision(t, "Initial to server id", r.Route(ackInitial, clientAddr), Forward, 7, nil)
	hs := sealInitial(sealOpts{dcid: serverCID, typ: typeHandshake, size: 100}, []byte{1})
	wantDecision(t, "Handshake", r.Route(hs, clientAddr), Forward, 7, nil)
	wantDecision(t, "1-RTT", r.Route(shortPacket(serverCID, 40), clientAddr), Forward, 7, nil)

	// Coalesced: an Initial followed by a Handshake packet routes as one.
	wantDecision(t, "coalesced", r.Route(slices.Concat(ackInitial, hs), clientAddr), Forward, 7, nil)
}

func TestRouterDrops(t *testing.T) {
	r, _ := newTestRouter(RouterConfig{})
	dcid := []byte("abcdefgh")
	first, _ := twoInitials(t, dcid, "x.example")

	unknown := first[:6:6]
	unknown = append(unknown, first[6:]...)
	copy(unknown[1:5], []byte{0x1a, 0x2a, 0x3a, 0x4a})
	dec := r.Route(unknown, clientAddr)
	var ve *VersionError
	if !errors.As(dec.Err, &ve) || ve.Version != 0x1a2a3a4a || !bytes.Equal(ve.DCID, dcid) || dec.Action != Drop {
		t.Fatalf("unknown version: %+v", dec)
	}

	wantDecision(t, "short dcid", r.Route(sealInitial(sealOpts{dcid: []byte{1, 2, 3}}, cryptoFrame(0, []byte{1})), clientAddr), Drop, 0, ErrMalformed)
	wantDecision(t, "retry", r.Route(sealInitial(sealOpts{dcid: dcid, typ: typeRetry}, nil), clientAddr), Drop, 0, ErrMalformed)
	wantDecision(t, "0-RTT unknown", r.Route(sealInitial(sealOpts{dcid: []byte("zzzzzzzzz"), typ: type0RTT}, nil), clientAddr), Drop, 0, ErrUnknownConnection)
	wantDecision(t, "undecryptable", r.Route(sealInitial(sealOpts{dcid: []byte("zzzzzzzzz"), keyDCID: dcid}, []byte{1}), clientAddr), Drop, 0, ErrDecrypt)
	wantDecision(t, "small Initial", r.Route(first[:1000], clientAddr), Drop, 0, ErrDatagramTooSmall)
	wantDecision(t, "close", r.Route(sealInitial(sealOpts{dcid: dcid}, []byte{0x1c, 0, 0, 0}), clientAddr), Drop, 0, ErrNotInitial)
	wantDecision(t, "version negotiation", r.Route(AppendVersionNegotiation(nil, dcid, dcid, 1), clientAddr), Drop, 0, ErrNotInitial)
	if s := r.Stats(); s != (RouterStats{}) {
		t.Fatalf("drops left state: %+v", s)
	}

	// A pending connection ignores stray packets and ends on a close.
	wantDecision(t, "first", r.Route(first, clientAddr), Pending, 0, nil)
	wantDecision(t, "stray", r.Route(sealInitial(sealOpts{dcid: dcid, keyDCID: []byte("other-key")}, []byte{1}), clientAddr), Drop, 0, ErrDecrypt)
	wantDecision(t, "pending close", r.Route(sealInitial(sealOpts{dcid: dcid, pn: 5}, []byte{0x1c, 0, 0, 0}), clientAddr), Drop, 0, ErrNotInitial)
	if s := r.Stats(); s != (RouterStats{}) {
		t.Fatalf("close left state: %+v", s)
	}

	// Conflicting CRYPTO data: the connection is refused, and stays so.
	wantDecision(t, "first", r.Route(first, clientAddr), Pending, 0, nil)
	in, _ := ParseInitial(first)
	bad := bytes.Clone(in.Crypto[0].Data[:10])
	bad[3] ^= 1
	wantDecision(t, "conflict", r.Route(sealInitial(sealOpts{dcid: dcid, pn: 9}, cryptoFrame(in.Crypto[0].Offset, bad)), clientAddr), Drop, 0, ErrConflict)
	wantDecision(t, "after conflict", r.Route(first, clientAddr), Drop, 0, ErrRefused)

	// A complete but invalid ClientHello, and Refuse.
	dcid2 := []byte("ijklmnop")
	junk := []byte{1, 0, 0, 3, 3, 3, 0}
	wantDecision(t, "bad hello", r.Route(sealInitial(sealOpts{dcid: dcid2}, cryptoFrame(0, junk)), clientAddr), Drop, 0, peek.ErrMalformed)
	wantDecision(t, "bad hello again", r.Route(sealInitial(sealOpts{dcid: dcid2, pn: 1}, cryptoFrame(0, junk)), clientAddr), Drop, 0, ErrRefused)
	r.Bind(dcid2, 1) // the caller may change its mind
	wantDecision(t, "rebound", r.Route(sealInitial(sealOpts{dcid: dcid2, typ: type0RTT}, nil), clientAddr), Forward, 1, nil)
	r.Refuse(dcid2)
	wantDecision(t, "refused", r.Route(sealInitial(sealOpts{dcid: dcid2, typ: type0RTT}, nil), clientAddr), Drop, 0, ErrRefused)
}

func TestRouterExpiry(t *testing.T) {
	r, clk := newTestRouter(RouterConfig{PendingTimeout: 5 * time.Second, BindTimeout: 10 * time.Second})
	dcid := []byte("expiring")
	first, second := twoInitials(t, dcid, "x.example")
	r.Route(first, clientAddr)
	clk.Advance(5 * time.Second)
	// The assembly is gone: the second half alone starts a new one.
	wantDecision(t, "second after expiry", r.Route(second, clientAddr), Pending, 0, nil)
	clk.Advance(4 * time.Second)
	dec := r.Route(first, clientAddr)
	if dec.Action != NewConnection || len(dec.Buffered) != 2 {
		t.Fatalf("%+v", dec)
	}
	r.Bind(dcid, 2)
	for range 3 { // used every 9 s: the binding is refreshed
		clk.Advance(9 * time.Second)
		wantDecision(t, "refreshed", r.Route(first, clientAddr), Forward, 2, nil)
	}
	clk.Advance(10 * time.Second)
	wantDecision(t, "expired", r.Route(first, clientAddr), Pending, 0, nil)
	if s := r.Stats(); s.Bound != 0 || s.Pending != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRouterLimits(t *testing.T) {
	r, _ := newTestRouter(RouterConfig{MaxPending: 3, MaxBound: 4})
	var firsts, seconds [][]byte
	for i := range 5 {
		f, s := twoInitials(t, fmt.Appendf(nil, "conn-%04d", i), "x.example")
		firsts, seconds = append(firsts, f), append(seconds, s)
		wantDecision(t, "first", r.Route(f, clientAddr), Pending, 0, nil)
		if s := r.Stats(); s.Pending != min(i+1, 3) {
			t.Fatalf("pending %d after %d", s.Pending, i+1)
		}
	}
	// The oldest two were evicted: their second halves start over.
	wantDecision(t, "evicted", r.Route(seconds[0], clientAddr), Pending, 0, nil)
	if dec := r.Route(seconds[4], clientAddr); dec.Action != NewConnection {
		t.Fatalf("%+v", dec)
	}
	for i := range 6 {
		r.Bind(fmt.Appendf(nil, "bound-%d", i), uint16(i))
	}
	if s := r.Stats(); s.Bound != 4 {
		t.Fatalf("bound %d", s.Bound)
	}

	// Byte budget: each connection buffers ~1.2 KB plus its assembler.
	r, _ = newTestRouter(RouterConfig{MaxBufferedBytes: 8000})
	for i := range 5 {
		r.Route(firsts[i], clientAddr)
		if s := r.Stats(); s.BufferedBytes > 8000 || s.Pending == 0 {
			t.Fatalf("stats %+v", s)
		}
	}
	if s := r.Stats(); s.Pending >= 5 {
		t.Fatalf("nothing evicted: %+v", s)
	}
	if dec := r.Route(seconds[4], clientAddr); dec.Action != NewConnection {
		t.Fatalf("newest connection lost: %+v", dec)
	}
	// A budget too small for even one connection drops it.
	r, _ = newTestRouter(RouterConfig{MaxBufferedBytes: 1000})
	wantDecision(t, "over budget", r.Route(firsts[0], clientAddr), Drop, 0, ErrBufferLimit)
	if s := r.Stats(); s != (RouterStats{}) {
		t.Fatalf("stats %+v", s)
	}

	// Per-connection packet limit: distinct packet numbers, no progress.
	r, _ = newTestRouter(RouterConfig{})
	dcid := []byte("manypackets")
	var dec Decision
	for pn := range uint64(MaxInitialPackets + 1) {
		dec = r.Route(sealInitial(sealOpts{dcid: dcid, pn: pn}, cryptoFrame(10, []byte{1})), clientAddr)
	}
	wantDecision(t, "17th packet", dec, Drop, 0, ErrTooManyPackets)
	// Per-connection datagram budget: many 0-RTT datagrams.
	dcid = []byte("many0rtt")
	r.Route(sealInitial(sealOpts{dcid: dcid}, cryptoFrame(10, []byte{1})), clientAddr)
	for range 60 {
		dec = r.Route(sealInitial(sealOpts{dcid: dcid, typ: type0RTT, size: 1400}, nil), clientAddr)
		if dec.Action != Pending {
			break
		}
	}
	wantDecision(t, "0-RTT flood", dec, Drop, 0, ErrBufferLimit)
	if s := r.Stats(); s.Pending != 0 || s.BufferedBytes != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestRouterConcurrent: goroutines routing one connection's packets while
// others bind it get only the decisions a sequential caller could get:
// short packets always go to the id's worker, Initials are buffered, complete
// the ClientHello (for the right server name) or go to the bound worker,
// never dropped; and the router ends bound, with nothing pending and no
// buffered bytes charged. Data races are for -race (make unit) to find.
func TestRouterConcurrent(t *testing.T) {
	r := NewRouter(RouterConfig{Key: testKey})
	g := NewGenerator(1, testKey, ident)
	cid, _ := g.GenerateConnectionID()
	dcid := []byte("concurrent")
	first, second := twoInitials(t, dcid, "c.example")
	start := make(chan struct{})
	errs := make(chan error, 4*200)
	var newConns atomic.Int64
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			<-start // all at once, so the goroutines overlap
			for j := range 200 {
				var d Decision
				switch (i + j) % 4 {
				case 0:
					if d = r.Route(shortPacket(cid, 40), clientAddr); d.Action != Forward || d.Worker != 1 {
						errs <- fmt.Errorf("short packet: %v worker %d err %v", d.Action, d.Worker, d.Err)
					}
					continue
				case 1:
					d = r.Route(first, clientAddr)
				case 2:
					d = r.Route(second, clientAddr)
				case 3:
					r.Bind(dcid, 1)
					continue
				}
				switch {
				case d.Action == Pending:
				case d.Action == Forward && d.Worker == 1:
				case d.Action == NewConnection && d.SNI == "c.example" && bytes.Equal(d.DCID, dcid):
					newConns.Add(1)
				default:
					errs <- fmt.Errorf("initial: %v worker %d sni %q err %v", d.Action, d.Worker, d.SNI, d.Err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	if n > 5 {
		t.Errorf("... and %d more wrong decisions", n-5)
	}
	r.Bind(dcid, 1)
	if d := r.Route(first, clientAddr); d.Action != Forward || d.Worker != 1 {
		t.Errorf("after Bind: %v worker %d err %v", d.Action, d.Worker, d.Err)
	}
	if st := r.Stats(); st != (RouterStats{Bound: 1}) {
		t.Errorf("stats after the run = %+v, want only the one binding", st)
	}
	t.Logf("%d ClientHellos completed between binds", newConns.Load())
}
