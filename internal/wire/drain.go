package wire

import (
	"fmt"
	"time"
)

// DrainSchedule is the one timetable of a worker's drain, derived from
// [server] drain_timeout (T). Every field is an offset from the moment the
// worker is told to drain (for Kill: from the moment the supervisor told
// it), so the steps cannot drift apart when an earlier one ends early or
// late. The worker follows FreshWait through Close; the supervisor
// enforces Kill. etc/mcpgate.toml documents the same table.
type DrainSchedule struct {
	// Timeout is T, drain_timeout itself.
	Timeout time.Duration
	// FreshWait = min(1s, T/4): a connection handed over just before the
	// drain may not have sent its first request yet; HTTP/2's GOAWAY
	// would refuse it (last stream 0), and not every client retries. Until
	// this offset the drain waits for such connections to start one.
	FreshWait time.Duration
	// H1Grace = min(1s, T/4): a connection that started a request less
	// than this ago may have another on its way: an idle HTTP/1 keep-alive
	// (closing it would drop that request), or an HTTP/2 connection whose
	// client has not read the announcing GOAWAY yet (the final GOAWAY
	// would discard the stream).
	H1Grace time.Duration
	// GoAway = T/2: the latest offset of the final HTTP/2 GOAWAY and of
	// closing idle HTTP/1 keep-alives (http.Server.Shutdown). Right after
	// FreshWait, HTTP/2 clients get an announcing GOAWAY (last stream
	// 2^31-1: open no more streams; RFC 9113 §6.8) and HTTP/1 responses
	// carry Connection: close; Shutdown follows as soon as no connection
	// has started a request for H1Grace. Half of T leaves the other half
	// for the requests in flight to finish.
	GoAway time.Duration
	// EndStreams = T: open streams (SSE over any protocol) are ended
	// cleanly at an event boundary, so clients reconnect with
	// Last-Event-ID to the new worker instead of seeing a reset.
	EndStreams time.Duration
	// Close = T + 2s: the servers are closed, whatever is still open. Two
	// seconds let handlers finish the responses whose streams just ended.
	Close time.Duration
	// Kill = T + 5s: the supervisor kills a worker that has not exited.
	// Three seconds after Close leave room for the exit itself (closing
	// the stores, flushing logs) on a busy machine.
	Kill time.Duration
}

// Fixed parts of the schedule; see DrainSchedule.
const (
	maxFreshWait   = time.Second
	streamEndGrace = 2 * time.Second
	killMargin     = 3 * time.Second
)

// NewDrainSchedule derives the schedule from drain_timeout.
func NewDrainSchedule(timeout time.Duration) DrainSchedule {
	quarter := min(maxFreshWait, timeout/4)
	return DrainSchedule{
		Timeout:    timeout,
		FreshWait:  quarter,
		H1Grace:    quarter,
		GoAway:     timeout / 2,
		EndStreams: timeout,
		Close:      timeout + streamEndGrace,
		Kill:       timeout + streamEndGrace + killMargin,
	}
}

// String is the schedule as one log line.
func (d DrainSchedule) String() string {
	return fmt.Sprintf("fresh connections until %v, final GOAWAY and idle HTTP/1 closed by %v, streams ended at %v, closed at %v, killed at %v",
		d.FreshWait, d.GoAway, d.EndStreams, d.Close, d.Kill)
}
