package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
)

func TestPlainName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"X-Mcpgate-User", true},
		{"Content-Type", true},
		{"Sec-WebSocket-Key", true},
		{"X-B3-TraceId", true},
		{"mcp-session-id", true},
		{"0-9", true},
		{"", false},
		{"X_Mcpgate_User", false},
		{"X-Mcpgate_Scopes", false},
		{"x_mcpgate_client_id", false},
		{"X.Mcpgate.User", false},
		{"X~Mcpgate~User", false},
		{"X-Mcpgate-User ", false}, // Go keeps a name with a space before the colon uncanonicalised
		{"X-Mcpgate-User\t", false},
		{"X-Foo!", false},
		{"X-Foo#$%&'*+^`|", false},
		{"X-Füü", false},
		{"X-Foo\x00", false},
		{"[X]", false},   // '[' | 0x20 is '{', not a letter
		{"@X", false},    // '@' | 0x20 is '`'
		{"X\x01", false}, // 0x01 | 0x20 is '!'
	}
	for _, tt := range tests {
		if got := plainName(tt.name); got != tt.want {
			t.Errorf("plainName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDropHeaders(t *testing.T) {
	h := &Handler{log: slog.New(slog.DiscardHandler)}
	in := http.Header{
		"X-Mcpgate-User":      {"mallory"},
		"X-MCPGATE-SCOPES":    {"admin"}, // not canonical: a map built by hand
		"x-mcpgate-client-id": {"evil"},
		"X_mcpgate_user":      {"admin"},
		"X-Mcpgate_scopes":    {"admin"},
		"X.mcpgate.user":      {"admin"},
		"X-Mcpgate-User ":     {"admin"},
		"X-Mcpgatex":          {"kept: not the reserved prefix"},
		"Content-Type":        {"application/json"},
		"Mcp-Session-Id":      {"s"},
	}
	h.dropHeaders(in, "header")
	var got []string
	for k := range in {
		got = append(got, k)
	}
	slices.Sort(got)
	if want := []string{"Content-Type", "Mcp-Session-Id", "X-Mcpgatex"}; !slices.Equal(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
	h.dropHeaders(nil, "trailer") // no trailers: nothing to do, no panic
}

func TestGatewayCookie(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"__Host-mcpgate-flow=abc", true},
		{"__Host-mcpgate-csrf=abc", true},
		{"__Host-mcpgate-session=abc; Path=/; Secure; HttpOnly", true},
		{"__host-MCPGATE-flow=abc", true},
		{"__Secure-mcpgate-x=1", true},
		{"__SECURE-mcpgate-x=1", true},
		{"mcpgate-x=1", true},
		{"MCPGate-x=1", true},
		{"  __Host-mcpgate-flow=abc", true},
		{"\t__Host-mcpgate-flow=abc", true},
		{`"__Host-mcpgate-flow"=abc`, true},
		{"__Host-mcpgate-flow", true},     // no '=': a nameless cookie to a browser, this name to Go
		{"=mcpgate-x=1", true},            // nameless; browsers send back "mcpgate-x=1"
		{"= __Host-mcpgate-flow=1", true}, // the same with a blank
		{"app=1", false},
		{"app=__Host-mcpgate-flow", false},
		{"mcpgate=1", false},
		{"__Host-mcpgatex=1", false},
		{"__Host-other=1", false},
		{"xmcpgate-x=1", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := gatewayCookie(tt.s); got != tt.want {
			t.Errorf("gatewayCookie(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestWithoutGatewayCookies(t *testing.T) {
	tests := []struct{ in, want string }{
		{"app=1", "app=1"},
		{"app=1; theme=dark", "app=1; theme=dark"},
		{"app=1;theme=dark", "app=1;theme=dark"}, // untouched when nothing is removed
		{"__Host-mcpgate-flow=f", ""},
		{"__Host-mcpgate-flow=f; __Host-mcpgate-csrf=c", ""},
		{"app=1; __Host-mcpgate-flow=f; theme=dark", "app=1; theme=dark"},
		{"__Host-mcpgate-csrf=c;app=1;theme=dark", "app=1; theme=dark"},
		{"app=1;  __host-MCPGATE-flow=f ;\ttheme=dark ; ", "app=1; theme=dark"},
		{"app=1; MCPGATE-x=1; __secure-mcpgate-y=2; lang=en", "app=1; lang=en"},
		{`app=1; "__Host-mcpgate-flow"=f`, "app=1"},
		{"app=1; __Host-mcpgate-flow", "app=1"},
		{"app=\"a;b\"; __Host-mcpgate-flow=f", "app=\"a; b\""}, // ';' is no cookie-octet: quoting does not protect it
		{"a=mcpgate-x; __Host-mcpgate-flow=f", "a=mcpgate-x"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := withoutGatewayCookies(tt.in); got != tt.want {
			t.Errorf("withoutGatewayCookies(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStripGatewayCookies(t *testing.T) {
	tests := []struct {
		name    string
		in      []string // nil: no Cookie field
		want    []string
		present bool
	}{
		{"none", nil, nil, false},
		{"only others", []string{"app=1; theme=dark"}, []string{"app=1; theme=dark"}, true},
		{"only gateway", []string{"__Host-mcpgate-flow=f", "__Host-mcpgate-csrf=c"}, nil, false},
		{"mixed fields", []string{"app=1; __Host-mcpgate-flow=f", "__Host-mcpgate-csrf=c", "theme=dark"}, []string{"app=1", "theme=dark"}, true},
		{"h2 crumbs", []string{"app=1", "__Host-mcpgate-flow=f", "theme=dark", "__Host-mcpgate-csrf=c"}, []string{"app=1", "theme=dark"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.in != nil {
				h["Cookie"] = slices.Clone(tt.in)
			}
			stripGatewayCookies(h)
			got, ok := h["Cookie"]
			if ok != tt.present || !slices.Equal(got, tt.want) {
				t.Errorf("Cookie = %q (present %v), want %q (present %v)", got, ok, tt.want, tt.present)
			}
		})
	}
}

func TestDropGatewaySetCookies(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
		n    int
	}{
		{"none", nil, nil, 0},
		{"only others", []string{"app=1; Path=/", "theme=dark"}, []string{"app=1; Path=/", "theme=dark"}, 0},
		{"overwrite flow", []string{"__Host-mcpgate-flow=evil; Path=/; Secure; HttpOnly"}, nil, 1},
		{"mixed", []string{
			"app=1",
			"__Host-mcpgate-csrf=evil; Path=/; Secure",
			"  __host-MCPGATE-session=evil; Secure; Path=/",
			"__Secure-mcpgate-x=evil; Secure",
			"mcpgate-y=evil",
			`"__Host-mcpgate-flow"=evil`,
			"__Host-mcpgate-flow; Path=/; Secure",
			"=mcpgate-z=evil",
			"__Host-mcpgate-flow=; Max-Age=0; Path=/; Secure", // clearing it is overwriting it
			"theme=light; Path=/",
		}, []string{"app=1", "theme=light; Path=/"}, 8},
		{"attribute is no name", []string{"app=1; Path=/mcpgate-x; Domain=mcpgate-x"}, []string{"app=1; Path=/mcpgate-x; Domain=mcpgate-x"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.in != nil {
				h["Set-Cookie"] = slices.Clone(tt.in)
			}
			n := dropGatewaySetCookies(h)
			if got := h["Set-Cookie"]; n != tt.n || !slices.Equal(got, tt.want) {
				t.Errorf("Set-Cookie = %q, removed %d; want %q, %d", got, n, tt.want, tt.n)
			}
			if _, ok := h["Set-Cookie"]; ok != (len(tt.want) > 0) {
				t.Errorf("Set-Cookie present = %v with %d kept", ok, len(tt.want))
			}
		})
	}
}

func TestRestrictUpgrade(t *testing.T) {
	tests := []struct {
		name    string
		in      http.Header // as ReverseProxy hands it to Rewrite
		want    http.Header
		dropped bool
	}{
		{"no upgrade", http.Header{"Accept": {"*/*"}}, http.Header{"Accept": {"*/*"}}, false},
		{"websocket",
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, false},
		{"WebSocket",
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"WebSocket"}},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"WebSocket"}}, false},
		{"h2c",
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMAAABkAARAAAAAAAIAAAAA"}},
			http.Header{}, true},
		{"H2C", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"H2C"}}, http.Header{}, true},
		{"list with websocket", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c, websocket"}}, http.Header{}, true},
		{"websocket first in a list", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket, h2c"}}, http.Header{}, true},
		{"two fields", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket", "h2c"}}, http.Header{}, true},
		{"versioned", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket/13"}}, http.Header{}, true},
		{"tls", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"TLS/1.2"}}, http.Header{}, true},
		{"empty", http.Header{"Connection": {"Upgrade"}, "Upgrade": {""}}, http.Header{}, true},
		{"HTTP2-Settings alone (HTTP/2)", http.Header{"Http2-Settings": {"AAMAAABkAARAAAAAAAIAAAAA"}, "Accept": {"*/*"}}, http.Header{"Accept": {"*/*"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			if dropped := restrictUpgrade(h); dropped != tt.dropped {
				t.Errorf("dropped = %v, want %v", dropped, tt.dropped)
			}
			if !headerEqual(h, tt.want) {
				t.Errorf("header %v, want %v", h, tt.want)
			}
		})
	}
}

func headerEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestCheckSwitch(t *testing.T) {
	ws := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
	h2c := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}}
	tests := []struct {
		name     string
		status   int
		req, res http.Header
		ok       bool
	}{
		{"not a switch", 200, http.Header{}, http.Header{}, true},
		{"websocket", 101, ws, ws, true},
		{"WebSocket answer", 101, ws, http.Header{"Upgrade": {"WebSocket"}}, true},
		{"websocket asked, h2c answered", 101, ws, h2c, false},
		{"nothing asked, h2c answered", 101, http.Header{}, h2c, false},
		{"nothing asked, nothing named", 101, http.Header{}, http.Header{}, false},
		{"h2c asked and answered", 101, h2c, h2c, false},
		{"websocket asked, list answered", 101, ws, http.Header{"Upgrade": {"websocket, h2c"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &http.Response{StatusCode: tt.status, Header: tt.res, Request: &http.Request{Header: tt.req}}
			if err := checkSwitch(res); (err == nil) != tt.ok {
				t.Errorf("checkSwitch = %v, want ok %v", err, tt.ok)
			}
		})
	}
	if checkSwitch(&http.Response{StatusCode: 101, Header: ws}) == nil {
		t.Error("a 101 without its request passed")
	}
}

// TestRequestRulesNoAlloc: the ordinary request (no forbidden name, no
// gateway cookie, no upgrade) costs no allocation.
func TestRequestRulesNoAlloc(t *testing.T) {
	h := &Handler{log: slog.New(slog.DiscardHandler)}
	hdr := typicalHeader()
	if n := testing.AllocsPerRun(100, func() {
		h.dropHeaders(hdr, "header")
		stripGatewayCookies(hdr)
		restrictUpgrade(hdr)
	}); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
	res := http.Header{"Set-Cookie": {"app=1; Path=/"}, "Content-Type": {"text/event-stream"}}
	if n := testing.AllocsPerRun(100, func() { dropGatewaySetCookies(res) }); n != 0 {
		t.Errorf("%v allocations per response, want 0", n)
	}
}

func typicalHeader() http.Header {
	return http.Header{
		"Accept":               {"application/json, text/event-stream"},
		"Content-Type":         {"application/json"},
		"Mcp-Session-Id":       {"0f8e7d6c5b4a39281706f5e4d3c2b1a0"},
		"Mcp-Protocol-Version": {"2025-06-18"},
		"User-Agent":           {"claude-code/1.0"},
		"Cookie":               {"app=1; theme=dark"},
		"X-Forwarded-For":      {"192.0.2.1"},
		"X-Forwarded-Host":     {"notes.test"},
		"X-Forwarded-Proto":    {"https"},
	}
}

func BenchmarkRequestRules(b *testing.B) {
	h := &Handler{log: slog.New(slog.DiscardHandler)}
	hdr := typicalHeader()
	b.ReportAllocs()
	for b.Loop() {
		h.dropHeaders(hdr, "header")
		stripGatewayCookies(hdr)
		restrictUpgrade(hdr)
	}
}

// TestIdentityHeaders: through the handler, over HTTP/2 (header names
// written as the client chose) and HTTP/1.1, the backend receives
// mcpgate's identity once per header and none of the client's look-alikes,
// underscored names, gateway cookies or trailers.
func TestIdentityHeaders(t *testing.T) {
	var got struct {
		Header  http.Header
		Trailer http.Header
	}
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Header, got.Trailer = r.Header.Clone(), r.Trailer.Clone()
		w.Header().Add("Set-Cookie", "__Host-mcpgate-flow=evil; Path=/; Secure")
		w.Header().Add("Set-Cookie", "app=1")
	}))
	defer b.Close()
	p := &config.Proxy{Name: "notes", Target: upstreamOf(t, b.URL), Timeouts: config.Timeouts{Connect: time.Second, ResponseHeader: 5 * time.Second}}
	inner, err := New(p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Stand in for the resource Guard, which attaches the verified identity.
	px := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), &identity.Principal{Login: "alice", Scopes: []string{"mcp"}, ClientID: "cli"})))
	}))
	px.EnableHTTP2 = true
	px.StartTLS()
	defer px.Close()
	for _, proto := range []string{"HTTP/2.0", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			c := px.Client()
			if proto == "HTTP/1.1" {
				tr := c.Transport.(*http.Transport).Clone()
				tr.ForceAttemptHTTP2 = false
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
				c = &http.Client{Transport: tr}
				defer tr.CloseIdleConnections()
			}
			req, _ := http.NewRequest("POST", px.URL+"/mcp", strings.NewReader("{}"))
			req.ContentLength = -1
			for k, v := range map[string]string{
				"X_MCPGate_User":      "admin",
				"X-MCPGate_Scopes":    "admin",
				"x_mcpgate_client_id": "evil",
				"X.MCPGate.User":      "admin",
				"X-MCPGATE-USER":      "admin",
				"X-Mcpgate-Client-Id": "evil",
				"Cookie":              "app=1; __Host-mcpgate-flow=f; theme=dark",
				"X-Ok":                "1",
			} {
				req.Header[k] = []string{v} // not canonicalised
			}
			req.Trailer = http.Header{"X-Mcpgate-User": {"admin"}, "X_mcpgate_user": {"admin"}, "X-Sum": {"1"}}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.Proto != proto {
				t.Fatalf("proto %s, want %s", res.Proto, proto)
			}
			want := http.Header{"X-Mcpgate-User": {"alice"}, "X-Mcpgate-Scopes": {"mcp"}, "X-Mcpgate-Client-Id": {"cli"}}
			for k, v := range got.Header {
				if strings.Contains(strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(k)), "mcpgate") {
					if !slices.Equal(v, want[k]) {
						t.Errorf("backend got %s: %q", k, v)
					}
					delete(want, k)
				}
			}
			if len(want) > 0 {
				t.Errorf("backend did not get %v", want)
			}
			if c := got.Header.Values("Cookie"); !slices.Equal(c, []string{"app=1; theme=dark"}) {
				t.Errorf("backend got Cookie %q", c)
			}
			if got.Header.Get("X-Ok") != "1" {
				t.Error("an ordinary header was lost")
			}
			for k := range got.Trailer {
				if k != "X-Sum" {
					t.Errorf("backend got trailer %q", k)
				}
			}
			if sc := res.Header.Values("Set-Cookie"); !slices.Equal(sc, []string{"app=1"}) {
				t.Errorf("client got Set-Cookie %q, want only the backend's own", sc)
			}
		})
	}
}

