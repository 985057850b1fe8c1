package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"
)

// h1Transport is the upstream client for every backend: HTTP/1.1 over
// TCP, a unix socket or TLS. It exists for one reason http.Transport cannot give: it
// decides when a connection goes back to the pool. http.Transport pools a
// connection as soon as a response body ends and only notices unsolicited
// bytes later, from its read loop; a request that takes the connection in
// between reads a hostile backend's appended response as its own
// (response-queue desync, issue 15). Here a connection is pooled only
// after its response was read to the end with framing nobody could read
// two ways, the request was written in full, and neither the read buffer
// nor TLS nor the socket holds a single byte more; it is checked again
// when taken from the pool. Everything else is discarded.
//
// Parsing is net/http's own (http.ReadResponse, the reader http.Transport
// uses), so what reaches the client is exactly what it would be with
// http.Transport; this type adds only the connection's life cycle.
type h1Transport struct {
	dial              func(ctx context.Context) (net.Conn, error)
	tls               *tls.Config // https backends: what dial uses
	respHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxIdle           int

	mu   sync.Mutex
	idle []*h1Conn // oldest first
}

const (
	// h1MaxHeaderBytes bounds the header phase of one response (all its
	// 1xx responses included): http.Transport's 10 MiB is far more than
	// any MCP server sends; more is answered with 502.
	h1MaxHeaderBytes = 1 << 20
	// h1MaxRecord bounds the copy of the header bytes kept for the framing
	// check; a larger header block is proxied but not trusted for reuse.
	h1MaxRecord = 64 << 10
	// h1Max1xx bounds interim responses: ReverseProxy relays each one and
	// lifts http.Transport's limit, so a backend could send them forever.
	h1Max1xx = 16
	// h1InlineBody is the largest request body written before the
	// response is read rather than beside it: it fits the socket buffers
	// even if the backend never reads it (an early response), and saves
	// the typical JSON-RPC POST a goroutine.
	h1InlineBody = 16 << 10
)

var (
	errH1HeaderTooLarge = errors.New("upstream response headers exceed 1 MiB")
	errH1Too1xx         = errors.New("upstream sent too many 1xx informational responses")
	errH1BadStatus      = errors.New("upstream sent a status code below 100")
)

// h1Conn is one upstream connection. Its Read is the bufio.Reader's
// source: during the header phase it enforces the header limit and keeps
// a copy of the raw header bytes for framingDoubt.
type h1Conn struct {
	t      *h1Transport
	conn   net.Conn
	tc     *tls.Conn       // conn, for an https backend; nil for plain ones
	raw    syscall.RawConn // the socket under conn; nil: cannot be checked for stray bytes, never reused
	br     *bufio.Reader
	idleAt time.Time
	reused bool

	hdr  bool // in the header phase
	left int  // header bytes still allowed
	rec  []byte
	over bool // rec overflowed

	mu       sync.Mutex // orders the writer's deadline against the end of the header phase
	hdrsDone bool
}

func (pc *h1Conn) Read(p []byte) (int, error) {
	if !pc.hdr {
		return pc.conn.Read(p)
	}
	if pc.left <= 0 {
		return 0, errH1HeaderTooLarge
	}
	if len(p) > pc.left {
		p = p[:pc.left]
	}
	n, err := pc.conn.Read(p)
	pc.left -= n
	if len(pc.rec)+n <= h1MaxRecord {
		pc.rec = append(pc.rec, p[:n]...)
	} else {
		pc.over = true
	}
	return n, err
}

// quiet reports whether nothing at all is waiting on the connection: no
// buffered byte, no byte in the socket, no end of stream. MSG_PEEK with
// MSG_DONTWAIT asks the kernel without consuming or blocking; Go's own
// Read with a past deadline would not even look.
func (pc *h1Conn) quiet() bool {
	if pc.br.Buffered() != 0 || pc.raw == nil || !pc.tlsQuiet() {
		return false
	}
	quiet := false
	err := pc.raw.Read(func(fd uintptr) bool {
		quiet = socketEmpty(fd)
		return true // never wait for readiness
	})
	return err == nil && quiet
}

// socketEmpty reports whether the socket has nothing to read, not even an
// end of stream: MSG_PEEK with MSG_DONTWAIT asks the kernel without
// consuming or blocking.
func socketEmpty(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}

