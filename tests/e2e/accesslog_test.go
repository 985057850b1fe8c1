package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// logLines returns the gateway's JSON log lines whose msg is msg.
func logLines(t *testing.T, g *harness.Gateway, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(g.Logs()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitLogLine returns the first line with msg for which match holds; the
// access log writes its line after the response, so it may lag a little.
func waitLogLine(t *testing.T, g *harness.Gateway, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, m := range logLines(t, g, msg) {
			if match(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line as wanted within 5s; log:\n%s", msg, g.Logs())
		}
	}
}

// TestAccessLogAuthenticatedRequest: an MCP request with a token gives one
// access-log line naming the proxy, the client, the request without its
// query string, the sizes and times, the user and client the token was
// issued to, the user agent and the client's request id, which the backend
// received too.
func TestAccessLogAuthenticatedRequest(t *testing.T) {
	t.Parallel()
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables:       cliClient,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}})
	access, refresh := e.tokens(t, "alpha.test", "e2e-cli")
	e.remember(access, refresh)

	hdr := http.Header{"X-Request-Id": {"e2e-req-7f3a"}, "User-Agent": {"e2e-agent/1.0"}}
	if st, www := e.mcpStatus(t, "alpha.test", access, hdr); st != http.StatusOK {
		t.Fatalf("MCP request: status %d (%s)", st, www)
	}
	line := waitLogLine(t, e.g, "request", func(m map[string]any) bool { return m["request_id"] == "e2e-req-7f3a" })
	want := map[string]any{
		"proxy": "alpha", "method": "POST", "host": "alpha.test", "path": "/mcp", "proto": "HTTP/2.0",
		"status": float64(200), "bytes_in": float64(len(initializeBody)),
		"user": "alice", "client_id": "e2e-cli", "user_agent": "e2e-agent/1.0", "level": "INFO",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %#v, want %#v", k, line[k], v)
		}
	}
	if c, _ := line["client"].(string); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("client = %q, want the test's loopback address", c)
	}
	out, _ := line["bytes_out"].(float64)
	total, _ := line["duration_ms"].(float64)
	up, _ := line["upstream_ms"].(float64)
	if out <= 0 || up <= 0 || total < up {
		t.Errorf("bytes_out %v, upstream_ms %v, duration_ms %v: want a body, and the backend's time within the total", out, up, total)
	}
	ids := e.spies["alpha"].requestIDs()
	if len(ids) == 0 || len(ids[len(ids)-1]) != 1 || ids[len(ids)-1][0] != "e2e-req-7f3a" {
		t.Errorf("backend's X-Request-Id: %q, want the client's e2e-req-7f3a once", ids)
	}
	e.checkLogSecrets(t)
}

// TestLogSettings: access_log = false and log_level = "warn" in
// mcpgate.toml silence the request lines and the info lines of the
// supervisor and the workers; a reload back to the defaults brings them
// back for the new workers. A client behind a PROXY header is logged, and
// judged for the health endpoint's details, by the header's address.
func TestLogSettings(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "echo")
	proxies := []harness.Proxy{{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL}}
	g := harness.Start(t, harness.Options{
		ServerTOML: "access_log = false\nlog_level = \"warn\"\nproxy_protocol_from = [\"127.0.0.2\"]",
		Proxies:    proxies,
	})
	c := g.HTTP2Client()
	get(t, c, "https://alpha.test/quiet", nil)
	// The health checks and this request were served; nothing at info
	// level may have been written by anyone.
	time.Sleep(200 * time.Millisecond)
	for line := range strings.Lines(g.Logs()) {
		if strings.Contains(line, `"level":"INFO"`) {
			t.Errorf("log_level = \"warn\", but the gateway logged at info: %s", line)
		}
	}

	g.WriteConfigFile(t, "mcpgate.toml", "[server]\nstate_dir = \""+g.StateDir+"\"\ndrain_timeout = \"2s\"\nproxy_protocol_from = [\"127.0.0.2\"]\n")
	if res := g.Reload(t); res.ExitCode != 0 {
		t.Fatalf("reload: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	waitLogLine(t, g, "worker serving", func(m map[string]any) bool { return m["proxy"] == "alpha" })
	// The connection from before the reload may still reach the old worker
	// (access_log = false) until its GOAWAY: the new settings are the new
	// worker's, so ask on a new connection.
	c.CloseIdleConnections()
	get(t, c, "https://alpha.test/loud?secret=x", nil)
	waitLogLine(t, g, "request", func(m map[string]any) bool { return m["path"] == "/loud" })
	if strings.Contains(g.Logs(), "secret=x") {
		t.Error("the query string was logged")
	}

	// Through a trusted load balancer on loopback, for a remote client.
	raw, err := (&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", g.HTTPSAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	raw.Write([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"))
	conn := tls.Client(raw, &tls.Config{ServerName: "alpha.test", RootCAs: g.PKI.Pool, NextProtos: []string{"http/1.1"}})
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "https://alpha.test"+harness.HealthPath, nil)
	req.Header.Set("X-Request-Id", "remote-health")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var health map[string]any
	if err := json.NewDecoder(res.Body).Decode(&health); err != nil {
		t.Fatal(err)
	}
	if len(health) != 2 || health["status"] != "ok" || health["proxy"] != "alpha" {
		t.Errorf("health for a remote client: %v, want only status and proxy", health)
	}
	line := waitLogLine(t, g, "request", func(m map[string]any) bool { return m["request_id"] == "remote-health" })
	if c, _ := line["client"].(string); !strings.HasPrefix(c, "203.0.113.7:") {
		t.Errorf("client = %q, want the PROXY header's 203.0.113.7", c)
	}
}
