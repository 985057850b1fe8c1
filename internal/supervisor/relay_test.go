package supervisor

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// relayWorker is a fake worker on a real hand-off socket that counts the
// KindRevoked messages it receives.
type relayWorker struct {
	*fakeWorker
	p       *proc
	revoked chan struct{}
}

func newRelayWorker(t *testing.T, n int, relay *revocationRelay) *relayWorker {
	return newRelayWorkerReading(t, n, relay, true)
}

// newRelayWorkerReading is newRelayWorker; with reading false the worker
// never reads its socket (stuck).
func newRelayWorkerReading(t *testing.T, n int, relay *revocationRelay, reading bool) *relayWorker {
	t.Helper()
	hc, child, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	wc, err := handoff.FromFile(child)
	child.Close()
	if err != nil {
		t.Fatal(err)
	}
	fw := &fakeWorker{pid: 2000 + n, hc: wc, exitCh: make(chan struct{}), drained: make(chan struct{})}
	spec := wire.Spec{Proxy: &config.Proxy{Name: "p"}}
	w := &relayWorker{fakeWorker: fw, p: newProc("p", fw, spec, hc, time.Now(), discardLog()), revoked: make(chan struct{}, 1000)}
	w.p.follow(relay)
	w.p.watch()
	if !reading {
		t.Cleanup(func() { fw.exit(nil); <-w.p.exited })
		return w
	}
	go func() {
		for {
			m, err := wc.Recv()
			if err != nil {
				return
			}
			if m.Kind == wire.KindRevoked {
				w.revoked <- struct{}{}
			}
		}
	}()
	t.Cleanup(func() { fw.exit(nil); <-w.p.exited })
	return w
}

// want waits for n relayed messages, then checks no more come.
func (w *relayWorker) want(t *testing.T, n int, what string) {
	t.Helper()
	for i := range n {
		select {
		case <-w.revoked:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: worker %d got %d relayed revocations, want %d", what, w.pid, i, n)
		}
	}
	select {
	case <-w.revoked:
		t.Errorf("%s: worker %d got more than %d relayed revocations", what, w.pid, n)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRevocationRelay: a worker's announcement reaches every live worker,
// itself included and starting ones too; an exited worker leaves the
// relay; announcements made while one is pending are one broadcast.
func TestRevocationRelay(t *testing.T) {
	relay := newRevocationRelay()
	done := make(chan struct{})
	defer close(done)

	// Announcements before the relay runs are folded into one.
	a, b, c := newRelayWorker(t, 1, relay), newRelayWorker(t, 2, relay), newRelayWorker(t, 3, relay)
	for range 100 {
		relay.announce()
	}
	go relay.run(done)
	for _, w := range []*relayWorker{a, b, c} {
		w.want(t, 1, "100 announcements while none was sent")
	}

	// From a worker, over its hand-off socket; none of them reported ready.
	if err := b.hc.Send(wire.KindRevoked, nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*relayWorker{a, b, c} {
		w.want(t, 1, "one worker's announcement")
	}

	// An exited worker is no longer a target.
	c.exit(nil)
	<-c.p.exited
	relay.mu.Lock()
	_, still := relay.procs[c.p]
	n := len(relay.procs)
	relay.mu.Unlock()
	if still || n != 2 {
		t.Errorf("after one of three exited the relay has %d workers (the exited one: %v)", n, still)
	}
	if err := a.hc.Send(wire.KindRevoked, nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*relayWorker{a, b} {
		w.want(t, 1, "an announcement after a worker exited")
	}

	// A worker that stopped reading (its socket full) holds nobody up.
	stuck := newRelayWorkerReading(t, 4, relay, false)
	for stuck.p.hc.TrySend(wire.KindRevoked, nil) == nil {
	}
	for range 3 {
		if err := a.hc.Send(wire.KindRevoked, nil); err != nil {
			t.Fatal(err)
		}
		for _, w := range []*relayWorker{a, b} {
			w.want(t, 1, "an announcement with a stuck worker")
		}
	}
}

// TestControlRevoked: the admin commands' announcement over the control
// socket is relayed; AnnounceRevocations takes no supervisor, or one of a
// build without the relay, for success, and reports other failures.
func TestControlRevoked(t *testing.T) {
	relay := newRevocationRelay()
	s := &Supervisor{relay: relay}
	srv, cli := net.Pipe()
	go s.handleControl(srv)
	json.NewEncoder(cli).Encode(wire.ControlRequest{Protocol: wire.Protocol, Command: wire.CmdRevoked})
	var resp wire.ControlResponse
	if err := json.NewDecoder(cli).Decode(&resp); err != nil || resp.Error != "" {
		t.Fatalf("control answer %+v, %v", resp, err)
	}
	cli.Close()
	if len(relay.kick) != 1 {
		t.Error("the control command did not ask for a broadcast")
	}

	answering := func(answer string) string {
		dir := t.TempDir()
		l, err := net.Listen("unix", filepath.Join(dir, controlSocketName))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				var req wire.ControlRequest
				json.NewDecoder(c).Decode(&req)
				json.NewEncoder(c).Encode(wire.ControlResponse{Error: answer})
				c.Close()
			}
		}()
		return dir
	}
	stale := t.TempDir()
	if l, err := net.Listen("unix", filepath.Join(stale, controlSocketName)); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close() // the socket file of a supervisor that is gone
	}
	cases := []struct {
		name    string
		dir     string
		wantErr bool
	}{
		{"a supervisor with the relay", answering(""), false},
		{"no supervisor", t.TempDir(), false},
		{"the socket of a supervisor that is gone", stale, false},
		{"a supervisor of a build before the relay", answering(`unknown command "revoked"`), false},
		{"a supervisor that fails", answering("busy"), true},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := AnnounceRevocations(ctx, c.dir)
		cancel()
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err %v, want error %v", c.name, err, c.wantErr)
		}
	}
}
