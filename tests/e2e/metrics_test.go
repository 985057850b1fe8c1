package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestMetrics: [server] metrics serves /metrics from the supervisor in the
// Prometheus text format, and its values move with real traffic: requests
// over HTTP/1.1 and HTTP/2, a request without a token as a bearer
// rejection, a token issued at the token endpoint. A reload replaces the
// worker, and the request counters do not go down.
func TestMetrics(t *testing.T) {
	t.Parallel()
	// A unix socket: a free TCP port picked now could be the one the
	// harness picks for the gateway next.
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	e := startOAuthWith(t, harness.Options{ServerTOML: fmt.Sprintf("metrics = %q\n", "unix:"+sock)}, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables:       cliClient,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}})
	m := &scraper{t: t, sock: sock}
	alpha := map[string]string{"proxy": "alpha"}

	fams := m.scrape()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("metrics socket: %v %v, want mode 0660", fi.Mode().Perm(), err)
	}
	if v, ok := sample(fams, "mcpgate_build_info", nil); !ok || v != 1 {
		t.Errorf("mcpgate_build_info = %v (present %v), want 1", v, ok)
	}
	if v, _ := sample(fams, "mcpgate_workers", map[string]string{"proxy": "alpha", "state": "ready"}); v != 1 {
		t.Errorf("mcpgate_workers{alpha,ready} = %v, want 1", v)
	}

	// A request without a token: 401, counted as a bearer rejection.
	if st, _ := e.mcpStatus(t, "alpha.test", "", nil); st != http.StatusUnauthorized {
		t.Fatalf("MCP request without a token: %d, want 401", st)
	}
	m.waitFor("mcpgate_bearer_rejected_total", map[string]string{"proxy": "alpha", "reason": "missing"}, 1)
	m.waitFor("mcpgate_requests_total", map[string]string{"proxy": "alpha", "code": "401", "method": "POST", "protocol": "h2"}, 1)

	// A login: a token issued.
	access, refresh := e.tokens(t, "alpha.test", "e2e-cli")
	e.remember(access, refresh)
	m.waitFor("mcpgate_oauth_tokens_issued_total", map[string]string{"proxy": "alpha", "grant_type": "authorization_code"}, 1)

	// Requests over HTTP/2 and HTTP/1.1.
	e.wantAccepted(t, "alpha.test", access, "a fresh token")
	m.waitFor("mcpgate_requests_total", map[string]string{"proxy": "alpha", "code": "200", "method": "POST", "protocol": "h2"}, 1)
	h1 := e.g.HTTP1Client()
	for range 3 {
		res, _ := get(t, h1, "https://alpha.test/.well-known/mcpgate/health", nil)
		if res.StatusCode != http.StatusOK || res.ProtoMajor != 1 {
			t.Fatalf("health over HTTP/1.1: %d %s", res.StatusCode, res.Proto)
		}
	}
	m.waitFor("mcpgate_requests_total", map[string]string{"proxy": "alpha", "code": "200", "method": "GET", "protocol": "h1"}, 3)
	fams = m.scrape()
	if v, _ := sample(fams, "mcpgate_handoffs_total", map[string]string{"result": "delivered"}); v < 2 {
		t.Errorf("mcpgate_handoffs_total{delivered} = %v, want at least 2 (h1 and h2 connections)", v)
	}
	if h := histogram(fams, "mcpgate_request_duration_seconds", alpha); h == nil || h.GetSampleCount() < 5 {
		t.Errorf("mcpgate_request_duration_seconds{alpha}: %v", h)
	}
	if strings.Contains(m.raw, "alice") || strings.Contains(m.raw, "e2e-cli") {
		t.Error("/metrics names a user or a client")
	}
	before := sum(fams, "mcpgate_requests_total", alpha)

	// A reload: a fresh worker, the old one drains and exits; the totals
	// keep its counts.
	oldPID := e.g.WorkerPID(t, "alpha.test")
	if r := e.g.Reload(t); r.ExitCode != 0 {
		t.Fatalf("reload: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	e.g.WaitStatus(t, 15*time.Second, "the old worker gone", func(s harness.Status) bool {
		ws := s.WorkersOf("alpha")
		return len(ws) == 1 && ws[0].PID != oldPID && ws[0].State == "ready"
	})
	fams = m.scrape()
	if after := sum(fams, "mcpgate_requests_total", alpha); after < before {
		t.Errorf("mcpgate_requests_total{alpha} went down across a reload: %v → %v", before, after)
	}
	if v, _ := sample(fams, "mcpgate_reloads_total", map[string]string{"result": "ok"}); v != 1 {
		t.Errorf("mcpgate_reloads_total{ok} = %v, want 1", v)
	}
	if v, _ := sample(fams, "mcpgate_oauth_tokens_issued_total", map[string]string{"proxy": "alpha", "grant_type": "authorization_code"}); v < 1 {
		t.Errorf("tokens issued lost across the reload: %v", v)
	}
	if v, _ := sample(fams, "mcpgate_worker_restarts_total", alpha); v != 0 {
		t.Errorf("a reload counted as %v restarts", v)
	}
	// And the new worker's requests add to them.
	e.wantAccepted(t, "alpha.test", access, "the token after the reload")
	m.waitSum("mcpgate_requests_total", alpha, before+1)
	e.checkLogSecrets(t)
}

