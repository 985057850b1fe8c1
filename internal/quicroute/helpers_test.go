package quicroute

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func init() {
	// quic-go complains on stderr when it cannot get 7 MiB socket buffers;
	// irrelevant for loopback tests.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
}

// readHex reads a testdata file of hex digits; '#' starts a comment line.
func readHex(tb testing.TB, name string) []byte {
	tb.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	var sb strings.Builder
	for line := range strings.Lines(string(raw)) {
		if !strings.HasPrefix(line, "#") {
			sb.WriteString(strings.Join(strings.Fields(line), ""))
		}
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return b
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, uint16(v)|0x4000)
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x80000000)
	}
	return binary.BigEndian.AppendUint64(b, v|0xc0<<56)
}

// cryptoFrame encodes a CRYPTO frame.
func cryptoFrame(off uint64, data []byte) []byte {
	b := appendVarint([]byte{frameCrypto}, off)
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// sealOpts describes a client Initial built by sealInitial.
type sealOpts struct {
	version    uint32
	dcid, scid []byte
	keyDCID    []byte // derive keys from this DCID instead (client after the server's first packet)
	token      []byte
	pn         uint64
	pnLen      int // 1..4; 0 means 4
	size       int // pad the datagram to this size with PADDING; 0 means 1200
	typ        packetType
	firstBits  byte // XORed into the unprotected first byte (reserved bits)
}

// sealInitial builds a protected client long header packet around payload
// the way a client does (RFC 9001 §5), so tests and fuzzers can reach the
// frame parser with arbitrary plaintext.
func sealInitial(o sealOpts, payload []byte) []byte {
	if o.version == 0 {
		o.version = Version1
	}
	if o.pnLen == 0 {
		o.pnLen = 4
	}
	if o.size == 0 {
		o.size = MinInitialDatagramSize
	}
	bits := byte(o.typ)
	if o.version == Version2 {
		bits = (bits + 1) & 3
	}
	hdr := []byte{0xc0 | bits<<4 | byte(o.pnLen-1) ^ o.firstBits}
	hdr = binary.BigEndian.AppendUint32(hdr, o.version)
	hdr = append(hdr, byte(len(o.dcid)))
	hdr = append(hdr, o.dcid...)
	hdr = append(hdr, byte(len(o.scid)))
	hdr = append(hdr, o.scid...)
	hdr = appendVarint(hdr, uint64(len(o.token)))
	hdr = append(hdr, o.token...)
	// Pad so that the whole packet reaches the size (and the sample fits).
	lenFieldLen := 2
	if n := o.size - len(hdr) - lenFieldLen - o.pnLen - tagLen - len(payload); n > 0 {
		payload = append(bytes.Clone(payload), make([]byte, n)...)
	}
	if len(payload)+o.pnLen < 4+sampleLen-tagLen {
		payload = append(bytes.Clone(payload), make([]byte, 4+sampleLen-tagLen-o.pnLen-len(payload))...)
	}
	length := o.pnLen + len(payload) + tagLen
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(length)|0x4000)
	pnOff := len(hdr)
	for i := o.pnLen - 1; i >= 0; i-- {
		hdr = append(hdr, byte(o.pn>>(8*i)))
	}

	if o.keyDCID == nil {
		o.keyDCID = o.dcid
	}
	keys := clientInitialSecrets(o.version, o.keyDCID)
	aead := must(cipher.NewGCM(must(aes.NewCipher(keys.key))))
	nonce := bytes.Clone(keys.iv)
	for i := range 8 {
		nonce[4+i] ^= byte(o.pn >> (56 - 8*i))
	}
	pkt := aead.Seal(hdr, nonce, payload, hdr)

	var mask [16]byte
	must(aes.NewCipher(keys.hp)).Encrypt(mask[:], pkt[pnOff+4:pnOff+4+sampleLen])
	pkt[0] ^= mask[0] & 0x0f
	for i := range o.pnLen {
		pkt[pnOff+i] ^= mask[1+i]
	}
	return pkt
}

// flight is what a real quic-go client sent before giving up on a server
// that never answered: its first flight and at least one retransmission.
type flight struct {
	version   quic.Version
	sni       string
	datagrams [][]byte
}

var (
	flightsOnce sync.Once
	flights     map[quic.Version]*flight
	flightsErr  error
)

// quicGoFlights runs a quic-go client (QUIC v1 and v2, in parallel) against
// UDP sockets nobody answers and captures every datagram for ~700 ms:
// long enough for the first retransmission (PTO with quic-go's 100 ms
// initial RTT estimate is ~300 ms). It runs once per test binary.
func quicGoFlights(tb testing.TB) map[quic.Version]*flight {
	tb.Helper()
	flightsOnce.Do(func() {
		flights = map[quic.Version]*flight{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for v, sni := range map[quic.Version]string{quic.Version1: "a.example", quic.Version2: "b.example"} {
			wg.Go(func() {
				f, err := captureFlight(v, sni, 700*time.Millisecond)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					flightsErr = errors.Join(flightsErr, err)
					return
				}
				flights[v] = f
			})
		}
		wg.Wait()
	})
	if flightsErr != nil {
		tb.Fatal(flightsErr)
	}
	return flights
}

func captureFlight(v quic.Version, sni string, dur time.Duration) (*flight, error) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	cli, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = quic.Dial(ctx, cli, srv.LocalAddr(),
			&tls.Config{ServerName: sni, NextProtos: []string{"h3"}},
			&quic.Config{Versions: []quic.Version{v}})
	}()

	f := &flight{version: v, sni: sni}
	deadline := time.Now().Add(dur)
	buf := make([]byte, 64<<10)
	for {
		_ = srv.SetReadDeadline(deadline)
		n, _, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		f.datagrams = append(f.datagrams, bytes.Clone(buf[:n]))
	}
	cancel()
	<-done
	return f, nil
}

// captureConn records what a tls.Client writes and fails every Read, so
// the handshake stops after the ClientHello.
type captureConn struct {
	bytes.Buffer
}

var errCaptured = errors.New("captured")

func (c *captureConn) Read([]byte) (int, error)         { return 0, errCaptured }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// realClientHelloRecords returns the TLS records of a crypto/tls
// ClientHello (with Go's default post-quantum key share).
func realClientHelloRecords(tb testing.TB, sni string) []byte {
	tb.Helper()
	var c captureConn
	err := tls.Client(&c, &tls.Config{ServerName: sni, NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13}).Handshake()
	if !errors.Is(err, errCaptured) {
		tb.Fatalf("handshake: %v", err)
	}
	return c.Bytes()
}
