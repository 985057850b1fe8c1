package peek

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// captureConn records everything written to it and fails every Read, so a
// tls.Client handshake writes its ClientHello and then gives up.
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

// realHello returns the records crypto/tls writes as its first flight.
func realHello(tb testing.TB, serverName string, alpn ...string) []byte {
	tb.Helper()
	var c captureConn
	cfg := &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: serverName == ""}
	err := tls.Client(&c, cfg).Handshake()
	if !errors.Is(err, errCaptured) {
		tb.Fatalf("handshake: %v", err)
	}
	if c.Len() == 0 {
		tb.Fatal("no ClientHello captured")
	}
	return c.Bytes()
}

// recordBodies concatenates the fragments of consecutive TLS records.
func recordBodies(tb testing.TB, recs []byte) []byte {
	tb.Helper()
	var out []byte
	for len(recs) > 0 {
		if len(recs) < 5 {
			tb.Fatal("truncated record header")
		}
		n := int(binary.BigEndian.Uint16(recs[3:5]))
		out = append(out, recs[5:5+n]...)
		recs = recs[5+n:]
	}
	return out
}

// frame splits a handshake message into TLS handshake records of at most
// size bytes each.
func frame(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// extensionsOffset returns the offset of the 2-byte extensions length in a
// ClientHello handshake message (independent of the code under test).
func extensionsOffset(tb testing.TB, msg []byte) int {
	tb.Helper()
	off := 4 + 2 + 32
	off += 1 + int(msg[off])
	off += 2 + int(binary.BigEndian.Uint16(msg[off:]))
	off += 1 + int(msg[off])
	if off > len(msg) {
		tb.Fatal("bad hello")
	}
	return off
}

// appendExtension adds a raw extension to a ClientHello message, fixing up
// the lengths.
func appendExtension(tb testing.TB, msg []byte, typ uint16, data []byte) []byte {
	tb.Helper()
	off := extensionsOffset(tb, msg)
	out := append([]byte(nil), msg...)
	if off == len(out) {
		out = append(out, 0, 0)
	}
	out = binary.BigEndian.AppendUint16(out, typ)
	out = binary.BigEndian.AppendUint16(out, uint16(len(data)))
	out = append(out, data...)
	binary.BigEndian.PutUint16(out[off:], uint16(len(out)-off-2))
	n := len(out) - 4
	out[1], out[2], out[3] = byte(n>>16), byte(n>>8), byte(n)
	return out
}

// ext encodes one extension.
func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func vec16(parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(body))), body...)
}

func vec8(b []byte) []byte { return append([]byte{byte(len(b))}, b...) }

// sniExt builds a server_name extension with host_name entries.
func sniExt(names ...string) []byte {
	var entries [][]byte
	for _, n := range names {
		e := append([]byte{0}, vec16([]byte(n))...)
		entries = append(entries, e)
	}
	return ext(extServerName, vec16(entries...))
}

func alpnExt(protos ...string) []byte {
	var ps [][]byte
	for _, p := range protos {
		ps = append(ps, vec8([]byte(p)))
	}
	return ext(extALPN, vec16(ps...))
}

// synthHello builds a minimal ClientHello message; exts == nil omits the
// extensions block entirely.
func synthHello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)       // random
	body = append(body, vec8(make([]byte, 32))...) // session id
	body = append(body, vec16([]byte{0x13, 1})...) // cipher suites
	body = append(body, vec8([]byte{0})...)        // compression
	if exts != nil {
		body = append(body, vec16(exts...)...)
	}
	n := len(body)
	return append([]byte{1, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(c.n, len(p), len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// errAfterReader delivers b and then fails with err.
type errAfterReader struct {
	b   []byte
	err error
}

func (r *errAfterReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
