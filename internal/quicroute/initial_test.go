package quicroute

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/mcpgate/mcpgate/internal/peek"
)

var rfcDCID = []byte{0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08}

// TestInitialSecretsRFC checks key derivation against RFC 9001 Appendix
// A.1 and RFC 9369 Appendix A.1.
func TestInitialSecretsRFC(t *testing.T) {
	for _, tc := range []struct {
		version     uint32
		key, iv, hp string
	}{
		{Version1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2"},
		{Version2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9"},
	} {
		s := clientInitialSecrets(tc.version, rfcDCID)
		if !bytes.Equal(s.key, unhex(t, tc.key)) || !bytes.Equal(s.iv, unhex(t, tc.iv)) || !bytes.Equal(s.hp, unhex(t, tc.hp)) {
			t.Errorf("version %#x: key %x iv %x hp %x", tc.version, s.key, s.iv, s.hp)
		}
	}
}

// TestParseInitialRFC decrypts the protected client Initials of RFC 9001
// A.2 (v1) and RFC 9369 A.2 (v2) and finds their CRYPTO frame.
func TestParseInitialRFC(t *testing.T) {
	crypto := readHex(t, "rfc_client_hello_crypto.hex") // 06 00 40f1 <ClientHello>
	wantHello := crypto[4:]
	for _, tc := range []struct {
		file    string
		version uint32
	}{
		{"rfc9001_client_initial.hex", Version1},
		{"rfc9369_client_initial.hex", Version2},
	} {
		t.Run(tc.file, func(t *testing.T) {
			pkt := readHex(t, tc.file)
			orig := bytes.Clone(pkt)
			in, err := ParseInitial(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Fatal("ParseInitial modified its input")
			}
			if in.Version != tc.version || !bytes.Equal(in.DCID, rfcDCID) || len(in.SCID) != 0 ||
				in.TokenLen != 0 || in.PacketNumber != 2 || in.PacketLen != 1200 ||
				in.HeaderLen != 22 || in.ConnectionClose {
				t.Fatalf("got %+v", in)
			}
			if len(in.Crypto) != 1 || in.Crypto[0].Offset != 0 || !bytes.Equal(in.Crypto[0].Data, wantHello) {
				t.Fatalf("CRYPTO frames %+v", in.Crypto)
			}
			hello, done, err := new(Assembler).Add(in.Crypto)
			if err != nil || !done {
				t.Fatalf("assemble: %v %v", done, err)
			}
			info, err := peek.ParseClientHello(hello)
			if err != nil || info.ServerName != "example.com" || !slices.Equal(info.ALPN, []string{"alpn"}) {
				t.Fatalf("ClientHello: %+v %v", info, err)
			}
			if sni, err := SNI(pkt); sni != "example.com" || err != nil {
				t.Fatalf("SNI: %q %v", sni, err)
			}

			// Coalesced packets after the Initial are ignored.
			co := append(bytes.Clone(pkt), 0xe0, 1, 2, 3)
			in2, err := ParseInitial(co)
			if err != nil || in2.PacketLen != 1200 {
				t.Fatalf("coalesced: %v %+v", err, in2)
			}

			// Any flipped bit in the protected part fails authentication
			// (or, in the header fields before it, parsing).
			for _, i := range []int{0, 30, 600, 1199} {
				bad := bytes.Clone(pkt)
				bad[i] ^= 0x10
				if _, err := ParseInitial(bad); err == nil {
					t.Errorf("flipped byte %d: no error", i)
				}
			}
		})
	}
}

func TestParseInitialErrors(t *testing.T) {
	pkt := readHex(t, "rfc9001_client_initial.hex")
	v1 := func(mutate func(b []byte) []byte) []byte { return mutate(bytes.Clone(pkt)) }
	dcid := bytes.Repeat([]byte{7}, 8)
	// tail pads a small packet's datagram with coalesced junk: the packet
	// itself ends where its Length field says, so a frame in it can be
	// truncated while the datagram is still 1200 bytes.
	tail := func(b []byte) []byte { return append(b, make([]byte, 1200)...) }
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short header", append([]byte{0x40}, make([]byte, 1300)...), ErrShortHeader},
		{"truncated long header", []byte{0xc0, 0, 0, 0, 1}, ErrMalformed},
		{"truncated dcid", []byte{0xc0, 0, 0, 0, 1, 8, 1, 2}, ErrMalformed},
		{"truncated scid", []byte{0xc0, 0, 0, 0, 1, 0, 5, 1}, ErrMalformed},
		{"cid too long", v1(func(b []byte) []byte { return append(append(b[:5:5], 21), make([]byte, 1300)...) }), ErrMalformed},
		{"version negotiation", v1(func(b []byte) []byte { copy(b[1:5], []byte{0, 0, 0, 0}); return b }), ErrNotInitial},
		{"unknown version", v1(func(b []byte) []byte { copy(b[1:5], []byte{0xff, 0, 0, 0x1d}); return b }), ErrUnsupportedVersion},
		{"handshake packet", sealInitial(sealOpts{dcid: dcid, typ: typeHandshake}, []byte{1}), ErrNotInitial},
		{"0-RTT v2", sealInitial(sealOpts{version: Version2, dcid: dcid, typ: type0RTT}, []byte{1}), ErrNotInitial},
		{"retry", sealInitial(sealOpts{dcid: dcid, typ: typeRetry}, []byte{1}), ErrNotInitial},
		{"small datagram", pkt[:1199], ErrDatagramTooSmall},
		{"length beyond datagram", v1(func(b []byte) []byte { b[16], b[17] = 0x7f, 0xff; return b }), ErrMalformed},
		{"token beyond datagram", v1(func(b []byte) []byte { b[15] = 0x7f; return b }), ErrMalformed},
		{"wrong dcid", v1(func(b []byte) []byte { b[6] ^= 1; return b }), ErrDecrypt},
		{"garbage payload", v1(func(b []byte) []byte {
			for i := 18; i < len(b); i++ {
				b[i] = byte(i)
			}
			return b
		}), ErrDecrypt},
		{"reserved bits", sealInitial(sealOpts{dcid: dcid, firstBits: 0x04}, []byte{1}), ErrMalformed},
		{"no frames", tail(sealInitial(sealOpts{dcid: dcid, size: 1}, nil)), ErrMalformed},
		{"stream frame", sealInitial(sealOpts{dcid: dcid}, []byte{0x08, 0, 0}), ErrMalformed},
		{"application close", sealInitial(sealOpts{dcid: dcid}, []byte{0x1d, 0, 0}), ErrMalformed},
		{"crypto truncated", tail(sealInitial(sealOpts{dcid: dcid, size: 1}, []byte{6, 0, 10, 1})), ErrMalformed},
		{"crypto beyond 2^62", sealInitial(sealOpts{dcid: dcid}, cryptoFrame(1<<62-1, []byte{1})), ErrMalformed},
		{"ack range count", tail(sealInitial(sealOpts{dcid: dcid, size: 1}, []byte{2, 5, 0, 0x80, 0, 1, 0, 0})), ErrMalformed},
		{"ack first range", sealInitial(sealOpts{dcid: dcid}, []byte{2, 5, 0, 0, 6}), ErrMalformed},
		{"close truncated", tail(sealInitial(sealOpts{dcid: dcid, size: 1}, []byte{0x1c, 0, 0, 9})), ErrMalformed},
		{"ack truncated", tail(sealInitial(sealOpts{dcid: dcid, size: 1}, []byte{3, 5, 0, 0, 0, 1, 2})), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := ParseInitial(tc.in)
			if !errors.Is(err, tc.want) || in != nil {
				t.Fatalf("got %v (%+v), want %v", err, in, tc.want)
			}
		})
	}

	// A packet too small for the header protection sample needs its
	// Length field edited: with a 1-byte packet number it is the 2 bytes
	// before offset 18.
	short := tail(sealInitial(sealOpts{dcid: dcid, pnLen: 1, size: 1}, nil))
	binary.BigEndian.PutUint16(short[16:], 0x4000|19) // one short of PN offset + 4 + 16
	if _, err := ParseInitial(short); !errors.Is(err, ErrMalformed) {
		t.Errorf("no room for sample: %v", err)
	}

	var ve *VersionError
	_, err := ParseInitial(v1(func(b []byte) []byte { copy(b[1:5], []byte{0xff, 0, 0, 0x1d}); return b }))
	if !errors.As(err, &ve) || ve.Version != 0xff00001d || !bytes.Equal(ve.DCID, rfcDCID) || len(ve.SCID) != 0 {
		t.Fatalf("VersionError: %v", err)
	}
	vn := AppendVersionNegotiation(nil, ve.DCID, []byte{1, 2, 3}, Version1, Version2)
	h, err := parseLongHeader(vn)
	if !errors.Is(err, ErrNotInitial) || !bytes.Equal(h.dcid, []byte{1, 2, 3}) || !bytes.Equal(h.scid, rfcDCID) ||
		!bytes.Equal(vn[h.end:], []byte{0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf}) || vn[0]&0xc0 != 0xc0 {
		t.Fatalf("version negotiation % x: %v", vn, err)
	}
}

