package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/logging/logtest"
	"github.com/mcpgate/mcpgate/internal/metrics"
)

// sseBackend serves GET and POST /events as an event stream: "data: one",
// then one event per value on next, and the end when next is closed; "fail"
// cuts the connection without the final chunk. gone receives when a
// stream's request context ends (the gateway closed the upstream).
type sseBackend struct {
	*httptest.Server
	next chan string
	gone chan struct{}
}

func newSSEBackend(t *testing.T) *sseBackend {
	b := &sseBackend{next: make(chan string, 10), gone: make(chan struct{}, 10)}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				b.gone <- struct{}{}
				return
			case ev, ok := <-b.next:
				if !ok {
					return
				}
				if ev == "fail" {
					c, _, _ := http.NewResponseController(w).Hijack()
					c.Close()
					return
				}
				io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			}
		}
	}))
	t.Cleanup(b.Close)
	return b
}

// detachProxy is the proxy in front of b behind the access log, as in a
// worker, over TLS with HTTP/2 on.
func detachProxy(t *testing.T, b *sseBackend) (*Handler, *httptest.Server, *logtest.Buffer) {
	return watchedProxy(t, b, nil)
}

// watchedProxy is detachProxy with aw watching the streams of a verified
// principal; nil: no principal and no watcher.
func watchedProxy(t *testing.T, b *sseBackend, aw AccessWatcher) (*Handler, *httptest.Server, *logtest.Buffer) {
	t.Helper()
	h, err := New(testProxyConfig(t, b.URL), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.CloseIdle)
	var next http.Handler = h
	if aw != nil {
		h.WatchAccess(aw)
		who := &identity.Principal{Login: "alice", ClientID: "client-1", TokenID: "jti-1", ExpiresAt: time.Now().Add(time.Hour)}
		next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), who)))
		})
	}
	logs := &logtest.Buffer{}
	srv := httptest.NewUnstartedServer(logging.Access(slog.New(slog.NewJSONHandler(logs, nil)), next))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return h, srv, logs
}

// openStream sends a GET (or POST) for the stream and reads its first event.
func openStream(t *testing.T, srv *httptest.Server, proto, method string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+"/events", nil)
	req.Host = "notes.test"
	req.Header.Set("Accept", "text/event-stream")
	res, err := clientFor(srv, proto).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	br := bufio.NewReader(res.Body)
	if ev := readEvent(t, br); ev != "data: one\n\n" {
		t.Fatalf("first event %q", ev)
	}
	return res, br
}

func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var ev strings.Builder
	for {
		line, err := br.ReadString('\n')
		ev.WriteString(line)
		if err != nil {
			t.Fatalf("reading an event: %v (so far %q)", err, ev.String())
		}
		if line == "\n" {
			return ev.String()
		}
	}
}

// servedByNetHTTP counts the proxy's handlers still running (for a
// stream: still held by net/http, HTTP/1 or HTTP/2).
func servedByNetHTTP() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "mcpgate/internal/proxy.(*Handler).forward(") {
			count++
		}
	}
	return count
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 5 s", what)
		}
	}
}

