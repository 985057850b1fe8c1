package quicroute

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/peek"
)

// Action is what the caller should do with a datagram.
type Action uint8

const (
	// Drop: discard the datagram; Decision.Err says why. The zero value,
	// so a forgotten case fails closed.
	Drop Action = iota
	// Forward: send the datagram to Decision.Worker.
	Forward
	// NewConnection: the datagram completed the ClientHello of a new
	// connection. Pick the worker by Decision.SNI, call Bind (or Refuse)
	// with Decision.DCID, and forward Decision.Buffered.
	NewConnection
	// Pending: the router keeps the datagram until the ClientHello is
	// complete (or discarded it as a duplicate). Nothing to do.
	Pending
)

func (a Action) String() string {
	switch a {
	case Drop:
		return "drop"
	case Forward:
		return "forward"
	case NewConnection:
		return "new-connection"
	case Pending:
		return "pending"
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Datagram is a datagram the router buffered, with its source address.
type Datagram struct {
	From netip.AddrPort
	Data []byte
}

// Decision is the router's verdict on one datagram.
type Decision struct {
	Action Action
	Worker uint16 // Forward
	// NewConnection: the client's original DCID (owned by the caller now),
	// the ClientHello's server name ("" if none) and ALPN list, and every
	// datagram of the connection received so far — Initials and 0-RTT, in
	// arrival order, ending with the current one. The Data are copies.
	DCID     []byte
	SNI      string
	ALPN     []string
	Buffered []Datagram
	Err      error // Drop
}

// Router errors.
var (
	// ErrUnknownConnection: the DCID is neither a server-chosen id of this
	// key nor the DCID of a connection the router has seen; e.g. a 1-RTT
	// packet sent after the supervisor restarted with another key, a
	// stateless reset sent by a client (it carries no usable id), or a
	// 0-RTT packet that overtook its connection's first Initial.
	ErrUnknownConnection = errors.New("quicroute: packet for an unknown connection")
	// ErrRefused: the connection was passed to Refuse.
	ErrRefused = errors.New("quicroute: connection refused")
	// ErrBufferLimit: a new connection was dropped to keep buffered data
	// within bounds.
	ErrBufferLimit = errors.New("quicroute: buffer limit for new connections")
)

// RouterConfig configures a Router. Zero fields take the defaults.
type RouterConfig struct {
	Key [16]byte         // shared with the workers' Generators
	Now func() time.Time // clock; default time.Now

	// PendingTimeout bounds how long an incomplete ClientHello is kept,
	// counted from its first packet (default 10 s). A client retransmits
	// its whole first flight, so a dropped assembly only costs time.
	PendingTimeout time.Duration
	// BindTimeout is how long a routed connection's client-chosen DCID is
	// remembered after its last datagram (default 10 s). Clients use it
	// only until the server's first packet arrives, then switch to the
	// server's id; it stays needed for retransmitted Initials and 0-RTT.
	BindTimeout time.Duration

	MaxPending       int // connections being assembled (default 4096)
	MaxBound         int // remembered client DCIDs (default 16384)
	MaxBufferedBytes int // datagrams and reassembly buffers of pending connections (default 16 MiB)
}

// maxPendingDatagramBytes bounds the datagrams buffered for one new
// connection (16 full-size Initials plus coalesced 0-RTT fit easily).
const maxPendingDatagramBytes = 64 << 10

// datagramOverhead is charged per buffered datagram on top of its bytes,
// so that many tiny datagrams cannot hide their bookkeeping cost.
const datagramOverhead = 64

// Router decides where each datagram of a shared UDP socket goes. Its
// methods are safe for concurrent use (one mutex; the supervisor is
// expected to call Route from its single reader goroutine per socket, and
// Bind right after a NewConnection decision).
//
// Routing rules (RFC 9000 §5.2, §7.2, §12.2):
//   - Short header: the DCID is the CIDLen bytes after the first byte and
//     names the worker (DecodeWorker).
//   - Initial: a DCID already routed goes to the same worker. Otherwise
//     the packet is decrypted with keys from its DCID; if that works it
//     starts or continues a new connection (buffered until the ClientHello
//     is complete). If it does not, it is the Initial of a client that
//     already switched to the server-chosen DCID (an ACK, or a second
//     ClientHello after HelloRetryRequest; these stay keyed by the
//     original DCID) and goes to the worker the DCID names.
//   - 0-RTT and Handshake: a DCID routed or pending as a client-chosen
//     DCID goes there (0-RTT is sent to the original DCID until the
//     server answers); otherwise the DCID names the worker. Client-chosen
//     DCIDs are checked first because an 8-byte random id passes the
//     connection-id check with probability 1/256.
//   - Every packet of a datagram shares its DCID, so the first packet
//     decides for the whole datagram.
//
// After a Retry, the client's next Initial uses the Retry's source id as
// DCID and derives its keys from it, so it is routed as a new connection
// by SNI again — correct, since a Retry leaves no state in the worker and
// token keys are shared.
type Router struct {
	mu       sync.Mutex
	cfg      RouterConfig
	codec    cidCodec
	in, out  [16]byte // AES scratch for codec.decode, guarded by mu
	pending  lru[*pendingConn]
	bound    lru[binding]
	buffered int       // sum of pendingConn.size()
	now      time.Time // of the Route call in progress
}

type binding struct {
	worker  uint16
	refused bool
}

type pendingConn struct {
	asm       Assembler
	pns       []uint64 // Initial packet numbers seen, to skip duplicates
	datagrams []Datagram
	bytes     int // datagrams, with overhead
}

func (p *pendingConn) size() int { return p.bytes + p.asm.size() }

// NewRouter returns a Router; see RouterConfig for defaults.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = 10 * time.Second
	}
	if cfg.BindTimeout <= 0 {
		cfg.BindTimeout = 10 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.MaxBound <= 0 {
		cfg.MaxBound = 16384
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = 16 << 20
	}
	r := &Router{cfg: cfg, codec: newCIDCodec(cfg.Key)}
	r.pending.init()
	r.bound.init()
	return r
}

// Route decides what to do with a datagram received from from. datagram is
// not retained (buffered datagrams are copied).
func (r *Router) Route(datagram []byte, from netip.AddrPort) Decision {
	if len(datagram) > 0 && datagram[0]&0x80 == 0 {
		return r.routeShort(datagram)
	}
	h, err := parseLongHeader(datagram)
	if err != nil {
		return Decision{Err: err}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	r.now = now
	r.expire(now)

	switch h.typ {
	case typeInitial:
		if e := r.bound.get(h.dcid); e != nil {
			return r.forwardBound(e, now)
		}
		if e := r.pending.get(h.dcid); e != nil {
			in, err := ParseInitial(datagram)
			if err != nil {
				// Not for this connection (a stray or forged packet);
				// the assembly goes on.
				return Decision{Err: err}
			}
			return r.addInitial(e, in, datagram, from)
		}
		in, err := ParseInitial(datagram)
		switch {
		case errors.Is(err, ErrDecrypt):
			if w, ok := r.codec.decode(h.dcid, &r.in, &r.out); ok {
				return Decision{Action: Forward, Worker: w}
			}
			return Decision{Err: err}
		case err != nil:
			return Decision{Err: err}
		case len(h.dcid) < minClientDCIDLen:
			return Decision{Err: malformed("new connection with a %d-byte DCID", len(h.dcid))}
		case in.ConnectionClose:
			return Decision{Err: fmt.Errorf("%w: client closed the connection", ErrNotInitial)}
		}
		e := r.newPending(h.dcid, now)
		return r.addInitial(e, in, datagram, from)

	case type0RTT, typeHandshake:
		if e := r.bound.get(h.dcid); e != nil {
			return r.forwardBound(e, now)
		}
		if e := r.pending.get(h.dcid); e != nil {
			if err := r.buffer(e, datagram, from); err != nil {
				return Decision{Err: err}
			}
			return Decision{Action: Pending}
		}
		if w, ok := r.codec.decode(h.dcid, &r.in, &r.out); ok {
			return Decision{Action: Forward, Worker: w}
		}
		return Decision{Err: ErrUnknownConnection}
	}
	return Decision{Err: malformed("%s packet from a client", h.typ)}
}

// errShortPacket is preallocated: floods of tiny packets stay cheap to drop.
var errShortPacket = fmt.Errorf("%w: short header packet too short to be valid", ErrMalformed)

// routeShort is the hot path: no clock, no maps, no allocation.
func (r *Router) routeShort(datagram []byte) Decision {
	// RFC 9001 §5.4.2: packet number plus payload are at least 4 bytes
	// more than the 16-byte sample, so a real 1-RTT packet is never
	// shorter than this.
	if len(datagram) < 1+CIDLen+4+sampleLen {
		return Decision{Err: errShortPacket}
	}
	r.mu.Lock()
	w, ok := r.codec.decode(datagram[1:1+CIDLen], &r.in, &r.out)
	r.mu.Unlock()
	if !ok {
		return Decision{Err: ErrUnknownConnection}
	}
	return Decision{Action: Forward, Worker: w}
}

func (r *Router) forwardBound(e *lruEntry[binding], now time.Time) Decision {
	r.bound.touch(e, now.Add(r.cfg.BindTimeout))
	if e.val.refused {
		return Decision{Err: ErrRefused}
	}
	return Decision{Action: Forward, Worker: e.val.worker}
}

func (r *Router) newPending(dcid []byte, now time.Time) *lruEntry[*pendingConn] {
	for r.pending.len() >= r.cfg.MaxPending {
		r.dropPending(r.pending.oldest())
	}
	return r.pending.add(dcid, &pendingConn{}, now.Add(r.cfg.PendingTimeout))
}

// addInitial buffers the datagram of a decrypted Initial and feeds its
// CRYPTO frames to the connection's assembler.
func (r *Router) addInitial(e *lruEntry[*pendingConn], in *Initial, datagram []byte, from netip.AddrPort) Decision {
	p := e.val
	if slices.Contains(p.pns, in.PacketNumber) {
		// The same packet again (the network duplicated it, or the test
		// "retransmitted" a datagram): its bytes are already buffered.
		return Decision{Action: Pending}
	}
	if in.ConnectionClose {
		r.dropPending(e)
		return Decision{Err: fmt.Errorf("%w: client closed the connection", ErrNotInitial)}
	}
	if err := r.buffer(e, datagram, from); err != nil {
		return Decision{Err: err}
	}
	p.pns = append(p.pns, in.PacketNumber)

	r.buffered -= p.size()
	hello, done, err := p.asm.Add(in.Crypto)
	r.buffered += p.size()
	if err != nil {
		r.refuse(e)
		return Decision{Err: err}
	}
	if !done {
		if !r.fitBuffered(e) {
			return Decision{Err: ErrBufferLimit}
		}
		return Decision{Action: Pending}
	}
	info, err := peek.ParseClientHello(hello)
	if err != nil {
		r.refuse(e)
		return Decision{Err: err}
	}
	r.dropPending(e)
	return Decision{
		Action:   NewConnection,
		DCID:     []byte(e.key),
		SNI:      info.ServerName,
		ALPN:     info.ALPN,
		Buffered: p.datagrams,
	}
}

// buffer keeps a copy of datagram for the pending connection e; on error
// the connection has been dropped.
func (r *Router) buffer(e *lruEntry[*pendingConn], datagram []byte, from netip.AddrPort) error {
	p := e.val
	cost := len(datagram) + datagramOverhead
	if p.bytes+cost > maxPendingDatagramBytes || len(p.datagrams) >= 4*MaxInitialPackets {
		r.refuse(e)
		return fmt.Errorf("%w: connection buffered %d datagrams", ErrBufferLimit, len(p.datagrams))
	}
	p.datagrams = append(p.datagrams, Datagram{From: from, Data: slices.Clone(datagram)})
	p.bytes += cost
	r.buffered += cost
	if !r.fitBuffered(e) {
		return ErrBufferLimit
	}
	return nil
}

// fitBuffered evicts the oldest other pending connections until the
// total fits; if e alone is too much, it is dropped and false returned.
func (r *Router) fitBuffered(e *lruEntry[*pendingConn]) bool {
	for r.buffered > r.cfg.MaxBufferedBytes {
		old := r.pending.oldest()
		if old == e {
			if old.next == &r.pending.root {
				r.dropPending(e)
				return false
			}
			old = old.next
		}
		r.dropPending(old)
	}
	return true
}

func (r *Router) dropPending(e *lruEntry[*pendingConn]) {
	if r.pending.m[e.key] != e {
		return // already dropped
	}
	r.buffered -= e.val.size()
	r.pending.remove(e)
}

// refuse drops a pending connection whose Initials proved broken and
// remembers its DCID as refused: the client's retransmissions then cost a
// map lookup instead of another reassembly.
func (r *Router) refuse(e *lruEntry[*pendingConn]) {
	r.dropPending(e)
	r.bindLocked([]byte(e.key), binding{refused: true}, r.now)
}

// expire drops pending connections and bindings whose time is up.
func (r *Router) expire(now time.Time) {
	for e := r.pending.oldest(); e != nil && !now.Before(e.deadline); e = r.pending.oldest() {
		r.dropPending(e)
	}
	for e := r.bound.oldest(); e != nil && !now.Before(e.deadline); e = r.bound.oldest() {
		r.bound.remove(e)
	}
}

// Bind routes the connection with client-chosen DCID dcid (from a
// NewConnection decision) to workerID: its retransmitted Initials and
// 0-RTT packets follow until the client switches to the server's ids.
func (r *Router) Bind(dcid []byte, workerID uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bindLocked(dcid, binding{worker: workerID}, r.cfg.Now())
}

// Refuse makes the router drop the connection with client-chosen DCID
// dcid (with ErrRefused) until it has been quiet for BindTimeout, e.g.
// because no worker serves its SNI.
func (r *Router) Refuse(dcid []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bindLocked(dcid, binding{refused: true}, r.cfg.Now())
}

func (r *Router) bindLocked(dcid []byte, b binding, now time.Time) {
	if e := r.pending.get(dcid); e != nil {
		r.dropPending(e)
	}
	deadline := now.Add(r.cfg.BindTimeout)
	if e := r.bound.get(dcid); e != nil {
		e.val = b
		r.bound.touch(e, deadline)
		return
	}
	for r.bound.len() >= r.cfg.MaxBound {
		r.bound.remove(r.bound.oldest())
	}
	r.bound.add(dcid, b, deadline)
}

// RouterStats is a snapshot of the router's state, for metrics and tests.
type RouterStats struct {
	Pending       int // connections whose ClientHello is incomplete
	Bound         int // remembered client DCIDs (bound or refused)
	BufferedBytes int // memory charged to pending connections
}

// Stats returns a snapshot.
func (r *Router) Stats() RouterStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return RouterStats{Pending: r.pending.len(), Bound: r.bound.len(), BufferedBytes: r.buffered}
}
