package dispatch

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/peek"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// Conn is what a Target needs from an accepted connection: its descriptor.
type Conn interface {
	net.Conn
	syscall.Conn
}

// Limits on what the supervisor reads before handing a connection off.
const (
	maxHelloBytes = 64 << 10
	maxHeadBytes  = 16 << 10
)

// alertUnrecognizedName is a fatal TLS alert record, unrecognized_name (112).
var alertUnrecognizedName = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70}

// alertInternalError is a fatal TLS alert record, internal_error (80), sent
// when the owning worker is not available.
var alertInternalError = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50}

const notFoundResponse = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\nConnection: close\r\n\r\nno proxy is set up for this host\n"

const unavailableResponse = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 30\r\nRetry-After: 1\r\nConnection: close\r\n\r\nthis proxy is not running now\n"

// Dispatcher routes accepted connections to targets.
type Dispatcher struct {
	Log *slog.Logger
	// PeekTimeout bounds how long a client may take to send its ClientHello
	// or request head.
	PeekTimeout time.Duration

	table   atomic.Pointer[Table]
	trusted atomic.Pointer[[]netip.Prefix]
	wg      sync.WaitGroup
	paused  atomic.Bool

	handoffs [len(handoffResults)]atomic.Uint64 // by handoffResults index
}

// Routing results of accepted connections, for mcpgate_handoffs_total.
const (
	handoffDelivered   = iota // handed to the owning worker
	handoffUnknownHost        // no proxy for the host: refused
	handoffFailed             // the owner is not running or the hand-off failed
	handoffRejected           // refused before routing: no ClientHello or request head, a bad PROXY header
)

var handoffResults = [...]string{"delivered", "unknown_host", "failed", "rejected"}

// Handoffs returns the number of accepted connections by routing result.
func (d *Dispatcher) Handoffs() map[string]uint64 {
	m := make(map[string]uint64, len(handoffResults))
	for i, r := range handoffResults {
		m[r] = d.handoffs[i].Load()
	}
	return m
}

// SetTrustedProxies sets the load balancers whose connections start with a
// PROXY protocol header (v1 or v2). Connections from them without one are
// dropped; a header from anyone else is refused.
func (d *Dispatcher) SetTrustedProxies(p []netip.Prefix) { d.trusted.Store(&p) }

