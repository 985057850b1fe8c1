package supervisor

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/activation"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/quicroute"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// quicPath routes the shared UDP socket's datagrams to workers: new
// connections by the SNI of their Initial packets, later packets by the
// worker id in the connection ids workers choose. Workers answer through
// the same socket directly, so only client-to-server packets pass here.
type quicPath struct {
	s      *Supervisor
	conn   *net.UDPConn
	local  net.Addr
	port   int
	key    [16]byte
	router *quicroute.Router
	quicCounters
}

// setupQUIC prepares HTTP/3 when there is a quic socket. Only the first
// socket is used (socket activation with BindIPv6Only=both gives one).
func (s *Supervisor) setupQUIC(key *[16]byte) {
	pcs := s.sockets.Packet[activation.QUIC]
	if len(pcs) == 0 {
		return
	}
	uc, ok := pcs[0].(*net.UDPConn)
	if !ok {
		s.log.Error("quic socket is not a UDP socket; HTTP/3 disabled")
		return
	}
	if len(pcs) > 1 {
		s.log.Warn("more than one quic socket; HTTP/3 uses the first", "addr", uc.LocalAddr().String())
	}
	q := &quicPath{s: s, conn: uc, local: uc.LocalAddr()}
	if ua, ok := q.local.(*net.UDPAddr); ok {
		q.port = ua.Port
	}
	if key != nil {
		q.key = *key // inherited across an upgrade: live connection ids stay decodable
	} else {
		rand.Read(q.key[:])
	}
	q.router = quicroute.NewRouter(quicroute.RouterConfig{Key: q.key})
	s.quic = q
	s.quicWorkers.conn = uc
}

// spec is the HTTP/3 part of a worker's spec, or nil.
func (q *quicPath) spec(enabled bool) *wire.QUICSpec {
	if q == nil || !enabled {
		return nil
	}
	return &wire.QUICSpec{CIDKey: q.key, Port: q.port}
}

// serve reads datagrams until the socket is closed.
func (q *quicPath) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := q.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || q.s.disp.Paused() {
				return
			}
			time.Sleep(time.Millisecond)
			continue
		}
		d := q.router.Route(buf[:n], from)
		q.countRoute(d.Action)
		switch d.Action {
		case quicroute.Forward:
			q.forward(d.Worker, from, buf[:n])
		case quicroute.NewConnection:
			p := q.owner(d.SNI)
			if p == nil {
				// Unknown SNI, or a proxy without HTTP/3 or without a
				// running worker: dropped; the client falls back to TCP
				// (Alt-Svc is only sent by proxies that serve HTTP/3).
				q.router.Refuse(d.DCID)
				q.routed[quicRefused].Add(1)
				q.s.log.Debug("quic: no worker for server name; dropped", "sni", d.SNI, "client", from.String())
				continue
			}
			wid := p.spec.QUIC.WorkerID
			q.router.Bind(d.DCID, wid)
			q.routed[quicNewConnection].Add(1)
			for _, dg := range d.Buffered {
				q.forward(wid, dg.From, dg.Data)
			}
		}
	}
}

// owner is the current worker serving HTTP/3 for a server name.
func (q *quicPath) owner(sni string) *proc {
	t := q.s.disp.Table().Lookup(sni)
	sl, ok := t.(*slot)
	if !ok {
		return nil
	}
	p := sl.current()
	if p == nil || p.spec.QUIC == nil || p.dgram == nil {
		return nil
	}
	return p
}

// forward frames a datagram with a PROXY v2 header and sends it to the
// worker without blocking: if its socket buffer is full the datagram is
// dropped, which QUIC recovers from, rather than stalling every
// connection behind one busy wire.
func (q *quicPath) forward(wid uint16, from netip.AddrPort, payload []byte) {
	p := q.s.quicWorkers.byWorkerID(wid)
	if p == nil || p.dgram == nil {
		return
	}
	frame, err := handoff.FrameDatagram(net.UDPAddrFromAddrPort(from), q.local, payload)
	if err != nil {
		return
	}
	rc, err := p.dgram.SyscallConn()
	if err != nil {
		return
	}
	rc.Write(func(fd uintptr) bool {
		unix.Send(int(fd), frame, unix.MSG_DONTWAIT)
		return true
	})
}
