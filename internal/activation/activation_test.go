package activation

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestFromSystemdByName passes sockets the way systemd does (fds 3+ with
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID) to a child process and checks
// it gets them back by name, stream and datagram alike.
func TestFromSystemdByName(t *testing.T) {
	if os.Getenv("ACTIVATION_CHILD") == "1" {
		activationChild()
		return
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	tf, _ := tl.(*net.TCPListener).File()
	uf, _ := ul.(*net.UDPConn).File()
	defer tf.Close()
	defer uf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFromSystemdByName$")
	cmd.ExtraFiles = []*os.File{tf, uf} // fds 3 and 4
	cmd.Env = append(os.Environ(), "ACTIVATION_CHILD=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=https:quic")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("https=%s quic=%s again=false", tl.Addr(), ul.LocalAddr())
	if !strings.Contains(string(out), want) {
		t.Fatalf("child saw:\n%s\nwant %q", out, want)
	}
}

// activationChild runs in the child: systemd sets LISTEN_PID to the
// service's pid, which only the child knows.
func activationChild() {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	s, ok, err := FromSystemd()
	if err != nil || !ok {
		fmt.Println("FromSystemd:", ok, err)
		os.Exit(1)
	}
	_, again, _ := FromSystemd() // the variables are consumed
	fmt.Printf("https=%s quic=%s again=%v\n", s.Stream[HTTPS][0].Addr(), s.Packet[QUIC][0].LocalAddr(), again)
}

func TestBind(t *testing.T) {
	s, err := Bind([]string{"127.0.0.1:0"}, nil, []string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Stream[HTTPS]) != 1 || len(s.Stream[HTTP]) != 0 || len(s.Packet[QUIC]) != 1 {
		t.Fatalf("sockets: %+v", s)
	}
	if _, err := Bind([]string{"256.0.0.1:1"}, nil, nil); err == nil {
		t.Error("bad address accepted")
	}
}
