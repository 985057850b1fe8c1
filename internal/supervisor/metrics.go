package supervisor

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/buildinfo"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/quicroute"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// workerMetrics keeps the workers' counters for /metrics: the last
// snapshot of each live worker (in its proc), and per proxy the totals of
// the workers that have exited, so that a counter never goes down when a
// worker is restarted or replaced by a reload. It also holds the
// supervisor's own counters.
type workerMetrics struct {
	mu       sync.Mutex
	live     map[*proc]struct{}       // guarded by mu
	base     map[string]*wire.Metrics // guarded by mu; by proxy, of exited workers
	restarts map[string]uint64        // guarded by mu; by proxy
	reloads  map[string]uint64        // guarded by mu; by result
	reloadH  durationHistogram        // guarded by mu
}

func newWorkerMetrics() *workerMetrics {
	return &workerMetrics{live: map[*proc]struct{}{}, base: map[string]*wire.Metrics{}, restarts: map[string]uint64{}, reloads: map[string]uint64{},
		reloadH: durationHistogram{bounds: reloadBuckets, counts: make([]uint64, len(reloadBuckets))}}
}

// reloadBuckets: a reload starts and awaits fresh workers, from a fraction
// of a second up to the readiness timeout.
var reloadBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

type durationHistogram struct {
	bounds []float64
	counts []uint64 // cumulative
	count  uint64
	sum    float64
}

func (h *durationHistogram) observe(s float64) {
	for i, b := range h.bounds {
		if s <= b {
			h.counts[i]++
		}
	}
	h.count++
	h.sum += s
}

// add starts following p.
func (m *workerMetrics) add(p *proc) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.live[p] = struct{}{}
	m.mu.Unlock()
}

// retire moves an exited worker's counters into its proxy's totals, and
// counts a restart when nobody had asked it to exit.
func (m *workerMetrics) retire(p *proc) {
	if m == nil {
		return
	}
	p.mu.Lock()
	last := p.stats.Metrics
	p.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live[p]; !ok {
		return
	}
	delete(m.live, p)
	b := m.base[p.name]
	if b == nil {
		b = &wire.Metrics{}
		m.base[p.name] = b
	}
	b.Add(last)
	if !p.drainAsked.Load() {
		m.restarts[p.name]++
	}
}

// reloaded counts a reload: "ok", "failed" (a proxy's new worker did not
// start; the old one serves on) or "rejected" (configuration errors).
func (m *workerMetrics) reloaded(res ReloadResult, took time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	switch {
	case len(res.Errors) > 0:
		result = "rejected"
	case !res.OK:
		result = "failed"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reloads[result]++
	m.reloadH.observe(took.Seconds())
}

// totals are every proxy's counters (exited workers plus live ones) and
// gauges (live ones).
func (m *workerMetrics) totals() map[string]*wire.Metrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*wire.Metrics{}
	get := func(name string) *wire.Metrics {
		t := out[name]
		if t == nil {
			t = &wire.Metrics{}
			out[name] = t
		}
		return t
	}
	for name, b := range m.base {
		get(name).Add(b)
	}
	for p := range m.live {
		p.mu.Lock()
		st := p.stats.Metrics
		p.mu.Unlock()
		t := get(p.name)
		t.Add(st)
		t.AddGauges(st)
	}
	return out
}

// collector builds the metrics at scrape time from the supervisor's state:
// no registered metric to keep in step with workers coming and going.
type collector struct {
	s *Supervisor
}

var (
	descBuildInfo      = newDesc("mcpgate_build_info", "The running supervisor's build; always 1.", "gauge", "version", "build_id")
	descWorkers        = newDesc("mcpgate_workers", "Worker processes by proxy and state.", "gauge", "proxy", "state")
	descRestarts       = newDesc("mcpgate_worker_restarts_total", "Workers that exited without being asked to (a crash, a failed start); the slot starts another.", "counter", "proxy")
	descReloads        = newDesc("mcpgate_reloads_total", "Reloads by result: ok, failed (a proxy kept its old worker), rejected (configuration errors).", "counter", "result")
	descReloadDuration = newDesc("mcpgate_reload_duration_seconds", "How long reloads took.", "histogram")
	descRequests       = newDesc("mcpgate_requests_total", "Finished HTTP requests by status code (a class such as 2xx for unusual codes), method and protocol.", "counter", "proxy", "code", "method", "protocol")
	descDuration       = newDesc("mcpgate_request_duration_seconds", "Request durations, from the request head to the end of the response.", "histogram", "proxy")
	descUpstreamErrors = newDesc("mcpgate_upstream_errors_total", "Requests the backend failed, by kind: connect, timeout, reset, other.", "counter", "proxy", "kind")
	descOpenStreams    = newDesc("mcpgate_open_streams", "Open streaming responses (SSE) and WebSocket connections to the backend.", "gauge", "proxy")
	descConnections    = newDesc("mcpgate_connections", "Open client connections by protocol (h1, h2, h3).", "gauge", "proxy", "protocol")
	descTokensIssued   = newDesc("mcpgate_oauth_tokens_issued_total", "Access tokens issued by the token endpoint, by grant type.", "counter", "proxy", "grant_type")
	descOAuthDenied    = newDesc("mcpgate_oauth_denied_total", "OAuth error answers of the authorization server, by error code.", "counter", "proxy", "reason")
	descBearerRejected = newDesc("mcpgate_bearer_rejected_total", "Requests the bearer check refused, by reason.", "counter", "proxy", "reason")
	descHandoffs       = newDesc("mcpgate_handoffs_total", "Accepted connections by routing result: delivered, unknown_host, failed, rejected (before routing).", "counter", "result")
	descQUICRouted     = newDesc("mcpgate_quic_packets_routed_total", "QUIC datagrams by routing result.", "counter", "result")
	descCertExpiry     = newDesc("mcpgate_certificate_expiry_timestamp_seconds", "When each ACME certificate expires (Unix time).", "gauge", "name")
)

