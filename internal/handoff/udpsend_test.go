package handoff

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/procfd"
)

// sharedSocketFd is a duplicate of pc's descriptor, as a worker inherits
// the shared UDP socket: another descriptor of the same open socket.
func sharedSocketFd(t *testing.T, pc net.PacketConn) int {
	t.Helper()
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var derr error
	rc.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) })
	if derr != nil {
		t.Fatal(derr)
	}
	return fd
}

func TestUDPSender(t *testing.T) {
	for _, tc := range []struct{ name, shared, client string }{
		{"udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"udp6", "[::1]:0", "[::1]:0"},
		// A dual-stack IPv6 socket (systemd's BindIPv6Only=both) answering
		// an IPv4 client: sent to its IPv4-mapped address.
		{"dual-stack", "[::]:0", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared, err := net.ListenPacket("udp", tc.shared)
			if err != nil {
				t.Skipf("no %s: %v", tc.shared, err)
			}
			defer shared.Close()
			client, err := net.ListenPacket("udp", tc.client)
			if err != nil {
				t.Skipf("no %s: %v", tc.client, err)
			}
			defer client.Close()
			s, err := NewUDPSender(sharedSocketFd(t, shared))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := s.LocalAddr().(*net.UDPAddr).Port, shared.LocalAddr().(*net.UDPAddr).Port; got != want {
				t.Errorf("LocalAddr port %d, want %d", got, want)
			}
			s.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if n, err := s.WriteTo([]byte("reply"), client.LocalAddr()); n != 5 || err != nil {
				t.Fatalf("WriteTo = %d, %v", n, err)
			}
			buf := make([]byte, 64)
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := client.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "reply" || from.(*net.UDPAddr).Port != shared.LocalAddr().(*net.UDPAddr).Port {
				t.Fatalf("client got %q from %v, %v", buf[:n], from, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.WriteTo([]byte("late"), client.LocalAddr()); !errors.Is(err, net.ErrClosed) {
				t.Errorf("WriteTo after Close: %v, want net.ErrClosed", err)
			}
			if err := s.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("second Close: %v, want net.ErrClosed", err)
			}
			// The supervisor's descriptor of the socket is untouched.
			if _, err := shared.WriteTo([]byte("still open"), client.LocalAddr()); err != nil {
				t.Errorf("shared socket after the sender's Close: %v", err)
			}
		})
	}
}

func TestUDPSenderRejects(t *testing.T) {
	v4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer v4.Close()
	s, err := NewUDPSender(sharedSocketFd(t, v4))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, addr := range []net.Addr{
		&net.UDPAddr{IP: net.ParseIP("::1"), Port: 9}, // IPv6 on an IPv4 socket
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9},
	} {
		if _, err := s.WriteTo([]byte("x"), addr); err == nil {
			t.Errorf("WriteTo(%v) succeeded", addr)
		}
	}
	// Not a datagram socket.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := NewUDPSender(int(r.Fd())); err == nil {
		t.Error("NewUDPSender accepted a pipe")
	}
}

// polledInodes is the inodes of the files in this process's epoll sets
// (the Go runtime's netpoller).
func polledInodes(t *testing.T) map[string]bool {
	t.Helper()
	ino, err := procfd.EpollInodes(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	return ino
}

func inodeHex(t *testing.T, fd int) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(st.Ino, 16)
}

// TestUDPSenderNotPolled: the worker's descriptor of the shared socket
// stays out of its netpoller, or every datagram to the socket would wake
// every worker. The control: the same check sees net.FilePacketConn's.
func TestUDPSenderNotPolled(t *testing.T) {
	if _, err := os.Stat("/proc/self/fdinfo"); err != nil {
		t.Skip("no /proc/self/fdinfo")
	}
	// A socket of its own, not polled by anything in this process.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	ino := inodeHex(t, fd)
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewUDPSender(dup)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := s.WriteTo([]byte("x"), client.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if polledInodes(t)[ino] {
		t.Fatal("the UDPSender's socket is in the netpoller's epoll set")
	}
	pc, err := net.FilePacketConn(os.NewFile(uintptr(fd), "udp"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if !polledInodes(t)[ino] {
		t.Fatal("control: net.FilePacketConn's socket not found in the epoll set; the check sees nothing")
	}
}

func nonblocking(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fl int
	rc.Control(func(fd uintptr) { fl, err = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return fl&unix.O_NONBLOCK != 0
}

// TestChildFileKeepsSocketNonblocking: os/exec takes the Fd of each
// ExtraFiles entry; the socket the supervisor reads must stay
// non-blocking. The control: net's File does switch it.
func TestChildFileKeepsSocketNonblocking(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	uc := pc.(*net.UDPConn)
	f, err := ChildFile(uc, "quic")
	if err != nil {
		t.Fatal(err)
	}
	f.Fd() // what os.StartProcess does
	f.Close()
	if !nonblocking(t, uc) {
		t.Fatal("the socket is blocking after ChildFile's Fd")
	}
	g, err := uc.File()
	if err != nil {
		t.Fatal(err)
	}
	g.Fd()
	g.Close()
	blocked := !nonblocking(t, uc)
	rc, _ := uc.SyscallConn()
	rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), true) })
	if !blocked {
		t.Fatal("control: net's File left the socket non-blocking; the check sees nothing")
	}
}
