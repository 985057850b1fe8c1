package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestReloadHandOff is the Envoy-style hand-off check: a request held open
// by a slow upstream across a reload completes (200, full body) through
// the old worker, which stays alive, draining, until it has answered,
// while new connections made during the hold reach the new worker.
//
// The worker that serves the held request is identified by its
// connection: the test first asks for the health of the proxy on that
// connection (the old worker's pid), then sends the held request on the
// same connection.
func TestReloadHandOff(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	holds := map[string]*backends.Hold{}
	var routes []string
	for _, pc := range protoCases {
		h := backends.NewHold(t, 30*time.Second)
		holds[pc.name] = h
		routes = append(routes, "[[routes]]\npath = \"/held/"+pc.name+"\"\ntarget = \""+h.URL+"\"")
	}
	// drain_timeout well above the hold: only the response may end the drain.
	g := harness.Start(t, harness.Options{DrainTimeout: "30s", Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL, Tables: strings.Join(routes, "\n\n")},
	}})

	for _, pc := range protoCases {
		t.Run(pc.name, func(t *testing.T) {
			hold := holds[pc.name]
			c := g.Client(pc.cfg)

			// The old worker's pid, asked on the connection the held request
			// will use.
			var healthConn, heldConn connRec
			hresp, body := getTraced(t, c, "https://alpha.test"+harness.HealthPath, &healthConn)
			var old harness.Health
			if hresp.StatusCode != http.StatusOK || decodeJSON(body, &old) != nil || old.PID <= 0 {
				t.Fatalf("health: status %d, body %q", hresp.StatusCode, body)
			}

			type result struct {
				resp *http.Response
				body string
				err  error
			}
			done := make(chan result, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://alpha.test/held/"+pc.name, nil)
				req = withConnTrace(req, &heldConn)
				resp, err := c.Do(req)
				if err != nil {
					done <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				done <- result{resp: resp, body: string(b), err: err}
			}()
			select {
			case <-hold.Arrived():
			case r := <-done:
				t.Fatalf("held request finished before the backend held it: %+v", r)
			case <-time.After(10 * time.Second):
				t.Fatal("the held request did not reach the backend within 10s")
			}
			if hc := heldConn.get(); hc == nil || hc != healthConn.get() {
				t.Fatalf("the held request went out on connection %v, not on the health check's %v", addrOf(hc), addrOf(healthConn.get()))
			}

			res := g.Reload(t)
			if res.ExitCode != 0 {
				t.Fatalf("reload: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
			}
			select {
			case r := <-done:
				t.Fatalf("the held request finished during the reload, before its release: %+v", r)
			default:
			}

			// New connections reach the new worker; the old one drains.
			for i := range 3 {
				if h := health(t, g, "alpha.test"); h.PID == old.PID {
					t.Fatalf("new connection %d after the reload reached the old worker %d", i, old.PID)
				}
			}
			getEcho(t, g.Client(pc.cfg), "https://alpha.test/during-hold", nil)
			if !harness.ProcessAlive(old.PID) {
				t.Fatalf("old worker %d exited while its request was held", old.PID)
			}
			// Status shows it draining, with the held connection open (the
			// count is reported every second).
			g.WaitStatus(t, 5*time.Second, "old worker draining with a connection", func(st harness.Status) bool {
				for _, w := range st.WorkersOf("alpha") {
					if w.PID == old.PID {
						return w.State == "draining" && w.Connections >= 1
					}
				}
				return false
			})

			hold.Release()
			var r result
			select {
			case r = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("no answer to the held request within 15s of its release")
			}
			if r.err != nil {
				t.Fatalf("held request: %v", r.err)
			}
			want := "held /held/" + pc.name + " ok\n"
			if r.resp.StatusCode != http.StatusOK || r.body != want || r.resp.Proto != pc.proto {
				t.Fatalf("held request: %s %d, body %q; want %s 200, body %q", r.resp.Proto, r.resp.StatusCode, r.body, pc.proto, want)
			}
			t.Logf("held request answered by the old worker %d after the reload; new connections reach %d",
				old.PID, health(t, g, "alpha.test").PID)

			// With its last request answered, the old worker finishes draining.
			deadline := time.Now().Add(15 * time.Second)
			for harness.ProcessAlive(old.PID) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if harness.ProcessAlive(old.PID) {
				t.Errorf("old worker %d still running 15s after its last request was answered", old.PID)
			}
		})
	}
}

// connRec holds the connection a request went out on.
type connRec struct {
	mu   sync.Mutex
	conn net.Conn // guarded by mu
}

func (r *connRec) get() net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

// withConnTrace records the connection req goes out on in rec.
func withConnTrace(req *http.Request, rec *connRec) *http.Request {
	return req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) {
			rec.mu.Lock()
			rec.conn = ci.Conn
			rec.mu.Unlock()
		},
	}))
}

// getTraced is get, recording the connection used.
func getTraced(t *testing.T, c *http.Client, url string, conn *connRec) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(withConnTrace(req, conn))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, body
}

func addrOf(c net.Conn) string {
	if c == nil {
		return "none"
	}
	return c.LocalAddr().String()
}