// tlsQuiet reports whether TLS holds nothing for the next read: records
// the backend sent after the response, already read from the socket,
// would otherwise be decrypted as the next response. A read with a past
// deadline returns what TLS has buffered, or times out (not a lasting
// error for tls.Conn) having found nothing.
func (pc *h1Conn) tlsQuiet() bool {
	if pc.tc == nil {
		return true
	}
	var b [1]byte
	pc.tc.SetReadDeadline(time.Unix(1, 0))
	n, err := pc.tc.Read(b[:])
	pc.tc.SetReadDeadline(time.Time{})
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// waitReadable returns once the response has bytes to read (or the
// connection ended or failed) without holding a buffer: an idle stream then
// costs its connection's read buffer alone, not a copy buffer as well.
func (pc *h1Conn) waitReadable() error {
	if pc.br.Buffered() != 0 || pc.raw == nil || pc.tc != nil {
		// TLS may hold decrypted bytes the socket no longer shows.
		return nil
	}
	return pc.raw.Read(func(fd uintptr) bool {
		return !socketEmpty(fd) // false: wait for readiness
	})
}

func (t *h1Transport) newConn(ctx context.Context) (*h1Conn, error) {
	c, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	pc := &h1Conn{t: t, conn: c}
	sock := c
	if tc, ok := c.(*tls.Conn); ok {
		pc.tc, sock = tc, tc.NetConn()
	}
	if sc, ok := sock.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	// 2 KiB holds a backend's usual response head in one read; longer
	// lines are read in parts (textproto), and body reads as large as
	// the buffer skip it. Every open stream holds one (issue 15's SSE
	// memory), as does every idle connection in the pool.
	pc.br = bufio.NewReaderSize(pc, 2<<10)
	return pc, nil
}

// get returns a pooled connection that is still quiet and fresh, or a new
// one. The newest idle connection is tried first: it is the likeliest to
// be alive, and the old ones age out in put.
func (t *h1Transport) get(ctx context.Context) (*h1Conn, error) {
	t.mu.Lock()
	for len(t.idle) > 0 {
		pc := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		t.mu.Unlock()
		if time.Since(pc.idleAt) < t.idleTimeout && pc.quiet() {
			pc.reused = true
			return pc, nil
		}
		pc.conn.Close()
		t.mu.Lock()
	}
	t.mu.Unlock()
	return t.newConn(ctx)
}

func (t *h1Transport) put(pc *h1Conn) {
	now := time.Now()
	pc.idleAt = now
	t.mu.Lock()
	defer t.mu.Unlock()
	// Age out from the old end: amortised O(1), no timers per connection.
	n := 0
	for n < len(t.idle) && now.Sub(t.idle[n].idleAt) >= t.idleTimeout {
		t.idle[n].conn.Close()
		t.idle[n] = nil
		n++
	}
	t.idle = t.idle[n:]
	if len(t.idle) >= t.maxIdle {
		pc.conn.Close()
		return
	}
	t.idle = append(t.idle, pc)
}

// CloseIdleConnections closes every pooled connection (on drain).
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.conn.Close()
	}
}

// h1Exchange is one request as h1Transport sends it: ReverseProxy's
// outgoing *http.Request (RoundTrip), or the handler's own direct path
// (forward.go), which writes the request without building one.
type h1Exchange struct {
	ctx context.Context
	// req is what http.ReadResponse reads the response for (its method)
	// and what becomes Response.Request.
	req *http.Request
	// send writes the whole request; inline: it is small enough to be
	// written before the response is read (see h1InlineBody), otherwise
	// it is written beside the read.
	send   func(bw *bufio.Writer, inline bool) error
	inline bool
	replay bool // may be sent again on a new connection (no body, safe method)
	close  bool // the request asked for the connection to be closed
	// got1xx receives each interim response but 101; nil ignores them.
	got1xx func(code int, h http.Header) error
}

// RoundTrip sends req on a quiet connection and returns the response
// headers; the body, when read to its end, puts the connection back if it
// may be.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	x := &h1Exchange{
		ctx:    req.Context(),
		req:    req,
		send:   func(bw *bufio.Writer, inline bool) error { return writeRequest(bw, req, inline) },
		inline: req.Body == nil || req.Body == http.NoBody || (req.ContentLength > 0 && req.ContentLength <= h1InlineBody),
		replay: replayable(req),
		close:  req.Close,
	}
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
		x.got1xx = func(code int, h http.Header) error { return trace.Got1xxResponse(code, textproto.MIMEHeader(h)) }
	}
	return t.do(x)
}

