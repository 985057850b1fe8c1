package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// testSchedule is short, with steps far enough apart that a busy machine
// does not reorder them.
var testSchedule = wire.DrainSchedule{
	Timeout: 300 * time.Millisecond, FreshWait: 50 * time.Millisecond, H1Grace: 50 * time.Millisecond,
	GoAway: 150 * time.Millisecond, EndStreams: 300 * time.Millisecond, Close: 450 * time.Millisecond,
}

// slack is how late a step may run on a loaded machine; never early.
const slack = 250 * time.Millisecond

// drainRecorder records when each step of a drain ran, relative to its start.
type drainRecorder struct {
	mu    sync.Mutex
	start time.Time
	at    map[string]time.Duration
	// blockShutdown makes shutdown wait for its ctx, like a server with a
	// stream that never ends.
	blockShutdown bool
	// drainingAtShutdown: whether HTTP/1 responses said Connection: close
	// by the time GOAWAY went out.
	drainingAtShutdown bool
}

func (r *drainRecorder) mark(step string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, done := r.at[step]; !done {
		r.at[step] = time.Since(r.start)
	}
}

func (r *drainRecorder) get(step string) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.at[step]
	return d, ok
}

func newTestDrainer(t *testing.T, rec *drainRecorder) *drainer {
	d := newDrainer(testSchedule, slog.New(slog.NewTextHandler(io.Discard, nil)))
	rec.at = map[string]time.Duration{}
	d.steps = drainSteps{
		stopAccepting: func() { rec.mark("stopAccepting") },
		shutdown: func(ctx context.Context) {
			rec.drainingAtShutdown = d.draining.Load()
			rec.mark("goaway")
			if rec.blockShutdown {
				<-ctx.Done()
				rec.mark("close")
			}
		},
		endStreams: func() { rec.mark("endStreams") },
		finish:     func() { rec.mark("finish") },
	}
	return d
}

func runDrain(t *testing.T, d *drainer, rec *drainRecorder) {
	t.Helper()
	rec.start = time.Now()
	done := make(chan struct{})
	go func() { d.drain(); close(done) }()
	select {
	case <-done:
	case <-time.After(testSchedule.Close + 5*time.Second):
		t.Fatal("drain did not finish")
	}
}

func wantAt(t *testing.T, rec *drainRecorder, step string, offset time.Duration) {
	t.Helper()
	got, ok := rec.get(step)
	switch {
	case !ok:
		t.Errorf("%s never ran", step)
	case got < offset:
		t.Errorf("%s at %v, before its offset %v", step, got, offset)
	case got > offset+slack:
		t.Errorf("%s at %v, more than %v after its offset %v", step, got, slack, offset)
	}
}

// TestDrainQuietWorker: with no connection, GOAWAY and the exit follow at
// once; no stream is ended because none is open.
func TestDrainQuietWorker(t *testing.T) {
	rec := &drainRecorder{}
	d := newTestDrainer(t, rec)
	runDrain(t, d, rec)
	wantAt(t, rec, "stopAccepting", 0)
	wantAt(t, rec, "goaway", 0)
	wantAt(t, rec, "finish", 0)
	if _, ok := rec.get("endStreams"); ok {
		t.Error("streams ended although Shutdown returned before EndStreams")
	}
	if !rec.drainingAtShutdown {
		t.Error("HTTP/1 responses did not say Connection: close before Shutdown")
	}
}

// TestDrainFreshConnectionHoldsGoAway: a connection handed over just
// before the drain, which has not sent its first request, delays GOAWAY
// (which would refuse that request) until FreshWait at most.
func TestDrainFreshConnectionHoldsGoAway(t *testing.T) {
	rec := &drainRecorder{}
	d := newTestDrainer(t, rec)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	d.connState(a, http.StateNew)
	d.h1mu.Lock()
	delete(d.h1, a) // as an HTTP/2 connection: only "fresh" holds the drain
	d.h1mu.Unlock()
	runDrain(t, d, rec)
	wantAt(t, rec, "goaway", testSchedule.FreshWait)
}

