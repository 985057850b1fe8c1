// Package metrics is a worker's side of /metrics: counters and gauges the
// request path increments, and the snapshot the worker sends to the
// supervisor in wire.Stats. The supervisor, not the worker, serves them
// (workers have no port of their own), in the Prometheus text format
// (supervisor/expose.go); this package is standard library only.
//
// Counting is on the path of every request, so every metric is a fixed
// array of atomics indexed by label values from a fixed set: no lock, no
// map, no allocation per increment. Label values are bounded by
// construction (a method outside the known set is "other", an unusual
// status code its class), and none names a user or a client.
package metrics

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// Default holds this process's counters: a worker process serves one
// proxy, so one set is all it needs, and the handlers that count need no
// plumbing.
var Default = New()

// Counters are one worker's metrics.
type Counters struct {
	requests [len(codeLabels)][len(methodLabels)][len(protoLabels)]atomic.Uint64
	buckets  [len(durationBounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumNanos atomic.Uint64

	upstream [len(upstreamLabels)]atomic.Uint64
	tokens   [len(grantLabels)]atomic.Uint64
	denied   [len(deniedLabels)]atomic.Uint64
	bearer   [len(bearerLabels)]atomic.Uint64

	streams atomic.Int64
	conns   [len(protoLabels)]atomic.Int64

	// moved holds a value once anything changed since the last Settle;
	// pending says it does, so only the first change after a Settle
	// pays for the send.
	moved   chan struct{}
	pending atomic.Bool
}

// New returns zeroed counters (tests; the worker uses Default).
func New() *Counters { return &Counters{moved: make(chan struct{}, 1)} }

// Changed receives once a counter or gauge has changed since the last
// Settle. The worker reports its stats when told, instead of waking every
// second to find nothing new (500 idle workers: 500 wake-ups a second).
func (c *Counters) Changed() <-chan struct{} { return c.moved }

// Settle re-arms Changed. Call it before reading the values to report: a
// change from then on signals Changed again, so none goes unreported.
func (c *Counters) Settle() { c.pending.Store(false) }

// touch signals Changed on the first change after a Settle; the rest cost
// one atomic load.
func (c *Counters) touch() {
	if c.pending.Load() || !c.pending.CompareAndSwap(false, true) {
		return
	}
	select {
	case c.moved <- struct{}{}:
	default:
	}
}

// durationBounds mirrors wire.DurationBuckets as a fixed-size array, so
// the bucket array above has a constant length.
var durationBounds = [14]float64(wire.DurationBuckets)

// Protocols, by HTTP major version.
var protoLabels = [...]string{"h1", "h2", "h3"}

// Proto is a protocol label's index.
type Proto uint8

const (
	H1 Proto = iota
	H2
	H3
)

// ProtoOf maps an HTTP major version to its label (1 and anything odd:
// h1).
func ProtoOf(major int) Proto {
	switch major {
	case 2:
		return H2
	case 3:
		return H3
	}
	return H1
}

var methodLabels = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other"}

func methodIndex(m string) int {
	// A switch on constant strings: no allocation, unlike a map lookup
	// of a string that might need hashing of attacker-chosen input.
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "PATCH":
		return 4
	case "DELETE":
		return 5
	case "OPTIONS":
		return 6
	case "CONNECT":
		return 7
	case "TRACE":
		return 8
	}
	return 9
}

// exactCodes are the status codes counted as themselves: the gateway's
// own answers and the usual ones of an MCP backend. Any other code counts
// as its class ("2xx" …), which keeps the label set bounded whatever a
// backend returns.
var exactCodes = [...]int{101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308,
	400, 401, 403, 404, 405, 406, 408, 409, 410, 413, 415, 421, 422, 429, 499, 500, 501, 502, 503, 504}

// codeLabels are exactCodes, then the classes 1xx..5xx, then "other".
var codeLabels = func() (l [len(exactCodes) + 6]string) {
	for i, c := range exactCodes {
		l[i] = strconv.Itoa(c)
	}
	for i := range 5 {
		l[len(exactCodes)+i] = strconv.Itoa(i+1) + "xx"
	}
	l[len(l)-1] = "other"
	return l
}()

// codeIndex maps 0..599 to a codeLabels index.
var codeIndex = func() (t [600]uint8) {
	for c := range t {
		switch {
		case c < 100:
			t[c] = uint8(len(codeLabels) - 1)
		default:
			t[c] = uint8(len(exactCodes) + c/100 - 1)
		}
	}
	for i, c := range exactCodes {
		t[c] = uint8(i)
	}
	return t
}()

func codeOf(status int) int {
	if status < 0 || status >= len(codeIndex) {
		return len(codeLabels) - 1
	}
	return int(codeIndex[status])
}

// Request counts one finished request.
func (c *Counters) Request(status int, method string, proto Proto, d time.Duration) {
	c.requests[codeOf(status)][methodIndex(method)][proto].Add(1)
	s := d.Seconds()
	i := 0
	for i < len(durationBounds) && s > durationBounds[i] {
		i++
	}
	c.buckets[i].Add(1)
	if d > 0 {
		c.sumNanos.Add(uint64(d))
	}
	c.touch()
}

// Upstream error kinds.
var upstreamLabels = [...]string{"connect", "timeout", "reset", "other"}

// UpstreamKind is an upstream error kind's index.
type UpstreamKind uint8

const (
	UpstreamConnect UpstreamKind = iota // the backend could not be reached
	UpstreamTimeout                     // it did not answer in time
	UpstreamReset                       // it closed or reset the connection
	UpstreamOther
)

// UpstreamError counts one failed request to the backend.
func (c *Counters) UpstreamError(k UpstreamKind) { c.upstream[k].Add(1); c.touch() }

var grantLabels = [...]string{"authorization_code", "refresh_token"}

// TokenIssued counts an access token issued for grant ("authorization_code"
// or "refresh_token"; anything else is not counted).
func (c *Counters) TokenIssued(grant string) {
	for i, g := range grantLabels {
		if g == grant {
			c.tokens[i].Add(1)
			c.touch()
			return
		}
	}
}

// deniedLabels are the OAuth error codes the authorization server answers
// with (RFC 6749, 7591, 8707), then "other".
var deniedLabels = [...]string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "invalid_target", "invalid_redirect_uri", "invalid_client_metadata",
	"access_denied", "unsupported_response_type", "server_error", "temporarily_unavailable", "slow_down", "other"}

