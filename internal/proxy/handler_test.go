package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/logging"
)

func upstreamOf(t testing.TB, raw string) config.Upstream {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return config.Upstream{Raw: raw, Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")}
}

// testProxyConfig is the proxy the handler tests put in front of target.
func testProxyConfig(t *testing.T, target string) *config.Proxy {
	return &config.Proxy{
		Name:      "notes",
		Enabled:   true,
		Hostnames: []string{"notes.test"},
		Target:    upstreamOf(t, target),
		Timeouts:  config.Timeouts{Connect: 2 * time.Second, ResponseHeader: 5 * time.Second},
	}
}

func newProxy(t *testing.T, target string, mod func(p *config.Proxy)) *httptest.Server {
	t.Helper()
	_, srv := newProxyHandler(t, target, mod)
	return srv
}

// newProxyHandler is newProxy with the Handler, for tests that reach into
// its upstream (an https backend's test CA).
func newProxyHandler(t *testing.T, target string, mod func(p *config.Proxy)) (*Handler, *httptest.Server) {
	t.Helper()
	p := testProxyConfig(t, target)
	if mod != nil {
		mod(p)
	}
	h, err := New(p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.CloseIdle)
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return h, srv
}

type seen struct {
	Method, Path, RawQuery, Host string
	Header                       http.Header
}

func echoBackend(t *testing.T) *httptest.Server {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "sess-1")
		w.Header().Set("Server", "backend")
		json.NewEncoder(w).Encode(seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header})
	}))
	t.Cleanup(b.Close)
	return b
}

func TestHeaderPolicy(t *testing.T) {
	b := echoBackend(t)
	px := newProxy(t, b.URL+"/base", func(p *config.Proxy) {
		p.Headers = config.Headers{
			Request:        map[string]string{"X-Env": "test"},
			Response:       map[string]string{"X-Served-By": "mcpgate"},
			RemoveRequest:  []string{"X-Debug"},
			RemoveResponse: []string{"Server"},
		}
	})
	req, _ := http.NewRequest("POST", px.URL+"/mcp?x=1", strings.NewReader("{}"))
	req.Host = "notes.test"
	for k, v := range map[string]string{
		"X-Forwarded-For":      "6.6.6.6",
		"X-Forwarded-Host":     "evil.test",
		"X-Forwarded-Proto":    "http",
		"Forwarded":            "for=6.6.6.6",
		"X-Real-Ip":            "6.6.6.6",
		"X-Mcpgate-User":       "mallory",
		"X-MCPGate-Scopes":     "admin",
		"X-Debug":              "1",
		"Mcp-Session-Id":       "sess-1",
		"Mcp-Protocol-Version": "2025-06-18",
		"Last-Event-Id":        "42",
	} {
		req.Header.Set(k, v)
	}
	res, err := px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s seen
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"path", s.Path, "/base/mcp"},
		{"query", s.RawQuery, "x=1"},
		{"X-Forwarded-For", s.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Host", s.Header.Get("X-Forwarded-Host"), "notes.test"},
		{"X-Forwarded-Proto", s.Header.Get("X-Forwarded-Proto"), "https"},
		{"Forwarded", s.Header.Get("Forwarded"), ""},
		{"X-Real-Ip", s.Header.Get("X-Real-Ip"), ""},
		{"X-Mcpgate-User", s.Header.Get("X-Mcpgate-User"), ""},
		{"X-Mcpgate-Scopes", s.Header.Get("X-Mcpgate-Scopes"), ""},
		{"X-Debug", s.Header.Get("X-Debug"), ""},
		{"X-Env", s.Header.Get("X-Env"), "test"},
		{"Mcp-Session-Id", s.Header.Get("Mcp-Session-Id"), "sess-1"},
		{"Mcp-Protocol-Version", s.Header.Get("Mcp-Protocol-Version"), "2025-06-18"},
		{"Last-Event-Id", s.Header.Get("Last-Event-Id"), "42"},
		{"response Mcp-Session-Id", res.Header.Get("Mcp-Session-Id"), "sess-1"},
		{"response X-Served-By", res.Header.Get("X-Served-By"), "mcpgate"},
		{"response Server", res.Header.Get("Server"), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if s.Host == "notes.test" {
		t.Errorf("backend saw the client's Host %q; want the target's", s.Host)
	}
}

func TestPreserveHost(t *testing.T) {
	b := echoBackend(t)
	px := newProxy(t, b.URL, func(p *config.Proxy) { p.PreserveHost = true })
	req, _ := http.NewRequest("GET", px.URL+"/", nil)
	req.Host = "notes.test"
	res, err := px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s seen
	json.NewDecoder(res.Body).Decode(&s)
	if s.Host != "notes.test" {
		t.Errorf("Host = %q, want notes.test", s.Host)
	}
}

func TestRoutes(t *testing.T) {
	def := echoBackend(t)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "other "+r.URL.Path)
	}))
	defer other.Close()
	px := newProxy(t, def.URL, func(p *config.Proxy) {
		p.Routes = []config.Route{{Path: "/token", Target: upstreamOf(t, other.URL)}}
	})
	for path, wantOther := range map[string]bool{"/token": true, "/token/x": true, "/tokens": false, "/mcp": false} {
		res, err := px.Client().Get(px.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if got := strings.HasPrefix(string(body), "other "); got != wantOther {
			t.Errorf("%s: routed to other = %v, want %v (%s)", path, got, wantOther, body)
		}
	}
}

