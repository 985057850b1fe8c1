package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// target is one contender as the Go load generator reaches it.
type target struct {
	name   string
	tls    bool
	host   string // Host header and SNI, with the port: "localhost:8443"
	dial   string // address to connect to: "127.0.0.1:8443"
	token  string // bearer token, sent to every contender (same request bytes)
	direct bool   // the backend itself (h2c instead of h2 over TLS)
}

func (t target) sni() string {
	h, _, err := net.SplitHostPort(t.host)
	if err != nil {
		return t.host
	}
	return h
}

func (t target) baseURL() string {
	if t.tls {
		return "https://" + t.host
	}
	return "http://" + t.host
}

// transport returns an HTTP client transport speaking exactly h1 or h2 to
// t (h2c for a plain-HTTP target).
func (b *bench) transport(t target, h2 bool) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	addr := t.dial
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   4096,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: 30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		TLSClientConfig:       b.pki.clientTLS(t.sni()),
		Protocols:             new(http.Protocols),
	}
	switch {
	case h2 && t.tls:
		tr.Protocols.SetHTTP2(true)
		tr.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	case h2:
		tr.Protocols.SetUnencryptedHTTP2(true)
	default:
		tr.Protocols.SetHTTP1(true)
	}
	return tr
}

const mcpBody = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ping","arguments":{}}}`

func newRequest(ctx context.Context, t target, post bool) *http.Request {
	var req *http.Request
	if post {
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, t.baseURL()+"/mcp", strings.NewReader(mcpBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, t.baseURL()+"/small", nil)
	}
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	return req
}

// do sends one request and reads the whole answer; any error or a status
// other than 200 is a failure.
func do(c *http.Client, req *http.Request) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// latencyConns bounds the HTTP/1.1 connections of a fixed-rate run.
const latencyConns = 64

// latencyResult is a fixed-rate run: latencies measured from the moment
// each request was due (not when it was sent), so a stalled server cannot
// hide its stall by slowing the generator down (coordinated omission).
type latencyResult struct {
	Rate     int     `json:"rate"`
	Seconds  float64 `json:"seconds"`
	Sent     int     `json:"sent"`
	Errors   int     `json:"errors"`
	Dropped  int     `json:"dropped"` // not sent: too many in flight (saturated)
	P50us    float64 `json:"p50_us"`
	P90us    float64 `json:"p90_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	MaxUs    float64 `json:"max_us"`
	MeanUs   float64 `json:"mean_us"`
	FirstErr string  `json:"first_error,omitempty"`
}

// fixedRate sends rate requests per second for dur (after warm, not
// recorded) over keep-alive connections, h1 or h2, and records every
// latency (exact percentiles, no histogram rounding).
func (b *bench) fixedRate(t target, h2 bool, rate int, warm, dur time.Duration) latencyResult {
	tr := b.transport(t, h2)
	// At most latencyConns HTTP/1.1 connections, opened as needed: a stall
	// queues requests in the client (and the queueing is measured, from
	// each request's due time) instead of opening ever more connections
	// and handshakes that would bury the server.
	tr.MaxConnsPerHost = latencyConns
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// Requests still unanswered 5 s after the last was due are failures.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(warm+dur+5*time.Second))
	defer cancel()
	const maxInFlight = 2000
	var (
		mu       sync.Mutex
		lats     = make([]time.Duration, 0, int(float64(rate)*dur.Seconds())+16)
		errs     int
		firstErr string
		inflight atomic.Int64
		wg       sync.WaitGroup
	)
	interval := time.Second / time.Duration(rate)
	total := int((warm + dur) / interval)
	nWarm := int(warm / interval)
	dropped := 0
	start := time.Now().Add(20 * time.Millisecond)
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if inflight.Load() >= maxInFlight {
			if i >= nWarm {
				dropped++
			}
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		record := i >= nWarm
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			err := do(c, newRequest(ctx, t, false))
			lat := time.Since(due)
			if !record {
				return
			}
			mu.Lock()
			if err != nil {
				errs++
				if firstErr == "" {
					firstErr = err.Error()
				}
			} else {
				lats = append(lats, lat)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := latencyResult{Rate: rate, Seconds: dur.Seconds(), Sent: total - nWarm - dropped, Errors: errs, Dropped: dropped, FirstErr: firstErr}
	if len(lats) > 0 {
		slices.Sort(lats)
		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
		r.P50us, r.P90us, r.P99us = us(pct(lats, 50)), us(pct(lats, 90)), us(pct(lats, 99))
		r.P999us, r.MaxUs = us(pct(lats, 99.9)), us(lats[len(lats)-1])
		var sum time.Duration
		for _, l := range lats {
			sum += l
		}
		r.MeanUs = us(sum / time.Duration(len(lats)))
	}
	return r
}

// pct is the p-th percentile of sorted (nearest rank).
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// newConnResult: full TLS handshakes (no resumption), one request each.
type newConnResult struct {
	Conns       int     `json:"conns"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"`
	HandshakeUs float64 `json:"handshake_p50_us"`
	FirstErr    string  `json:"first_error,omitempty"`
	// The contender's server processes over the run, user + system, per
	// completed connection.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	CPUPerConnUs     float64 `json:"server_cpu_us_per_connection"`
	// The root process alone, per connection: for mcpgate the
	// supervisor's share (accept, peek, hand-off), the rest being the
	// worker's; for the others the same as CPUPerConnUs.
	RootCPUPerConnUs float64 `json:"root_cpu_us_per_connection"`
}

