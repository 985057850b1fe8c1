package handoff

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// PeekedConn is a handed-off connection as the worker sees it: reads return
// the bytes the supervisor consumed first, then the socket; RemoteAddr and
// LocalAddr come from the PROXY header, i.e. the real client, not the
// supervisor.
type PeekedConn struct {
	net.Conn
	Header *proxyproto.Header
	mu     sync.Mutex
	prefix []byte
}

// ParseConn builds a PeekedConn from a received connection message. It
// takes ownership of f, and of payload, whose bytes after the header it
// replays without a copy.
func ParseConn(f *os.File, payload []byte) (*PeekedConn, error) {
	h, rest, err := parseHeader(payload)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("handoff: PROXY header: %w", err)
	}
	if sc, err := newSockConn(f); err == nil {
		return &PeekedConn{Conn: sc, Header: h, prefix: rest}, nil
	}
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	return &PeekedConn{Conn: nc, Header: h, prefix: rest}, nil
}

// parseHeader reads the PROXY header at the start of payload and returns
// the bytes after it. The supervisor sends v2, whose length is in its
// first 16 bytes: the header is read from exactly its own bytes. Anything
// else goes through a buffered reader, as any PROXY header would.
func parseHeader(payload []byte) (*proxyproto.Header, []byte, error) {
	if len(payload) >= 16 && bytes.HasPrefix(payload, proxyproto.SIGV2) {
		n := 16 + (int(payload[14])<<8 | int(payload[15]))
		if n <= len(payload) {
			h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(payload[:n]), max(n, 16)))
			if err != nil {
				return nil, nil, err
			}
			return h, payload[n:], nil
		}
	}
	br := bufio.NewReaderSize(bytes.NewReader(payload), 512)
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, nil, err
	}
	rest, _ := io.ReadAll(br)
	return h, rest, nil
}

// Read replays the peeked bytes, then reads the socket.
func (c *PeekedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// NetConn is the socket under the replayed bytes, as tls.Conn's NetConn
// is the connection under TLS: for waiting on the socket without reading
// it (a detached stream's watch for its client going away), once the
// replayed bytes were read, which the TLS handshake does.
func (c *PeekedConn) NetConn() net.Conn { return c.Conn }

// RemoteAddr is the client's address from the PROXY header.
func (c *PeekedConn) RemoteAddr() net.Addr {
	if c.Header != nil && c.Header.SourceAddr != nil {
		return c.Header.SourceAddr
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is the address the client connected to, from the PROXY header.
func (c *PeekedConn) LocalAddr() net.Addr {
	if c.Header != nil && c.Header.DestinationAddr != nil {
		return c.Header.DestinationAddr
	}
	return c.Conn.LocalAddr()
}

// TLV returns the value of a PROXY v2 TLV, or nil.
func (c *PeekedConn) TLV(t proxyproto.PP2Type) []byte {
	if c.Header == nil {
		return nil
	}
	tlvs, err := c.Header.TLVs()
	if err != nil {
		return nil
	}
	for _, tlv := range tlvs {
		if tlv.Type == t {
			return tlv.Value
		}
	}
	return nil
}

// Custom TLVs (PP2 private-use range) mcpgate adds.
const (
	// TLVOfferedALPN carries the protocols the client offered, in TLS wire
	// format; PP2_TYPE_ALPN would mean the negotiated one, which the
	// supervisor cannot know before the worker's handshake.
	TLVOfferedALPN proxyproto.PP2Type = 0xE0
)

// Header builds the PROXY v2 header the supervisor sends with a connection;
// extra carries TLVs a load balancer sent (unique id, ALPN, …).
func Header(remote, local net.Addr, authority string, offeredALPN []string, extra ...proxyproto.TLV) ([]byte, error) {
	h := proxyproto.HeaderProxyFromAddrs(2, remote, local)
	tlvs := extra
	if authority != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(authority)})
	}
	if len(offeredALPN) > 0 {
		var b []byte
		for _, p := range offeredALPN {
			if len(p) == 0 || len(p) > 255 {
				continue
			}
			b = append(b, byte(len(p)))
			b = append(b, p...)
		}
		tlvs = append(tlvs, proxyproto.TLV{Type: TLVOfferedALPN, Value: b})
	}
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			return nil, err
		}
	}
	return h.Format()
}

// Listener is a net.Listener fed with handed-off connections. Connections
// queued before Close are still returned by Accept, so a drain request
// that follows some connections on the hand-off socket never loses them.
type Listener struct {
	ch     chan net.Conn
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

// NewListener makes a Listener reporting addr as its address.
func NewListener(addr net.Addr) *Listener {
	return &Listener{ch: make(chan net.Conn, 256), addr: addr, closed: make(chan struct{})}
}

// Deliver queues a connection for Accept, in order. It gives up (and closes
// the connection) if the listener is closed or the queue stays full.
func (l *Listener) Deliver(c net.Conn, timeout time.Duration) error {
	select {
	case <-l.closed:
		c.Close()
		return net.ErrClosed
	default:
	}
	select {
	case l.ch <- c:
		return nil
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l.ch <- c:
		return nil
	case <-l.closed:
		c.Close()
		return net.ErrClosed
	case <-t.C:
		c.Close()
		return errors.New("handoff: accept queue full")
	}
}

// Accept implements net.Listener: queued connections first, then ErrClosed
// once closed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	default:
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		select {
		case c := <-l.ch:
			return c, nil
		default:
			return nil, net.ErrClosed
		}
	}
}

// Close implements net.Listener. Queued connections stay acceptable.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.addr }