// OAuthDenied counts an OAuth error answer by its error code.
func (c *Counters) OAuthDenied(code string) {
	for i, l := range deniedLabels[:len(deniedLabels)-1] {
		if l == code {
			c.denied[i].Add(1)
			c.touch()
			return
		}
	}
	c.denied[len(deniedLabels)-1].Add(1)
	c.touch()
}

var bearerLabels = [...]string{"missing", "malformed", "invalid", "expired", "audience", "scope", "origin"}

// BearerReason is why the bearer check refused a request.
type BearerReason uint8

const (
	BearerMissing   BearerReason = iota // no token
	BearerMalformed                     // not a usable Authorization header
	BearerInvalid                       // signature, issuer, revoked, unknown key …
	BearerExpired
	BearerAudience // a token for another resource
	BearerScope    // lacks a required scope
	BearerOrigin   // a browser Origin that may not call this server
)

// BearerRejected counts a request the bearer check refused.
func (c *Counters) BearerRejected(r BearerReason) { c.bearer[r].Add(1); c.touch() }

// StreamOpened and StreamClosed track open SSE and WebSocket streams.
func (c *Counters) StreamOpened() { c.streams.Add(1); c.touch() }
func (c *Counters) StreamClosed() { c.streams.Add(-1); c.touch() }

// ConnOpened and ConnClosed track open client connections by protocol.
func (c *Counters) ConnOpened(p Proto) { c.conns[p].Add(1); c.touch() }
func (c *Counters) ConnClosed(p Proto) { c.conns[p].Add(-1); c.touch() }

// ConnSwitched moves a connection from one protocol to another (an
// HTTP/1 connection that negotiated HTTP/2).
func (c *Counters) ConnSwitched(from, to Proto) {
	c.conns[from].Add(-1)
	c.conns[to].Add(1)
	c.touch()
}

// Fingerprint changes whenever a counter or gauge does: each value is
// weighted by its own power of an odd multiplier, so neither one step of
// one value nor opposite steps of two leave it unchanged. The worker sends its stats only when this differs from
// the last report's, instead of building and encoding a snapshot every
// second to find nothing new (500 idle workers: 500 snapshots a second,
// and their garbage in every worker's heap).
func (c *Counters) Fingerprint() uint64 {
	var h uint64
	mix := func(v uint64) { h = h*0x100000001b3 + v }
	for ci := range c.requests {
		for mi := range c.requests[ci] {
			for pi := range c.requests[ci][mi] {
				mix(c.requests[ci][mi][pi].Load())
			}
		}
	}
	for i := range c.buckets {
		mix(c.buckets[i].Load())
	}
	mix(c.sumNanos.Load())
	for _, a := range [...][]atomic.Uint64{c.upstream[:], c.tokens[:], c.denied[:], c.bearer[:]} {
		for i := range a {
			mix(a[i].Load())
		}
	}
	mix(uint64(c.streams.Load()))
	for i := range c.conns {
		mix(uint64(c.conns[i].Load()))
	}
	return h
}

// Snapshot returns the current values, leaving out zero counters (the
// supervisor treats a missing one as zero).
func (c *Counters) Snapshot() *wire.Metrics {
	m := &wire.Metrics{OpenStreams: c.streams.Load()}
	for ci := range c.requests {
		for mi := range c.requests[ci] {
			for pi := range c.requests[ci][mi] {
				if n := c.requests[ci][mi][pi].Load(); n > 0 {
					m.Requests = append(m.Requests, wire.RequestCount{Code: codeLabels[ci], Method: methodLabels[mi], Protocol: protoLabels[pi], N: n})
				}
			}
		}
	}
	h := &wire.Histogram{Bounds: wire.DurationBuckets, Counts: make([]uint64, len(durationBounds))}
	var cum uint64
	for i := range c.buckets {
		cum += c.buckets[i].Load()
		if i < len(durationBounds) {
			h.Counts[i] = cum
		}
	}
	h.Count = cum
	h.Sum = time.Duration(c.sumNanos.Load()).Seconds()
	if h.Count > 0 {
		m.Duration = h
	}
	m.UpstreamErrors = counts(c.upstream[:], upstreamLabels[:])
	m.TokensIssued = counts(c.tokens[:], grantLabels[:])
	m.OAuthDenied = counts(c.denied[:], deniedLabels[:])
	m.BearerRejected = counts(c.bearer[:], bearerLabels[:])
	for i := range c.conns {
		if n := c.conns[i].Load(); n != 0 {
			if m.Connections == nil {
				m.Connections = map[string]int64{}
			}
			m.Connections[protoLabels[i]] = n
		}
	}
	return m
}

func counts(a []atomic.Uint64, labels []string) map[string]uint64 {
	var m map[string]uint64
	for i := range a {
		if n := a[i].Load(); n > 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[labels[i]] = n
		}
	}
	return m
}