// TestUpgradeOnlyWebSocket drives raw HTTP/1.1 through the handler to a
// backend that switches to whatever it is asked, or to h2c regardless.
func TestUpgradeOnlyWebSocket(t *testing.T) {
	type seenReq struct{ upgrade, connection, settings []string }
	seenc := make(chan seenReq, 1)
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenc <- seenReq{r.Header.Values("Upgrade"), r.Header.Values("Connection"), r.Header.Values("Http2-Settings")}
		up := r.Header.Get("Upgrade")
		if r.URL.Query().Get("answer") == "h2c" {
			up = "h2c"
		}
		if up == "" {
			json.NewEncoder(w).Encode("plain")
			return
		}
		switchProtocols(w, up, echoLine)
	}))
	defer b.Close()
	px := newProxy(t, b.URL, nil)
	tests := []struct {
		name, query, upgrade string
		status               int
		backendUpgrade       string // what the backend must have been asked for
	}{
		{"websocket", "", "websocket", 101, "websocket"},
		{"WebSocket", "", "WebSocket", 101, "WebSocket"},
		{"h2c is an ordinary request", "", "h2c", 200, ""},
		{"list is an ordinary request", "", "h2c, websocket", 200, ""},
		{"h2c answered to h2c is not relayed", "answer=h2c", "h2c", 502, ""},
		{"h2c answered to websocket is not relayed", "answer=h2c", "websocket", 502, "websocket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tlsDial(px, px.Client().Transport.(*http.Transport))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, "GET /ws?"+tt.query+" HTTP/1.1\r\nHost: notes.test\r\nUpgrade: "+tt.upgrade+
				"\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
			if tt.status == http.StatusBadGateway {
				var body struct{ Error, Message string }
				json.NewDecoder(res.Body).Decode(&body)
				if body.Error != "bad_gateway" || !strings.Contains(body.Message, "does not relay") {
					t.Errorf("502 body %+v, want bad_gateway saying the switch is not relayed", body)
				}
			}
			s := <-seenc
			if got := strings.Join(s.upgrade, ","); got != tt.backendUpgrade {
				t.Errorf("backend asked to upgrade to %q, want %q", got, tt.backendUpgrade)
			}
			if tt.backendUpgrade == "" && len(s.connection) > 0 {
				t.Errorf("backend got Connection %q", s.connection)
			}
			if len(s.settings) > 0 {
				t.Errorf("backend got HTTP2-Settings")
			}
			if res.StatusCode == 101 {
				io.WriteString(conn, "ping\n")
				if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
					t.Errorf("read %q, %v", line, err)
				}
			}
		})
	}
}