// scraper fetches /metrics and parses it with the Prometheus text parser.
type scraper struct {
	t    *testing.T
	sock string
	raw  string // the last scrape
}

func (s *scraper) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://metrics/metrics", nil)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.sock)
	}}}
	defer c.CloseIdleConnections()
	res, err := c.Do(req)
	if err != nil {
		s.t.Fatalf("scraping %s: %v", s.sock, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		s.t.Fatalf("scraping %s: %d %v", s.sock, res.StatusCode, err)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		s.t.Errorf("Content-Type %q, want the text format", ct)
	}
	s.raw = string(b)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(s.raw))
	if err != nil {
		s.t.Fatalf("parsing /metrics: %v\n%s", err, s.raw)
	}
	return fams
}

// waitFor waits (workers report every second) until the sample of name
// with labels is at least min.
func (s *scraper) waitFor(name string, labels map[string]string, min float64) {
	s.t.Helper()
	s.wait(fmt.Sprintf("%s%v ≥ %v", name, labels, min), func(f map[string]*dto.MetricFamily) bool {
		v, _ := sample(f, name, labels)
		return v >= min
	})
}

// waitSum waits until the sum of name's samples with labels is at least min.
func (s *scraper) waitSum(name string, labels map[string]string, min float64) {
	s.t.Helper()
	s.wait(fmt.Sprintf("sum %s%v ≥ %v", name, labels, min), func(f map[string]*dto.MetricFamily) bool {
		return sum(f, name, labels) >= min
	})
}

func (s *scraper) wait(what string, ok func(map[string]*dto.MetricFamily) bool) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok(s.scrape()) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no %s within 10s; /metrics:\n%s", what, s.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// matching are the samples of name whose labels include want.
func matching(fams map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// sample is the value of the one sample of name with labels.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	ms := matching(fams, name, labels)
	if len(ms) == 0 {
		return 0, false
	}
	return value(ms[0]), true
}

func sum(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var n float64
	for _, m := range matching(fams, name, labels) {
		n += value(m)
	}
	return n
}

