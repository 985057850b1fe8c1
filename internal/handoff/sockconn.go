package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// sockConn is a handed-off TCP socket used through the *os.File it arrived
// as. The socket is non-blocking, so os.NewFile (in Recv) already
// registered it with the runtime's poller and deadlines work: this saves
// what net.FileConn would do again for every connection (issue 15): a
// duplicate descriptor, three look-ups (type, both addresses), a second
// registration, and a second close. Errors are shaped as net's, which
// crypto/tls and net/http inspect.
type sockConn struct {
	f *os.File
}

var _ net.Conn = (*sockConn)(nil)

// Keep-alive as net.FileConn sets it (Go's defaults): the supervisor
// accepts with raw system calls and sets no socket option.
const (
	keepAliveIdle     = 15 // seconds
	keepAliveInterval = 15 // seconds
	keepAliveCount    = 9
)

// newSockConn takes ownership of f. It fails, leaving f open, when f is
// not pollable (deadlines would not work): the caller then uses
// net.FileConn.
func newSockConn(f *os.File) (*sockConn, error) {
	if err := f.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		for _, o := range []struct{ level, opt, v int }{
			{syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
		} {
			if err := syscall.SetsockoptInt(s, o.level, o.opt, o.v); err != nil && serr == nil {
				serr = os.NewSyscallError("setsockopt", err)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if serr != nil {
		// Not a TCP socket (or not one this can tune): net.FileConn decides.
		return nil, serr
	}
	return &sockConn{f: f}, nil
}

// netErr reshapes an *os.File error as net reports it: an *net.OpError
// around the cause, net.ErrClosed for a closed socket, io.EOF unchanged.
func (c *sockConn) netErr(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	inner := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		inner = pe.Err
	}
	if errors.Is(inner, os.ErrClosed) {
		inner = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Err: inner}
}

func (c *sockConn) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	return n, c.netErr("read", err)
}

func (c *sockConn) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	return n, c.netErr("write", err)
}

func (c *sockConn) Close() error { return c.netErr("close", c.f.Close()) }

// SyscallConn lets a caller wait on the socket without reading it, as on a
// *net.TCPConn: a detached stream's watch for its client going away
// (proxy's socketOf), which otherwise blocks a goroutine in a read.
func (c *sockConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

func (c *sockConn) SetDeadline(t time.Time) error {
	return c.netErr("set", c.f.SetDeadline(t))
}

func (c *sockConn) SetReadDeadline(t time.Time) error {
	return c.netErr("set", c.f.SetReadDeadline(t))
}

func (c *sockConn) SetWriteDeadline(t time.Time) error {
	return c.netErr("set", c.f.SetWriteDeadline(t))
}

// LocalAddr and RemoteAddr ask the socket; a PeekedConn answers from its
// PROXY header instead whenever the header has addresses.
func (c *sockConn) LocalAddr() net.Addr  { return c.addr(syscall.Getsockname) }
func (c *sockConn) RemoteAddr() net.Addr { return c.addr(syscall.Getpeername) }

func (c *sockConn) addr(get func(int) (syscall.Sockaddr, error)) net.Addr {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil
	}
	var sa syscall.Sockaddr
	rc.Control(func(fd uintptr) { sa, _ = get(int(fd)) })
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *syscall.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}
