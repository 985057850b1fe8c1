package dispatch

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/activation"
)

// TestHelloInPiecesDelivered: on both accept paths, a ClientHello that
// arrives in pieces is handed off whole, with the client's and the
// listener's addresses in the PROXY header. On the raw path a piece that
// is not there yet moves the connection to the poller (fdConn's
// fallback), which this exercises.
func TestHelloInPiecesDelivered(t *testing.T) {
	hello := clientHello(t, "notes.test")
	splits := []struct {
		name string
		at   []int // write boundaries, with a pause between writes
	}{
		{"at once", nil},
		{"inside the record header", []int{3}},
		{"after the record header", []int{5}},
		{"byte by byte at the start", []int{1, 2, 3, 4, 5, 6}},
		{"inside the body", []int{5, 40}},
	}
	networks := []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}}
	for _, lk := range listenerKinds {
		for _, nw := range networks {
			for _, sp := range splits {
				t.Run(lk.name+"/"+nw.network+"/"+sp.name, func(t *testing.T) {
					_, target, addr := startDispatcherOn(t, lk.wrap, nw.network, nw.addr, nil)
					c, err := net.Dial(nw.network, addr)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					prev := 0
					for _, at := range sp.at {
						c.Write(hello[prev:at])
						prev = at
						time.Sleep(20 * time.Millisecond)
					}
					c.Write(hello[prev:])
					select {
					case d := <-target.got:
						if !bytes.Equal(d.peeked, hello) {
							t.Errorf("peeked %d bytes, want the %d-byte ClientHello", len(d.peeked), len(hello))
						}
						if got, want := d.header.SourceAddr.String(), c.LocalAddr().String(); got != want {
							t.Errorf("source %s, want the client's %s", got, want)
						}
						if got := d.header.DestinationAddr.String(); got != addr {
							t.Errorf("destination %s, want the listener's %s", got, addr)
						}
					case <-time.After(5 * time.Second):
						t.Fatal("connection not handed off")
					}
				})
			}
		}
	}
}

// TestServeEndsWithListener: serve returns when its listener is closed or
// paused (Pause's deadline), on both accept paths, and a paused listener
// keeps its socket: after Resume a new serve takes the connection that
// waited in the backlog. Closing an activation listener releases the
// address even though the raw path accepted on a duplicate of it.
func TestServeEndsWithListener(t *testing.T) {
	hello := clientHello(t, "notes.test")
	for _, lk := range listenerKinds {
		t.Run(lk.name+"/close", func(t *testing.T) {
			nl, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := lk.wrap(nl)
			addr := l.Addr().String()
			d := &Dispatcher{Log: slog.New(slog.DiscardHandler)}
			done := make(chan error, 1)
			go func() { done <- d.ServeTLS(l) }()
			time.Sleep(50 * time.Millisecond) // serve is waiting
			l.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("serve still running after the listener was closed")
			}
			again, err := net.Listen("tcp4", addr)
			if err != nil {
				t.Fatalf("address not released after close: %v", err)
			}
			again.Close()
		})
		t.Run(lk.name+"/pause and resume", func(t *testing.T) {
			nl, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := lk.wrap(nl)
			defer l.Close()
			target := &captureTarget{got: make(chan delivery, 1)}
			d := &Dispatcher{Log: slog.New(slog.DiscardHandler)}
			tb := NewTable()
			tb.Add("notes.test", target)
			d.SetTable(tb)
			done := make(chan error, 1)
			go func() { done <- d.ServeTLS(l) }()
			time.Sleep(50 * time.Millisecond)
			d.Pause([]net.Listener{l})
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("serve still running after Pause")
			}
			c, err := net.Dial("tcp4", l.Addr().String())
			if err != nil {
				t.Fatalf("paused listener refused a connection: %v", err)
			}
			defer c.Close()
			c.Write(hello)
			select {
			case <-target.got:
				t.Fatal("a paused dispatcher routed a connection")
			case <-time.After(100 * time.Millisecond):
			}
			d.Resume([]net.Listener{l})
			go d.ServeTLS(l)
			select {
			case <-target.got:
			case <-time.After(5 * time.Second):
				t.Fatal("the connection that waited during the pause was not routed")
			}
		})
	}
}

// TestFdConnClosed: a closed fdConn refuses every use with net.ErrClosed,
// and its descriptor can no longer be handed off.
func TestFdConnClosed(t *testing.T) {
	if !rawSyscalls {
		t.Skip("no raw accept path on this platform")
	}
	a, b := tcpPair(t)
	defer b.Close()
	c := a
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		err  error
	}{
		{"Read", func() error { _, err := c.Read(make([]byte, 1)); return err }()},
		{"Write", func() error { _, err := c.Write([]byte("x")); return err }()},
		{"Close", c.Close()},
		{"SetReadDeadline", c.SetReadDeadline(time.Now())},
		{"Control", func() error {
			rc, _ := c.SyscallConn()
			return rc.Control(func(uintptr) { t.Error("Control ran on a closed connection") })
		}()},
	}
	for _, ck := range checks {
		if !errors.Is(ck.err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", ck.name, ck.err)
		}
	}
	// The peer sees the close: a reset, since the "x" was never read.
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := b.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer read %v, want EOF or a reset", err)
	}
}

// tcpPair returns an accepted connection as an fdConn (from the raw
// accept path) and its client end.
func tcpPair(t *testing.T) (*fdConn, net.Conn) {
	t.Helper()
	nl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := activation.Wrap(nl).(*activation.Listener)
	defer l.Close()
	client, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("x")) // TCP_DEFER_ACCEPT: accepted once data came
	f, err := l.PollFile()
	if err != nil {
		t.Fatal(err)
	}
	defer l.ReleaseFile(f)
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var c *fdConn
	var aerr error
	f.SetDeadline(time.Now().Add(5 * time.Second))
	if err := rc.Read(func(lfd uintptr) bool {
		fd, la, ra, err := rawAccept(int(lfd))
		if err == syscall.EAGAIN {
			return false
		}
		aerr = err
		if err == nil {
			c = &fdConn{fd: fd, laddr: la, raddr: ra}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if aerr != nil {
		t.Fatal(aerr)
	}
	return c, client
}
