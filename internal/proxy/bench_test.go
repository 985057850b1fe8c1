package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
)

// discardWriter is the cheapest ResponseWriter: what is measured is the
// proxy's own path to the backend and back.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

// BenchmarkUpstream is one small request through Handler to a local
// HTTP/1.1 backend: on the direct path ("direct"), through ReverseProxy
// with mcpgate's upstream client ("reverseproxy") and through
// ReverseProxy with http.Transport ("transport"), GET and a JSON-RPC POST.
// The backend's cost is in all; the differences are the proxy path's.
func BenchmarkUpstream(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	defer backend.Close()
	for _, client := range []string{"direct", "reverseproxy", "transport"} {
		for _, method := range []string{"GET", "POST"} {
			b.Run(client+"/"+method, func(b *testing.B) {
				p := &config.Proxy{Name: "notes", Target: upstreamOf(b, backend.URL),
					Timeouts: config.Timeouts{Connect: time.Second, ResponseHeader: 5 * time.Second}}
				h, err := New(p, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				switch client {
				case "reverseproxy":
					h.def.h1 = nil // ServeHTTP takes ReverseProxy, which keeps h1Transport
				case "transport":
					tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
					defer tr.CloseIdleConnections()
					h.def.rp.Transport = &endTransport{rt: tr, h: h}
					h.def.h1 = nil
				}
				defer h.CloseIdle()
				const body = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					var r *http.Request
					if method == "POST" {
						r = httptest.NewRequest("POST", "https://notes.test/mcp", strings.NewReader(body))
						r.Header.Set("Content-Type", "application/json")
					} else {
						r = httptest.NewRequest("GET", "https://notes.test/mcp", nil)
					}
					h.ServeHTTP(&discardWriter{h: http.Header{}}, r)
				}
			})
		}
	}
}