func (c collector) collect(e *exposition) {
	s := c.s
	m := s.metrics
	e.add(descBuildInfo, 1, buildinfo.Version(), buildinfo.ID())

	st := s.Status()
	workers := map[[2]string]float64{}
	certs := map[string]time.Time{}
	for _, w := range st.Workers {
		workers[[2]string{w.Proxy, w.State}]++
		for _, cert := range w.Certificates {
			// The newest worker's view wins when two report one name.
			if !cert.NotAfter.IsZero() && cert.NotAfter.After(certs[cert.Name]) {
				certs[cert.Name] = cert.NotAfter
			}
		}
	}
	for k, n := range workers {
		e.add(descWorkers, n, k[0], k[1])
	}
	for name, t := range certs {
		e.add(descCertExpiry, float64(t.Unix()), name)
	}

	m.mu.Lock()
	for proxy, n := range m.restarts {
		e.add(descRestarts, float64(n), proxy)
	}
	for result, n := range m.reloads {
		e.add(descReloads, float64(n), result)
	}
	e.addHistogram(descReloadDuration, histSample{bounds: slices.Clone(m.reloadH.bounds), counts: slices.Clone(m.reloadH.counts),
		count: m.reloadH.count, sum: m.reloadH.sum})
	m.mu.Unlock()

	for proxy, t := range m.totals() {
		for _, r := range t.Requests {
			e.add(descRequests, float64(r.N), proxy, r.Code, r.Method, r.Protocol)
		}
		if h := t.Duration; h != nil && len(h.Bounds) == len(h.Counts) {
			e.addHistogram(descDuration, histSample{bounds: h.Bounds, counts: h.Counts, count: h.Count, sum: h.Sum}, proxy)
		}
		counters(e, descUpstreamErrors, proxy, t.UpstreamErrors)
		counters(e, descTokensIssued, proxy, t.TokensIssued)
		counters(e, descOAuthDenied, proxy, t.OAuthDenied)
		counters(e, descBearerRejected, proxy, t.BearerRejected)
		e.add(descOpenStreams, float64(t.OpenStreams), proxy)
		for _, proto := range []string{"h1", "h2", "h3"} {
			e.add(descConnections, float64(t.Connections[proto]), proxy, proto)
		}
	}

	for result, n := range s.disp.Handoffs() {
		e.add(descHandoffs, float64(n), result)
	}
	if s.quic != nil {
		for i := range s.quic.routed {
			e.add(descQUICRouted, float64(s.quic.routed[i].Load()), quicResults[i])
		}
	}
}

func counters(e *exposition, d *metricDesc, proxy string, m map[string]uint64) {
	for label, n := range m {
		e.add(d, float64(n), proxy, label)
	}
}

// QUIC routing results, for mcpgate_quic_packets_routed_total.
const (
	quicForwarded     = iota // to the worker its connection id names
	quicNewConnection        // a new connection, bound to the worker of its server name
	quicRefused              // a new connection no worker serves
	quicPending              // held until its ClientHello is complete
	quicDropped              // malformed, unknown or over the buffer limit
)

var quicResults = [...]string{"forwarded", "new_connection", "refused", "pending", "dropped"}

// countRoute counts one datagram's routing result.
func (q *quicPath) countRoute(a quicroute.Action) {
	switch a {
	case quicroute.Forward:
		q.routed[quicForwarded].Add(1)
	case quicroute.Pending:
		q.routed[quicPending].Add(1)
	case quicroute.Drop:
		q.routed[quicDropped].Add(1)
	}
	// NewConnection is counted by its outcome: bound or refused.
}

// quicCounters is embedded in quicPath.
type quicCounters struct {
	routed [len(quicResults)]atomic.Uint64
}

// serveMetrics serves /metrics on [server] metrics until ctx ends. Only the
// supervisor listens; a failure to listen is logged and the gateway serves
// on without metrics (they are not worth an outage).
func (s *Supervisor) serveMetrics(ctx context.Context, addr string) {
	if addr == "" {
		return
	}
	l, err := listenMetrics(addr)
	if err != nil {
		s.log.Error("metrics: cannot listen; serving without /metrics", "addr", addr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var e exposition
		collector{s}.collect(&e)
		var b bytes.Buffer
		e.write(&b)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(b.Bytes())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("serving metrics", "addr", addr)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics server", "err", err)
	}
}

// listenMetrics binds [server] metrics. SO_REUSEPORT and a unix socket
// that stays on disk when closed let the next binary of an upgrade bind
// while this one still serves.
func listenMetrics(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, config.MetricsUnixPrefix); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, err
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		// The service's group may scrape it; nobody else.
		if err := os.Chmod(path, 0o660); err != nil {
			l.Close()
			return nil, err
		}
		return l, nil
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}