// newConns runs conc loops for dur, each: connect, full TLS 1.3 handshake
// (X25519, ECDSA P-256 certificate, ALPN http/1.1), one GET /small with
// Connection: close, read to the end, close. The CPU time of the process
// tree at root over the run, divided by the connections completed, is the
// server's cost per connection.
func (b *bench) newConns(t target, root, conc int, dur time.Duration) newConnResult {
	cfg := b.pki.clientTLS(t.sni(), "http/1.1")
	cfg.InsecureSkipVerify = true // the client's chain check is not what is measured
	reqBytes := []byte("GET /small HTTP/1.1\r\nHost: " + t.host + "\r\nUser-Agent: mcpbench\r\n" +
		"Authorization: Bearer " + t.token + "\r\nConnection: close\r\n\r\n")
	var (
		ok, bad  atomic.Int64
		mu       sync.Mutex
		hs       []time.Duration
		firstErr string
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	meter := cpuMeter(root, 0)
	root0 := procCPU(strconv.Itoa(root))
	start := time.Now()
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			for ctx.Err() == nil {
				h, err := oneConn(t, cfg, reqBytes)
				if ctx.Err() != nil && err != nil {
					break // cut off by the end of the run
				}
				if err != nil {
					bad.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					continue
				}
				ok.Add(1)
				mine = append(mine, h)
			}
			mu.Lock()
			hs = append(hs, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	cpu, _ := meter()
	rootCPU := procCPU(strconv.Itoa(root)) - root0
	r := newConnResult{Conns: int(ok.Load()), Errors: int(bad.Load()), Seconds: el, PerSecond: float64(ok.Load()) / el, FirstErr: firstErr,
		ServerCPUSeconds: cpu}
	if r.Conns > 0 {
		r.CPUPerConnUs = cpu * 1e6 / float64(r.Conns)
		r.RootCPUPerConnUs = rootCPU * 1e6 / float64(r.Conns)
	}
	if len(hs) > 0 {
		slices.Sort(hs)
		r.HandshakeUs = float64(pct(hs, 50).Nanoseconds()) / 1e3
	}
	return r
}

func oneConn(t target, cfg *tls.Config, req []byte) (time.Duration, error) {
	raw, err := net.DialTimeout("tcp", t.dial, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	var conn net.Conn = raw
	var hs time.Duration
	if t.tls {
		tc := tls.Client(raw, cfg)
		t0 := time.Now()
		if err := tc.Handshake(); err != nil {
			return 0, err
		}
		hs = time.Since(t0)
		conn = tc
	}
	if _, err := conn.Write(req); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return hs, nil
}

// sseStream is one open SSE stream of the load generator.
type sseStream struct {
	conn net.Conn
}

type sseOpenResult struct {
	Opened   int     `json:"opened"`
	Failed   int     `json:"failed"`
	Seconds  float64 `json:"open_seconds"`
	TTFBp50  float64 `json:"ttfb_p50_ms"`
	TTFBp99  float64 `json:"ttfb_p99_ms"`
	FirstErr string  `json:"first_error,omitempty"`
}

// openSSE opens n SSE streams to t, conc at a time, each on its own
// HTTP/1.1 connection (TLS unless t is the plain backend). Time to first
// byte is from the request written on an established connection to the
// first complete event read. The streams stay open until closeSSE.
func (b *bench) openSSE(t target, n, conc int, limit time.Duration) ([]*sseStream, sseOpenResult) {
	cfg := b.pki.clientTLS(t.sni(), "http/1.1")
	cfg.InsecureSkipVerify = true
	req := []byte("GET /sse HTTP/1.1\r\nHost: " + t.host + "\r\nUser-Agent: mcpbench\r\nAccept: text/event-stream\r\n" +
		"Authorization: Bearer " + t.token + "\r\n\r\n")
	var (
		mu       sync.Mutex
		streams  = make([]*sseStream, 0, n)
		ttfb     = make([]time.Duration, 0, n)
		failed   int
		firstErr string
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(limit)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && time.Now().Before(deadline) {
				s, d, err := openOne(t, cfg, req)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					streams = append(streams, s)
					ttfb = append(ttfb, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r := sseOpenResult{Opened: len(streams), Failed: failed + max(0, n-len(streams)-failed), Seconds: time.Since(start).Seconds(), FirstErr: firstErr}
	if len(ttfb) > 0 {
		slices.Sort(ttfb)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
		r.TTFBp50, r.TTFBp99 = ms(pct(ttfb, 50)), ms(pct(ttfb, 99))
	}
	return streams, r
}

var errNoEvent = errors.New("stream ended before the first event")

func openOne(t target, cfg *tls.Config, req []byte) (*sseStream, time.Duration, error) {
	raw, err := net.DialTimeout("tcp", t.dial, 10*time.Second)
	if err != nil {
		return nil, 0, err
	}
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	var conn net.Conn = raw
	if t.tls {
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, 0, err
		}
		conn = tc
	}
	t0 := time.Now()
	if _, err := conn.Write(req); err != nil {
		conn.Close()
		return nil, 0, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var got []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(got, []byte("\n\n")) {
		k, err := resp.Body.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			conn.Close()
			if err == io.EOF {
				err = errNoEvent
			}
			return nil, 0, err
		}
	}
	d := time.Since(t0)
	raw.SetDeadline(time.Time{})
	return &sseStream{conn: conn}, d, nil
}

func closeSSE(ss []*sseStream) {
	for _, s := range ss {
		s.conn.Close()
	}
}

// mixedLoad is the load kept on a gateway while it reloads: workers
// goroutines each cycling through GET /small and POST /mcp over HTTP/1.1
// and HTTP/2 keep-alive connections, paced so the load stays well below
// saturation. Every error and every status other than 200 is a failure.
type mixedLoad struct {
	Requests int64    `json:"requests"`
	Failed   int64    `json:"failed"`
	Errors   []string `json:"errors,omitempty"`
}

func (b *bench) runMixed(ctx context.Context, t target, workers int, pace time.Duration) *mixedLoad {
	h1 := b.transport(t, false)
	h2 := b.transport(t, true)
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	clients := []*http.Client{{Transport: h1, Timeout: 30 * time.Second}, {Transport: h2, Timeout: 30 * time.Second}}
	var (
		res mixedLoad
		mu  sync.Mutex
		wg  sync.WaitGroup
		n   atomic.Int64
	)
	for w := range workers {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i++ {
				c := clients[i%2]
				post := (i/2)%2 == 1
				req := newRequest(context.Background(), t, post)
				var reused bool
				var idle time.Duration
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					GotConn: func(ci httptrace.GotConnInfo) { reused, idle = ci.Reused, ci.IdleTime },
				}))
				err := do(c, req)
				n.Add(1)
				if err != nil {
					err = fmt.Errorf("%w (connection reused %v, idle %v before)", err, reused, idle.Round(time.Microsecond))
					mu.Lock()
					res.Failed++
					if len(res.Errors) < 5 {
						proto := []string{"h1", "h2"}[i%2]
						res.Errors = append(res.Errors, fmt.Sprintf("%s post=%v: %v", proto, post, err))
					}
					mu.Unlock()
				}
				time.Sleep(pace)
			}
		})
	}
	wg.Wait()
	res.Requests = n.Load()
	return &res
}
