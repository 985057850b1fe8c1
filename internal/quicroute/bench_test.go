package quicroute

import (
	"net/netip"
	"testing"
)

func BenchmarkRouteShortHeader(b *testing.B) {
	r := NewRouter(RouterConfig{Key: testKey})
	cid, _ := NewGenerator(3, testKey, ident).GenerateConnectionID()
	pkt := shortPacket(cid, 1200)
	from := netip.MustParseAddrPort("192.0.2.1:443")
	b.ReportAllocs()
	for b.Loop() {
		if dec := r.Route(pkt, from); dec.Action != Forward {
			b.Fatal(dec)
		}
	}
}

func BenchmarkParseInitial(b *testing.B) {
	pkt := readHex(b, "rfc9001_client_initial.hex")
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseInitial(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRouteNewConnection: two Initials (ClientHello with a
// post-quantum key share) to a NewConnection decision.
func BenchmarkRouteNewConnection(b *testing.B) {
	r := NewRouter(RouterConfig{Key: testKey})
	first, second := twoInitials(b, []byte("benchmark-dcid"), "bench.example")
	from := netip.MustParseAddrPort("192.0.2.1:443")
	b.ReportAllocs()
	for b.Loop() {
		r.Route(first, from)
		if dec := r.Route(second, from); dec.Action != NewConnection {
			b.Fatal(dec)
		}
	}
}
