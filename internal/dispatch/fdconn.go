package dispatch

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// fdConn is an accepted TCP connection held as a bare descriptor while the
// supervisor routes it. The routing read, the hand-off and the close are
// each one raw system call: no netpoll registration, no socket options
// (the worker's net.FileConn sets TCP_NODELAY and keep-alive on the same
// socket anyway), and no runtime syscall bookkeeping, whose first call
// after the process went idle wakes the runtime's sysmon thread, once for
// every connection on a quiet supervisor (issue 15).
//
// A read that would block moves the descriptor into an *os.File, which
// waits in the runtime's poller and honours deadlines from then on; so do
// writes, which only refusals make.
type fdConn struct {
	laddr, raddr *net.TCPAddr

	mu     sync.Mutex
	fd     int      // guarded by mu; -1 once closed or moved into f
	f      *os.File // guarded by mu; set once a read would have blocked
	rdl    time.Time
	wdl    time.Time // guarded by mu with rdl: deadlines for when f is made
	closed bool      // guarded by mu
}

var _ Conn = (*fdConn)(nil)

// file returns the poller-backed file, making it on first use.
func (c *fdConn) file() (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, net.ErrClosed
	}
	if c.f == nil {
		// The descriptor was accepted non-blocking, so os.NewFile
		// registers it with the poller and deadlines work.
		c.f = os.NewFile(uintptr(c.fd), "tcp")
		c.fd = -1
		if !c.rdl.IsZero() {
			c.f.SetReadDeadline(c.rdl)
		}
		if !c.wdl.IsZero() {
			c.f.SetWriteDeadline(c.wdl)
		}
	}
	return c.f, nil
}

func (c *fdConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.f == nil && len(p) > 0 {
		n, err := rawRead(c.fd, p)
		if err != syscall.EAGAIN {
			c.mu.Unlock()
			if err != nil {
				return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError("read", err)}
			}
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
	}
	c.mu.Unlock()
	f, err := c.file()
	if err != nil {
		return 0, err
	}
	return f.Read(p)
}

func (c *fdConn) Write(p []byte) (int, error) {
	f, err := c.file()
	if err != nil {
		return 0, err
	}
	return f.Write(p)
}

// CloseWrite half-closes the connection (a refusal, then a short drain).
func (c *fdConn) CloseWrite() error {
	f, err := c.file()
	if err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Shutdown(int(fd), syscall.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}

func (c *fdConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	if c.f != nil {
		return c.f.Close()
	}
	fd := c.fd
	c.fd = -1
	return rawClose(fd)
}

func (c *fdConn) LocalAddr() net.Addr  { return c.laddr }
func (c *fdConn) RemoteAddr() net.Addr { return c.raddr }

func (c *fdConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *fdConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.rdl = t
	if c.f != nil {
		return c.f.SetReadDeadline(t)
	}
	return nil
}

func (c *fdConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.wdl = t
	if c.f != nil {
		return c.f.SetWriteDeadline(t)
	}
	return nil
}

// SyscallConn gives the descriptor to Control, for the hand-off's
// SCM_RIGHTS; Read and Write are not supported.
func (c *fdConn) SyscallConn() (syscall.RawConn, error) { return fdRawConn{c}, nil }

type fdRawConn struct{ c *fdConn }

func (r fdRawConn) Control(f func(fd uintptr)) error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	switch {
	case r.c.closed:
		return net.ErrClosed
	case r.c.f != nil:
		rc, err := r.c.f.SyscallConn()
		if err != nil {
			return err
		}
		return rc.Control(f)
	}
	f(uintptr(r.c.fd))
	return nil
}

var errRawIO = errors.New("dispatch: raw read and write are not supported")

func (fdRawConn) Read(func(fd uintptr) bool) error  { return errRawIO }
func (fdRawConn) Write(func(fd uintptr) bool) error { return errRawIO }