// TestNoRedirect: /mcp must reach the backend as /mcp, never bounce to
// /mcp/ (clients drop Authorization and session headers on redirects).
func TestNoRedirect(t *testing.T) {
	b := echoBackend(t)
	px := newProxy(t, b.URL, nil)
	c := px.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, path := range []string{"/mcp", "/mcp/", "/a/../mcp"} {
		req, _ := http.NewRequest("GET", px.URL+"/", nil)
		req.URL.Opaque = path
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("%s: status %d, want 200", path, res.StatusCode)
		}
	}
}

func TestStreamingFlushesEachEvent(t *testing.T) {
	for _, tc := range []struct {
		name, method, ctype string
	}{
		{"GET SSE", "GET", "text/event-stream"},
		{"POST returns SSE", "POST", "text/event-stream"},
		{"unknown length", "GET", "application/octet-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				io.WriteString(w, "data: one\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-time.After(10 * time.Second):
				}
				io.WriteString(w, "data: two\n\n")
			}))
			defer b.Close()
			px := newProxy(t, b.URL, nil)
			req, _ := http.NewRequest(tc.method, px.URL+"/mcp", nil)
			res, err := px.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			got := make(chan string, 1)
			go func() {
				line, _ := br.ReadString('\n')
				got <- line
			}()
			select {
			case line := <-got:
				if line != "data: one\n" {
					t.Fatalf("first line %q", line)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("first event not delivered before the second was sent: the proxy buffers")
			}
			close(release)
			rest, _ := io.ReadAll(br)
			if string(rest) != "\ndata: two\n\n" {
				t.Fatalf("rest %q", rest)
			}
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	}))
	defer b.Close()
	px := newProxy(t, b.URL, nil)
	res, err := px.Client().Get(px.URL + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request not canceled after the client went away")
	}
}

func TestUpstreamErrors(t *testing.T) {
	// A port nobody listens on: bind and close.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	for _, tc := range []struct {
		name, target string
		status       int
		code         string
	}{
		{"refused", dead, 502, "bad_gateway"},
		{"header timeout", slow.URL, 504, "gateway_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			px := newProxy(t, tc.target, func(p *config.Proxy) { p.Timeouts.ResponseHeader = 300 * time.Millisecond })
			res, err := px.Client().Get(px.URL + "/mcp")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body struct{ Error, Message, Proxy string }
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.status || body.Error != tc.code || body.Proxy != "notes" || res.Header.Get("Content-Type") != "application/json" {
				t.Errorf("got %d %+v, want %d %s from proxy notes", res.StatusCode, body, tc.status, tc.code)
			}
		})
	}
}

// switchProtocols is a backend's 101 to proto on the hijacked connection
// of w, then then on that connection.
func switchProtocols(w http.ResponseWriter, proto string, then func(*bufio.ReadWriter)) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto + "\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	then(brw)
}

