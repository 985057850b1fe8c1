// Package handoff is the wire between the supervisor and a worker: one
// SOCK_SEQPACKET socket pair per worker. The supervisor sends accepted
// connections as file descriptors (SCM_RIGHTS) together with a PROXY
// protocol v2 header describing them and the bytes it already read while
// routing; the worker replays those bytes before reading the socket. The
// same socket carries small control messages both ways, and its closing
// tells the worker that the supervisor is gone.
package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// MaxMessage bounds one message: a PROXY header plus a ClientHello or an
// HTTP request head, both capped well below this by the supervisor.
const MaxMessage = 128 << 10

// Conn is one end of a worker's hand-off socket.
type Conn struct {
	uc *net.UnixConn
	rc syscall.RawConn // uc's, for the raw sendmsg and recvmsg of every message
}

// Pair makes the socket pair for a new worker. The child end is an *os.File
// meant for exec.Cmd.ExtraFiles; the caller closes it after starting the
// child.
func Pair() (*Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: socketpair: %w", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "handoff-parent")
	defer pf.Close()
	child := os.NewFile(uintptr(fds[1]), "handoff-child")
	c, err := FromFile(pf)
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return c, child, nil
}

// FromFile wraps an inherited hand-off socket. The file may be closed
// afterwards: the Conn holds its own descriptor.
func FromFile(f *os.File) (*Conn, error) {
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("handoff: fd is a %T, not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("handoff: %w", err)
	}
	return &Conn{uc: uc, rc: rc}, nil
}

// Send sends a control message, waiting while the peer's queue is full.
func (c *Conn) Send(kind wire.Kind, payload []byte) error {
	return c.send(frame(kind, payload, nil), nil, true)
}

// ErrFull is TrySend's answer when the peer's receive buffer is full: a
// worker that has stopped reading its socket.
var ErrFull = errors.New("handoff: the peer's socket buffer is full")

// TrySend sends a control message if it can go at once, and returns
// ErrFull instead of waiting: for a message to every worker, which one
// stuck worker must not hold up for the others.
func (c *Conn) TrySend(kind wire.Kind, payload []byte) error {
	return c.send(frame(kind, payload, nil), nil, false)
}

// SendConn sends a connection: its descriptor, and as payload the PROXY v2
// header followed by the bytes already read from it. The caller still owns
// (and should close) its copy of the connection.
func (c *Conn) SendConn(kind wire.Kind, conn syscall.Conn, header, peeked []byte) error {
	if len(header)+len(peeked)+1 > MaxMessage {
		return errors.New("handoff: message too large")
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	msg := frame(kind, header, peeked)
	var sendErr error
	// Sending inside Control avoids File(), which would dup the descriptor.
	err = rc.Control(func(fd uintptr) {
		sendErr = c.send(msg, syscall.UnixRights(int(fd)), true)
	})
	if err != nil {
		return err
	}
	return sendErr
}

// frame is a message: its kind, then a and b.
func frame(kind wire.Kind, a, b []byte) []byte {
	msg := make([]byte, 0, 1+len(a)+len(b))
	msg = append(msg, byte(kind))
	msg = append(msg, a...)
	return append(msg, b...)
}

// send sends msg with oob (descriptors, or nil) in one sendmsg(2) on the
// non-blocking socket; where it can (sendmsg_linux.go) a raw one, without
// the runtime's syscall bookkeeping (see dispatch's fdConn). While the
// peer's queue is full it waits in the poller, or without wait returns
// ErrFull.
func (c *Conn) send(msg, oob []byte, wait bool) error {
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = sendmsg(int(fd), msg, oob)
		return !wait || serr != syscall.EAGAIN
	})
	switch {
	case err != nil:
		return &net.OpError{Op: "write", Net: "unixpacket", Err: err}
	case serr == syscall.EAGAIN:
		return ErrFull
	case serr != nil:
		return &net.OpError{Op: "write", Net: "unixpacket", Err: os.NewSyscallError("sendmsg", serr)}
	}
	return nil
}

// recvBuffers holds Recv's buffers of MaxMessage bytes.
var recvBuffers = sync.Pool{New: func() any { b := make([]byte, MaxMessage); return &b }}

// Message is one received message. File is set when a descriptor came with
// it; the receiver owns it.
type Message struct {
	Kind    wire.Kind
	Payload []byte
	File    *os.File
}

// Recv reads the next message; one goroutine at a time. IsClosed(err)
// reports that the peer closed its end.
func (c *Conn) Recv() (*Message, error) {
	// The receive buffer is taken from a pool only once a message is
	// there to read: a connection waiting in the poller holds none. A
	// supervisor waits on one connection per worker, and a buffer of
	// MaxMessage each was 64 MB at 500 proxies, more after each reload
	// (freed buffers are cleared again when reused).
	oob := make([]byte, syscall.CmsgSpace(4*4))
	var (
		bp             *[]byte
		n, oobn, flags int
		rerr           error
	)
	err := c.rc.Read(func(fd uintptr) bool {
		bp = recvBuffers.Get().(*[]byte)
		for {
			n, oobn, flags, _, rerr = syscall.Recvmsg(int(fd), *bp, oob, syscall.MSG_CMSG_CLOEXEC)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			recvBuffers.Put(bp)
			return false
		}
		return true
	})
	if err != nil {
		return nil, &net.OpError{Op: "read", Net: "unixpacket", Err: err}
	}
	defer recvBuffers.Put(bp)
	if rerr != nil {
		return nil, &net.OpError{Op: "read", Net: "unixpacket", Err: os.NewSyscallError("recvmsg", rerr)}
	}
	buf := *bp
	var files []*os.File
	if oobn > 0 {
		cmsgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
		if perr == nil {
			for _, cm := range cmsgs {
				fds, _ := syscall.ParseUnixRights(&cm)
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "handoff-conn"))
				}
			}
		}
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 {
		closeAll()
		return nil, errors.New("handoff: truncated message")
	}
	if n == 0 {
		closeAll()
		return nil, errEOF
	}
	m := &Message{Kind: wire.Kind(buf[0]), Payload: append([]byte(nil), buf[1:n]...)}
	switch len(files) {
	case 0:
	case 1:
		m.File = files[0]
	default:
		closeAll()
		return nil, errors.New("handoff: more than one descriptor in a message")
	}
	return m, nil
}

var errEOF = fmt.Errorf("handoff: peer closed: %w", io.EOF)

// IsClosed reports whether err means the other end has gone away.
func IsClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Inheritable returns a duplicate of the socket's descriptor without
// close-on-exec, for a supervisor that re-executes itself.
func (c *Conn) Inheritable() (int, error) {
	fd := -1
	var derr error
	if err := c.rc.Control(func(orig uintptr) { fd, derr = syscall.Dup(int(orig)) }); err != nil {
		return -1, err // closed: no descriptor to duplicate
	}
	return fd, derr
}

// Close closes this end.
func (c *Conn) Close() error { return c.uc.Close() }
