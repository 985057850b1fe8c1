package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// QUIC datagrams take a separate path from TCP connections: the supervisor
// reads them from the shared UDP socket, routes them, and forwards each to
// its worker over a SOCK_DGRAM unix socket pair, prefixed with a PROXY v2
// UDP header (go-proxyproto FormatUDPDatagram) that carries the client's
// address. The worker answers straight through the shared UDP socket, so
// replies never pass through the supervisor.

// DatagramPair makes a worker's datagram socket pair: the parent end (for
// the supervisor) and the child end (for exec.Cmd.ExtraFiles).
func DatagramPair() (*net.UnixConn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: datagram socketpair: %w", err)
	}
	// Room for bursts: a full buffer drops datagrams, which QUIC tolerates,
	// rather than stalling the supervisor's read loop.
	syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<20)
	syscall.SetsockoptInt(fds[1], syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20)
	pf := os.NewFile(uintptr(fds[0]), "dgram-parent")
	defer pf.Close()
	nc, err := net.FileConn(pf)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	return nc.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "dgram-child"), nil
}

// FrameDatagram prefixes payload with a PROXY v2 UDP header.
func FrameDatagram(client, local net.Addr, payload []byte) ([]byte, error) {
	h := proxyproto.HeaderProxyFromAddrs(2, client, local)
	if h.Command != proxyproto.PROXY {
		return nil, errors.New("handoff: datagram addresses are not UDP")
	}
	return h.FormatUDPDatagram(payload)
}

// DatagramConn is the worker's net.PacketConn for QUIC: reads come from
// the supervisor (with the client's address from the PROXY header), writes
// go to the client through the shared UDP socket.
type DatagramConn struct {
	in  *net.UnixConn
	out datagramOut
	buf []byte
}

// datagramOut is the shared UDP socket as the worker uses it: a
// *UDPSender in a worker, any UDP net.PacketConn in tests.
type datagramOut interface {
	WriteTo(p []byte, addr net.Addr) (int, error)
	LocalAddr() net.Addr
	SetWriteDeadline(t time.Time) error
	Close() error
}

var _ net.PacketConn = (*DatagramConn)(nil)

// NewDatagramConn wraps the worker's end of the datagram pair and the
// shared UDP socket.
func NewDatagramConn(in *net.UnixConn, out datagramOut) *DatagramConn {
	return &DatagramConn{in: in, out: out, buf: make([]byte, 64<<10)}
}

// ReadFrom returns the next datagram for this worker and its client.
// Malformed frames (which only the supervisor could send) are skipped.
func (c *DatagramConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, err := c.in.Read(c.buf)
		if err != nil {
			return 0, nil, err
		}
		h, payload, err := proxyproto.ParseUDPDatagram(c.buf[:n])
		if err != nil || h.SourceAddr == nil {
			continue
		}
		return copy(p, payload), h.SourceAddr, nil
	}
}

// WriteTo sends to the client through the shared UDP socket.
func (c *DatagramConn) WriteTo(p []byte, addr net.Addr) (int, error) { return c.out.WriteTo(p, addr) }

// Close closes both sockets.
func (c *DatagramConn) Close() error {
	err := c.in.Close()
	if e := c.out.Close(); err == nil {
		err = e
	}
	return err
}

// LocalAddr is the shared UDP socket's address.
func (c *DatagramConn) LocalAddr() net.Addr { return c.out.LocalAddr() }

// SetDeadline implements net.PacketConn.
func (c *DatagramConn) SetDeadline(t time.Time) error { return c.in.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *DatagramConn) SetReadDeadline(t time.Time) error { return c.in.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn.
func (c *DatagramConn) SetWriteDeadline(t time.Time) error { return c.out.SetWriteDeadline(t) }

// SetReadBuffer sizes the receive buffer of the datagram pair (quic-go asks
// for room for bursts).
func (c *DatagramConn) SetReadBuffer(n int) error { return c.in.SetReadBuffer(n) }

// SetWriteBuffer does nothing: the shared UDP socket's buffers are sized
// once, by systemd (SendBuffer=) or the supervisor's own bind. quic-go asks
// every worker; a worker setting it woke every other worker (UDPSender).
func (c *DatagramConn) SetWriteBuffer(int) error { return nil }
