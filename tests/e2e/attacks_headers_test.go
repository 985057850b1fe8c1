package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestAttackHeaders is issue 10, items 5, 6 and 9, as an attacker with a
// valid token (and a hostile backend) would try them against the real
// binary, over HTTP/1.1 written by hand (so no client library tidies the
// header names), over HTTP/2 and, where the attack can be sent that way,
// HTTP/3. A raw TCP backend records the exact header and trailer fields
// the gateway sent it. The subtests share one gateway and run in order,
// but each stands alone: its own request id, its own assertions.
func TestAttackHeaders(t *testing.T) {
	t.Parallel()
	spy := newRawSpy(t)
	e := startOAuthWith(t, harness.Options{QUIC: true}, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables:       cliClient,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: spy.url})
	access, _ := e.tokens(t, "alpha.test", "e2e-cli")
	a := &attacker{e: e, spy: spy, token: access, h3: e.g.HTTP3Client(t)}

	t.Run("lookalike-identity/http1", a.lookalikeHTTP1)
	t.Run("lookalike-identity/h2", a.lookalikeH2)
	t.Run("lookalike-identity/h3", a.lookalikeH3)
	t.Run("trailers/http1", a.trailersHTTP1)
	t.Run("trailers/h2", a.trailersH2)
	t.Run("cookies/http1", a.cookiesHTTP1)
	t.Run("cookies/h2", a.cookiesH2)
	t.Run("cookies/h3", a.cookiesH3)
	t.Run("cookies-trailer/http1", a.trailerCookieHTTP1)
	t.Run("cookies-trailer/h2", a.trailerCookieH2)
	t.Run("cookies-early-hints/http1", a.earlyHintsHTTP1)
	t.Run("cookies-early-hints/h2", a.earlyHintsH2)
	t.Run("upgrade-h2c/http1", a.upgradeH2C)
	t.Run("http2-settings/h2", a.http2SettingsH2)
	t.Run("upgrade-h2c/h3", a.upgradeH3)
	t.Run("websocket-answered-h2c/http1", a.websocketAnsweredH2C)
	t.Run("websocket/http1", a.websocket)
	e.checkLogSecrets(t)
}

// The identity mcpgate must send, exactly once each, for e2e-cli's token.
var wantIdentity = map[string]string{"x-mcpgate-user": "alice", "x-mcpgate-scopes": "mcp", "x-mcpgate-client-id": "e2e-cli"}

type attacker struct {
	e     *oauthEnv
	spy   *rawSpy
	token string
	h3    *http.Client
	n     int // request ids; subtests run in order
}

// id returns a fresh request id for the spy.
func (a *attacker) id() string {
	a.n++
	return strconv.Itoa(a.n)
}

// raw1 sends req (a whole HTTP/1.1 request, \r\n line ends) over a new TLS
// connection to alpha.test and returns the response with its body read, and
// the connection's reader and the connection for upgraded exchanges.
func (a *attacker) raw1(t *testing.T, req string) (*http.Response, string, *bufio.Reader, net.Conn) {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: a.e.g.TLSConfig("alpha.test", "http/1.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", a.e.g.HTTPSAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, "", br, conn
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp, string(body), br, conn
}

// h2 sends a request over HTTP/2 and returns the response with its body.
func (a *attacker) h2(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.e.api.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.Proto != "HTTP/2.0" {
		t.Fatalf("protocol %s, want HTTP/2.0", resp.Proto)
	}
	return resp, string(body)
}

// h3Do sends a request over HTTP/3 and returns the response with its body.
func (a *attacker) h3Do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.h3.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.ProtoMajor != 3 {
		t.Fatalf("protocol %s, want HTTP/3", resp.Proto)
	}
	return resp, string(body)
}

func (a *attacker) h2Request(t *testing.T, method, query string, body io.Reader) *http.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, "https://alpha.test/mcp?"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// lookalikes are request headers a CGI/WSGI/Rack backend would read as
// HTTP_X_MCPGATE_* (or that differ from a reserved name only by case or by
// punctuation Go accepts in a name).
const lookalikes = "X_MCPGate_User: admin\r\n" +
	"X-MCPGate_Scopes: admin\r\n" +
	"x_mcpgate_client_id: trusted\r\n" +
	"X.MCPGate.User: admin\r\n" +
	"X-MCPGATE-USER: admin\r\n" +
	"x-mcpgate-scopes: admin\r\n" +
	"X-Mcpgate-Extra: x\r\n" +
	"X-Harmless: kept\r\n"