// TestDetachedStream: an HTTP/1.1 GET event stream leaves net/http once its
// head is sent (no handler goroutine holds it; detach.go) and is still the
// same stream for the client: events as they come, a clean end when the
// backend or the drain ends it, an incomplete one when the backend fails,
// the upstream closed when the client goes away, the access line written
// at the end. POST streams and HTTP/2 stay in net/http.
func TestDetachedStream(t *testing.T) {
	t.Run("events and a clean end", func(t *testing.T) {
		b := newSSEBackend(t)
		_, srv, logs := detachProxy(t, b)
		h1Conns := metrics.Default.Snapshot().Connections["h1"]
		res, br := openStream(t, srv, "h1", "GET")
		if !res.Close || len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
			t.Errorf("response head: Close %v, Transfer-Encoding %v; want Connection: close, chunked", res.Close, res.TransferEncoding)
		}
		waitFor(t, "the handler returning", func() bool { return servedByNetHTTP() == 0 })
		if strings.Contains(logs.String(), `"msg":"request"`) {
			t.Error("access line written while the stream is open")
		}
		// This test's server tracks no connections: the stream's own
		// count is the gauge's whole value (+1 while open, back after).
		if n := metrics.Default.Snapshot().Connections["h1"]; n != h1Conns+1 {
			t.Errorf("HTTP/1 connections gauge %d while the stream is open, want %d", n, h1Conns+1)
		}
		b.next <- "data: two\n\n"
		if ev := readEvent(t, br); ev != "data: two\n\n" {
			t.Errorf("second event %q", ev)
		}
		close(b.next)
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Errorf("end of the stream: %q, %v; want a clean end", rest, err)
		}
		waitFor(t, "the access line", func() bool { return strings.Contains(logs.String(), `"msg":"request"`) })
		if n := metrics.Default.Snapshot().Connections["h1"]; n != h1Conns {
			t.Errorf("HTTP/1 connections gauge %d after the stream, want %d", n, h1Conns)
		}
		line := logs.String()
		if !strings.Contains(line, `"status":200`) || !strings.Contains(line, `"bytes_out":22`) || !strings.Contains(line, `"path":"/events"`) {
			t.Errorf("access line %s", line)
		}
	})
	t.Run("the client goes away", func(t *testing.T) {
		b := newSSEBackend(t)
		h, srv, _ := detachProxy(t, b)
		res, _ := openStream(t, srv, "h1", "GET")
		waitFor(t, "the handler returning", func() bool { return servedByNetHTTP() == 0 })
		res.Body.Close() // an unfinished body: the client closes the connection
		select {
		case <-b.gone:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend's stream stayed open after the client left")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.WaitStreams(ctx)
		if ctx.Err() != nil {
			t.Error("the detached stream did not end")
		}
	})
	t.Run("the drain ends it cleanly", func(t *testing.T) {
		b := newSSEBackend(t)
		h, srv, _ := detachProxy(t, b)
		_, br := openStream(t, srv, "h1", "GET")
		waitFor(t, "the handler returning", func() bool { return servedByNetHTTP() == 0 })
		h.EndStreams()
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Errorf("end of the stream at the drain: %q, %v; want a clean end", rest, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.WaitStreams(ctx)
		if ctx.Err() != nil {
			t.Error("WaitStreams did not return after the drain ended the stream")
		}
	})
	t.Run("the backend fails", func(t *testing.T) {
		b := newSSEBackend(t)
		_, srv, _ := detachProxy(t, b)
		_, br := openStream(t, srv, "h1", "GET")
		waitFor(t, "the handler returning", func() bool { return servedByNetHTTP() == 0 })
		b.next <- "fail"
		if _, err := io.ReadAll(br); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("a stream the backend cut: %v; want an incomplete response (unexpected EOF)", err)
		}
	})
	for _, c := range []struct{ proto, method string }{{"h1", "POST"}, {"h2", "GET"}} {
		t.Run("not detached: "+c.proto+" "+c.method, func(t *testing.T) {
			b := newSSEBackend(t)
			_, srv, _ := detachProxy(t, b)
			res, br := openStream(t, srv, c.proto, c.method)
			if res.Close {
				t.Error("Connection: close on a stream that stays in net/http")
			}
			time.Sleep(100 * time.Millisecond)
			if n := servedByNetHTTP(); n != 1 {
				t.Errorf("%d handlers serving the stream, want 1", n)
			}
			b.next <- "data: two\n\n"
			if ev := readEvent(t, br); ev != "data: two\n\n" {
				t.Errorf("second event %q", ev)
			}
			close(b.next)
			if _, err := io.ReadAll(br); err != nil {
				t.Errorf("end of the stream: %v", err)
			}
		})
	}
}

