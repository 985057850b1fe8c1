package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// The load generator of the reload and upgrade tests: request loops
// (GET and a JSON POST to an echo backend, each loop on its own client and
// so its own connections) and SSE streams from a ticker backend that
// resume with Last-Event-ID. Any transport error, unexpected status or
// wrong body is a failure; a stream may end early only cleanly, at an event
// boundary, and must then resume with the very next event.

// maxLoad bounds a load run even if the test never stops it.
const maxLoad = 10 * time.Minute

// loadTarget is one proxy under load.
type loadTarget struct {
	host    string // https://host/...
	backend string // the echo backend's name behind it
}

type loadConfig struct {
	targets []loadTarget
	// Per target and protocol (h2, http/1.1): request loops and streams.
	requesters, streams int
	pause               time.Duration // between two requests of a loop
	// newConnEvery > 0: a loop drops its idle connections every that many
	// requests, so new connections are made all the time.
	newConnEvery int
	sseStep      int // events per short stream session; long ones are 10 times that
}

// load is a running load generator.
type load struct {
	g   *harness.Gateway
	cfg loadConfig

	stop     chan struct{}
	stopped  atomic.Bool
	ctx      context.Context // canceled at stop: ends the streams
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	progress []*atomic.Int64 // per request loop: successful requests

	mu       sync.Mutex
	ok       map[string]int // guarded by mu; successful requests by "proto method"
	failures []string       // guarded by mu
	opened   int            // guarded by mu; stream responses received
	complete int            // guarded by mu; streams that sent their last event and ended
	early    int            // guarded by mu; streams ended cleanly before it (at a drain)
	events   int            // guarded by mu; events received in order
}

// loadProtos are the client flavours of the load: name and resp.Proto.
var loadProtos = []protoCase{
	{"h2", harness.ClientConfig{}, "HTTP/2.0"},
	{"http1", harness.ClientConfig{HTTP1Only: true}, "HTTP/1.1"},
}

func startLoad(t *testing.T, g *harness.Gateway, cfg loadConfig) *load {
	l := &load{g: g, cfg: cfg, stop: make(chan struct{}), ok: map[string]int{}}
	l.ctx, l.cancel = context.WithTimeout(context.Background(), maxLoad)
	for _, tg := range cfg.targets {
		for _, pc := range loadProtos {
			for i := range cfg.requesters {
				c := g.Client(pc.cfg)
				n := new(atomic.Int64)
				l.progress = append(l.progress, n)
				l.wg.Add(1)
				go l.requester(fmt.Sprintf("%s-%s-%d", tg.backend, pc.name, i), c, pc, tg, n)
			}
			for i := range cfg.streams {
				c := g.Client(pc.cfg)
				l.wg.Add(1)
				go l.streamer(fmt.Sprintf("%s-%s-sse%d", tg.backend, pc.name, i), c, pc, tg)
			}
		}
	}
	// Bounded even if the test fails before stopping it.
	t.Cleanup(func() { l.halt(t) })
	return l
}

func (l *load) fail(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, a...))
}

// halt stops the load and waits (bounded) for every loop.
func (l *load) halt(t *testing.T) {
	if l.stopped.Swap(true) {
		return
	}
	close(l.stop)
	l.cancel()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("load loops still running 30s after stop")
	}
}

func (l *load) requester(name string, c *http.Client, pc protoCase, tg loadTarget, progress *atomic.Int64) {
	defer l.wg.Done()
	tr := c.Transport.(*http.Transport)
	deadline := time.Now().Add(maxLoad)
	for i := 0; time.Now().Before(deadline); i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		if l.cfg.newConnEvery > 0 && i%l.cfg.newConnEvery == 0 {
			tr.CloseIdleConnections()
		}
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		if err := loadRequest(c, pc, tg, method, fmt.Sprintf("/load/%s/%d", name, i)); err != nil {
			l.fail("%s %s %s #%d: %v", pc.name, method, tg.host, i, err)
		} else {
			progress.Add(1)
			l.mu.Lock()
			l.ok[pc.name+" "+method]++
			l.mu.Unlock()
		}
		if l.cfg.pause > 0 {
			select {
			case <-l.stop:
				return
			case <-time.After(l.cfg.pause):
			}
		}
	}
}