func (a *attacker) lookalikeHTTP1(t *testing.T) {
	id := a.id()
	resp, body, _, _ := a.raw1(t, "GET /mcp?id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\n"+
		lookalikes+"Connection: close\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	got := a.spy.get(t, id)
	checkIdentity(t, got)
	if v := got.values("x-harmless"); len(v) != 1 || v[0] != "kept" {
		t.Errorf("X-Harmless = %q, want [kept]: ordinary headers must pass", v)
	}
}

func (a *attacker) lookalikeH2(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "id="+id, nil)
	for line := range strings.Lines(lookalikes) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		req.Header[k] = append(req.Header[k], v) // as written: no canonicalisation
	}
	resp, body := a.h2(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	got := a.spy.get(t, id)
	checkIdentity(t, got)
	if v := got.values("x-harmless"); len(v) != 1 || v[0] != "kept" {
		t.Errorf("X-Harmless = %q, want [kept]: ordinary headers must pass", v)
	}
}

func (a *attacker) lookalikeH3(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "id="+id, nil)
	for line := range strings.Lines(lookalikes) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		req.Header[k] = append(req.Header[k], v)
	}
	resp, body := a.h3Do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	got := a.spy.get(t, id)
	checkIdentity(t, got)
	if v := got.values("x-harmless"); len(v) != 1 || v[0] != "kept" {
		t.Errorf("X-Harmless = %q, want [kept]: ordinary headers must pass", v)
	}
}

// checkIdentity fails unless every header name the backend received is
// letters, digits and '-', and the identity headers are exactly mcpgate's.
func checkIdentity(t *testing.T, got rawRequest) {
	t.Helper()
	seen := map[string]int{}
	for _, f := range got.fields {
		if strings.ContainsFunc(f.name, func(r rune) bool {
			return !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
			t.Errorf("the backend received header %q: a name with bytes other than letters, digits and '-'", f.name)
		}
		folded := strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(f.name))
		if !strings.HasPrefix(folded, "x-mcpgate-") {
			continue
		}
		want, ok := wantIdentity[folded]
		if !ok || f.value != want {
			t.Errorf("the backend received %s: %q, not set by mcpgate", f.name, f.value)
		}
		seen[folded]++
	}
	for k := range wantIdentity {
		if seen[k] != 1 {
			t.Errorf("the backend received %s %d times, want exactly once", k, seen[k])
		}
	}
}

// checkTrailers fails if the backend received a trailer (or a Trailer
// declaration) naming a reserved or underscored header.
func checkTrailers(t *testing.T, got rawRequest) {
	t.Helper()
	for _, f := range got.trailers {
		if strings.Contains(f.name, "_") || strings.HasPrefix(strings.ToLower(f.name), "x-mcpgate-") {
			t.Errorf("the backend received trailer %s: %q", f.name, f.value)
		}
	}
	for _, v := range got.values("trailer") {
		if l := strings.ToLower(v); strings.Contains(l, "mcpgate") {
			t.Errorf("the backend received Trailer: %q", v)
		}
	}
}