// TestEarlyHintsSetCookie: ReverseProxy relays a backend's 103 through its
// own trace hook, past ModifyResponse; mcpgate's cookies are dropped there
// too, the rest of the 103 still reaches the client.
func TestEarlyHintsSetCookie(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "__Host-mcpgate-flow=evil; Path=/; Secure")
		w.Header().Add("Set-Cookie", "app=early")
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Set-Cookie")
		io.WriteString(w, "ok")
	}))
	defer b.Close()
	px := newProxy(t, b.URL, nil)
	var early []http.Header
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			early = append(early, http.Header(h).Clone())
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", px.URL+"/", nil)
	res, err := px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(early) != 1 {
		t.Fatalf("the client got %d informational responses, want the one 103", len(early))
	}
	if sc := early[0].Values("Set-Cookie"); !slices.Equal(sc, []string{"app=early"}) {
		t.Errorf("103 Set-Cookie at the client %q, want only the backend's own", sc)
	}
	if early[0].Get("Link") == "" {
		t.Error("the 103's Link was lost")
	}
}

// TestDropLogsNamesOnly: the debug log says which header, trailer, cookie
// or upgrade was dropped, never a value (they may be credentials).
func TestDropLogsNamesOnly(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Add("Set-Cookie", "__Host-mcpgate-flow=backend-secret-value")
	}))
	defer b.Close()
	var logs strings.Builder
	p := &config.Proxy{Name: "notes", Target: upstreamOf(t, b.URL), Timeouts: config.Timeouts{Connect: time.Second, ResponseHeader: 5 * time.Second}}
	h, err := New(p, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(h)
	defer px.Close()
	req, _ := http.NewRequest("POST", px.URL+"/mcp", strings.NewReader("{}"))
	req.ContentLength = -1
	req.Header["X_Mcpgate_User"] = []string{"header-secret-value"}
	req.Header.Set("Cookie", "__Host-mcpgate-flow=cookie-secret-value")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "h2c-secret-value")
	req.Trailer = http.Header{"X_Sum": {"trailer-secret-value"}}
	res, err := px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	got := logs.String()
	for _, want := range []string{"name=X_mcpgate_user", "name=X_sum", "protocol switch", "Set-Cookie"} {
		if !strings.Contains(got, want) {
			t.Errorf("the debug log does not mention %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "secret-value") {
		t.Errorf("a value reached the log:\n%s", got)
	}
}

// TestTrailerSetCookie: ReverseProxy copies the backend's trailers after
// the body, past ModifyResponse; a Set-Cookie for mcpgate's names sent
// there is dropped too, other trailers pass.
func TestTrailerSetCookie(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Set-Cookie, X-Sum")
		io.WriteString(w, "ok")
		w.Header().Add("Set-Cookie", "__Host-mcpgate-flow=evil; Path=/; Secure")
		w.Header().Add("Set-Cookie", "app=late")
		w.Header().Set("X-Sum", "1")
	}))
	defer b.Close()
	px := newProxy(t, b.URL, nil)
	for _, proto := range []string{"HTTP/2.0", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			c := px.Client()
			if proto == "HTTP/1.1" {
				tr := c.Transport.(*http.Transport).Clone()
				tr.ForceAttemptHTTP2 = false
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
				c = &http.Client{Transport: tr}
				defer tr.CloseIdleConnections()
			}
			res, err := c.Get(px.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.Proto != proto {
				t.Fatalf("proto %s, want %s", res.Proto, proto)
			}
			if sc := res.Trailer.Values("Set-Cookie"); !slices.Equal(sc, []string{"app=late"}) {
				t.Errorf("trailer Set-Cookie at the client %q, want only the backend's own", sc)
			}
			if res.Trailer.Get("X-Sum") != "1" {
				t.Errorf("trailers at the client %v, want X-Sum kept", res.Trailer)
			}
		})
	}
}

func TestClearSiteDataDropped(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
		w.Header().Add("Set-Cookie", "app=gone; Max-Age=0")
		io.WriteString(w, "ok")
	}))
	defer b.Close()
	px := newProxy(t, b.URL, nil)
	res, err := px.Client().Get(px.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if v := res.Header.Values("Clear-Site-Data"); len(v) != 0 {
		t.Errorf("Clear-Site-Data %q reached the client; it would wipe mcpgate's cookies", v)
	}
	if sc := res.Header.Values("Set-Cookie"); !slices.Equal(sc, []string{"app=gone; Max-Age=0"}) {
		t.Errorf("Set-Cookie %q, want the backend's own kept", sc)
	}
}
