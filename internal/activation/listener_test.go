package activation

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func deferAccept(t *testing.T, l net.Listener) int {
	t.Helper()
	rc, err := l.(*Listener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v := -1
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestListenerDeferAccept: every stream listener mcpgate serves on is a
// *Listener with TCP_DEFER_ACCEPT on, except that a value the socket came
// with (a socket unit's DeferAcceptSec=) is kept.
func TestListenerDeferAccept(t *testing.T) {
	s, err := Bind([]string{"127.0.0.1:0"}, []string{"127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{HTTPS, HTTP} {
		if v := deferAccept(t, s.Stream[name][0]); v <= 0 {
			t.Errorf("%s listener: TCP_DEFER_ACCEPT %d, want it on", name, v)
		}
	}

	tests := []struct {
		name   string
		preset int // 0: none
	}{
		{"socket without a value", 0},
		{"socket with the unit's value", 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nl, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			want := -1
			if tt.preset > 0 {
				rc, _ := nl.(*net.TCPListener).SyscallConn()
				rc.Control(func(fd uintptr) {
					unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, tt.preset)
					want, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
				})
			}
			l := Wrap(nl)
			defer l.Close()
			got := deferAccept(t, l)
			switch {
			case tt.preset == 0 && got <= 0:
				t.Errorf("TCP_DEFER_ACCEPT %d, want it on", got)
			case tt.preset > 0 && got != want:
				t.Errorf("TCP_DEFER_ACCEPT %d, want the socket's own %d kept", got, want)
			}
		})
	}
}

// TestListenerCloseReleasesDuplicates: a duplicate lent by PollFile is
// closed with the listener, so the address is free again, and a lent
// file is refused once the listener is closed.
func TestListenerCloseReleasesDuplicates(t *testing.T) {
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(nl).(*Listener)
	addr := l.Addr().String()
	if _, err := l.PollFile(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address still bound after Close: %v", err)
	}
	again.Close()
	if _, err := l.PollFile(); err == nil {
		t.Error("PollFile on a closed listener succeeded")
	}
}

// TestWrapLeavesOthers: only TCP listeners are wrapped.
func TestWrapLeavesOthers(t *testing.T) {
	ul, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if got := Wrap(ul); got != ul {
		t.Errorf("Wrap(%T) = %T, want it unchanged", ul, got)
	}
}
