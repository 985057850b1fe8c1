package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/logging"
)

// backendView is what the backend parsed of a proxied request.
type backendView struct {
	Method, RequestURI, Host string
	Header                   http.Header
	ContentLength            int64
	TransferEncoding         []string
	Body                     string
}

// clientView is what the client got back.
type clientView struct {
	Status  int
	Early   []http.Header
	Header  http.Header
	Body    string
	Trailer http.Header
}

// TestDirectPathMatchesReverseProxy is the direct path's contract: for
// every request and response shape below, the backend sees the same
// request and the client the same response as through ReverseProxy (with
// the same rewrite, header policy and upstream client), over HTTP/1.1 and
// HTTP/2.
func TestDirectPathMatchesReverseProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		v := backendView{r.Method, r.RequestURI, r.Host, r.Header, r.ContentLength, r.TransferEncoding, string(body)}
		h := w.Header()
		if strings.Contains(r.URL.Path, "early") {
			h.Set("Link", "</a.css>; rel=preload")
			h.Set("X-Request-Id", "backend-early")
			h.Add("Set-Cookie", "__Host-mcpgate-flow=evil")
			h.Add("Set-Cookie", "app=early")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			h.Del("Set-Cookie")
		}
		h.Set("Connection", "X-Hop")
		h.Set("X-Hop", "1")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Add("Set-Cookie", "mcpgate-x=1")
		h.Add("Set-Cookie", "ok=1")
		h.Set("Clear-Site-Data", `"cookies"`)
		h.Set("X-Request-Id", "from-backend")
		h.Set("X-Internal", "secret")
		h.Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "trailers") {
			h.Set("Trailer", "X-Checksum")
		}
		if r.Method != "HEAD" {
			json.NewEncoder(w).Encode(v)
		}
		if strings.Contains(r.URL.Path, "trailers") {
			h.Set("X-Checksum", "abc")
			h.Set(http.TrailerPrefix+"X-Late", "late")
			h.Add(http.TrailerPrefix+"Set-Cookie", "__Host-mcpgate-bind-x=1")
		}
		if strings.Contains(r.URL.Path, "sse") {
			w.(http.Flusher).Flush()
			io.WriteString(w, "data: two\n\n")
		}
	}))
	defer backend.Close()

	type tc struct {
		name   string
		method string
		path   string
		header map[string][]string
		body   string
		chunk  bool // send the body without a length
	}
	common := map[string][]string{
		"User-Agent":          {"probe/1"},
		"Accept":              {"application/json, text/event-stream"},
		"Cookie":              {"a=1; __Host-mcpgate-bind-x=2; b=3", "mcpgate-y=4"},
		"X-Foo":               {"listed in Connection"},
		"X-Forwarded-For":     {"203.0.113.9"},
		"X-Forwarded-Host":    {"evil.test"},
		"X-Forwarded-Proto":   {"gopher"},
		"Forwarded":           {"for=203.0.113.9"},
		"X-Real-Ip":           {"203.0.113.9"},
		"X-Mcpgate-User":      {"evil"},
		"X-Request-Id":        {"client-id-1"},
		"Te":                  {"trailers"},
		"Proxy-Authorization": {"Basic eA=="},
		"X-Drop":              {"1"},
		"X-Env":               {"client"},
		"Mcp-Session-Id":      {"s-1"},
	}
	cases := []tc{
		{name: "get", method: "GET", path: "/mcp?x=1&y=%20"},
		{name: "get encoded path", method: "GET", path: "/a%2Fb/c%20d"},
		{name: "post json", method: "POST", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`},
		{name: "post large", method: "POST", path: "/mcp", body: strings.Repeat("x", 40<<10)},
		{name: "post streamed", method: "POST", path: "/mcp", body: `{"jsonrpc":"2.0"}`, chunk: true},
		{name: "post empty", method: "POST", path: "/mcp"},
		{name: "put empty", method: "PUT", path: "/mcp"},
		{name: "delete", method: "DELETE", path: "/mcp"},
		{name: "head", method: "HEAD", path: "/mcp"},
		{name: "early hints", method: "GET", path: "/early"},
		{name: "trailers", method: "GET", path: "/trailers"},
		{name: "sse", method: "GET", path: "/sse", header: map[string][]string{"Accept": {"text/event-stream"}}},
	}
	for _, target := range []string{backend.URL, backend.URL + "/base"} {
		for _, preserve := range []bool{false, true} {
			mod := func(p *config.Proxy) {
				p.PreserveHost = preserve
				p.Headers = config.Headers{
					Request:        map[string]string{"X-Env": "prod"},
					RemoveRequest:  []string{"X-Drop", "x-forwarded-host"},
					Response:       map[string]string{"X-Served-By": "mcpgate"},
					RemoveResponse: []string{"X-Internal"},
				}
			}
			directSrv := newIdentityProxy(t, target, mod, false)
			rpSrv := newIdentityProxy(t, target, mod, true)
			for _, proto := range []string{"h1", "h2"} {
				for _, c := range cases {
					name := proto + "/" + c.name + "/" + strings.TrimPrefix(target, backend.URL)
					if preserve {
						name += "/preserve-host"
					}
					t.Run(name, func(t *testing.T) {
						do := func(srv *httptest.Server) clientView {
							var body io.Reader
							if c.body != "" {
								body = strings.NewReader(c.body)
								if c.chunk {
									body = io.MultiReader(body) // no length known
								}
							}
							var cv clientView
							ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
								Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
									cv.Early = append(cv.Early, http.Header(h).Clone())
									return nil
								},
							})
							req, _ := http.NewRequestWithContext(ctx, c.method, srv.URL+c.path, body)
							req.Host = "notes.test"
							for k, v := range common {
								req.Header[k] = v
							}
							for k, v := range c.header {
								req.Header[k] = v
							}
							if proto == "h1" {
								req.Header["Connection"] = []string{"keep-alive, X-Foo"}
							}
							res, err := clientFor(srv, proto).Do(req)
							if err != nil {
								t.Fatal(err)
							}
							b, _ := io.ReadAll(res.Body)
							res.Body.Close()
							res.Header.Del("Date")
							cv.Status, cv.Header, cv.Body, cv.Trailer = res.StatusCode, res.Header, string(b), res.Trailer
							return cv
						}
						got, want := do(directSrv), do(rpSrv)
						// The direct path keeps the gateway's own fields set
						// before a 103 (the request id); ReverseProxy clears
						// them: not a difference the test is about.
						for _, h := range append(got.Early, want.Early...) {
							h.Del("X-Request-Id")
						}
						if len(got.Early) > 0 {
							// ReverseProxy also loses them from the final
							// response after a 1xx (it clears the whole
							// header map); the direct path keeps them.
							if got.Header.Get("X-Request-Id") != "client-id-1" {
								t.Errorf("direct path lost the request id after a 1xx: %q", got.Header.Values("X-Request-Id"))
							}
							got.Header.Del("X-Request-Id")
						}
						if !reflect.DeepEqual(got, want) {
							gj, _ := json.MarshalIndent(got, "", " ")
							wj, _ := json.MarshalIndent(want, "", " ")
							t.Errorf("direct path:\n%s\nReverseProxy:\n%s", gj, wj)
						}
						if got.Status != http.StatusOK {
							t.Errorf("status %d", got.Status)
						}
					})
				}
			}
		}
	}
}

// newIdentityProxy is newProxy with a verified principal and an access-log
// record attached to every request, as the worker's chain does; viaRP
// forces ReverseProxy for every request.
func newIdentityProxy(t *testing.T, target string, mod func(p *config.Proxy), viaRP bool) *httptest.Server {
	t.Helper()
	p := testProxyConfig(t, target)
	mod(p)
	h, err := New(p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.CloseIdle)
	if viaRP {
		h.def.h1 = nil
	}
	who := &identity.Principal{Login: "alice\r\nX-Evil: 1", ClientID: "client-1", Scopes: []string{"mcp", "read"}}
	chain := logging.Access(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), who)))
	}))
	srv := httptest.NewUnstartedServer(chain)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func clientFor(srv *httptest.Server, proto string) *http.Client {
	c := srv.Client()
	tr := c.Transport.(*http.Transport).Clone()
	if proto == "h1" {
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{Transport: tr}
}

// TestDirectPathIdleStreamHoldsNoBuffer: an open stream waiting for its
// next event holds no copy buffer (SSE memory, issue 15): the buffer pool
// is only drawn from while bytes are there.
func TestDirectPathIdleStreamHoldsNoBuffer(t *testing.T) {
	release := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: two\n\n")
	}))
	defer b.Close()
	defer close(release)
	// The pool is this handler's own, set before its server starts: other
	// tests' servers may still be copying through the shared one.
	pool := &countingPool{inner: copyBuffers}
	h, err := New(testProxyConfig(t, b.URL), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h.buffers = pool
	t.Cleanup(h.CloseIdle)
	px := httptest.NewUnstartedServer(h)
	px.EnableHTTP2 = true
	px.StartTLS()
	t.Cleanup(px.Close)
	res, err := px.Client().Get(px.URL + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	buf := make([]byte, 64)
	n, _ := res.Body.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "data: one") {
		t.Fatalf("first event %q", buf[:n])
	}
	time.Sleep(100 * time.Millisecond)
	if held := pool.gets.Load() - pool.puts.Load(); held != 0 {
		t.Errorf("%d copy buffers held by an idle stream", held)
	}
	if pool.gets.Load() == 0 {
		t.Error("the buffer pool was not used at all: the test measures nothing")
	}
}

// countingPool counts what is taken from and given back to a pool.
type countingPool struct {
	inner      httputil.BufferPool
	gets, puts atomic.Int64
}

func (p *countingPool) Get() []byte  { p.gets.Add(1); return p.inner.Get() }
func (p *countingPool) Put(b []byte) { p.puts.Add(1); p.inner.Put(b) }

func TestProbeBody(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		if r, empty := probeBody(strings.NewReader("")); !empty || r != nil {
			t.Errorf("an empty body: %v, %v", r, empty)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		r, empty := probeBody(strings.NewReader("hello"))
		if empty {
			t.Fatal("a body with bytes taken for empty")
		}
		if b, _ := io.ReadAll(r); string(b) != "hello" {
			t.Errorf("read %q", b)
		}
	})
	t.Run("late", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			time.Sleep(2 * probeWait)
			io.WriteString(pw, "late")
			pw.Close()
		}()
		r, empty := probeBody(pr)
		if empty {
			t.Fatal("a body that comes late taken for empty")
		}
		if _, ok := r.(*lateBody); !ok {
			t.Errorf("got %T, want the waiting reader", r)
		}
		if b, _ := io.ReadAll(r); string(b) != "late" {
			t.Errorf("read %q", b)
		}
	})
	t.Run("late and empty", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			time.Sleep(2 * probeWait)
			pw.Close()
		}()
		r, _ := probeBody(pr)
		if b, err := io.ReadAll(r); len(b) != 0 || err != nil {
			t.Errorf("read %q, %v", b, err)
		}
	})
	t.Run("error", func(t *testing.T) {
		boom := errors.New("boom")
		r, _ := probeBody(io.MultiReader(strings.NewReader("a"), &errReader{boom}))
		if _, err := io.ReadAll(r); err != boom {
			t.Errorf("error %v, want %v", err, boom)
		}
	})
}

func TestIsEventStream(t *testing.T) {
	for _, ct := range []string{"text/event-stream", "Text/Event-Stream", "text/event-stream; charset=utf-8", " text/event-stream ;x=1", "text/event-stream\t"} {
		mt, _, err := mime.ParseMediaType(ct)
		if !isEventStream(ct) || err != nil || mt != "text/event-stream" {
			t.Errorf("%q: isEventStream %v, mime says %q (%v)", ct, isEventStream(ct), mt, err)
		}
	}
	for _, ct := range []string{"", "text/event-streams", "application/json", "text/event", "text/event-stream-x"} {
		if isEventStream(ct) {
			t.Errorf("%q taken for an event stream", ct)
		}
	}
}

// FuzzDirectPath: whatever bytes the backend answers with, the client gets
// the same status, fields, body and trailers, or the same abort, on the
// direct path as through ReverseProxy with the same upstream client.
func FuzzDirectPath(f *testing.F) {
	for _, tc := range upstreamCases {
		if len(tc.raw) < 4096 {
			f.Add([]byte(tc.raw), false)
		}
	}
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nSet-Cookie: mcpgate-x=1\r\n\r\n"+
		"HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"2\r\nok\r\n0\r\nX-Sum: 1\r\nX-Late: 2\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n"), false)
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		if len(raw) > 8192 {
			return
		}
		method := "GET"
		if head {
			method = "HEAD"
		}
		view := func(viaRP bool) string {
			// A backend per path: each answers once, then closes, so a
			// response without an end ends.
			b := newRawBackend(t, raw, true)
			p := testProxyConfig(t, "http://"+b.l.Addr().String())
			p.Timeouts.ResponseHeader = 2 * time.Second
			h, err := New(p, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer h.CloseIdle()
			if viaRP {
				h.def.h1 = nil
			}
			rec := &fuzzWriter{h: http.Header{}}
			req := httptest.NewRequest(method, "https://notes.test/first", nil)
			// As under a real server: ReverseProxy aborts a response whose
			// body fails only there.
			req = req.WithContext(context.WithValue(req.Context(), http.ServerContextKey, &http.Server{}))
			aborted := func() (aborted bool) {
				defer func() {
					if v := recover(); v != nil {
						if v != http.ErrAbortHandler {
							panic(v)
						}
						aborted = true
					}
				}()
				h.ServeHTTP(rec, req)
				return false
			}()
			if aborted {
				return "aborted"
			}
			j, _ := json.Marshal(rec)
			return string(j)
		}
		if direct, rp := view(false), view(true); direct != rp {
			t.Errorf("response %q (%s):\ndirect path  %s\nReverseProxy %s", raw, method, direct, rp)
		}
	})
}

// fuzzWriter records what a client would see: interim responses, the
// final status and fields, the body, and the fields set after the body
// (trailers), as net/http's server sends them.
type fuzzWriter struct {
	h       http.Header
	Early   []string
	Status  int
	Fields  http.Header
	Body    string
	Trailer http.Header
}

func (w *fuzzWriter) Header() http.Header { return w.h }

func (w *fuzzWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http
	}
	if w.Status != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		j, _ := json.Marshal(w.h)
		w.Early = append(w.Early, strconv.Itoa(code)+" "+string(j))
		return
	}
	w.Status, w.Fields = code, w.h.Clone()
}

func (w *fuzzWriter) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.Status == http.StatusNoContent || w.Status == http.StatusNotModified {
		return 0, http.ErrBodyNotAllowed
	}
	w.Body += string(p)
	return len(p), nil
}

func (w *fuzzWriter) Flush() {
	if w.Status == 0 {
		w.WriteHeader(http.StatusOK)
	}
}

// MarshalJSON adds the trailers: what the handler set after the header.
func (w *fuzzWriter) MarshalJSON() ([]byte, error) {
	type plain fuzzWriter
	v := plain(*w)
	v.Trailer = http.Header{}
	for k, vs := range w.h {
		if old, ok := w.Fields[k]; !ok || !slices.Equal(old, vs) {
			v.Trailer[k] = vs
		}
	}
	return json.Marshal(v)
}
