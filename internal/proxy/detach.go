package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/metrics"
)

// An HTTP/1.1 event stream (an MCP client's GET stream) lives for hours and
// sends an event now and then. Served by net/http it keeps, for all that
// time, the connection's goroutine and net/http's background reader (two
// stacks), the connection's read and write buffers, and the request, about
// half of the 52 KiB a stream cost (make bench, 5,000 streams). So once
// its head is sent, the stream leaves net/http: the connection is hijacked,
// the handler returns (and with it all of the above), and one goroutine
// with a small stack copies the events, framed as the chunks net/http had
// announced, while a second one waits, holding nothing, for the client to
// go away.
//
// The connection then cannot serve another request, so these responses say
// "Connection: close"; a client opens a new connection for its next
// request, which for a stream that lasts hours costs nothing that matters.
// Only GET streams are detached: a POST answered with an event stream is a
// tool call, usually short, whose connection the client will reuse.

// detachable reports whether a response is such a stream: an HTTP/1.1 GET
// answered 200 with an event stream of unknown length (net/http frames it
// in chunks, which detach continues), from an HTTP/1.1 backend on the
// direct path, with no trailers announced.
func detachable(r *http.Request, res *http.Response, rb *h1Body, announced int) bool {
	return rb != nil && r.ProtoMajor == 1 && r.ProtoMinor >= 1 && r.Method == http.MethodGet &&
		res.StatusCode == http.StatusOK && res.ContentLength < 0 && announced == 0 &&
		isEventStream(res.Header.Get("Content-Type"))
}

// canHijack reports whether w is, or wraps (Unwrap, as
// http.ResponseController follows), an http.Hijacker: net/http's HTTP/1
// response writer.
func canHijack(w http.ResponseWriter) bool {
	for {
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// detach takes a detachable stream, whose head w has sent and flushed, out
// of net/http. false: w could not be hijacked, and the caller streams as
// usual.
func (h *Handler) detach(w http.ResponseWriter, r *http.Request, rb *h1Body) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// Whatever the client sent after its request is never answered: the
	// response said Connection: close.
	if !rb.leaveContext() {
		// The client went away meanwhile.
		rb.Close()
		conn.Close()
		return true
	}
	// The server counted the hijacked connection as closed; it is open
	// until the stream ends.
	metrics.Default.ConnOpened(metrics.H1)
	// The stream keeps the body alone, not the response: its Request is
	// the client's, with its fields and contexts.
	s := &detachedStream{conn: conn, rb: rb, pool: h.buffers, path: r.URL.Path, logged: logging.Detach(r.Context())}
	who, _ := IdentityFrom(r.Context())
	h.detached.Add(1)
	go func() {
		defer h.detached.Done()
		s.run(h, who)
	}()
	return true
}

// WaitStreams returns when every detached stream has ended (EndStreams
// ends them), or when ctx does: the drain's last step before the worker
// exits, so the streams' final chunks are written.
func (h *Handler) WaitStreams(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		h.detached.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

type detachedStream struct {
	conn   net.Conn // the client's, hijacked
	rb     *h1Body  // the response's body
	pool   httputil.BufferPool
	path   string               // for the log
	logged func(bytesOut int64) // the request's access line; may be nil
}

// chunkRoom is the space kept in front of the data in a copy buffer for
// the chunk's size line, so a chunk goes out in one write (one TLS record).
const chunkRoom = 10 // 8 hex digits and CRLF: more than a buffer holds

var lastChunk = []byte("0\r\n\r\n")

func (s *detachedStream) run(h *Handler, who *identity.Principal) {
	var ended, gone atomic.Bool
	release := h.openStream(who, func() {
		ended.Store(true)
		s.rb.abort()
	})
	go func() {
		waitClient(s.conn)
		gone.Store(true)
		s.rb.abort()
	}()
	var sent int64
	var err error
	var size [chunkRoom]byte
	for {
		if err = s.rb.pc.waitReadable(); err != nil {
			break
		}
		buf := s.pool.Get()
		n, rerr := s.rb.Read(buf[chunkRoom : len(buf)-2])
		if n > 0 {
			line := append(strconv.AppendInt(size[:0], int64(n), 16), '\r', '\n')
			at := chunkRoom - len(line)
			copy(buf[at:], line)
			buf[chunkRoom+n], buf[chunkRoom+n+1] = '\r', '\n'
			if _, err = s.conn.Write(buf[at : chunkRoom+n+2]); err == nil {
				sent += int64(n)
			}
		}
		s.pool.Put(buf)
		if err != nil {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	switch {
	case gone.Load():
		// Nobody to tell.
	case err == io.EOF || ended.Load():
		// The backend ended the stream, or the drain did: a clean end, so
		// the client resumes with Last-Event-ID (as in copyBody).
		s.conn.Write(lastChunk)
	default:
		// As copyBody: the client must see an incomplete response, never a
		// clean end.
		h.log.Warn("upstream response ended early", "path", s.path, "err", err)
	}
	s.rb.Close()
	s.conn.Close()
	metrics.Default.ConnClosed(metrics.H1)
	release()
	if s.logged != nil {
		s.logged(sent)
	}
}

// waitClient returns when the client's connection is readable, which for a
// client that sent its GET and waits for events means it closed or reset
// the connection (anything else it sends is not read, and also ends the
// stream), or when the connection was closed. It waits on the socket
// itself, holding no buffer, and on a stack that stays small.
func waitClient(c net.Conn) {
	if raw := socketOf(c); raw != nil {
		raw.Read(func(fd uintptr) bool { return !socketEmpty(fd) })
		return
	}
	var b [1]byte
	c.Read(b[:])
}

// socketOf finds the socket under a connection: through TLS and the
// hand-off's wrapper (NetConn), to a syscall.Conn.
func socketOf(c net.Conn) syscall.RawConn {
	for range 4 {
		if sc, ok := c.(syscall.Conn); ok {
			raw, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}
