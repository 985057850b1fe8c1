package worker

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mcpgate/mcpgate/internal/metrics"
)

// Go's HTTP/2 server shuts a connection down with one GOAWAY whose last
// stream id is the highest it has read, and silently discards any stream
// the client opened before that GOAWAY reached it. Go's client retries
// such a stream; other clients (h2load, browsers' fetch in some states,
// proxies) report an error. RFC 9113 §6.8 recommends announcing the
// shutdown first with a GOAWAY carrying the largest stream id (2^31-1),
// so the client stops opening streams while those in flight are still
// accepted, and sending the final GOAWAY only after a round trip. The
// server has no hook for that, so the worker serves HTTP/2 through
// x/net/http2 on a connection wrapper that can put that first GOAWAY
// between two frames of the server's own output.

// announceGoAway is a GOAWAY frame: length 8, type 0x7, no flags, stream
// 0; last stream id 2^31-1, error code NO_ERROR.
var announceGoAway = []byte{0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0}

// h2Conn is the TLS connection of one HTTP/2 client, as the HTTP/2 server
// writes to it. It follows the frame boundaries of the server's output so
// that announce can insert a frame between two of them.
type h2Conn struct {
	*tls.Conn
	out         io.Writer    // the TLS connection; a recorder in tests
	lastRequest atomic.Int64 // unix nanoseconds when the last request reached a handler

	mu        sync.Mutex
	hdr       [9]byte // guarded by mu; the frame header being written
	hdrN      int     // guarded by mu; how much of hdr was written
	payload   int     // guarded by mu; payload bytes of the current frame not written yet
	pending   bool    // guarded by mu; announce at the next frame boundary
	announced bool    // guarded by mu
	goAway    []byte  // guarded by mu; the start of the server's own GOAWAY being written
	// finalGoAway is the last stream id of the server's own (final)
	// GOAWAY, -1 until it was written.
	finalGoAway atomic.Int64

	// The read side, used only by the server's reading goroutine: the new
	// streams the client opened, to count those the final GOAWAY
	// discarded (Go's server drops them without a trace).
	rskip    int     // client preface bytes still to pass
	rhdr     [9]byte // the frame header being read
	rhdrN    int
	rpayload int
	rmax     uint32   // highest stream id opened
	ropened  []uint32 // the last ones opened, newest last (a window of maxOpenedWindow)
}

// maxOpenedWindow bounds the stream ids kept per connection: a drain that
// discards more than this many streams reports this many.
const maxOpenedWindow = 256

func newH2Conn(tc *tls.Conn) *h2Conn {
	c := &h2Conn{Conn: tc, out: tc, rskip: len(http2.ClientPreface)}
	c.finalGoAway.Store(-1)
	return c
}

// atBoundary: the next byte written starts a frame.
func (c *h2Conn) atBoundary() bool { return c.hdrN == 0 && c.payload == 0 }

// advance follows p through the frame structure up to the end of the
// current frame (or of p) and returns how many bytes that is.
func (c *h2Conn) advance(p []byte) int {
	if c.payload > 0 {
		k := min(len(p), c.payload)
		c.followGoAway(p[:k])
		c.payload -= k
		if c.payload == 0 {
			c.goAway = nil
		}
		return k
	}
	k := copy(c.hdr[c.hdrN:], p)
	c.hdrN += k
	if c.hdrN == len(c.hdr) {
		c.payload = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		c.hdrN = 0
		if http2.FrameType(c.hdr[3]) == http2.FrameGoAway {
			c.goAway = make([]byte, 0, 4) // non-nil: collecting
		}
	}
	return k
}

// followGoAway records the last stream id of a GOAWAY the server writes;
// p is the next payload bytes of the current frame.
func (c *h2Conn) followGoAway(p []byte) {
	if c.goAway == nil || len(c.goAway) >= 4 {
		return
	}
	c.goAway = append(c.goAway, p[:min(len(p), 4-len(c.goAway))]...)
	if len(c.goAway) == 4 {
		c.finalGoAway.Store(int64(binary.BigEndian.Uint32(c.goAway) & 0x7fffffff))
	}
}

