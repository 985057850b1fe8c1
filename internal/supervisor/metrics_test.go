package supervisor

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mcpgate/mcpgate/internal/activation"
	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/dispatch"
	"github.com/mcpgate/mcpgate/internal/wire"
)

func statsProc(name string, requests uint64) *proc {
	p := &proc{name: name}
	p.stats.Metrics = &wire.Metrics{
		Requests:    []wire.RequestCount{{Code: "200", Method: "POST", Protocol: "h2", N: requests}},
		Duration:    &wire.Histogram{Bounds: wire.DurationBuckets, Counts: make([]uint64, len(wire.DurationBuckets)), Count: requests, Sum: 1},
		OpenStreams: 1,
		Connections: map[string]int64{"h2": 1},
	}
	return p
}

func requestsOf(t map[string]*wire.Metrics, proxy string) uint64 {
	var n uint64
	if m := t[proxy]; m != nil {
		for _, r := range m.Requests {
			n += r.N
		}
	}
	return n
}

// TestCountersSurviveWorkers: the totals of a worker that exits stay in its
// proxy's counters; its gauges go; a death counts as a restart, a drain
// does not.
func TestCountersSurviveWorkers(t *testing.T) {
	m := newWorkerMetrics()
	p1 := statsProc("alpha", 5)
	m.add(p1)
	if n := requestsOf(m.totals(), "alpha"); n != 5 {
		t.Fatalf("live worker: %d requests, want 5", n)
	}
	m.retire(p1) // died
	p2 := statsProc("alpha", 2)
	m.add(p2)
	tot := m.totals()
	if n := requestsOf(tot, "alpha"); n != 7 {
		t.Errorf("after a restart: %d requests, want 7", n)
	}
	if tot["alpha"].OpenStreams != 1 || tot["alpha"].Connections["h2"] != 1 || tot["alpha"].Duration.Count != 7 {
		t.Errorf("gauges/histogram after a restart: %+v", tot["alpha"])
	}
	p2.drainAsked.Store(true)
	m.retire(p2) // replaced by a reload
	m.retire(p2) // twice: no double count
	if n := requestsOf(m.totals(), "alpha"); n != 7 {
		t.Errorf("after a reload: %d requests, want 7", n)
	}
	if m.restarts["alpha"] != 1 {
		t.Errorf("restarts %d, want 1", m.restarts["alpha"])
	}
	m.reloaded(ReloadResult{OK: true}, time.Second)
	m.reloaded(ReloadResult{Errors: []string{"x"}}, time.Millisecond)
	if m.reloads["ok"] != 1 || m.reloads["rejected"] != 1 || m.reloadH.count != 2 {
		t.Errorf("reloads %v, histogram %+v", m.reloads, m.reloadH)
	}
}

// TestServeMetrics: /metrics on a unix socket (mode 0660), in the text
// format, with the workers' counters and the supervisor's own.
func TestServeMetrics(t *testing.T) {
	s := &Supervisor{
		log:      discardLog(),
		sockets:  &activation.Sockets{},
		slots:    map[string]*slot{},
		draining: map[*slot]struct{}{},
		disp:     &dispatch.Dispatcher{Log: discardLog()},
		metrics:  newWorkerMetrics(),
	}
	s.metrics.add(statsProc("alpha", 3))
	s.metrics.reloaded(ReloadResult{OK: true}, 300*time.Millisecond)
	// A ready worker with an ACME certificate, for mcpgate_workers and the
	// expiry.
	expiry := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	w := newProc("beta", &fakeWorker{pid: 4242, exitCh: make(chan struct{})}, wire.Spec{}, nil, time.Now(), discardLog())
	w.stats.Certificates = []certstatus.Cert{{Name: "beta.example.com", State: "valid", NotAfter: expiry}}
	sl := newSlot(wire.Spec{Proxy: &config.Proxy{Name: "beta"}}, nil, discardLog())
	sl.cur, sl.last = w, w
	s.slots["beta"] = sl

	sock := filepath.Join(t.TempDir(), "metrics.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.serveMetrics(ctx, "unix:"+sock) }()
	defer func() { cancel(); <-done }()

	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	var res *http.Response
	var err error
	for range 100 {
		if res, err = c.Get("http://metrics/metrics"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, %v; want 0660", fi.Mode().Perm(), err)
	}
	fams := parseMetrics(t, res.Body)
	if v := value(fams, "mcpgate_requests_total", map[string]string{"proxy": "alpha", "code": "200", "method": "POST", "protocol": "h2"}); v != 3 {
		t.Errorf("requests_total = %v, want 3", v)
	}
	if v := value(fams, "mcpgate_build_info", nil); v != 1 {
		t.Errorf("build_info = %v", v)
	}
	if v := value(fams, "mcpgate_reloads_total", map[string]string{"result": "ok"}); v != 1 {
		t.Errorf("reloads_total{ok} = %v", v)
	}
	if v := value(fams, "mcpgate_connections", map[string]string{"proxy": "alpha", "protocol": "h2"}); v != 1 {
		t.Errorf("connections{h2} = %v", v)
	}
	if h := fams["mcpgate_request_duration_seconds"]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() != 3 {
		t.Errorf("request_duration_seconds: %v", h)
	}
	if v := value(fams, "mcpgate_workers", map[string]string{"proxy": "beta", "state": "ready"}); v != 1 {
		t.Errorf("workers{beta,ready} = %v, want 1", v)
	}
	if v := value(fams, "mcpgate_certificate_expiry_timestamp_seconds", map[string]string{"name": "beta.example.com"}); v != float64(expiry.Unix()) {
		t.Errorf("certificate expiry = %v, want %d", v, expiry.Unix())
	}
	if v := value(fams, "mcpgate_handoffs_total", map[string]string{"result": "delivered"}); v != 0 {
		t.Errorf("handoffs_total{delivered} = %v", v)
	}
}

func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value is the value of the first sample of name whose labels include
// want; -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
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
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestListenMetricsTwice: during an upgrade both supervisors hold the
// metrics address for a moment; the second bind must not fail.
func TestListenMetricsTwice(t *testing.T) {
	a, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := listenMetrics(a.Addr().String())
	if err != nil {
		t.Fatalf("second bind of %s: %v", a.Addr(), err)
	}
	b.Close()

	sock := filepath.Join(t.TempDir(), "m.sock")
	u1, err := listenMetrics("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := listenMetrics("unix:" + sock)
	if err != nil {
		t.Fatalf("second bind of %s: %v", sock, err)
	}
	u1.Close() // the old supervisor's close leaves the new socket in place
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("after the old listener closed: %v", err)
	}
	u2.Close()
}
