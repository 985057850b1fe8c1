package handoff

import (
	"bytes"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// TestParseHeader: the bytes after the PROXY header are replayed exactly,
// whatever the header's length (the v2 length's low byte crossing bit 4
// included) or version; a header cut short is an error.
func TestParseHeader(t *testing.T) {
	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}
	dst := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443}
	v2 := func(authority string) []byte {
		b, err := Header(src, dst, authority, []string{"h2"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rest := []byte("\x16\x03\x01\x00\x05hello")
	tests := []struct {
		name    string
		header  []byte
		wantErr bool
	}{
		{"v2", v2("notes.test"), false},
		{"v2, long authority", v2(string(bytes.Repeat([]byte("b"), 300))), false},
		{"v1", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"), false},
		{"v2 cut short", v2("notes.test")[:20], true},
		{"no header", nil, true},
	}
	// Every low byte of the v2 length (the authority's length moves it).
	for n := 1; n <= 300; n++ {
		hdr := v2(string(bytes.Repeat([]byte("a"), n)))
		_, got, err := parseHeader(append(bytes.Clone(hdr), rest...))
		if err != nil || !bytes.Equal(got, rest) {
			t.Fatalf("v2 of %d bytes (length bytes %#x %#x): rest %q, %v", len(hdr), hdr[14], hdr[15], got, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := append(bytes.Clone(tt.header), rest...)
			if tt.wantErr {
				payload = tt.header
			}
			h, got, err := parseHeader(payload)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, rest) {
				t.Errorf("rest %q, want %q", got, rest)
			}
			if h.SourceAddr.String() != src.String() {
				t.Errorf("source %s, want %s", h.SourceAddr, src)
			}
			if len(tt.header) >= 16 && tt.header[0] == proxyproto.SIGV2[0] {
				if l := 16 + (int(tt.header[14])<<8 | int(tt.header[15])); l != len(tt.header) {
					t.Fatalf("test header length %d, declared %d", len(tt.header), l)
				}
			}
		})
	}
}

// handedOff returns the worker's end of a handed-off TCP connection and
// the client's end.
func handedOff(t *testing.T) (*PeekedConn, net.Conn) {
	t.Helper()
	parent, childFile, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Close() })
	child, err := FromFile(childFile)
	childFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Close() })
	server := tcpConn(t)
	hdr, err := Header(server.RemoteAddr(), server.LocalAddr(), "notes.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.SendConn(wire.KindTLS, server, hdr, []byte("peeked")); err != nil {
		t.Fatal(err)
	}
	m, err := child.Recv()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := ParseConn(m.File, m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc, peerOf(t, server)
}

// peerOf is the client end tcpConn made for s.
func peerOf(t *testing.T, s *net.TCPConn) net.Conn {
	t.Helper()
	c, ok := clients[s]
	if !ok {
		t.Fatal("no client for this connection")
	}
	return c
}

// TestParseConnSocket: the worker's connection uses the descriptor it
// received (no duplicate), sets what net.FileConn set (TCP_NODELAY and
// keep-alive, since the supervisor sets nothing), and its errors look
// like net's to crypto/tls and net/http.
func TestParseConnSocket(t *testing.T) {
	pc, client := handedOff(t)
	sc, ok := pc.Conn.(*sockConn)
	if !ok {
		t.Fatalf("conn is a %T, want the received socket itself", pc.Conn)
	}
	rc, _ := sc.f.SyscallConn()
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
	} {
		var v int
		var err error
		rc.Control(func(fd uintptr) { v, err = syscall.GetsockoptInt(int(fd), o.level, o.opt) })
		if err != nil || v != o.want {
			t.Errorf("%s = %d (%v), want %d", o.name, v, err, o.want)
		}
	}
	// Through NetConn a caller reaches the socket itself, to wait on it.
	if _, ok := pc.NetConn().(syscall.Conn); !ok {
		t.Errorf("NetConn is a %T, not a syscall.Conn", pc.NetConn())
	}
	// The peeked bytes, then the socket.
	client.Write([]byte(" then more"))
	buf := make([]byte, 64)
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := pc.Read(buf)
	m, _ := pc.Read(buf[n:])
	if got := string(buf[:n+m]); got != "peeked then more" {
		t.Errorf("read %q", got)
	}
	if got, want := pc.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want the client's %s", got, want)
	}
	if got, want := sc.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("socket's own RemoteAddr %s, want %s", got, want)
	}

	// A read deadline: a net.Error that says Timeout, wrapping
	// os.ErrDeadlineExceeded, as net's.
	pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := pc.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v (%T), want a net.Error timeout", err, err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("read error %T, want *net.OpError with Op read", err)
	}

	// Closed: net.ErrClosed, as net's.
	pc.Close()
	if _, err := pc.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after close: %v, want net.ErrClosed", err)
	}
	if _, err := pc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v, want net.ErrClosed", err)
	}
	if err := pc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second close: %v, want net.ErrClosed", err)
	}
}