// Write passes the server's output on, inserting the announcing GOAWAY at
// the first frame boundary once it is pending.
func (c *h2Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending {
		// The common case: one write, the frame positions merely followed.
		for q := p; len(q) > 0; {
			q = q[c.advance(q):]
		}
		return c.out.Write(p)
	}
	n := 0
	for len(p) > 0 {
		if c.pending && c.atBoundary() {
			if _, err := c.out.Write(announceGoAway); err != nil {
				return n, err
			}
			c.pending = false
		}
		k := 0
		for k < len(p) {
			k += c.advance(p[k:])
			if c.atBoundary() {
				break
			}
		}
		w, err := c.out.Write(p[:k])
		n += w
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// Read follows the client's frames for the streams it opens.
func (c *h2Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.followRead(p[:n])
	return n, err
}

func (c *h2Conn) followRead(p []byte) {
	for len(p) > 0 {
		switch {
		case c.rskip > 0:
			k := min(len(p), c.rskip)
			c.rskip -= k
			p = p[k:]
		case c.rpayload > 0:
			k := min(len(p), c.rpayload)
			c.rpayload -= k
			p = p[k:]
		default:
			k := copy(c.rhdr[c.rhdrN:], p)
			c.rhdrN += k
			p = p[k:]
			if c.rhdrN < len(c.rhdr) {
				continue
			}
			c.rhdrN = 0
			c.rpayload = int(c.rhdr[0])<<16 | int(c.rhdr[1])<<8 | int(c.rhdr[2])
			id := binary.BigEndian.Uint32(c.rhdr[5:]) & 0x7fffffff
			if http2.FrameType(c.rhdr[3]) == http2.FrameHeaders && id > c.rmax {
				c.rmax = id
				if len(c.ropened) == maxOpenedWindow {
					c.ropened = c.ropened[1:]
				}
				c.ropened = append(c.ropened, id)
			}
		}
	}
}

// discarded counts the streams the client opened above the last stream id
// of the server's final GOAWAY: the server drops them unanswered. Call it
// once the connection is done.
func (c *h2Conn) discarded() int {
	last := c.finalGoAway.Load()
	if last < 0 {
		return 0
	}
	n := 0
	for _, id := range c.ropened {
		if int64(id) > last {
			n++
		}
	}
	return n
}

// announce sends the GOAWAY announcing the shutdown, now if the server is
// between frames, else right after the frame it is writing.
func (c *h2Conn) announce() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.announced {
		return nil
	}
	c.announced = true
	if !c.atBoundary() {
		c.pending = true
		return nil
	}
	_, err := c.out.Write(announceGoAway)
	return err
}

// serveHTTP2 makes srv serve HTTP/2 through x/net/http2 on h2Conns, which
// d tracks; Shutdown still sends the final GOAWAY to each.
//
// x/net/http2's server is deprecated in favour of net/http's own, which
// serves only the *tls.Conn it accepted itself: ServeConn is the one way
// to put a connection of ours between the HTTP/2 server and TLS.
func (d *drainer) serveHTTP2(srv *http.Server) error {
	//lint:ignore SA1019 see above: no other API serves HTTP/2 on a wrapped connection
	h2 := &http2.Server{}
	//lint:ignore SA1019 see above
	if err := http2.ConfigureServer(srv, h2); err != nil {
		return err
	}
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		c := newH2Conn(tc)
		// net/http reported the connection as new (with tc), and reports
		// no other state until it closes: it is HTTP/2, not an HTTP/1
		// connection that may carry a request.
		d.h1mu.Lock()
		delete(d.h1, tc)
		d.h1mu.Unlock()
		d.h2.Store(tc, c)
		defer d.h2.Delete(tc)
		// Counted as h2 while it serves; back to h1 for the StateClosed
		// net/http reports when this returns.
		metrics.Default.ConnSwitched(metrics.H1, metrics.H2)
		defer metrics.Default.ConnSwitched(metrics.H2, metrics.H1)
		defer func() {
			if n := c.discarded(); n > 0 {
				d.discarded.Add(int64(n))
				d.log.Warn("HTTP/2 streams opened after the final GOAWAY were discarded", "streams", n, "remote", tc.RemoteAddr().String())
			}
		}()
		// net/http passes the connection's base context (ConnContext's
		// values) this way; x/net/http2 does the same when it is in charge.
		var ctx context.Context
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		//lint:ignore SA1019 see above
		h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
	}
	return nil
}

// announceShutdown announces the shutdown on every HTTP/2 connection.
func (d *drainer) announceShutdown() {
	d.h2.Range(func(_, v any) bool {
		if err := v.(*h2Conn).announce(); err != nil {
			d.log.Debug("announcing GOAWAY", "err", err)
		}
		return true
	})
}

// h2MayCarryRequest reports whether an HTTP/2 connection started a request
// less than grace ago: after the announcing GOAWAY, a client that is still
// sending had not seen it yet, and the final GOAWAY would discard what it
// sends next.
func (d *drainer) h2MayCarryRequest(grace time.Duration) bool {
	since := time.Now().Add(-grace).UnixNano()
	busy := false
	d.h2.Range(func(_, v any) bool {
		busy = v.(*h2Conn).lastRequest.Load() > since
		return !busy
	})
	return busy
}

// noteRequest records a request on an HTTP/2 connection.
func (d *drainer) noteRequest(c any) {
	if tc, ok := c.(*tls.Conn); ok {
		if v, ok := d.h2.Load(tc); ok {
			v.(*h2Conn).lastRequest.Store(time.Now().UnixNano())
		}
	}
}

var _ net.Conn = (*h2Conn)(nil)
