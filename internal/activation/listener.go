package activation

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Listener is a TCP listening socket of the supervisor. Beside net's Accept
// it lends pollable duplicates of the socket (PollFile), on which the
// dispatcher accepts with raw system calls (issue 15: a connection's
// routing then makes no call through the runtime's syscall bookkeeping).
// The duplicates follow the listener: SetDeadline and Close apply to them
// too, so pausing or closing the listener stops an accept loop waiting on
// one, as it would stop Accept.
type Listener struct {
	*net.TCPListener

	mu       sync.Mutex
	dups     map[*os.File]struct{} // guarded by mu
	deadline time.Time             // guarded by mu
	closed   bool                  // guarded by mu
}

// NewListener wraps l. It sets TCP_DEFER_ACCEPT on the socket unless it
// already has a value (a socket unit's DeferAcceptSec=): HTTPS and HTTP
// clients speak first, so the kernel need not wake the supervisor before
// the ClientHello or request head is there to route by. A client that
// connects and stays silent is still accepted, after about a second,
// and the dispatcher's peek timeout applies as before.
func NewListener(l *net.TCPListener) *Listener {
	if rc, err := l.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT); err == nil && v == 0 {
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSec)
			}
		})
	}
	return &Listener{TCPListener: l, dups: map[*os.File]struct{}{}}
}

// deferAcceptSec is TCP_DEFER_ACCEPT's value: how long (rounded up to
// SYN-ACK retransmissions) a connection without data waits unaccepted.
const deferAcceptSec = 1

// PollFile returns a non-blocking, close-on-exec duplicate of the
// listening socket, registered with the runtime's poller, with the
// listener's current deadline. ReleaseFile gives it back.
func (l *Listener) PollFile() (*os.File, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, net.ErrClosed
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("activation: duplicating a listener: %w", derr)
	}
	// The socket is already non-blocking (net made it so), which is what
	// makes os.NewFile register the duplicate with the poller.
	f := os.NewFile(uintptr(nfd), "listener")
	if !l.deadline.IsZero() {
		f.SetDeadline(l.deadline)
	}
	l.dups[f] = struct{}{}
	return f, nil
}

// ReleaseFile closes a file PollFile returned.
func (l *Listener) ReleaseFile(f *os.File) {
	l.mu.Lock()
	delete(l.dups, f)
	l.mu.Unlock()
	f.Close()
}

// SetDeadline sets the deadline of Accept and of every lent duplicate.
func (l *Listener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = t
	for f := range l.dups {
		f.SetDeadline(t)
	}
	return l.TCPListener.SetDeadline(t)
}

// Close closes the listener and every lent duplicate, so the socket is no
// longer open in this process.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for f := range l.dups {
		f.Close()
		delete(l.dups, f)
	}
	return l.TCPListener.Close()
}