func (a *attacker) trailersHTTP1(t *testing.T) {
	id := a.id()
	resp, body, _, _ := a.raw1(t, "POST /mcp?id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\n"+
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"+
		"Trailer: X-MCPGate-User, X_MCPGate_User, X-Checksum\r\nConnection: close\r\n\r\n"+
		"2\r\n{}\r\n0\r\nX-MCPGate-User: admin\r\nX_MCPGate_User: admin\r\nX-Checksum: 1\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	got := a.spy.get(t, id)
	checkIdentity(t, got)
	checkTrailers(t, got)
}

func (a *attacker) trailersH2(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodPost, "id="+id, strings.NewReader("{}"))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Mcpgate-User": {"admin"}, "X_mcpgate_user": {"admin"}, "X-Checksum": {"1"}}
	resp, body := a.h2(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	got := a.spy.get(t, id)
	checkIdentity(t, got)
	checkTrailers(t, got)
}

// The cookies a browser holds for alpha.test: mcpgate's own and the MCP
// application's, interleaved.
const (
	cookiesA = "app=1; __Host-mcpgate-flow=secret-flow; theme=dark"
	cookiesB = "__Host-mcpgate-csrf=secret-csrf; __Host-mcpgate-session=s; lang=en;  MCPGATE-x=1; __secure-mcpgate-y=2"
)

// wantCookies is what the backend must receive of them, in order.
var wantCookies = []string{"app=1", "theme=dark", "lang=en"}

// checkCookies fails unless the backend received exactly the application's
// cookies, in order, and the client none of the backend's attempts to set
// mcpgate's cookies.
func checkCookies(t *testing.T, got rawRequest, resp *http.Response) {
	t.Helper()
	var crumbs []string
	for _, v := range got.values("cookie") {
		for c := range strings.SplitSeq(v, ";") {
			if c = strings.TrimSpace(c); c != "" {
				crumbs = append(crumbs, c)
			}
		}
	}
	if strings.Join(crumbs, "; ") != strings.Join(wantCookies, "; ") {
		t.Errorf("the backend received cookies %q, want %q", crumbs, wantCookies)
	}
	var names []string
	for _, sc := range resp.Header.Values("Set-Cookie") {
		name, _, _ := strings.Cut(sc, "=")
		name, _, _ = strings.Cut(name, ";")
		names = append(names, strings.TrimSpace(name))
		if strings.Contains(strings.ToLower(sc), "mcpgate-") {
			t.Errorf("the client received the backend's Set-Cookie %q", sc)
		}
	}
	if strings.Join(names, ",") != "app,theme" {
		t.Errorf("the client received Set-Cookie for %q, want the backend's own app and theme", names)
	}
}

func (a *attacker) cookiesHTTP1(t *testing.T) {
	id := a.id()
	resp, body, _, _ := a.raw1(t, "GET /mcp?case=cookies&id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\n"+
		"Cookie: "+cookiesA+"\r\nCookie: "+cookiesB+"\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	checkCookies(t, a.spy.get(t, id), resp)
}

func (a *attacker) cookiesH2(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "case=cookies&id="+id, nil)
	// Go's HTTP/2 client sends each cookie as its own field.
	req.Header["Cookie"] = []string{cookiesA, cookiesB}
	resp, body := a.h2(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	checkCookies(t, a.spy.get(t, id), resp)
}

func (a *attacker) cookiesH3(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "case=cookies&id="+id, nil)
	req.Header["Cookie"] = []string{cookiesA, cookiesB}
	resp, body := a.h3Do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	checkCookies(t, a.spy.get(t, id), resp)
}

// checkTrailerCookie fails unless the client got the backend's trailers
// without its Set-Cookie for mcpgate's cookie.
func checkTrailerCookie(t *testing.T, trailer http.Header) {
	t.Helper()
	if sc := trailer.Values("Set-Cookie"); strings.Join(sc, ",") != "app=late" {
		t.Errorf("the client received Set-Cookie %q in the trailer, want only the backend's own app=late", sc)
	}
	if trailer.Get("X-Sum") != "1" {
		t.Errorf("the client received trailers %v, want X-Sum: 1 among them", trailer)
	}
}

// trailerCookieHTTP1: ReverseProxy copies a backend's trailers after the
// body, apart from the header rules; they must not set mcpgate's cookies.
func (a *attacker) trailerCookieHTTP1(t *testing.T) {
	id := a.id()
	resp, body, _, _ := a.raw1(t, "GET /mcp?case=trailer&id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\nTE: trailers\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("status %d, body %q; want 200 ok from the backend", resp.StatusCode, body)
	}
	checkTrailerCookie(t, resp.Trailer)
}

func (a *attacker) trailerCookieH2(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "case=trailer&id="+id, nil)
	resp, body := a.h2(t, req)
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("status %d, body %q; want 200 ok from the backend", resp.StatusCode, body)
	}
	checkTrailerCookie(t, resp.Trailer)
}

// checkEarly fails unless the client got the backend's 103 without its
// Set-Cookie for mcpgate's cookie.
func checkEarly(t *testing.T, early []http.Header) {
	t.Helper()
	if len(early) != 1 {
		t.Fatalf("the client got %d informational responses, want the backend's 103", len(early))
	}
	if sc := early[0].Values("Set-Cookie"); strings.Join(sc, ",") != "app=early" {
		t.Errorf("the client received Set-Cookie %q in a 103, want only the backend's own app=early", sc)
	}
}

// earlyHintsHTTP1: ReverseProxy relays a backend's 103 Early Hints apart
// from the final response; it must not set mcpgate's cookies either.
func (a *attacker) earlyHintsHTTP1(t *testing.T) {
	id := a.id()
	resp, _, br, _ := a.raw1(t, "GET /mcp?case=early&id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusEarlyHints {
		t.Fatalf("status %d, want the backend's 103 first", resp.StatusCode)
	}
	checkEarly(t, []http.Header{resp.Header})
	final, err := http.ReadResponse(br, nil)
	if err != nil || final.StatusCode != http.StatusOK {
		t.Fatalf("final response: %v, %v; want 200", final, err)
	}
	final.Body.Close()
}

