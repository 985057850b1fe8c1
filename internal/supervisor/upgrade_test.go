package supervisor

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/activation"
)

// upgradeTestSupervisor has a loopback listener and a control socket, and
// no workers.
func upgradeTestSupervisor(t *testing.T) *Supervisor {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	control, err := listenControl(filepath.Join(t.TempDir(), controlSocketName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { control.Close() })
	return &Supervisor{
		log:      discardLog(),
		sockets:  &activation.Sockets{Stream: map[string][]net.Listener{activation.HTTPS: {l}}},
		control:  control,
		slots:    map[string]*slot{},
		draining: map[*slot]struct{}{},
	}
}

// TestCollectHandover: every descriptor the next binary needs is passed
// as an inheritable duplicate and named in the handover.
func TestCollectHandover(t *testing.T) {
	s := upgradeTestSupervisor(t)
	a, b := unixPair(t)
	defer b.Close()
	h, err := s.collectHandover([]reloadRequest{{trigger: "SIGUSR2"}, {trigger: "control socket", upgrade: true, conn: a}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.closeFDs()
	st := h.state
	if len(st.Listeners) != 1 || st.Listeners[0].Name != activation.HTTPS || st.ControlListener == 0 || st.Control == 0 {
		t.Fatalf("handover = %+v", st)
	}
	for _, fd := range []int{st.Listeners[0].FD, st.ControlListener, st.Control} {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			t.Errorf("fd %d: flags %#x, err %v: not inheritable", fd, flags, err)
		}
	}
	if len(h.fds) != 3 {
		t.Errorf("%d descriptors to close on failure, want 3", len(h.fds))
	}
}

// TestCollectHandoverFailsOnAnyDescriptor: a descriptor that cannot be
// passed fails the upgrade with an error naming it (it used to be skipped,
// leaving the next binary without a control socket or its caller), and
// the descriptors already duplicated are closed.
func TestCollectHandoverFailsOnAnyDescriptor(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, s *Supervisor) []reloadRequest
		want  string
	}{
		{"closed control socket", func(t *testing.T, s *Supervisor) []reloadRequest {
			s.control.Close()
			return nil
		}, "control socket: "},
		{"control socket not a unix listener", func(t *testing.T, s *Supervisor) []reloadRequest {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			s.control = l
			return nil
		}, "control socket is a *net.TCPListener, not a unix listener"},
		{"caller's connection not a socket", func(t *testing.T, s *Supervisor) []reloadRequest {
			a, b := net.Pipe()
			t.Cleanup(func() { a.Close(); b.Close() })
			return []reloadRequest{{upgrade: true, conn: a}}
		}, "control connection is a *net.pipe, not a socket"},
		{"closed caller's connection", func(t *testing.T, s *Supervisor) []reloadRequest {
			a, b := unixPair(t)
			b.Close()
			a.Close()
			return []reloadRequest{{upgrade: true, conn: a}}
		}, "control connection: "},
		{"closed listener", func(t *testing.T, s *Supervisor) []reloadRequest {
			s.sockets.Stream[activation.HTTPS][0].Close()
			return nil
		}, "socket https: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := upgradeTestSupervisor(t)
			reqs := c.setup(t, s)
			h, err := s.collectHandover(reqs)
			if err == nil {
				h.closeFDs()
				t.Fatal("collected a handover")
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("error %q, want it to start with %q", err, c.want)
			}
			if len(h.fds) != 0 {
				t.Errorf("descriptors %v not closed", h.fds)
			}
		})
	}
}

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := osFile(fd)
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func osFile(fd int) *os.File { return os.NewFile(uintptr(fd), "socketpair") }