func histogram(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Histogram {
	ms := matching(fams, name, labels)
	if len(ms) == 0 {
		return nil
	}
	return ms[0].GetHistogram()
}

// TestMetricsStreamsAndRestarts: an open SSE stream shows in
// mcpgate_open_streams and its connection in mcpgate_connections until it
// ends; a backend that cannot be reached counts as an upstream error; a
// killed worker counts as a restart, and the counts of the dead worker
// stay in the totals. /metrics survives an upgrade.
func TestMetricsStreamsAndRestarts(t *testing.T) {
	t.Parallel()
	sse := backends.NewSSE(t)
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	down := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t)) // nothing listens there
	g := harness.Start(t, harness.Options{ServerTOML: fmt.Sprintf("metrics = %q\n", "unix:"+sock), Proxies: []harness.Proxy{
		{Name: "stream", Hostnames: []string{"stream.test"}, Target: sse.URL},
		{Name: "down", Hostnames: []string{"down.test"}, Target: down},
	}})
	m := &scraper{t: t, sock: sock}
	stream := map[string]string{"proxy": "stream"}

	c := g.HTTP2Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://stream.test/sse?id=metrics", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ev, err := readEvent(bufio.NewReader(res.Body)); err != nil || ev.Data != "event 1" {
		t.Fatalf("first event: %+v %v", ev, err)
	}
	m.waitFor("mcpgate_open_streams", stream, 1)
	m.waitFor("mcpgate_connections", map[string]string{"proxy": "stream", "protocol": "h2"}, 1)
	sse.Release("metrics")
	io.Copy(io.Discard, res.Body)
	m.wait("the stream closed", func(f map[string]*dto.MetricFamily) bool {
		v, ok := sample(f, "mcpgate_open_streams", stream)
		return ok && v == 0
	})

	if r, _ := get(t, c, "https://down.test/", nil); r.StatusCode != http.StatusBadGateway {
		t.Errorf("unreachable backend: %d, want 502", r.StatusCode)
	}
	m.waitFor("mcpgate_upstream_errors_total", map[string]string{"proxy": "down", "kind": "connect"}, 1)

	m.waitSum("mcpgate_requests_total", stream, 1)
	before := sum(m.scrape(), "mcpgate_requests_total", stream)
	pid := g.WorkerPID(t, "stream.test")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.waitFor("mcpgate_worker_restarts_total", stream, 1)
	g.WaitHealth(t, "stream.test", 15*time.Second, "the restarted worker", harness.HealthOK)
	if after := sum(m.scrape(), "mcpgate_requests_total", stream); after < before {
		t.Errorf("mcpgate_requests_total{stream} went down when its worker died: %v → %v", before, after)
	}

	// An upgrade: the next supervisor binds the socket while this one
	// still holds it, and serves /metrics from then on.
	if r := g.Upgrade(t); r.ExitCode != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	if v, _ := sample(m.scrape(), "mcpgate_build_info", nil); v != 1 {
		t.Errorf("after an upgrade: mcpgate_build_info = %v", v)
	}
	if strings.Contains(g.Logs(), "metrics: cannot listen") {
		t.Error("a supervisor could not listen for /metrics")
	}
}

// TestMetricsHTTP3: requests over HTTP/3 count with protocol h3, their
// QUIC connection shows in mcpgate_connections, and the supervisor counts
// the datagrams it routed.
func TestMetricsHTTP3(t *testing.T) {
	t.Parallel()
	backend := backends.NewEcho(t, "alpha")
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	g := harness.Start(t, harness.Options{QUIC: true, ServerTOML: fmt.Sprintf("metrics = %q\n", "unix:"+sock), Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: backend.URL},
	}})
	m := &scraper{t: t, sock: sock}
	c := g.HTTP3Client(t)
	for range 2 {
		res, err := c.Get("https://alpha.test/.well-known/mcpgate/health")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.ProtoMajor != 3 {
			t.Fatalf("answered over %s, want HTTP/3", res.Proto)
		}
	}
	m.waitFor("mcpgate_requests_total", map[string]string{"proxy": "alpha", "code": "200", "method": "GET", "protocol": "h3"}, 2)
	m.waitFor("mcpgate_connections", map[string]string{"proxy": "alpha", "protocol": "h3"}, 1)
	fams := m.scrape()
	if v, _ := sample(fams, "mcpgate_quic_packets_routed_total", map[string]string{"result": "new_connection"}); v < 1 {
		t.Errorf("mcpgate_quic_packets_routed_total{new_connection} = %v, want ≥ 1", v)
	}
	if v, _ := sample(fams, "mcpgate_quic_packets_routed_total", map[string]string{"result": "forwarded"}); v < 1 {
		t.Errorf("mcpgate_quic_packets_routed_total{forwarded} = %v, want ≥ 1", v)
	}
}
