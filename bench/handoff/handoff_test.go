// Package handoff benchmarks the supervisor → worker hand-off of
// internal/handoff on its own: what mcpgate pays per new connection for
// not letting the worker accept it directly.
package handoff

import (
	"io"
	"net"
	"testing"

	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// BenchmarkHandoff is one hand-off as the supervisor and a worker do it: a
// PROXY v2 header built, the accepted TCP connection's descriptor sent over
// the SOCK_SEQPACKET pair with SCM_RIGHTS together with the header and 512
// peeked bytes (a ClientHello's size), received, parsed into a connection
// that replays the peeked bytes, and closed. Both ends run in this process,
// so a context switch to another process is not included.
func BenchmarkHandoff(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	tcp := server.(*net.TCPConn)

	parent, childFile, err := handoff.Pair()
	if err != nil {
		b.Fatal(err)
	}
	defer parent.Close()
	child, err := handoff.FromFile(childFile)
	childFile.Close()
	if err != nil {
		b.Fatal(err)
	}
	defer child.Close()
	peeked := make([]byte, 512)
	peeked[0] = 0x16 // a TLS handshake record, as far as anyone looks
	alpn := []string{"h2", "http/1.1"}

	b.ReportAllocs()
	for b.Loop() {
		hdr, err := handoff.Header(server.RemoteAddr(), server.LocalAddr(), "notes.example.com", alpn)
		if err != nil {
			b.Fatal(err)
		}
		if err := parent.SendConn(wire.KindTLS, tcp, hdr, peeked); err != nil {
			b.Fatal(err)
		}
		m, err := child.Recv()
		if err != nil {
			b.Fatal(err)
		}
		pc, err := handoff.ParseConn(m.File, m.Payload)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, len(peeked))
		if _, err := io.ReadFull(pc, buf); err != nil {
			b.Fatal(err)
		}
		pc.Close()
	}
}
