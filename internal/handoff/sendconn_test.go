package handoff

import (
	"net"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// tcpConn returns one end of a loopback TCP connection (the other is
// closed with the test).
func tcpConn(t *testing.T) *net.TCPConn {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	clients[s.(*net.TCPConn)] = c
	return s.(*net.TCPConn)
}

// clients maps tcpConn's server ends to their client ends.
var clients = map[*net.TCPConn]net.Conn{}

// TestSendConnPeerGone: the supervisor learns from SendConn's error that
// the worker's end is gone (slot.Deliver then waits for its successor),
// and the error says so to IsClosed.
func TestSendConnPeerGone(t *testing.T) {
	parent, childFile, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	childFile.Close()
	err = parent.SendConn(wire.KindTLS, tcpConn(t), []byte("hdr"), []byte("hello"))
	if err == nil || !IsClosed(err) {
		t.Fatalf("SendConn to a closed peer: %v, want an error IsClosed reports", err)
	}
}

// TestSendConnWaitsForRoom: when the worker's receive queue is full,
// SendConn waits (in the poller) instead of failing, and completes once
// the worker reads.
func TestSendConnWaitsForRoom(t *testing.T) {
	parent, child := connPair(t)
	conn := tcpConn(t)
	big := make([]byte, 60<<10)
	sent := make(chan error, 1)
	n := 0
	go func() {
		// Fill the queue: with no reader, some send must block.
		for ; n < 1000; n++ {
			if err := parent.SendConn(wire.KindTLS, conn, nil, big); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case err := <-sent:
		t.Fatalf("1000 sends of 60 KiB without a reader returned (%v): the queue never filled", err)
	case <-time.After(200 * time.Millisecond):
	}
	for range 1000 {
		m, err := child.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.File == nil || len(m.Payload) != len(big) {
			t.Fatalf("message without its descriptor or with %d bytes", len(m.Payload))
		}
		m.File.Close()
	}
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("SendConn failed instead of waiting: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sender never finished")
	}
}
