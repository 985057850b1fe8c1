package wire

// Metrics is a worker's counters for the supervisor's /metrics, sent in
// every Stats. Counters are cumulative since the worker started: the
// supervisor adds the last snapshot of a worker that exits to its proxy's
// totals, so the sums it exports never go down across restarts and
// reloads. Gauges are the worker's current values. Every label value is
// from a fixed set (internal/metrics), never a user or a client id.
//
// All fields are optional: a worker of a build before metrics sends no
// Metrics, and the supervisor shows nothing for it.
type Metrics struct {
	// Requests counts finished requests by status code, method and
	// protocol.
	Requests []RequestCount `json:"requests,omitempty"`
	// Duration is the request duration histogram over DurationBuckets.
	Duration *Histogram `json:"duration,omitempty"`
	// Counters by one label: upstream errors by kind, tokens issued by
	// grant type, OAuth denials and bearer rejections by reason.
	UpstreamErrors map[string]uint64 `json:"upstream_errors,omitempty"`
	TokensIssued   map[string]uint64 `json:"tokens_issued,omitempty"`
	OAuthDenied    map[string]uint64 `json:"oauth_denied,omitempty"`
	BearerRejected map[string]uint64 `json:"bearer_rejected,omitempty"`
	// Gauges: open SSE and WebSocket streams, open client connections by
	// protocol (h1, h2, h3).
	OpenStreams int64            `json:"open_streams,omitempty"`
	Connections map[string]int64 `json:"connections,omitempty"`
}

// RequestCount is the number of requests with one label combination.
type RequestCount struct {
	Code     string `json:"code"`
	Method   string `json:"method"`
	Protocol string `json:"protocol"`
	N        uint64 `json:"n"`
}

// Histogram is a cumulative histogram: Counts[i] is the number of
// observations at most Bounds[i] (seconds); Count includes those above
// the last bound.
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// DurationBuckets are the request duration histogram's upper bounds in
// seconds: API calls are milliseconds, streams minutes.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// Add adds o's counters to m (gauges are left alone: those of a worker
// that is gone are zero). Histograms with other bounds are skipped rather
// than mixed.
func (m *Metrics) Add(o *Metrics) {
	if o == nil {
		return
	}
	idx := map[[3]string]int{}
	for i, r := range m.Requests {
		idx[[3]string{r.Code, r.Method, r.Protocol}] = i
	}
	for _, r := range o.Requests {
		k := [3]string{r.Code, r.Method, r.Protocol}
		if i, ok := idx[k]; ok {
			m.Requests[i].N += r.N
		} else {
			idx[k] = len(m.Requests)
			m.Requests = append(m.Requests, r)
		}
	}
	if o.Duration != nil {
		if m.Duration == nil {
			m.Duration = &Histogram{Bounds: append([]float64(nil), o.Duration.Bounds...), Counts: make([]uint64, len(o.Duration.Counts))}
		}
		if sameBounds(m.Duration.Bounds, o.Duration.Bounds) && len(m.Duration.Counts) == len(o.Duration.Counts) {
			for i, c := range o.Duration.Counts {
				m.Duration.Counts[i] += c
			}
			m.Duration.Count += o.Duration.Count
			m.Duration.Sum += o.Duration.Sum
		}
	}
	m.UpstreamErrors = addMap(m.UpstreamErrors, o.UpstreamErrors)
	m.TokensIssued = addMap(m.TokensIssued, o.TokensIssued)
	m.OAuthDenied = addMap(m.OAuthDenied, o.OAuthDenied)
	m.BearerRejected = addMap(m.BearerRejected, o.BearerRejected)
}

// AddGauges adds o's gauges to m.
func (m *Metrics) AddGauges(o *Metrics) {
	if o == nil {
		return
	}
	m.OpenStreams += o.OpenStreams
	for k, v := range o.Connections {
		if m.Connections == nil {
			m.Connections = map[string]int64{}
		}
		m.Connections[k] += v
	}
}

func sameBounds(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func addMap(dst, src map[string]uint64) map[string]uint64 {
	for k, v := range src {
		if dst == nil {
			dst = map[string]uint64{}
		}
		dst[k] += v
	}
	return dst
}
