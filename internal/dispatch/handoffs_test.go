package dispatch

import (
	"net"
	"testing"
	"time"
)

// TestHandoffsCounted: every accepted connection is counted by its routing
// result, for mcpgate_handoffs_total.
func TestHandoffsCounted(t *testing.T) {
	for _, lk := range listenerKinds {
		t.Run(lk.name, func(t *testing.T) { testHandoffsCounted(t, lk.wrap) })
	}
}

func testHandoffsCounted(t *testing.T, wrap func(net.Listener) net.Listener) {
	d, target, addr := startDispatcherOn(t, wrap, "tcp4", "127.0.0.1:0", nil)
	send := func(b []byte) {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(b)
		// The dispatcher answers a refusal and closes; a delivery is seen
		// by the target.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		c.Read(make([]byte, 64))
		c.Close()
	}
	send(clientHello(t, "notes.test"))
	<-target.got
	send(clientHello(t, "unknown.test"))
	send([]byte("\x16\x03\x01\x00\x05hello")) // not a ClientHello
	want := map[string]uint64{"delivered": 1, "unknown_host": 1, "failed": 0, "rejected": 1}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := d.Handoffs()
		ok := true
		for k, v := range want {
			ok = ok && got[k] == v
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("handoffs %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