// TestParseFrames covers the frames an Initial may carry.
func TestParseFrames(t *testing.T) {
	dcid := []byte("12345678")
	ack := []byte{2, 10, 0, 1, 2, 3, 4}       // largest 10, delay 0, 1 range, first 2, gap 3 len 4
	ackECN := []byte{3, 10, 0, 0, 0, 1, 2, 3} // + ECN counts
	closing := []byte{0x1c, 0x0a, 0x06, 3, 'b', 'y', 'e'}
	payload := slices.Concat([]byte{0, 0, 1}, cryptoFrame(100, []byte("world")), ack, ackECN,
		cryptoFrame(0, []byte("hello")), []byte{1, 0}, closing, []byte{0x08, 0xff})
	in, err := ParseInitial(sealInitial(sealOpts{dcid: dcid, scid: []byte{9}, token: []byte("tok"), pn: 0x1234, pnLen: 2}, payload))
	if err != nil {
		t.Fatal(err)
	}
	if !in.ConnectionClose || in.PacketNumber != 0x1234 || in.TokenLen != 3 || !bytes.Equal(in.SCID, []byte{9}) ||
		len(in.Crypto) != 2 || in.Crypto[0].Offset != 100 || string(in.Crypto[0].Data) != "world" ||
		in.Crypto[1].Offset != 0 || string(in.Crypto[1].Data) != "hello" {
		t.Fatalf("got %+v", in)
	}
	for pnLen := 1; pnLen <= 4; pnLen++ {
		in, err := ParseInitial(sealInitial(sealOpts{version: Version2, dcid: dcid, pn: 0x01020304 & (1<<(8*pnLen) - 1), pnLen: pnLen}, cryptoFrame(0, []byte("x"))))
		if err != nil || in.PacketNumber != 0x01020304&(1<<(8*pnLen)-1) || in.HeaderLen != 1+4+1+8+1+1+2+pnLen {
			t.Fatalf("pnLen %d: %v %+v", pnLen, err, in)
		}
	}
}
