package logging

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkAccessLogOff is the per-request cost of the middleware with
// the access log off: the request id, the recorder and the metrics count.
func BenchmarkAccessLogOff(b *testing.B) {
	h := Access(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	req := httptest.NewRequest("POST", "https://notes.test/mcp", nil)
	req.Header.Set(RequestIDHeader, "bench-request-id")
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
