package harness

import (
	"net/http"
	"sync"
)

// ProtoRecorder is an http.RoundTripper that remembers the protocol
// (resp.Proto, e.g. "HTTP/2.0") of every response, so a test can assert
// that a client library really talked HTTP/2 through the gateway.
type ProtoRecorder struct {
	Base http.RoundTripper

	mu     sync.Mutex
	protos []string // guarded by mu
}

// RoundTrip implements http.RoundTripper.
func (r *ProtoRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.Base.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.protos = append(r.protos, req.Method+" "+req.URL.Path+" "+resp.Proto)
		r.mu.Unlock()
	}
	return resp, err
}

// Protos returns "METHOD /path PROTO" for every response so far.
func (r *ProtoRecorder) Protos() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.protos...)
}
