package worker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/tlscert"
)

func handshakeFixture(t *testing.T, timeout time.Duration) (net.Listener, *handshakeListener) {
	t.Helper()
	cert, err := tlscert.SelfSigned(t.TempDir(), "notes", []string{"notes.test"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := newHandshakeListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
		timeout, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { h.Close() })
	return raw, h
}

func clientHandshake(addr string) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: "notes.test", NextProtos: []string{"h2"}})
}

type acceptResult struct {
	c   net.Conn
	err error
}

func acceptAsync(h *handshakeListener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := h.Accept()
		ch <- acceptResult{c, err}
	}()
	return ch
}

// TestHandshakeListener: connections come out of Accept with their
// handshake done (net/http then skips it); a client that never says hello
// is dropped at the timeout; at a drain, a handshake in progress has a
// short grace, and Accept ends only after it was delivered or failed.
func TestHandshakeListener(t *testing.T) {
	t.Run("delivers handshaken connections", func(t *testing.T) {
		raw, h := handshakeFixture(t, 5*time.Second)
		cc, err := clientHandshake(raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		r := <-acceptAsync(h)
		if r.err != nil {
			t.Fatal(r.err)
		}
		tc, ok := r.c.(*tls.Conn)
		if !ok || !tc.ConnectionState().HandshakeComplete || tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("got %T, state %+v", r.c, tc.ConnectionState())
		}
	})
	t.Run("silent client dropped at the timeout", func(t *testing.T) {
		raw, h := handshakeFixture(t, 200*time.Millisecond)
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wantClosedByServer(t, c, "the silent connection")
		select {
		case r := <-acceptAsync(h):
			t.Fatalf("Accept returned %v, %v for a connection without a handshake", r.c, r.err)
		case <-time.After(100 * time.Millisecond):
		}
	})
	t.Run("drain: a handshake in progress gets a short grace", func(t *testing.T) {
		raw, h := handshakeFixture(t, time.Minute)
		dialPending(t, raw, h) // a client that never says hello
		start := time.Now()
		raw.Close() // the worker drains: the hand-off listener closes
		r := <-acceptAsync(h)
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Accept after the drain: %v, %v", r.c, r.err)
		}
		if d := time.Since(start); d > drainGrace+2*time.Second {
			t.Errorf("Accept ended %v after the drain, want about %v", d, drainGrace)
		}
	})
	t.Run("drain: a handshake finishing in the grace is delivered", func(t *testing.T) {
		raw, h := handshakeFixture(t, time.Minute)
		c := dialPending(t, raw, h)
		raw.Close()
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "notes.test"})
		go tc.Handshake()
		r := <-acceptAsync(h)
		if r.err != nil {
			t.Fatalf("the connection sent before the drain was not delivered: %v", r.err)
		}
		r.c.Close()
		if r := <-acceptAsync(h); !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("then Accept: %v, %v", r.c, r.err)
		}
	})
	t.Run("Close ends Accept and the handshakes", func(t *testing.T) {
		raw, h := handshakeFixture(t, time.Minute)
		c := dialPending(t, raw, h)
		ch := acceptAsync(h)
		h.Close()
		if r := <-ch; !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, %v", r.c, r.err)
		}
		wantClosedByServer(t, c, "the pending connection")
	})
}

// dialPending connects to raw and waits until h has the connection's
// handshake in progress.
func dialPending(t *testing.T, raw net.Listener, h *handshakeListener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitPending(t, h, 1)
	return c
}

// wantClosedByServer fails unless the server closes c within 5 s.
func wantClosedByServer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s was not closed by the server: %v", what, err)
	}
}

func waitPending(t *testing.T, h *handshakeListener, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		h.mu.Lock()
		got := len(h.pending)
		h.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d handshakes pending, want %d", got, n)
		}
	}
}