func (a *attacker) earlyHintsH2(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "case=early&id="+id, nil)
	var early []http.Header
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			early = append(early, http.Header(h).Clone())
			return nil
		},
	}))
	resp, body := a.h2(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	checkEarly(t, early)
}

// upgradeH2C: a request to switch to h2c (alone or in a list) reaches the
// backend as an ordinary request, and the backend's 101 to h2c is never
// relayed: after it, the connection would carry requests no check sees.
func (a *attacker) upgradeH2C(t *testing.T) {
	for _, up := range []string{"h2c", "H2C", "h2c, websocket", "websocket, h2c"} {
		t.Run(up, func(t *testing.T) {
			id := a.id()
			resp, body, _, _ := a.raw1(t, "GET /mcp?case=h2c&id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\n"+
				"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: "+up+"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
			if resp.StatusCode == http.StatusSwitchingProtocols {
				t.Errorf("the client received 101 Upgrade: %q", resp.Header.Get("Upgrade"))
			} else if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, body %q; want 502 (a backend's unasked-for 101 is refused)", resp.StatusCode, body)
			}
			checkNoUpgrade(t, a.spy.get(t, id))
		})
	}
}

func checkNoUpgrade(t *testing.T, got rawRequest) {
	t.Helper()
	for _, name := range []string{"upgrade", "http2-settings"} {
		if v := got.values(name); len(v) > 0 {
			t.Errorf("the backend received %s: %q", name, v)
		}
	}
	for _, v := range got.values("connection") {
		if l := strings.ToLower(v); strings.Contains(l, "upgrade") || strings.Contains(l, "http2-settings") {
			t.Errorf("the backend received Connection: %q", v)
		}
	}
}

// http2SettingsH2: over HTTP/2 there is no Upgrade, but HTTP2-Settings is
// an ordinary-looking field that must not reach the backend either.
func (a *attacker) http2SettingsH2(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "id="+id, nil)
	req.Header.Set("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
	resp, body := a.h2(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the backend", resp.StatusCode, body)
	}
	checkNoUpgrade(t, a.spy.get(t, id))
}

// upgradeH3: HTTP/3 has no Upgrade either, but the fields can be sent; an
// h2c switch asked for that way must not reach the backend or come back.
func (a *attacker) upgradeH3(t *testing.T) {
	id := a.id()
	req := a.h2Request(t, http.MethodGet, "case=h2c&id="+id, nil)
	req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.h3.Do(req)
	if err != nil {
		t.Logf("refused by the HTTP/3 stack: %v", err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Errorf("the client received 101 Upgrade: %q", resp.Header.Get("Upgrade"))
	}
	a.spy.mu.Lock()
	got, ok := a.spy.reqs[id]
	a.spy.mu.Unlock()
	if ok {
		checkNoUpgrade(t, got)
	}
}

// websocketAnsweredH2C: a WebSocket request the backend answers with a
// switch to h2c must not be relayed.
func (a *attacker) websocketAnsweredH2C(t *testing.T) {
	id := a.id()
	resp, body, _, _ := a.raw1(t, "GET /mcp?case=h2c&id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d (Upgrade %q), body %q; want 502", resp.StatusCode, resp.Header.Get("Upgrade"), body)
	}
}

// websocket: the one upgrade that is forwarded still works end to end.
func (a *attacker) websocket(t *testing.T) {
	id := a.id()
	resp, body, br, conn := a.raw1(t, "GET /mcp?case=ws&id="+id+" HTTP/1.1\r\nHost: alpha.test\r\nAuthorization: Bearer "+a.token+"\r\n"+
		"Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
		"Cookie: __Host-mcpgate-flow=secret-flow\r\nX_MCPGate_User: admin\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, body %q; want 101", resp.StatusCode, body)
	}
	got := a.spy.get(t, id)
	checkIdentity(t, got)
	if v := got.values("upgrade"); len(v) != 1 || !strings.EqualFold(v[0], "websocket") {
		t.Errorf("the backend received Upgrade %q, want websocket", v)
	}
	if v := got.values("cookie"); len(v) > 0 {
		t.Errorf("the backend received Cookie %q on the upgrade", v)
	}
	io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Errorf("over the upgraded connection: read %q, %v; want the backend's echo", line, err)
	}
}

// rawSpy is a backend on a bare TCP listener that records each request's
// header and trailer fields exactly as received, and answers by the
// request's case= query parameter:
//   - (none): 200 "ok"
//   - cookies: 200 with Set-Cookie for mcpgate's cookie names and its own
//   - trailer: 200 with Set-Cookie for mcpgate's flow cookie and its own in the trailer
//   - early: 103 with Set-Cookie for mcpgate's flow cookie and its own, then 200
//   - h2c: 101 Upgrade: h2c, whatever was asked
//   - ws: 101 Upgrade: websocket if asked, then echoes lines
type rawSpy struct {
	url string
	ln  net.Listener

	mu   sync.Mutex
	reqs map[string]rawRequest // guarded by mu; by the id= query parameter
	wg   sync.WaitGroup
}