func (d *Dispatcher) isTrusted(a net.Addr) bool {
	p := d.trusted.Load()
	if p == nil || len(*p) == 0 {
		return false
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, pfx := range *p {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

type deadliner interface{ SetDeadline(time.Time) error }

// Pause makes the accept loops on ls return without closing the sockets:
// connections wait in the kernel's backlog (a supervisor upgrade hands the
// sockets to the next binary meanwhile).
func (d *Dispatcher) Pause(ls []net.Listener) {
	d.paused.Store(true)
	for _, l := range ls {
		if dl, ok := l.(deadliner); ok {
			dl.SetDeadline(time.Unix(1, 0))
		}
	}
}

// Paused reports whether Pause is in effect.
func (d *Dispatcher) Paused() bool { return d.paused.Load() }

// Resume undoes Pause; the caller starts the accept loops again.
func (d *Dispatcher) Resume(ls []net.Listener) {
	for _, l := range ls {
		if dl, ok := l.(deadliner); ok {
			dl.SetDeadline(time.Time{})
		}
	}
	d.paused.Store(false)
}

// SetTable switches routing for new connections.
func (d *Dispatcher) SetTable(t *Table) { d.table.Store(t) }

// Table returns the current routing table.
func (d *Dispatcher) Table() *Table { return d.table.Load() }

// ServeTLS accepts on l until it is closed, routing by SNI.
func (d *Dispatcher) ServeTLS(l net.Listener) error { return d.serve(l, wire.KindTLS) }

// ServeHTTP accepts on l until it is closed, routing by Host.
func (d *Dispatcher) ServeHTTP(l net.Listener) error { return d.serve(l, wire.KindHTTP) }

// Wait waits for connections being routed right now.
func (d *Dispatcher) Wait() { d.wg.Wait() }

func (d *Dispatcher) serve(l net.Listener, kind wire.Kind) error {
	if pl, ok := l.(pollListener); ok && rawSyscalls {
		if f, err := pl.PollFile(); err == nil {
			defer pl.ReleaseFile(f)
			if rc, err := f.SyscallConn(); err == nil {
				return d.serveRaw(rc, kind)
			}
		}
	}
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || d.paused.Load() {
				return nil
			}
			delay = d.acceptFailed(err, delay)
			continue
		}
		delay = 0
		conn, ok := c.(Conn)
		if !ok {
			c.Close()
			continue
		}
		d.goRoute(conn, kind)
	}
}

// pollListener lends a pollable duplicate of a TCP listening socket that
// follows the listener's deadline and closing (activation.Listener).
type pollListener interface {
	PollFile() (*os.File, error)
	ReleaseFile(*os.File)
}

// serveRaw is serve on a pollListener's duplicate (rc): connections are
// accepted as bare descriptors (fdConn), waiting for the next one in the
// runtime's poller.
func (d *Dispatcher) serveRaw(rc syscall.RawConn, kind wire.Kind) error {
	var delay time.Duration
	for {
		var (
			c    *fdConn
			aerr error
		)
		err := rc.Read(func(lfd uintptr) bool {
			for {
				fd, la, ra, err := rawAccept(int(lfd))
				switch err {
				case nil:
					c = &fdConn{fd: fd, laddr: la, raddr: ra}
				case syscall.EAGAIN:
					return false
				case syscall.EINTR, syscall.ECONNABORTED:
					// As net's accept: try the next one at once (the poller
					// is edge-triggered: waiting could miss it).
					continue
				default:
					aerr = err
				}
				return true
			}
		})
		if err != nil {
			// The waiting itself fails only when the listener was closed
			// or Pause set its deadline.
			return nil
		}
		if aerr != nil {
			delay = d.acceptFailed(os.NewSyscallError("accept4", aerr), delay)
			continue
		}
		delay = 0
		d.goRoute(c, kind)
	}
}

// acceptFailed backs off after a failed accept (out of descriptors and the
// like) instead of spinning, as net/http does, and returns the next delay.
func (d *Dispatcher) acceptFailed(err error, delay time.Duration) time.Duration {
	if delay == 0 {
		delay = 5 * time.Millisecond
	} else if delay *= 2; delay > time.Second {
		delay = time.Second
	}
	d.Log.Warn("accept failed", "err", err, "retry_in", delay)
	time.Sleep(delay)
	return delay
}

func (d *Dispatcher) goRoute(c Conn, kind wire.Kind) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.route(c, kind)
	}()
}

