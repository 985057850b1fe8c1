package worker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgate/mcpgate/internal/metrics"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// drainer owns what a worker's drain needs to know about its connections,
// and runs the drain by one schedule (wire.DrainSchedule, shared with the
// supervisor, which kills the worker at its Kill offset). The Worker embeds
// it: the request handlers call markUsed and read draining.
type drainer struct {
	sched wire.DrainSchedule
	log   *slog.Logger
	steps drainSteps

	conns    atomic.Int64 // open client connections
	fresh    atomic.Int64 // connections that have not started a request yet
	newConns sync.Map     // net.Conn → struct{}: the fresh ones
	// draining is set once the drain waits for HTTP/1 connections to go
	// quiet: from then on HTTP/1 responses carry Connection: close.
	draining atomic.Bool

	h1mu sync.Mutex
	h1   map[net.Conn]h1conn // guarded by h1mu; connections not known to be HTTP/2
	h2   sync.Map            // *tls.Conn → *h2Conn: the HTTP/2 connections (goaway.go)
	// discarded counts HTTP/2 streams the final GOAWAY dropped unanswered:
	// the race the announcing GOAWAY exists to close.
	discarded atomic.Int64

	once    sync.Once
	drained chan struct{} // closed when the drain has finished
}

// drainSteps are the worker's parts of a drain, in the order run calls
// them. They are functions so the schedule can be tested without servers.
type drainSteps struct {
	// stopAccepting closes the hand-off listeners and returns once every
	// connection queued before the drain was accepted (so the servers'
	// Shutdown waits for those too).
	stopAccepting func()
	// shutdown sends HTTP/2 (and HTTP/3) GOAWAY, closes idle connections
	// and waits for the requests in flight, until ctx ends; it then closes
	// whatever is left.
	shutdown func(ctx context.Context)
	// endStreams ends open streams (SSE) cleanly.
	endStreams func()
	// finish runs last (closing idle backend connections).
	finish func()
}

type h1conn struct {
	state http.ConnState
	since time.Time
}

func newDrainer(sched wire.DrainSchedule, log *slog.Logger) *drainer {
	return &drainer{sched: sched, log: log, drained: make(chan struct{})}
}

// connState is the servers' http.Server.ConnState: it counts open
// connections, the fresh ones (HTTP/2 leaves StateNew at the preface,
// before its first request, so the state alone does not tell), and follows
// the states of HTTP/1 connections.
func (d *drainer) connState(c net.Conn, st http.ConnState) {
	d.trackH1(c, st)
	switch st {
	case http.StateNew:
		// Every connection starts as HTTP/1 here; serveHTTP2 moves those
		// that negotiate h2.
		metrics.Default.ConnOpened(metrics.H1)
		d.conns.Add(1)
		d.fresh.Add(1)
		d.newConns.Store(c, struct{}{})
	case http.StateClosed, http.StateHijacked:
		metrics.Default.ConnClosed(metrics.H1)
		d.conns.Add(-1)
		d.markUsed(c)
	}
}

// trackH1 follows the HTTP/1 connections' states (HTTP/2 ones are dropped
// once their protocol is known).
func (d *drainer) trackH1(c net.Conn, st http.ConnState) {
	if _, ok := c.(*h2Conn); ok {
		// x/net/http2 reports its streams' states with the wrapper; the
		// *tls.Conn net/http reported as new was dropped when HTTP/2
		// took it over (serveHTTP2).
		return
	}
	d.h1mu.Lock()
	defer d.h1mu.Unlock()
	if d.h1 == nil {
		d.h1 = map[net.Conn]h1conn{}
	}
	if tc, ok := c.(*tls.Conn); ok && st != http.StateNew && tc.ConnectionState().NegotiatedProtocol == "h2" {
		delete(d.h1, c)
		return
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(d.h1, c)
	default:
		d.h1[c] = h1conn{st, time.Now()}
	}
}

// markUsed records that a connection has started a request; handlers call
// it with the connection from connContext.
func (d *drainer) markUsed(c any) {
	if c == nil {
		return
	}
	d.noteRequest(c)
	if _, was := d.newConns.LoadAndDelete(c); was {
		d.fresh.Add(-1)
	}
}

type connKey struct{}

// connContext makes the connection known to handlers, for markUsed.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// h1MayCarryRequest reports whether some HTTP/1 connection may have a
// request on its way that Shutdown would drop: a new one, one idle for less
// than grace, or an active one — its response may have started before the
// drain without "Connection: close", and Shutdown closes the connection
// right after it, under a client that is already sending its next request.
func (d *drainer) h1MayCarryRequest(grace time.Duration) bool {
	d.h1mu.Lock()
	defer d.h1mu.Unlock()
	for _, h := range d.h1 {
		switch {
		case h.state == http.StateNew, h.state == http.StateActive:
			return true
		case h.state == http.StateIdle && time.Since(h.since) < grace:
			return true
		}
	}
	return false
}

// waitUntil polls cond every 10ms until it is false or the deadline passed.
func waitUntil(deadline time.Time, cond func() bool) {
	for cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// drain drains once (later calls wait for the first): it stops taking
// connections, lets requests finish, ends open streams cleanly at the
// deadline and closes whatever is left, each step at its offset of the
// schedule from now.
func (d *drainer) drain() {
	d.once.Do(func() {
		start := time.Now()
		at := func(offset time.Duration) time.Time { return start.Add(offset) }
		d.log.Info("draining", "timeout", d.sched.Timeout.String(), "connections", d.conns.Load(), "schedule", d.sched.String())
		d.steps.stopAccepting()
		// FreshWait: connections handed over just before the drain start
		// their first request before GOAWAY could refuse it.
		waitUntil(at(d.sched.FreshWait), func() bool { return d.fresh.Load() > 0 })
		// GoAway: HTTP/1 responses say Connection: close from now on, and
		// HTTP/2 clients are told to open no more streams (a GOAWAY with
		// the largest stream id). Shutdown (which closes idle HTTP/1
		// connections at once, and sends HTTP/2 the final GOAWAY that
		// discards streams it has not read) waits until no connection
		// may have a request on its way, or this offset.
		d.draining.Store(true)
		d.announceShutdown()
		waitUntil(at(d.sched.GoAway), func() bool {
			return d.h1MayCarryRequest(d.sched.H1Grace) || d.h2MayCarryRequest(d.sched.H1Grace)
		})
		// EndStreams: open streams end cleanly, so clients resume with
		// Last-Event-ID on the new worker.
		endStreams := time.AfterFunc(time.Until(at(d.sched.EndStreams)), func() {
			d.log.Info("drain deadline reached; ending open streams", "connections", d.conns.Load())
			d.steps.endStreams()
		})
		defer endStreams.Stop()
		// Close: Shutdown waits forever on streams that never go idle, so
		// it is bounded by the schedule.
		ctx, cancel := context.WithDeadline(context.Background(), at(d.sched.Close))
		defer cancel()
		d.steps.shutdown(ctx)
		d.steps.finish()
		d.log.Info("drained", "took", time.Since(start).Round(time.Millisecond).String(), "h2_streams_discarded", d.discarded.Load())
		close(d.drained)
	})
	<-d.drained
}
