package handoff

import (
	"net"
	"testing"
	"time"
)

func TestDatagramPath(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			shared, err := net.ListenPacket(tc.network, tc.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			defer shared.Close()
			client, err := net.ListenPacket(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()

			parent, childFile, err := DatagramPair()
			if err != nil {
				t.Fatal(err)
			}
			defer parent.Close()
			cc, err := net.FileConn(childFile)
			childFile.Close()
			if err != nil {
				t.Fatal(err)
			}
			wc := NewDatagramConn(cc.(*net.UnixConn), shared)

			// The supervisor frames a client datagram for the worker.
			frame, err := FrameDatagram(client.LocalAddr(), shared.LocalAddr(), []byte("quic-initial"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parent.Write(frame); err != nil {
				t.Fatal(err)
			}
			// Garbage from the pair is skipped, not returned.
			parent.Write([]byte("not a proxy header"))
			frame2, _ := FrameDatagram(client.LocalAddr(), shared.LocalAddr(), []byte("second"))
			parent.Write(frame2)

			buf := make([]byte, 1500)
			wc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := wc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "quic-initial" || from.String() != client.LocalAddr().String() {
				t.Fatalf("ReadFrom = %q from %v, %v", buf[:n], from, err)
			}
			n, _, err = wc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "second" {
				t.Fatalf("second ReadFrom = %q, %v", buf[:n], err)
			}
			// The worker answers through the shared socket, from its address.
			if _, err := wc.WriteTo([]byte("reply"), from); err != nil {
				t.Fatal(err)
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, src, err := client.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "reply" || src.String() != shared.LocalAddr().String() {
				t.Fatalf("client got %q from %v, %v", buf[:n], src, err)
			}
		})
	}
}