func (d *Dispatcher) route(c Conn, kind wire.Kind) {
	defer c.Close() // our copy; the worker has its own after the hand-off
	timeout := d.PeekTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// One deadline covers the PROXY header and the ClientHello or request
	// head: a slow client cannot hold a routing goroutine for longer.
	c.SetReadDeadline(time.Now().Add(timeout))
	src, dst := c.RemoteAddr(), c.LocalAddr()
	var (
		r      io.Reader = c
		lbTLVs []proxyproto.TLV
	)
	if d.isTrusted(src) {
		var (
			h   *proxyproto.Header
			err error
		)
		h, r, err = readProxyHeader(c)
		if err != nil {
			d.handoffs[handoffRejected].Add(1)
			d.Log.Warn("load balancer connection without a valid PROXY header; dropped", "peer", src.String(), "err", err)
			return
		}
		if h.Command == proxyproto.PROXY && h.SourceAddr != nil && h.DestinationAddr != nil {
			src, dst = h.SourceAddr, h.DestinationAddr
		}
		lbTLVs = forwardableTLVs(h)
	}
	var (
		host   string
		alpn   []string
		peeked []byte
		err    error
	)
	if kind == wire.KindTLS {
		var info peek.ClientHelloInfo
		info, peeked, err = peek.ClientHello(r, maxHelloBytes)
		host, alpn = info.ServerName, info.ALPN
	} else {
		host, peeked, err = peek.HTTPHost(r, maxHeadBytes)
	}
	c.SetReadDeadline(time.Time{})
	// Only when there is something to say: With encodes its attribute at
	// once, which is work on every connection otherwise.
	log := func() *slog.Logger { return d.Log.With("client", src.String()) }
	if err != nil {
		d.handoffs[handoffRejected].Add(1)
		if hasProxySignature(peeked) {
			log().Warn("PROXY header from an address not in proxy_protocol_from; refused", "peer", c.RemoteAddr().String())
			return
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
			log().Debug("connection refused before routing", "listener", listenerName(kind), "err", err)
		}
		if kind == wire.KindHTTP && !isIOError(err) {
			io.WriteString(c, badRequestResponse)
		}
		return
	}
	t := d.table.Load().Lookup(host)
	if t == nil {
		d.handoffs[handoffUnknownHost].Add(1)
		log().Info("no proxy for host", "listener", listenerName(kind), "host", host)
		d.refuse(c, kind, alertUnrecognizedName, notFoundResponse)
		return
	}
	header, err := handoff.Header(src, dst, host, alpn, lbTLVs...)
	if err != nil {
		log().Error("building PROXY header", "err", err)
		return
	}
	err = t.Deliver(kind, c, header, peeked)
	if errors.Is(err, ErrRetired) {
		// A reload replaced the target between lookup and hand-off: the
		// current table has its successor.
		t2 := d.table.Load().Lookup(host)
		if t2 == nil || t2 == t {
			d.handoffs[handoffUnknownHost].Add(1)
			log().Info("no proxy for host after reload", "listener", listenerName(kind), "host", host)
			d.refuse(c, kind, alertUnrecognizedName, notFoundResponse)
			return
		}
		t = t2
		err = t.Deliver(kind, c, header, peeked)
	}
	if err != nil {
		d.handoffs[handoffFailed].Add(1)
		log().Warn("hand-off failed", "proxy", t.Name(), "host", host, "err", err)
		d.refuse(c, kind, alertInternalError, unavailableResponse)
		return
	}
	d.handoffs[handoffDelivered].Add(1)
}

const badRequestResponse = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n"

func (d *Dispatcher) refuse(c Conn, kind wire.Kind, alert []byte, httpResp string) {
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if kind == wire.KindTLS {
		c.Write(alert)
	} else {
		io.WriteString(c, httpResp)
	}
	// Closing with unread input makes the kernel send a reset, which can
	// destroy the refusal before the client reads it: half-close, then
	// drain briefly.
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

func isIOError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

func listenerName(kind wire.Kind) string {
	if kind == wire.KindTLS {
		return "https"
	}
	return "http"
}

// readProxyHeader reads a PROXY v1 or v2 header from c and returns a reader
// that yields whatever was read past it, then the rest of c.
func readProxyHeader(c net.Conn) (*proxyproto.Header, io.Reader, error) {
	br := bufio.NewReaderSize(c, 512)
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, nil, err
	}
	rest, _ := br.Peek(br.Buffered())
	return h, io.MultiReader(bytes.NewReader(bytes.Clone(rest)), c), nil
}

// forwardableTLVs keeps the load balancer's TLVs for the worker, except the
// authority (mcpgate sets its own from the SNI or Host it routed by) and
// mcpgate's private range, which only the supervisor may set.
func forwardableTLVs(h *proxyproto.Header) []proxyproto.TLV {
	tlvs, err := h.TLVs()
	if err != nil {
		return nil
	}
	var out []proxyproto.TLV
	for _, t := range tlvs {
		if t.Type == proxyproto.PP2_TYPE_AUTHORITY || (t.Type >= proxyproto.PP2_TYPE_MIN_CUSTOM && t.Type <= proxyproto.PP2_TYPE_MAX_CUSTOM) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// hasProxySignature: the routing read stops at the first bytes that are not
// TLS or HTTP, so only a prefix of the signature may have been read.
func hasProxySignature(b []byte) bool {
	if bytes.HasPrefix(b, []byte("PROXY")) {
		return true
	}
	n := min(len(b), len(proxyproto.SIGV2))
	return n >= 4 && bytes.Equal(b[:n], proxyproto.SIGV2[:n])
}