// TestSocketOf: the client watch reaches the socket through TLS and the
// hand-off's wrapper, and falls back to a read where there is none.
func TestSocketOf(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	tcp, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	pipe, other := net.Pipe()
	defer pipe.Close()
	defer other.Close()
	handed := &handoff.PeekedConn{Conn: tcp}
	cases := []struct {
		name string
		c    net.Conn
		want bool
	}{
		{"TCP", tcp, true},
		{"hand-off wrapper", handed, true},
		{"TLS over the hand-off wrapper", tls.Server(handed, &tls.Config{}), true},
		{"a pipe", pipe, false},
		{"TLS over a pipe", tls.Server(pipe, &tls.Config{}), false},
	}
	for _, c := range cases {
		if got := socketOf(c.c) != nil; got != c.want {
			t.Errorf("%s: socket found %v, want %v", c.name, got, c.want)
		}
	}
}

// fakeWatcher records the streams it watches; revoke withdraws access.
type fakeWatcher struct {
	mu      sync.Mutex
	ends    []func()
	stopped int
}

func (f *fakeWatcher) Watch(who *identity.Principal, end func()) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ends = append(f.ends, end)
	return func() {
		f.mu.Lock()
		f.stopped++
		f.mu.Unlock()
	}
}

func (f *fakeWatcher) revoke() {
	f.mu.Lock()
	ends := f.ends
	f.mu.Unlock()
	for _, e := range ends {
		e()
	}
}

func (f *fakeWatcher) counts() (watched, stopped int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ends), f.stopped
}

// TestStreamEndsWhenAccessWithdrawn: an open stream of a verified
// principal is watched, and ends cleanly (so the client reconnects and
// meets the bearer check again) when the watcher says its access was
// withdrawn: detached over HTTP/1.1, in net/http over HTTP/2, a POST's
// stream too. The watch is stopped when the stream ends.
func TestStreamEndsWhenAccessWithdrawn(t *testing.T) {
	for _, c := range []struct{ proto, method string }{{"h1", "GET"}, {"h2", "GET"}, {"h1", "POST"}, {"h2", "POST"}} {
		t.Run(c.proto+"/"+c.method, func(t *testing.T) {
			b := newSSEBackend(t)
			aw := &fakeWatcher{}
			_, srv, _ := watchedProxy(t, b, aw)
			_, br := openStream(t, srv, c.proto, c.method)
			waitFor(t, "the watch", func() bool { n, _ := aw.counts(); return n == 1 })
			aw.revoke()
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("end of the stream when access was withdrawn: %q, %v; want a clean end", rest, err)
			}
			select {
			case <-b.gone:
			case <-time.After(5 * time.Second):
				t.Error("the backend's stream stayed open")
			}
			waitFor(t, "the watch stopped", func() bool { _, stopped := aw.counts(); return stopped == 1 })
		})
	}
}

// TestWebSocketEndsWhenAccessWithdrawn: an upgraded connection of a
// verified principal is closed, both ways, when its access is withdrawn.
func TestWebSocketEndsWhenAccessWithdrawn(t *testing.T) {
	backendGone := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switchProtocols(w, "websocket", func(brw *bufio.ReadWriter) {
			io.Copy(io.Discard, brw) // until the gateway closes
			close(backendGone)
		})
	}))
	defer b.Close()
	h, err := New(testProxyConfig(t, b.URL), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.CloseIdle()
	aw := &fakeWatcher{}
	h.WatchAccess(aw)
	who := &identity.Principal{Login: "alice", TokenID: "jti-1", ExpiresAt: time.Now().Add(time.Hour)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), who)))
	}))
	srv.StartTLS()
	defer srv.Close()
	conn, err := tlsDial(srv, srv.Client().Transport.(*http.Transport))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: notes.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", res, err)
	}
	waitFor(t, "the watch", func() bool { n, _ := aw.counts(); return n == 1 })
	aw.revoke()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("the client's side after access was withdrawn: %v, want closed (EOF)", err)
	}
	select {
	case <-backendGone:
	case <-time.After(5 * time.Second):
		t.Error("the backend's side stayed open")
	}
}