// TestDrainFreshConnectionStartsRequest: once the fresh connection starts
// its request, GOAWAY no longer waits for FreshWait.
func TestDrainFreshConnectionStartsRequest(t *testing.T) {
	rec := &drainRecorder{}
	d := newTestDrainer(t, rec)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	d.connState(a, http.StateNew)
	d.h1mu.Lock()
	delete(d.h1, a)
	d.h1mu.Unlock()
	time.AfterFunc(10*time.Millisecond, func() { d.markUsed(a) })
	runDrain(t, d, rec)
	if got, _ := rec.get("goaway"); got >= testSchedule.FreshWait {
		t.Errorf("GOAWAY at %v: waited for FreshWait although the connection started its request", got)
	}
}

// TestDrainActiveHTTP1HoldsGoAway: an HTTP/1 connection with a request in
// flight holds Shutdown (which would close it under the client's next
// request) until the GoAway offset, while its responses say Connection:
// close.
func TestDrainActiveHTTP1HoldsGoAway(t *testing.T) {
	rec := &drainRecorder{}
	d := newTestDrainer(t, rec)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	d.connState(a, http.StateNew)
	d.markUsed(a)
	d.connState(a, http.StateActive)
	runDrain(t, d, rec)
	wantAt(t, rec, "goaway", testSchedule.GoAway)
	if !rec.drainingAtShutdown {
		t.Error("HTTP/1 responses did not say Connection: close before Shutdown")
	}
}

// TestDrainStreamEndedThenClosed: a stream that never ends is ended
// cleanly at EndStreams and cut at Close, both counted from the drain
// request, not from the end of the HTTP/1 wait: the supervisor's kill at
// Kill relies on the worker being done by Close.
func TestDrainStreamEndedThenClosed(t *testing.T) {
	rec := &drainRecorder{blockShutdown: true}
	d := newTestDrainer(t, rec)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	d.connState(a, http.StateNew)
	d.markUsed(a)
	d.connState(a, http.StateActive) // holds GOAWAY until GoAway, too
	runDrain(t, d, rec)
	wantAt(t, rec, "goaway", testSchedule.GoAway)
	wantAt(t, rec, "endStreams", testSchedule.EndStreams)
	wantAt(t, rec, "close", testSchedule.Close)
	wantAt(t, rec, "finish", testSchedule.Close)
}

// TestDrainOnce: a second drain request (SIGTERM after the supervisor's
// message) waits for the first instead of running the steps again.
func TestDrainOnce(t *testing.T) {
	rec := &drainRecorder{}
	d := newTestDrainer(t, rec)
	calls := 0
	d.steps.stopAccepting = func() { calls++ }
	rec.start = time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(d.drain)
	}
	wg.Wait()
	if calls != 1 {
		t.Errorf("stopAccepting ran %d times", calls)
	}
}

// TestDrainBusyHTTP2WaitsAfterAnnouncing: an HTTP/2 connection that keeps
// starting requests is told first that the worker shuts down (the
// announcing GOAWAY), and the final GOAWAY waits until it has started none
// for H1Grace: what it sent before it saw the announcement is read by then
// and answered, not discarded.
func TestDrainBusyHTTP2WaitsAfterAnnouncing(t *testing.T) {
	rec := &drainRecorder{}
	d := newTestDrainer(t, rec)
	cc := &captureConn{}
	c := &h2Conn{out: cc}
	c.finalGoAway.Store(-1)
	key := &tls.Conn{}
	d.h2.Store(key, c)
	// Requests keep arriving until 100ms into the drain, as from a client
	// that had not yet read the announcement.
	stop := time.Now().Add(100 * time.Millisecond)
	d.markUsed(key) // busy before the drain starts, not only once the goroutine runs
	go func() {
		for time.Now().Before(stop) {
			d.markUsed(key)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	runDrain(t, d, rec)
	if got := bytes.Join(cc.writes, nil); !bytes.Equal(got, announceGoAway) {
		t.Errorf("wrote %x before the final GOAWAY, want the announcing GOAWAY", got)
	}
	// Quiet from ~100ms, so the final GOAWAY comes H1Grace later, and no
	// later than GoAway.
	got, _ := rec.get("goaway")
	if got < 100*time.Millisecond+testSchedule.H1Grace-10*time.Millisecond || got > testSchedule.GoAway+slack {
		t.Errorf("final GOAWAY at %v; want about %v (quiet for H1Grace), at most %v", got, 100*time.Millisecond+testSchedule.H1Grace, testSchedule.GoAway)
	}
}