// loadRequest does one request and checks the echo backend's answer.
func loadRequest(c *http.Client, pc protoCase, tg loadTarget, method, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	payload := ""
	if method == http.MethodPost {
		payload = fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"method":"ping"}`, path)
		body = strings.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+tg.host+path, body)
	if err != nil {
		return err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	var conn connTrace
	req = conn.trace(req)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w (%s)", err, conn.String())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading body (%s %d): %w", resp.Proto, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d (%s), body %.200q", resp.StatusCode, resp.Proto, b)
	}
	if resp.Proto != pc.proto {
		return fmt.Errorf("protocol %s, want %s", resp.Proto, pc.proto)
	}
	var er backends.EchoRequest
	if err := json.Unmarshal(b, &er); err != nil {
		return fmt.Errorf("not an echo answer: %v: %.200q", err, b)
	}
	if er.Backend != tg.backend || er.Method != method || er.Path != path || er.Body != payload {
		return fmt.Errorf("echo answer %s %s %s body %q from %q, want %s %s body %q from %q",
			er.Method, er.Path, er.Proto, er.Body, er.Backend, method, path, payload, tg.backend)
	}
	return nil
}

// connTrace remembers the connection a request went out on, for failure
// messages that can be matched with the gateway's log.
type connTrace struct {
	mu   sync.Mutex
	info []string // guarded by mu; one entry per connection tried
}

func (ct *connTrace) trace(req *http.Request) *http.Request {
	return req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) {
			s := "conn " + ci.Conn.LocalAddr().String()
			if ci.Reused {
				s += fmt.Sprintf(" reused, idle %v", ci.IdleTime.Round(time.Microsecond))
			} else {
				s += " new"
			}
			ct.mu.Lock()
			ct.info = append(ct.info, s)
			ct.mu.Unlock()
		},
	}))
}

func (ct *connTrace) String() string {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if len(ct.info) == 0 {
		return "no connection"
	}
	return strings.Join(ct.info, "; then ")
}

// streamer keeps one SSE stream going: sessions of sseStep events; a
// session ended early is resumed with Last-Event-ID.
func (l *load) streamer(name string, c *http.Client, pc protoCase, tg loadTarget) {
	defer l.wg.Done()
	var last, until, sessions int
	deadline := time.Now().Add(maxLoad)
	for time.Now().Before(deadline) && !l.stopped.Load() {
		if last == until {
			// Short sessions complete before a drain deadline can end them,
			// long ones outlive it.
			until = last + l.cfg.sseStep
			if sessions%2 == 1 {
				until = last + 10*l.cfg.sseStep
			}
			sessions++
		}
		err := l.streamOnce(c, pc, tg, &last, until)
		if err != nil && !l.stopped.Load() {
			l.fail("%s stream %s at event %d: %v", pc.name, name, last, err)
			select { // no tight loop against a broken gateway
			case <-l.stop:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// streamOnce opens a stream resuming after *last and reads it to its end.
// A clean end counts as complete (it reached until) or early; anything else
// is an error.
func (l *load) streamOnce(c *http.Client, pc protoCase, tg loadTarget, last *int, until int) error {
	req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, "https://"+tg.host+"/events?until="+strconv.Itoa(until), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.Itoa(*last))
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("status %d (%s), body %.200q", resp.StatusCode, resp.Proto, b)
	}
	if resp.Proto != pc.proto {
		return fmt.Errorf("protocol %s, want %s", resp.Proto, pc.proto)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("Content-Type %q", ct)
	}
	l.mu.Lock()
	l.opened++
	l.mu.Unlock()
	br := bufio.NewReader(resp.Body)
	for n := 0; n <= until; n++ { // bounded: at most until events
		ev, partial, err := readEventStrict(br)
		if err != nil {
			if errors.Is(err, io.EOF) && !partial {
				l.mu.Lock()
				if *last == until {
					l.complete++
				} else {
					l.early++
				}
				l.mu.Unlock()
				return nil
			}
			if partial {
				return fmt.Errorf("stream broke in the middle of an event: %w", err)
			}
			return err
		}
		want := *last + 1
		if ev.ID != strconv.Itoa(want) || ev.Data != "tick "+strconv.Itoa(want) {
			return fmt.Errorf("event id %q data %q, want id %d (events lost or repeated)", ev.ID, ev.Data, want)
		}
		*last = want
		l.mu.Lock()
		l.events++
		l.mu.Unlock()
	}
	return fmt.Errorf("more events than the %d asked for", until)
}

// readEventStrict reads one event; partial reports whether it had read any
// part of an event when err occurred (a stream cut mid-event).
func readEventStrict(r *bufio.Reader) (ev sseEvent, partial bool, err error) {
	var data []string
	for n := 0; n < 1000; n++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, partial || line != "", err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if !partial {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, false, nil
		case strings.HasPrefix(line, ":"):
			// comment
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case strings.HasPrefix(line, "event:"):
			ev.Event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "id:"):
			ev.ID = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		}
		partial = true
	}
	return ev, partial, errors.New("event too long")
}

// waitProgress waits until every request loop has completed at least n
// more requests than when it was called, failing the test after timeout.
func (l *load) waitProgress(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	base := make([]int64, len(l.progress))
	for i, p := range l.progress {
		base[i] = p.Load()
	}
	deadline := time.Now().Add(timeout)
	for {
		behind := 0
		for i, p := range l.progress {
			if p.Load()-base[i] < n {
				behind++
			}
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d request loops did not complete %d requests within %v; failures so far:\n%s",
				behind, len(l.progress), n, timeout, l.failureText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStreams waits until cond holds for the stream counts.
func (l *load) waitStreams(t *testing.T, timeout time.Duration, what string, cond func(opened, complete, early int) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		ok := cond(l.opened, l.complete, l.early)
		l.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams: not %s within %v: %s; failures:\n%s", what, timeout, l.summary(), l.failureText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *load) failureText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	const show = 30
	f := l.failures
	more := ""
	if len(f) > show {
		more = fmt.Sprintf("\n… and %d more", len(f)-show)
		f = f[:show]
	}
	return strings.Join(f, "\n") + more
}

// summary is the counts seen so far, one line.
func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keys []string
	total := 0
	for k, n := range l.ok {
		keys = append(keys, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	slices.Sort(keys)
	return fmt.Sprintf("requests ok %d (%s), failed %d; streams opened %d, completed %d, ended at drain %d; events %d",
		total, strings.Join(keys, ", "), len(l.failures), l.opened, l.complete, l.early, l.events)
}

// check reports the failures (there must be none) and that the load ran.
func (l *load) check(t *testing.T) {
	t.Helper()
	t.Logf("load: %s", l.summary())
	l.mu.Lock()
	nfail := len(l.failures)
	var ok int
	for _, n := range l.ok {
		ok += n
	}
	opened := l.opened
	l.mu.Unlock()
	if nfail > 0 {
		t.Errorf("%d failures under load:\n%s", nfail, l.failureText())
	}
	if ok == 0 {
		t.Errorf("no successful request: the load did not run")
	}
	if l.cfg.streams > 0 && opened == 0 {
		t.Errorf("no stream was opened")
	}
}
