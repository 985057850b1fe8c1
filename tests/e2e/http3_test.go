package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgate/mcpgate/internal/procfd"
	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// startAlphaBetaH3 is a gateway with HTTP/3 on and two proxies, alpha.test
// and beta.test, each in front of its own MCP backend.
func startAlphaBetaH3(t *testing.T) *harness.Gateway {
	alpha, beta := backends.NewMCP(t, "alpha-backend"), backends.NewMCP(t, "beta-backend")
	return harness.Start(t, harness.Options{QUIC: true, Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alpha.URL},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL},
	}})
}

// TestHTTP3RoutesBySNI: one UDP port, two proxies; a quic-go HTTP/3 client
// reaches each one's backend, chosen by the SNI of its Initial packets.
func TestHTTP3RoutesBySNI(t *testing.T) {
	t.Parallel()
	g := startAlphaBetaH3(t)
	c := g.HTTP3Client(t)
	for _, tc := range []struct{ host, proxy string }{{"alpha.test", "alpha"}, {"beta.test", "beta"}} {
		res, err := c.Get("https://" + tc.host + "/.well-known/mcpgate/health")
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		var h struct{ Proxy string }
		json.NewDecoder(res.Body).Decode(&h)
		res.Body.Close()
		if res.ProtoMajor != 3 || h.Proxy != tc.proxy {
			t.Errorf("%s: %s answered by %q, want HTTP/3 from %q", tc.host, res.Proto, h.Proxy, tc.proxy)
		}
	}
	// The HTTP/2 side advertises HTTP/3.
	res, err := g.HTTP2Client().Get("https://alpha.test/.well-known/mcpgate/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if alt := res.Header.Get("Alt-Svc"); !strings.HasPrefix(alt, `h3=":`) {
		t.Errorf("Alt-Svc = %q, want an h3 advertisement", alt)
	}
	// 421 for a host this connection's worker does not serve.
	req, _ := http.NewRequest("GET", "https://alpha.test/.well-known/mcpgate/health", nil)
	req.Host = "beta.test"
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host of another proxy over HTTP/3: %d, want 421", res.StatusCode)
	}
}

// TestHTTP3MCP: an MCP client over HTTP/3 runs initialize, tools/list and
// a tool call through the gateway; SSE over HTTP/3 flushes each event.
func TestHTTP3MCP(t *testing.T) {
	t.Parallel()
	mcpBackend := backends.NewMCP(t, "alpha-backend")
	sse := backends.NewSSE(t)
	g := harness.Start(t, harness.Options{QUIC: true, Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: mcpBackend.URL},
		{Name: "sse", Hostnames: []string{"sse.test"}, Target: sse.URL},
	}})
	hc := g.HTTP3Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "h3-client", Version: "v1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "https://alpha.test/mcp", HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connect over HTTP/3: %v", err)
	}
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) == 0 {
		t.Fatalf("tools/list: %v", err)
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "server_name"})
	if err != nil || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "alpha-backend") {
		t.Fatalf("tools/call over HTTP/3: %+v, %v", res, err)
	}

	// SSE: the first event arrives before the backend may send the second.
	resp, err := hc.Get("https://sse.test/sse?id=h3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 3 {
		t.Fatalf("SSE over %s", resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		for {
			line, err := br.ReadString('\n')
			if err != nil || strings.HasPrefix(line, "data:") {
				first <- line
				return
			}
		}
	}()
	select {
	case line := <-first:
		if !strings.HasPrefix(line, "data:") {
			t.Fatalf("first SSE line %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("first SSE event not delivered over HTTP/3 before the second was allowed")
	}
	sse.Release("h3")
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data:") {
		t.Errorf("second event missing: %q", rest)
	}
}

// TestHTTP3Reload: requests keep succeeding over HTTP/3 while the gateway
// reloads; established QUIC connections finish on the old worker, new ones
// land on the new worker.
func TestHTTP3Reload(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "echo")
	g := harness.Start(t, harness.Options{QUIC: true, Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL},
	}})
	before := g.WorkerPID(t, "alpha.test")
	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := g.HTTP3Client(t)
			for i := 0; i < 2000 && ctx.Err() == nil; i++ {
				res, err := c.Get("https://alpha.test/h3/" + string(rune('a'+i%26)))
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				if err != nil || res.StatusCode != 200 {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for range 2 {
		if r := g.Reload(t); r.ExitCode != 0 {
			t.Fatalf("reload failed: %+v", r)
		}
		time.Sleep(300 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	t.Logf("HTTP/3 requests through 2 reloads: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed over HTTP/3 during reloads (first: %v)", failed.Load(), firstErr)
	}
	// A new QUIC connection reaches the new worker.
	res, err := g.HTTP3Client(t).Get("https://alpha.test/.well-known/mcpgate/health")
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ PID int }
	json.NewDecoder(res.Body).Decode(&h)
	res.Body.Close()
	if h.PID == before || h.PID == 0 {
		t.Errorf("new QUIC connection answered by pid %d; the old worker was %d", h.PID, before)
	}
}

// TestHTTP3OAuth: the bearer check is the same over HTTP/3: no token → 401
// with the RFC 9728 challenge, a token for another proxy → invalid_token,
// a valid one reaches the backend with mcpgate's identity headers.
func TestHTTP3OAuth(t *testing.T) {
	t.Parallel()
	e := startOAuthWith(t, harness.Options{QUIC: true}, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables:       cliClient,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "beta", Hostnames: []string{"beta.test"}},
	)
	alphaToken, _ := e.tokens(t, "alpha.test", "e2e-cli")
	h3 := e.g.HTTP3Client(t)
	post := func(host, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "https://"+host+"/mcp", strings.NewReader(initializeBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := h3.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.ProtoMajor != 3 {
			t.Fatalf("answered over %s", res.Proto)
		}
		return res
	}
	if res := post("alpha.test", ""); res.StatusCode != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), `resource_metadata="https://alpha.test`) {
		t.Errorf("no token: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if res := post("beta.test", alphaToken); res.StatusCode != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("alpha's token at beta: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if res := post("alpha.test", alphaToken); res.StatusCode != 200 {
		t.Errorf("valid token: %d", res.StatusCode)
	}
	if _, _, ids := e.spies["alpha"].seen(); len(ids) == 0 || ids[len(ids)-1].Get("X-Mcpgate-User") != "alice" {
		t.Errorf("backend identity headers: %v", ids)
	}
}

// TestHTTP3WorkersLeaveSharedSocketToSupervisor: the UDP socket is one
// open file shared by the supervisor and every worker. Only the
// supervisor reads it, so only its epoll set may hold it: a worker
// polling it too was woken by every datagram to the port and every send
// from it, so one junk packet to UDP 443 woke every worker (500 at 500
// proxies). Checked after each worker has answered over HTTP/3 (its
// replies leave through that socket).
func TestHTTP3WorkersLeaveSharedSocketToSupervisor(t *testing.T) {
	t.Parallel()
	g := startAlphaBetaH3(t)
	c := g.HTTP3Client(t)
	for _, host := range []string{"alpha.test", "beta.test"} {
		res, err := c.Get("https://" + host + "/.well-known/mcpgate/health")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		res.Body.Close()
		if res.ProtoMajor != 3 {
			t.Fatalf("%s: %s, want HTTP/3", host, res.Proto)
		}
	}
	udp := udpSocketInodes(t, g.PID())
	if len(udp) != 1 {
		t.Fatalf("supervisor holds %d UDP sockets, want 1 (the quic socket)", len(udp))
	}
	var shared string
	for ino := range udp {
		shared = ino
	}
	// The control: the supervisor polls it, and the check sees that.
	if !epollInodes(t, g.PID())[shared] {
		t.Fatal("the supervisor does not poll the shared UDP socket (or the check cannot see it)")
	}
	// Handing the socket to the workers left it non-blocking: a blocking
	// one held the supervisor's reader in recvfrom, past its shutdown.
	if fl, ok := fdFlags(t, g.PID(), shared); !ok || fl&syscall.O_NONBLOCK == 0 {
		t.Errorf("the supervisor's UDP socket: flags %o (found %v), want O_NONBLOCK", fl, ok)
	}
	for _, host := range []string{"alpha.test", "beta.test"} {
		pid := g.WorkerPID(t, host)
		if !fdInodes(t, pid)[shared] {
			t.Errorf("worker of %s (pid %d) does not hold the shared UDP socket it answers through", host, pid)
		}
		if epollInodes(t, pid)[shared] {
			t.Errorf("worker of %s (pid %d) polls the shared UDP socket: every datagram to the port wakes it", host, pid)
		}
	}
}

func procFDs(t *testing.T, pid int) []procfd.FD {
	t.Helper()
	fds, err := procfd.List(pid)
	if err != nil {
		t.Fatal(err)
	}
	return fds
}

// fdFlags is the file status flags of pid's descriptor of the socket
// with inode ino (hex).
func fdFlags(t *testing.T, pid int, ino string) (int, bool) {
	t.Helper()
	for _, fd := range procFDs(t, pid) {
		if fd.Socket != ino {
			continue
		}
		for _, line := range fd.Info {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				fl, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				return int(fl), err == nil
			}
		}
	}
	return 0, false
}

// fdInodes is the inodes (hex, as fdinfo writes them) of pid's sockets.
func fdInodes(t *testing.T, pid int) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, fd := range procFDs(t, pid) {
		if fd.Socket != "" {
			out[fd.Socket] = true
		}
	}
	return out
}

// udpSocketInodes is the inodes of pid's sockets that /proc/net/udp{,6}
// lists.
func udpSocketInodes(t *testing.T, pid int) map[string]bool {
	t.Helper()
	mine := fdInodes(t, pid)
	out := map[string]bool{}
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 {
				continue
			}
			ino, err := strconv.ParseUint(fs[9], 10, 64)
			if err != nil {
				continue
			}
			if h := strconv.FormatUint(ino, 16); mine[h] {
				out[h] = true
			}
		}
	}
	return out
}

// epollInodes is the inodes of the files in pid's epoll sets.
func epollInodes(t *testing.T, pid int) map[string]bool {
	t.Helper()
	ino, err := procfd.EpollInodes(pid)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}