// echoLine echoes one line over an upgraded connection.
func echoLine(brw *bufio.ReadWriter) {
	line, _ := brw.ReadString('\n')
	brw.WriteString("echo " + line)
	brw.Flush()
}

func TestWebSocketUpgradePassesThrough(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		switchProtocols(w, "websocket", echoLine)
	}))
	defer b.Close()
	px := newProxy(t, b.URL, nil)
	// Raw HTTP/1.1 over TLS: upgrades are an HTTP/1.1 mechanism.
	tr := px.Client().Transport.(*http.Transport)
	conn, err := tlsDial(px, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: notes.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 101 {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	io.WriteString(conn, "ping\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || line != "echo ping\n" {
		t.Fatalf("read %q, %v", line, err)
	}
}

// TestEndStreams: at the drain deadline an open SSE stream ends as a
// complete response (clean EOF for the client), not an aborted one.
func TestEndStreams(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "id: 1\ndata: one\n\n")
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			}))
			defer b.Close()
			p := &config.Proxy{Name: "notes", Target: upstreamOf(t, b.URL), Timeouts: config.Timeouts{Connect: time.Second, ResponseHeader: time.Second}}
			h, err := New(p, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(h)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			c := srv.Client()
			if proto == "HTTP/1.1" {
				c.Transport.(*http.Transport).ForceAttemptHTTP2 = false
				c.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			res, err := c.Get(srv.URL + "/sse")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.Proto != proto {
				t.Fatalf("proto %s, want %s", res.Proto, proto)
			}
			br := bufio.NewReader(res.Body)
			if line, _ := br.ReadString('\n'); line != "id: 1\n" {
				t.Fatalf("first line %q", line)
			}
			h.EndStreams()
			done := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(br)
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("stream ended with %v, want a clean end", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("stream still open after EndStreams")
			}
		})
	}
}

// TestRequestID: the backend gets the access log's request id (never a
// client's unchecked one), the client gets that id once (the backend's own
// is dropped), and the record learns the backend's time to headers.
func TestRequestID(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "backend-id")
		time.Sleep(20 * time.Millisecond)
		json.NewEncoder(w).Encode(seen{Header: r.Header})
	}))
	defer b.Close()
	p := &config.Proxy{Name: "notes", Target: upstreamOf(t, b.URL), Timeouts: config.Timeouts{Connect: time.Second, ResponseHeader: 5 * time.Second}}
	inner, err := New(p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var upstream time.Duration
	logged := httptest.NewServer(logging.Access(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		upstream = logging.RequestFrom(r.Context()).Upstream
	})))
	defer logged.Close()
	bare := httptest.NewServer(inner)
	defer bare.Close()

	for _, tc := range []struct {
		name, url, sent, backend string
	}{
		{"well-formed id", logged.URL, "abc-123", "abc-123"},
		{"malformed id", logged.URL, "a b", ""},          // "" = generated: 32 hex
		{"without the access log", bare.URL, "a b", "-"}, // "-" = none, either way
	} {
		req, _ := http.NewRequest("GET", tc.url+"/mcp", nil)
		req.Header.Set("X-Request-Id", tc.sent)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s seen
		json.NewDecoder(res.Body).Decode(&s)
		res.Body.Close()
		toBackend, toClient := s.Header.Values("X-Request-Id"), res.Header.Values("X-Request-Id")
		switch {
		case tc.backend == "-" && (len(toBackend) != 0 || len(toClient) != 0):
			t.Errorf("%s: backend got X-Request-Id %q, client %q, want none", tc.name, toBackend, toClient)
		case tc.backend == "-":
		case len(toBackend) != 1 || len(toClient) != 1 || toBackend[0] != toClient[0]:
			t.Errorf("%s: backend got %q, client got %q; want one id, the same", tc.name, toBackend, toClient)
		case tc.backend != "" && toBackend[0] != tc.backend:
			t.Errorf("%s: id %q, want %q", tc.name, toBackend[0], tc.backend)
		case tc.backend == "" && len(toBackend[0]) != 32:
			t.Errorf("%s: id %q, want a generated one", tc.name, toBackend[0])
		}
	}
	if upstream < 20*time.Millisecond || upstream > 5*time.Second {
		t.Errorf("recorded upstream time %v, want the backend's 20ms or a little more", upstream)
	}
}