type rawField struct{ name, value string }

type rawRequest struct {
	line     string // the request line
	fields   []rawField
	trailers []rawField
}

// values returns the values of every field named name (any case).
func (r rawRequest) values(name string) []string {
	var vs []string
	for _, f := range r.fields {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

func newRawSpy(t *testing.T) *rawSpy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawSpy{url: "http://" + ln.Addr().String(), ln: ln, reqs: map[string]rawRequest{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(15 * time.Second))
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// get waits (up to 5s) for the request with id.
func (s *rawSpy) get(t *testing.T, id string) rawRequest {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		r, ok := s.reqs[id]
		s.mu.Unlock()
		if ok {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backend saw no request with id %s", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serve reads one request and answers it; every answer closes the
// connection, so each request comes on a connection of its own.
func (s *rawSpy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	line, err := readLine(br)
	if err != nil {
		return
	}
	r := rawRequest{line: line}
	if r.fields, err = readFields(br); err != nil {
		return
	}
	// The body: chunked (with trailers) or Content-Length.
	if te := r.values("transfer-encoding"); len(te) > 0 && strings.EqualFold(te[len(te)-1], "chunked") {
		for {
			sz, err := readLine(br)
			if err != nil {
				return
			}
			sz, _, _ = strings.Cut(sz, ";")
			n, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 32)
			if err != nil {
				return
			}
			if n == 0 {
				break
			}
			if _, err := io.CopyN(io.Discard, br, n+2); err != nil {
				return
			}
		}
		if r.trailers, err = readFields(br); err != nil {
			return
		}
	} else if cl := r.values("content-length"); len(cl) > 0 {
		n, _ := strconv.ParseInt(cl[0], 10, 32)
		if _, err := io.CopyN(io.Discard, br, n); err != nil {
			return
		}
	}
	target := strings.Fields(line)
	var q url.Values
	if len(target) == 3 {
		if u, err := url.Parse(target[1]); err == nil {
			q = u.Query()
		}
	}
	s.mu.Lock()
	s.reqs[q.Get("id")] = r
	s.mu.Unlock()

	switch q.Get("case") {
	case "cookies":
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"+
			"Set-Cookie: app=evil; Path=/\r\n"+
			"Set-Cookie: __Host-mcpgate-flow=evil; Path=/; Secure; HttpOnly\r\n"+
			"Set-Cookie:   __host-MCPGATE-csrf=evil; Path=/; Secure\r\n"+
			"Set-Cookie: __Host-mcpgate-session=evil; Path=/; Secure\r\n"+
			"Set-Cookie: __Secure-mcpgate-x=evil; Secure\r\n"+
			"Set-Cookie: mcpgate-y=evil\r\n"+
			"Set-Cookie: \"__Host-mcpgate-flow\"=evil; Path=/\r\n"+
			"Set-Cookie: __Host-mcpgate-flow; Path=/; Secure\r\n"+
			"Set-Cookie: theme=light\r\n"+
			"\r\nok")
	case "trailer":
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Set-Cookie, X-Sum\r\nConnection: close\r\n\r\n"+
			"2\r\nok\r\n0\r\nSet-Cookie: __Host-mcpgate-flow=evil; Path=/; Secure\r\nSet-Cookie: app=late\r\nX-Sum: 1\r\n\r\n")
	case "early":
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n"+
			"Set-Cookie: __Host-mcpgate-flow=evil; Path=/; Secure\r\nSet-Cookie: app=early\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	case "h2c":
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		io.Copy(io.Discard, br) // until the gateway closes
	case "ws":
		if up := r.values("upgrade"); len(up) != 1 || !strings.EqualFold(up[0], "websocket") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if l, err := br.ReadString('\n'); err == nil {
			io.WriteString(c, "echo "+l)
		}
	default:
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	}
}

func readLine(br *bufio.Reader) (string, error) {
	l, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"), nil
}

// readFields reads header (or trailer) lines up to the empty line.
func readFields(br *bufio.Reader) ([]rawField, error) {
	var fs []rawField
	for range 200 {
		l, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if l == "" {
			return fs, nil
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("malformed field line %q", l)
		}
		fs = append(fs, rawField{k, strings.TrimSpace(v)})
	}
	return nil, fmt.Errorf("too many fields")
}
