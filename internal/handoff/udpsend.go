package handoff

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UDPSender is a worker's way out through the shared UDP socket: sendto(2)
// on the inherited descriptor, outside Go's netpoller.
//
// The socket is one open file shared by the supervisor and every worker.
// Wrapped as a net.PacketConn (net.FilePacketConn, even os.NewFile), it
// joined each worker's epoll set, and every datagram arriving on it and
// every send completing on it woke every worker: at 500 proxies one junk
// packet to UDP 443 woke 500 processes, and each worker's start woke all
// the others (quic-go sizes the send buffer; setsockopt signals write
// space). Only the supervisor reads the socket, so only it polls it; a
// send that finds the buffer full waits in poll(2) for that one call.
type UDPSender struct {
	fd     int
	local  *net.UDPAddr
	family int

	// mu orders Close after the calls using fd, so a closed descriptor
	// number reused by the worker is never written to.
	mu       sync.RWMutex
	closed   atomic.Bool
	deadline atomic.Int64 // unix nanoseconds; 0: none
}

// NewUDPSender takes over fd, a UDP socket. The caller must not wrap it
// in an *os.File or a net.Conn: that would register it with the poller.
func NewUDPSender(fd int) (*UDPSender, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("handoff: UDP socket: %w", err)
	}
	if typ != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("handoff: descriptor %d is not a datagram socket", fd)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("handoff: UDP socket: %w", err)
	}
	s := &UDPSender{fd: fd}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		s.family, s.local = unix.AF_INET, &net.UDPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		s.family, s.local = unix.AF_INET6, &net.UDPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	default:
		return nil, fmt.Errorf("handoff: descriptor %d is not an IP socket", fd)
	}
	unix.CloseOnExec(fd)
	return s, nil
}

// sockaddr is addr for this socket's family: an IPv4 client of a
// dual-stack IPv6 socket as its IPv4-mapped address.
func (s *UDPSender) sockaddr(addr net.Addr) (unix.Sockaddr, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("handoff: not a UDP address: %v", addr)
	}
	if s.family == unix.AF_INET {
		ip4 := ua.IP.To4()
		if ip4 == nil {
			return nil, fmt.Errorf("handoff: IPv6 address %v on an IPv4 socket", ua)
		}
		sa := &unix.SockaddrInet4{Port: ua.Port}
		copy(sa.Addr[:], ip4)
		return sa, nil
	}
	ip16 := ua.IP.To16()
	if ip16 == nil {
		return nil, fmt.Errorf("handoff: bad address %v", ua)
	}
	sa := &unix.SockaddrInet6{Port: ua.Port}
	copy(sa.Addr[:], ip16)
	return sa, nil
}

// pollSlice bounds one wait in poll(2), so Close is seen within it.
const pollSlice = 50 * time.Millisecond

// WriteTo sends p to addr, waiting while the send buffer is full (as a
// net.UDPConn would) until the write deadline.
func (s *UDPSender) WriteTo(p []byte, addr net.Addr) (int, error) {
	sa, err := s.sockaddr(addr)
	if err != nil {
		return 0, s.opError(addr, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for {
		if s.closed.Load() {
			return 0, s.opError(addr, net.ErrClosed)
		}
		err := unix.Sendto(s.fd, p, unix.MSG_DONTWAIT, sa)
		switch err {
		case nil:
			return len(p), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			return 0, s.opError(addr, os.NewSyscallError("sendto", err))
		}
		wait := pollSlice
		if d := s.deadline.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return 0, s.opError(addr, os.ErrDeadlineExceeded)
			}
			wait = min(wait, left)
		}
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(fds, int(wait.Milliseconds())+1); err != nil && err != unix.EINTR {
			return 0, s.opError(addr, os.NewSyscallError("poll", err))
		}
	}
}

func (s *UDPSender) opError(addr net.Addr, err error) error {
	return &net.OpError{Op: "write", Net: "udp", Source: s.local, Addr: addr, Err: err}
}

// LocalAddr is the shared socket's address.
func (s *UDPSender) LocalAddr() net.Addr { return s.local }

// SetWriteDeadline bounds WriteTo's wait for buffer space; the zero time
// removes the bound.
func (s *UDPSender) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		s.deadline.Store(0)
	} else {
		s.deadline.Store(t.UnixNano())
	}
	return nil
}

// Close closes the worker's descriptor of the shared socket (the
// supervisor's stays open), after any WriteTo in progress returns.
func (s *UDPSender) Close() error {
	if s.closed.Swap(true) {
		return net.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return os.NewSyscallError("close", unix.Close(s.fd))
}

// ChildFile is a new descriptor of c's socket for a child process
// (exec.Cmd.ExtraFiles), leaving the socket non-blocking. The file of
// net's File method does not: os/exec takes its Fd, which switches the
// open file, shared with c, to blocking mode, and the supervisor's next
// read of c then blocked its thread in recvfrom until a datagram came
// (its shutdown with it). Until workers stopped wrapping the socket in a
// net.PacketConn, each one's start happened to switch it back.
func ChildFile(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	// os.NewFile of a non-blocking descriptor remembers it as such: its
	// Fd leaves the mode alone.
	return os.NewFile(uintptr(nfd), name), nil
}