func (t *h1Transport) do(x *h1Exchange) (*http.Response, error) {
	// One retry, as http.Transport does: a pooled connection the backend
	// closed just as it was taken, for a request without a body that can
	// be sent again.
	for attempt := 0; ; attempt++ {
		pc, err := t.get(x.ctx)
		if err != nil {
			return nil, err
		}
		res, nothingRead, err := pc.roundTrip(x)
		if err != nil && attempt == 0 && pc.reused && nothingRead && x.replay && x.ctx.Err() == nil {
			continue
		}
		return res, err
	}
}

func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

func (pc *h1Conn) roundTrip(x *h1Exchange) (res *http.Response, nothingRead bool, err error) {
	ctx := x.ctx
	// Cancellation (client gone, drain) closes the connection, which ends
	// any read or write in progress.
	stop := context.AfterFunc(ctx, func() { pc.conn.Close() })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		pc.conn.Close()
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, len(pc.rec) == 0 && !pc.over, err
	}
	pc.hdr, pc.left, pc.rec, pc.over, pc.hdrsDone = true, h1MaxHeaderBytes, pc.rec[:0], false, false

	var wrote chan error
	if x.inline {
		if err := pc.write(x, true); err != nil {
			return fail(err)
		}
		pc.startHeaderTimer()
	} else {
		// The body is written beside the read, as http.Transport does: a
		// backend may answer before it has read the body (early response).
		wrote = make(chan error, 1)
		go func() {
			err := pc.write(x, false)
			if err == nil {
				pc.startHeaderTimer()
			}
			wrote <- err
		}()
	}

	for n1xx := 0; ; n1xx++ {
		res, err = http.ReadResponse(pc.br, x.req)
		if err != nil {
			return fail(err)
		}
		code := res.StatusCode
		if code < 100 {
			// net/http reads "000" as a status; no server may send it on
			// (ResponseWriter.WriteHeader panics).
			return fail(errH1BadStatus)
		}
		if code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		if n1xx == h1Max1xx {
			return fail(errH1Too1xx)
		}
		if x.got1xx != nil {
			if err := x.got1xx(code, res.Header); err != nil {
				return fail(err)
			}
		}
	}
	pc.mu.Lock()
	pc.hdrsDone = true
	pc.conn.SetReadDeadline(time.Time{})
	pc.mu.Unlock()
	pc.hdr = false
	block := pc.rec[:len(pc.rec)-min(len(pc.rec), pc.br.Buffered())]
	trusted := !pc.over && !res.Close && !x.close && !framingDoubt(block)

	if res.StatusCode == http.StatusSwitchingProtocols {
		// The connection now belongs to the upgraded protocol; it never
		// returns to the pool.
		res.Body = &h1Upgraded{pc: pc, stop: stop}
		return res, false, nil
	}
	body := &h1Body{pc: pc, rc: res.Body, stop: stop, wrote: wrote, trusted: trusted}
	if res.Body == http.NoBody {
		body.finish(true)
		return res, false, nil
	}
	res.Body = body
	return res, false, nil
}

// write sends x's request through a pooled write buffer: a connection
// waiting for its response (a stream, for hours) holds no write buffer.
func (pc *h1Conn) write(x *h1Exchange, inline bool) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(pc.conn)
	err := x.send(bw, inline)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	return err
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// writeRequest writes req as http.Transport would. Request.Write flushes
// the headers on their own before a body of unknown or non-zero length,
// which suits a streamed body; a small inline one goes out with its
// headers in one write (one syscall, one wake-up of the backend), so Write
// is not shown the *bufio.Writer.
func writeRequest(bw *bufio.Writer, req *http.Request, inline bool) error {
	var w io.Writer = bw
	if inline {
		w = oneWrite{bw}
	}
	return req.Write(w)
}

// oneWrite hides a *bufio.Writer from Request.Write's header flush; it
// is still an io.ByteWriter, so Write adds no buffer of its own.
type oneWrite struct{ *bufio.Writer }

// startHeaderTimer starts ResponseHeaderTimeout once the request is
// written, as http.Transport does, unless the headers are already here.
func (pc *h1Conn) startHeaderTimer() {
	if pc.t.respHeaderTimeout <= 0 {
		return
	}
	pc.mu.Lock()
	if !pc.hdrsDone {
		pc.conn.SetReadDeadline(time.Now().Add(pc.t.respHeaderTimeout))
	}
	pc.mu.Unlock()
}

