package handoff

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
	"github.com/pires/go-proxyproto"
)

// TestRoundTrip passes a real accepted TCP connection through the socket
// pair and checks that the receiver sees the peeked bytes first, then the
// rest of the stream, with addresses and TLVs from the PROXY header.
func TestRoundTrip(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			l, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer l.Close()
			client, err := net.Dial(network, l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Write([]byte("HELLO world")); err != nil {
				t.Fatal(err)
			}
			peeked := make([]byte, 5)
			if _, err := io.ReadFull(server, peeked); err != nil {
				t.Fatal(err)
			}

			parent, child := connPair(t)

			hdr, err := Header(server.RemoteAddr(), server.LocalAddr(), "notes.example.com", []string{"h2", "http/1.1"})
			if err != nil {
				t.Fatal(err)
			}
			if err := parent.SendConn(wire.KindTLS, server.(*net.TCPConn), hdr, peeked); err != nil {
				t.Fatal(err)
			}
			server.Close() // the receiver must hold its own descriptor

			m, err := child.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != wire.KindTLS || m.File == nil {
				t.Fatalf("got kind %q file %v", m.Kind, m.File)
			}
			pc, err := ParseConn(m.File, m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if got, want := pc.RemoteAddr().String(), client.LocalAddr().String(); got != want {
				t.Errorf("RemoteAddr = %s, want %s", got, want)
			}
			if got, want := pc.LocalAddr().String(), client.RemoteAddr().String(); got != want {
				t.Errorf("LocalAddr = %s, want %s", got, want)
			}
			if got := string(pc.TLV(proxyproto.PP2_TYPE_AUTHORITY)); got != "notes.example.com" {
				t.Errorf("authority TLV = %q", got)
			}
			if got := pc.TLV(TLVOfferedALPN); !bytes.Equal(got, []byte("\x02h2\x08http/1.1")) {
				t.Errorf("ALPN TLV = %q", got)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 11)
			if _, err := io.ReadFull(pc, buf); err != nil {
				t.Fatal(err)
			}
			if string(buf) != "HELLO world" {
				t.Errorf("stream = %q, want %q", buf, "HELLO world")
			}
			// And the other direction goes straight to the client.
			if _, err := pc.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(client, buf[:4]); err != nil || string(buf[:4]) != "pong" {
				t.Fatalf("client read %q, %v", buf[:4], err)
			}
		})
	}
}

func TestControlMessagesAndClose(t *testing.T) {
	parent, child := connPair(t)
	if err := child.Send(wire.KindReady, []byte(`{"pid":1}`)); err != nil {
		t.Fatal(err)
	}
	m, err := parent.Recv()
	if err != nil || m.Kind != wire.KindReady || string(m.Payload) != `{"pid":1}` || m.File != nil {
		t.Fatalf("got %+v, %v", m, err)
	}
	parent.Close()
	if _, err := child.Recv(); !IsClosed(err) {
		t.Fatalf("after peer close: err = %v, want closed", err)
	}
}

func TestListenerDeliverAfterClose(t *testing.T) {
	l := NewListener(&net.UnixAddr{Name: "x", Net: "unixpacket"})
	a, b := net.Pipe()
	defer b.Close()
	l.Close()
	if err := l.Deliver(a, time.Second); err == nil {
		t.Fatal("Deliver to a closed listener succeeded")
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept on a closed listener succeeded")
	}
}

func TestListenerKeepsQueuedAfterClose(t *testing.T) {
	l := NewListener(&net.UnixAddr{Name: "x", Net: "unixpacket"})
	a, b := net.Pipe()
	defer b.Close()
	if err := l.Deliver(a, time.Second); err != nil {
		t.Fatal(err)
	}
	l.Close()
	c, err := l.Accept()
	if err != nil || c != a {
		t.Fatalf("Accept after Close = %v, %v; want the queued conn", c, err)
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("second Accept after Close succeeded")
	}
}

// TestTrySend: TrySend delivers like Send while there is room, says
// ErrFull instead of blocking when the peer stopped reading, sends again
// once it reads, and reports a closed peer as closed.
func TestTrySend(t *testing.T) {
	parent, child := connPair(t)
	sent := 0
	for ; sent < 1_000_000; sent++ {
		err := parent.TrySend(wire.KindRevoked, nil)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("message %d: %v", sent, err)
		}
	}
	if sent == 0 || sent == 1_000_000 {
		t.Fatalf("%d messages before the buffer was full", sent)
	}
	m, err := child.Recv()
	if err != nil || m.Kind != wire.KindRevoked || len(m.Payload) != 0 {
		t.Fatalf("got %+v, %v", m, err)
	}
	if err := parent.TrySend(wire.KindRevoked, nil); err != nil {
		t.Errorf("after the peer read one: %v", err)
	}
	child.Close()
	if err := parent.TrySend(wire.KindRevoked, nil); !IsClosed(err) {
		t.Errorf("to a closed peer: %v, want closed", err)
	}
}

// connPair is a hand-off socket pair, both ends as Conns, closed when the
// test ends (a test may close either earlier).
func connPair(t *testing.T) (parent, child *Conn) {
	t.Helper()
	parent, childFile, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	child, err = FromFile(childFile)
	childFile.Close()
	if err != nil {
		parent.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		parent.Close()
		child.Close()
	})
	return parent, child
}

// TestRecvWaitingHoldsNoBuffer: a Conn waiting for a message holds no
// receive buffer. The supervisor waits on one per worker; at 500 proxies
// a MaxMessage buffer each was 64 MB of its heap.
func TestRecvWaitingHoldsNoBuffer(t *testing.T) {
	const conns = 64
	type pair struct{ parent, child *Conn }
	pairs := make([]pair, conns)
	got := make(chan *Message, conns)
	for i := range pairs {
		p, c := connPair(t)
		pairs[i] = pair{p, c}
	}
	heapInUse := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heapInUse()
	for _, pr := range pairs {
		p := pr.parent
		go func() {
			m, err := p.Recv()
			if err != nil {
				t.Error(err)
			}
			got <- m
		}()
	}
	time.Sleep(100 * time.Millisecond) // every receiver is in the poller
	// Half a buffer each: the race detector adds ≈ 40 KB a goroutine.
	if held := int64(heapInUse()) - int64(before); held > conns*MaxMessage/2 {
		t.Errorf("%d receivers waiting hold %d more bytes of heap, as if each held a %d-byte buffer", conns, held, MaxMessage)
	}
	// And each still receives its message.
	for i, p := range pairs {
		if err := p.child.Send(wire.KindReady, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[byte]bool{}
	for range pairs {
		m := <-got
		if m == nil || m.Kind != wire.KindReady || len(m.Payload) != 1 {
			t.Fatalf("message %+v", m)
		}
		seen[m.Payload[0]] = true
	}
	if len(seen) != conns {
		t.Errorf("%d distinct payloads, want %d", len(seen), conns)
	}
}
