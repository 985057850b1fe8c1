package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HTTP/3 versus HTTP/2 on the same mcpgate proxy (issue 6, requirement 6).
//
// h2load in Debian has no HTTP/3, so both protocols are driven by the same
// Go code in this process (pinned to the load core like wrk and h2load):
// only the transport differs, quic-go's http3.Transport against net/http's
// HTTP/2-only Transport. mcpgate's main instance has a quic socket on the
// UDP port of the same number as its https port, so both reach the same
// proxy, worker and token audience.

// Metric keys of the comparison; contenders h3Col and h2Col.
const (
	h3Col         = "mcpgate-h3"
	h2Col         = "mcpgate-h2"
	mGoRPS        = "go_rps"
	mGoServerCPU  = "go_server_cpu_us_per_req"
	mGoClientCPU  = "go_client_cpu_us_per_req"
	mFirstNewP50  = "first_byte_newconn_p50_ms"
	mFirstNewP99  = "first_byte_newconn_p99_ms"
	mSSEFirstP50  = "sse_first_event_p50_ms"
	mSSEFirstP99  = "sse_first_event_p99_ms"
	h3PhaseName   = "h3"
	h3ClientLimit = 30 * time.Second
)

// protoClient is what the comparison needs of one protocol's client: a
// fresh transport (its own connection(s)) and a way to close it.
type protoClient struct {
	name  string // "h3" or "h2"
	col   string // h3Col or h2Col
	fresh func() (*http.Client, func())
}

func (b *bench) h3Clients(t target) []protoClient {
	quicAddr := t.dial // same port number over UDP
	h3 := protoClient{name: "h3", col: h3Col, fresh: func() (*http.Client, func()) {
		cfg := b.pki.clientTLS(t.sni())
		tr := &http3.Transport{
			TLSClientConfig:    cfg,
			DisableCompression: true,
			QUICConfig:         &quic.Config{HandshakeIdleTimeout: 10 * time.Second, MaxIdleTimeout: 30 * time.Second},
			Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				return quic.DialAddrEarly(ctx, quicAddr, tlsCfg, qc)
			},
		}
		return &http.Client{Transport: tr, Timeout: h3ClientLimit}, func() { tr.Close() }
	}}
	h2 := protoClient{name: "h2", col: h2Col, fresh: func() (*http.Client, func()) {
		tr := b.transport(t, true)
		return &http.Client{Transport: tr, Timeout: h3ClientLimit}, tr.CloseIdleConnections
	}}
	return []protoClient{h3, h2}
}

// goRPSResult is one closed-loop run of the Go load generator.
type goRPSResult struct {
	Proto            string  `json:"protocol"`
	Conns            int     `json:"connections"`
	Concurrency      int     `json:"concurrent_requests"`
	Seconds          float64 `json:"seconds"`
	Requests         int64   `json:"requests"`
	Errors           int64   `json:"errors"`
	RPS              float64 `json:"rps"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"` // supervisor + worker, user + system
	ClientCPUSeconds float64 `json:"client_cpu_seconds"` // this process
	ServerCPUPerReq  float64 `json:"server_cpu_us_per_req"`
	ClientCPUPerReq  float64 `json:"client_cpu_us_per_req"`
	AltSvc           string  `json:"alt_svc,omitempty"` // as announced on HTTP/2
	FirstErr         string  `json:"first_error,omitempty"`
}