// h1Body is a response body; at its end it decides the connection's fate.
type h1Body struct {
	pc      *h1Conn
	rc      io.ReadCloser
	stop    func() bool
	wrote   chan error // nil: the request had no body and was written
	trusted bool
	done    bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
	}
	return n, err
}

// abort ends the body from another goroutine (the drain deadline): the
// Read in progress fails, and the connection is not reused.
func (b *h1Body) abort() { b.pc.conn.Close() }

// leaveContext frees the body from its request's context, for a stream
// that outlives its handler (detach.go): from now on only abort ends it
// early. false if the context ended it already.
func (b *h1Body) leaveContext() bool {
	if !b.stop() {
		return false
	}
	b.stop = func() bool { return true }
	return true
}

// Close before the end discards the connection: the rest of the body is
// not read (the ReadResponse body's own Close would read it all, which for
// a stream is forever).
func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(atEOF bool) {
	b.done = true
	pc := b.pc
	alive := b.stop() // false: canceled, the connection is being closed
	// Only what is already buffered is checked here: bytes the backend
	// sends later are caught when the connection is taken again (get asks
	// the kernel then), so asking it now too would cost a syscall per
	// request and catch nothing more.
	if atEOF && alive && b.trusted && b.written() && pc.br.Buffered() == 0 {
		pc.t.put(pc)
		return
	}
	pc.conn.Close()
}

// written reports whether the whole request went out without error. The
// writer may just not have reported yet, so it gets a moment (50 ms, as
// in http.Transport); a write still going on after that means the backend
// answered early, and what it makes of the rest of the body is unknown.
func (b *h1Body) written() bool {
	if b.wrote == nil {
		return true
	}
	select {
	case err := <-b.wrote:
		return err == nil
	default:
	}
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-b.wrote:
		return err == nil
	case <-t.C:
		return false
	}
}

// h1Upgraded is the body of a 101 response: the connection itself, for
// ReverseProxy to relay both ways, starting with what is buffered.
type h1Upgraded struct {
	pc   *h1Conn
	stop func() bool
}

func (u *h1Upgraded) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *h1Upgraded) Write(p []byte) (int, error) { return u.pc.conn.Write(p) }
func (u *h1Upgraded) Close() error {
	u.stop()
	return u.pc.conn.Close()
}

// framingDoubt reports whether a raw header block (the final response's,
// with any 1xx responses before it) could be framed two ways by two
// readers: net/http accepts some of these and drops others in silence, and
// an intermediary between mcpgate and the backend may decide otherwise.
// Such a response is still proxied as net/http reads it, but its
// connection is not reused. Doubts: Content-Length beside
// Transfer-Encoding, more than one of either, a Content-Length that is not
// plain digits, a Transfer-Encoding other than "chunked", obs-fold, a bare
// LF or CR, NUL or another control byte.
func framingDoubt(block []byte) bool {
	cl, te := 0, 0
	status := true // the next line is a status line
	for len(block) > 0 {
		i := 0
		for i < len(block) && block[i] != '\n' {
			c := block[i]
			if (c < 0x20 && c != '\t' && c != '\r') || c == 0x7f {
				return true
			}
			i++
		}
		if i == len(block) || i == 0 || block[i-1] != '\r' {
			return true // unterminated or bare LF
		}
		line := block[:i-1]
		block = block[i+1:]
		for _, c := range line {
			if c == '\r' {
				return true // bare CR
			}
		}
		switch {
		case len(line) == 0: // end of one response's header block
			if cl > 1 || te > 1 || (cl > 0 && te > 0) {
				return true
			}
			cl, te, status = 0, 0, true
			continue
		case status:
			status = false
			continue
		case line[0] == ' ' || line[0] == '\t':
			return true // obs-fold
		}
		name, value, ok := cutByte(line, ':')
		if !ok {
			return true
		}
		value = trimOWS(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			cl++
			if len(value) == 0 {
				return true
			}
			for _, c := range value {
				if c < '0' || c > '9' {
					return true
				}
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			te++
			if !asciiEqualFold(value, "chunked") {
				return true
			}
		}
	}
	return !status // a block must end with its empty line
}

func cutByte(b []byte, sep byte) (before, after []byte, ok bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if b[i]|0x20 != s[i]|0x20 {
			return false
		}
	}
	return true
}