// goRPS: conc goroutines, spread over conns connections (one transport
// each), each sending GET /small with the bearer token back to back for
// warm+dur; requests completed in the last dur count.
func (b *bench) goRPS(pc protoClient, t target, serverRoot, conns, conc int, warm, dur time.Duration) goRPSResult {
	r := goRPSResult{Proto: pc.name, Conns: conns, Concurrency: conc, Seconds: dur.Seconds()}
	clients := make([]*http.Client, conns)
	for i := range clients {
		c, closeFn := pc.fresh()
		defer closeFn()
		clients[i] = c
		// Open the connection before the clock starts.
		resp, err := c.Do(newRequest(context.Background(), t, false))
		if err != nil {
			r.Errors++
			r.FirstErr = err.Error()
			return r
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			r.Errors++
			r.FirstErr = fmt.Sprintf("status %d", resp.StatusCode)
			return r
		}
		if pc.name == "h2" {
			r.AltSvc = resp.Header.Get("Alt-Svc")
		}
	}
	var (
		ok, bad  atomic.Int64
		mu       sync.Mutex
		firstErr string
		wg       sync.WaitGroup
	)
	start := time.Now()
	from, until := start.Add(warm), start.Add(warm+dur)
	ctx, cancel := context.WithDeadline(context.Background(), until.Add(5*time.Second))
	defer cancel()
	var srv0, cli0 float64
	measuring := make(chan struct{})
	go func() {
		time.Sleep(time.Until(from))
		srv0, cli0 = treeCPU(serverRoot), selfCPU()
		close(measuring)
	}()
	for i := range conc {
		c := clients[i%conns]
		wg.Go(func() {
			for {
				now := time.Now()
				if !now.Before(until) {
					return
				}
				err := do(c, newRequest(ctx, t, false))
				end := time.Now()
				if now.Before(from) || end.After(until) {
					continue // warm-up, or straddling the end
				}
				if err != nil {
					bad.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	<-measuring
	srv, cli := treeCPU(serverRoot)-srv0, selfCPU()-cli0
	r.Requests, r.Errors, r.FirstErr = ok.Load(), bad.Load(), firstErr
	r.RPS = float64(r.Requests) / dur.Seconds()
	r.ServerCPUSeconds, r.ClientCPUSeconds = srv, cli
	if r.Requests > 0 {
		r.ServerCPUPerReq = srv * 1e6 / float64(r.Requests)
		r.ClientCPUPerReq = cli * 1e6 / float64(r.Requests)
	}
	return r
}

// firstByteResult: samples of, on a new connection (full handshake, no
// session resumption, no 0-RTT), the time to the response to GET /small,
// then on that same connection the time to the first SSE event.
type firstByteResult struct {
	Proto      string  `json:"protocol"`
	Samples    int     `json:"samples"`
	Errors     int     `json:"errors"`
	NewP50ms   float64 `json:"newconn_first_byte_p50_ms"`
	NewP99ms   float64 `json:"newconn_first_byte_p99_ms"`
	SSEP50ms   float64 `json:"sse_first_event_p50_ms"`
	SSEP99ms   float64 `json:"sse_first_event_p99_ms"`
	FirstError string  `json:"first_error,omitempty"`
}

var errNoSSEEvent = errors.New("SSE stream ended before the first event")

// firstBytes runs n samples one after another (an unloaded server: the
// figure is latency, not capacity).
func (b *bench) firstBytes(pc protoClient, t target, n int) firstByteResult {
	r := firstByteResult{Proto: pc.name}
	var news, sses []time.Duration
	fail := func(err error) {
		r.Errors++
		if r.FirstError == "" {
			r.FirstError = err.Error()
		}
	}
	for range n {
		c, closeFn := pc.fresh()
		nd, sd, err := firstByteOnce(c, t)
		closeFn()
		if err != nil {
			fail(err)
			continue
		}
		news, sses = append(news, nd), append(sses, sd)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	r.Samples = len(news)
	if len(news) > 0 {
		slices.Sort(news)
		slices.Sort(sses)
		r.NewP50ms, r.NewP99ms = ms(pct(news, 50)), ms(pct(news, 99))
		r.SSEP50ms, r.SSEP99ms = ms(pct(sses, 50)), ms(pct(sses, 99))
	}
	return r
}

func firstByteOnce(c *http.Client, t target) (newConn, sse time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	resp, err := c.Do(newRequest(ctx, t, false))
	if err != nil {
		return 0, 0, err
	}
	newConn = time.Since(t0) // response headers in: the first byte of the answer
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET /small: status %d", resp.StatusCode)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.baseURL()+"/sse", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+t.token)
	t1 := time.Now()
	resp, err = c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET /sse: status %d", resp.StatusCode)
	}
	var got []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(got, []byte("\n\n")) {
		k, err := resp.Body.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			if err == io.EOF {
				err = errNoSSEEvent
			}
			return 0, 0, err
		}
	}
	return newConn, time.Since(t1), nil
}

// h3Run is one run of the comparison for both protocols, in the order
// given (alternated between runs).
func (b *bench) h3Run(run int, c *contender) {
	p := b.p
	pcs := rotate(b.h3Clients(c.t), run)
	for _, pc := range pcs {
		r := b.goRPS(pc, c.t, c.rssPID(), p.GoConns, p.GoConc, secs(p.GoWarm), secs(p.GoSec))
		b.res.add(mGoRPS, pc.col, r.RPS, r)
		b.res.add(mGoServerCPU, pc.col, r.ServerCPUPerReq, nil)
		b.res.add(mGoClientCPU, pc.col, r.ClientCPUPerReq, nil)
		logf("run %d %s  mcpgate (Go client) %8.0f req/s  server CPU %5.0f µs/req, client CPU %5.0f µs/req  errors %d %s",
			run+1, pc.name, r.RPS, r.ServerCPUPerReq, r.ClientCPUPerReq, r.Errors, r.FirstErr)
		if pc.name == "h2" && r.AltSvc == "" && r.Requests > 0 {
			logf("warning: the HTTP/2 responses carry no Alt-Svc header")
		}
	}
	for _, pc := range pcs {
		r := b.firstBytes(pc, c.t, p.FirstByteN)
		b.res.add(mFirstNewP50, pc.col, r.NewP50ms, r)
		b.res.add(mFirstNewP99, pc.col, r.NewP99ms, nil)
		b.res.add(mSSEFirstP50, pc.col, r.SSEP50ms, nil)
		b.res.add(mSSEFirstP99, pc.col, r.SSEP99ms, nil)
		logf("run %d %s  mcpgate first byte on a new connection p50 %.2f ms p99 %.2f ms; SSE first event p50 %.2f ms p99 %.2f ms (%d samples, %d errors %s)",
			run+1, pc.name, r.NewP50ms, r.NewP99ms, r.SSEP50ms, r.SSEP99ms, r.Samples, r.Errors, r.FirstError)
	}
}

// h3Rows are the rows of the HTTP/3 table.
var h3Rows = []metricRow{
	{mGoRPS, "requests/s, GET /small keep-alive, Go client", "req/s", true, 0},
	{mGoServerCPU, "mcpgate CPU per request, supervisor + worker", "µs", false, 1},
	{mGoClientCPU, "load generator CPU per request", "µs", false, 1},
	{mFirstNewP50, "first byte on a new connection, handshake included, p50", "ms", false, 2},
	{mFirstNewP99, "first byte on a new connection, handshake included, p99", "ms", false, 2},
	{mSSEFirstP50, "SSE first event on an open connection, p50", "ms", false, 2},
	{mSSEFirstP99, "SSE first event on an open connection, p99", "ms", false, 2},
}

// h3Markdown is the report's HTTP/3 section (empty when not measured).
func (r *results) h3Markdown() string {
	if _, ok := r.Metrics[mGoRPS]; !ok {
		if _, ok := r.Metrics[mFirstNewP50]; !ok {
			return ""
		}
	}
	p := r.b.p
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("\n## HTTP/3 versus HTTP/2 (mcpgate, same proxy)\n\n")
	w("mcpgate's instance above also has a quic socket (`[server] quic`, the UDP port of the same number as its https port), so both protocols reach the same proxy and worker with the same bearer token. ")
	w("h2load in Debian has no HTTP/3, so **both columns are measured by the same Go code** in mcpbench (pinned to core %s like wrk and h2load), which differs only in the transport: quic-go `http3.Transport` for HTTP/3, net/http's HTTP/2-only `Transport` for HTTP/2. ", loadCore)
	w("These HTTP/2 figures are therefore not comparable with the h2load row above (a C client). ")
	w("Requests/s: `GET /small` closed loop, %d concurrent requests over %d connections, %.0f s after %.1f s of warm-up; CPU per request from /proc (user + system) over the measured seconds. ", p.GoConc, p.GoConns, p.GoSec, p.GoWarm)
	w("First byte: %d samples one after another, each on a new connection (full handshake: TCP + TLS 1.3 or QUIC; no session resumption, no 0-RTT; through the supervisor's hand-off or its QUIC Initial routing): the time from the request to its response headers, then on that connection `GET /sse` to its first complete event.\n\n", p.FirstByteN)
	w("| figure | HTTP/3 | HTTP/2 | HTTP/3 / HTTP/2 |\n|---|--:|--:|--:|\n")
	for _, row := range h3Rows {
		if _, ok := r.Metrics[row.key]; !ok {
			continue
		}
		w("| %s (%s) | %s | %s | %s |\n", row.label, row.unit, r.cell(row.key, h3Col, row.digits), r.cell(row.key, h2Col, row.digits),
			ratio(r.med(row.key, h3Col), r.med(row.key, h2Col)))
	}
	w("\nAbove 1 is better for HTTP/3 on requests/s, worse on the others. With one core per side, the load generator's own cost counts: if the load core saturates, requests/s measures the Go client as much as mcpgate, so the client's CPU per request is shown beside mcpgate's (the server-side cost, independent of how fast the client is). The backend, on mcpgate's core, is not in mcpgate's CPU figure.\n")
	return b.String()
}

// h3Summary is the comparison on one line (the console summary).
func (r *results) h3Summary() string {
	f := func(key string, digits int) string {
		h3, h2 := r.med(key, h3Col), r.med(key, h2Col)
		return fmt.Sprintf("%s vs %s (×%s)", fmtNum(h3, digits), fmtNum(h2, digits), ratio(h3, h2))
	}
	return fmt.Sprintf("mcpgate HTTP/3 vs HTTP/2 (Go client): %s req/s; mcpgate CPU %s µs/req; first byte on a new connection p50 %s ms, p99 %s ms; SSE first event p50 %s ms",
		f(mGoRPS, 0), f(mGoServerCPU, 1), f(mFirstNewP50, 2), f(mFirstNewP99, 2), f(mSSEFirstP50, 2))
}

// clkTck is USER_HZ, 100 on every Linux architecture the bench runs on.
const clkTck = 100

// procCPU is the user + system CPU time of pid in seconds.
func procCPU(pid string) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	// After the comm: state(0) ppid(1) … utime(11) stime(12).
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / clkTck
}

func selfCPU() float64 { return procCPU("self") }

// treeCPU is the CPU time of root and its descendants (mcpgate: the
// supervisor and its workers; the workers do not exit during the run).
func treeCPU(root int) float64 {
	var sum float64
	for _, pid := range tree(root) {
		sum += procCPU(strconv.Itoa(pid))
	}
	return sum
}

// cpuMeter measures the CPU time (user + system) of root's process tree
// from delay after the call until the returned function is called, which
// also returns the length of that window. The tree is read at both ends,
// so processes that exit in between lose their share: none of the
// servers' processes does during a measured run.
func cpuMeter(root int, delay time.Duration) func() (float64, time.Duration) {
	var (
		c0 float64
		t0 time.Time
	)
	ready := make(chan struct{})
	go func() {
		time.Sleep(delay)
		c0, t0 = treeCPU(root), time.Now()
		close(ready)
	}()
	return func() (float64, time.Duration) {
		<-ready
		return treeCPU(root) - c0, time.Since(t0)
	}
}
