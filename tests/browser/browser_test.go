// Package browser runs mcpgate's login flow in a real browser: headless
// Chromium (Debian's chromium package) driven over the DevTools protocol
// with github.com/chromedp/chromedp. Go HTTP clients with cookie jars do
// not behave like browsers on SameSite, __Host- cookies and cross-site
// redirects; this test makes Chromium do what a user's browser does.
//
// The gateway has two proxies: alpha.test is the host of [oauth]
// callback_url, beta.test is another host, where the flows start, so the
// browser crosses sites twice (beta.test → alpha.test → fake GitHub →
// alpha.test → beta.test). The test plays the MCP client in Go: it
// registers a client, builds the authorization request, serves the
// loopback redirect URI and redeems the code.
//
//   - legit: a user signs in at the fake GitHub, clicks Allow and the
//     client gets a token naming them; the __Host-mcpgate-* cookies are
//     Secure, HttpOnly and SameSite=Lax.
//   - provider-link and start-link (login CSRF, issue 10 item 1): an
//     attacker starts a flow in his browser, stops at the identity
//     provider (or at the callback host's /oauth/start bounce) and sends
//     that link to a victim who is signed in at the provider. The victim
//     follows it to the end; then the attacker tries to continue his flow.
//     No code may reach the client and no token may name the victim.
//
// It is part of `make e2e`, which installs Chromium when missing; without
// MCPGATE_BROWSER_E2E=1 the test skips, so `go test ./tests/...` needs no
// browser.
package browser

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/fakegithub"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// EnableEnv must be set (to anything) for the test to run.
const EnableEnv = "MCPGATE_BROWSER_E2E"

// ChromiumEnv overrides the browser binary (default /usr/bin/chromium).
const ChromiumEnv = "MCPGATE_CHROMIUM"

const (
	// callbackHost is the host of callback_url; flowHost is where the MCP
	// client sends the browser. They are different sites (".test" is no
	// registrable suffix, so each name is its own site).
	callbackHost = "alpha.test"
	flowHost     = "beta.test"

	// Bounds: the browser's start, one navigation or click with all its
	// redirects, and a look at the page.
	startTimeout = 30 * time.Second
	stepTimeout  = 20 * time.Second
	peekTimeout  = 5 * time.Second

	// approveButton is the consent page's Allow button.
	approveButton = `button[name="decision"][value="approve"]`
)

// The fake GitHub's users: the victim and the attacker.
var users = []fakegithub.User{
	{Login: "alice", ID: 101, Name: "Alice"},
	{Login: "mallory", ID: 666, Name: "Mallory"},
}

func TestMain(m *testing.M) { harness.Main(m) }

func TestBrowserLogin(t *testing.T) {
	if os.Getenv(EnableEnv) == "" {
		t.Skipf("set %s=1 (make e2e) to run the login flow in headless Chromium", EnableEnv)
	}
	exe := os.Getenv(ChromiumEnv)
	if exe == "" {
		exe = "/usr/bin/chromium"
	}
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("%v: install Debian's chromium package (make e2e does, as root) or set %s", err, ChromiumEnv)
	}
	e := startEnv(t, exe)

	t.Run("legit", e.legit)
	t.Run("provider-link", func(t *testing.T) { e.attack(t, false) })
	t.Run("start-link", func(t *testing.T) { e.attack(t, true) })
}

// env is the gateway, the fake GitHub, the client's redirect URI and one
// Chromium shared by the scenarios (each uses fresh browser contexts).
type env struct {
	g        *harness.Gateway
	gh       *fakegithub.Server
	api      *http.Client // to the gateway; redirects are returned, not followed
	redirect *redirectServer
	browser  *browser
}

func startEnv(t *testing.T, exe string) *env {
	gh := fakegithub.New(t)
	for _, u := range users {
		gh.AddUser(u)
	}
	// Nobody is signed in: each browser signs in on the fake's own page.
	gh.SetLoginAs("")
	oauth := harness.NewGitHubOAuth(t, gh, harness.GitHubOAuthConfig{CallbackHost: callbackHost})
	var proxies []harness.Proxy
	for _, p := range []struct{ name, host string }{{"alpha", callbackHost}, {"beta", flowHost}} {
		proxies = append(proxies, harness.Proxy{
			Name:      p.name,
			Hostnames: []string{p.host},
			Target:    backends.NewMCP(t, p.name+"-backend").URL,
			Auth:      `scopes = ["mcp"]`,
		})
	}
	g := harness.Start(t, harness.Options{Proxies: proxies, ServerTOML: oauth.TOML()})
	api := g.HTTP2Client()
	api.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	// Chromium trusts exactly the gateway's certificates (their public
	// keys), not every certificate.
	var pins []string
	for _, p := range proxies {
		pins = append(pins, spkiPin(t, filepath.Join(g.PKI.Dir, p.Name+".crt")))
	}
	return &env{
		g:        g,
		gh:       gh,
		api:      api,
		redirect: newRedirectServer(t),
		browser:  startBrowser(t, exe, g.HTTPSAddr, pins),
	}
}

// legit is scenario A: the whole flow as a user runs it.
func (e *env) legit(t *testing.T) {
	clientID := e.register(t, "browser e2e (legit)")
	az := e.newAuthz(clientID)
	alice := e.browser.newTab(t, "alice")

	// The client opens the browser; mcpgate sends it to the provider,
	// which asks to sign in.
	alice.navigate(az.url)
	loc := alice.location()
	if !strings.HasPrefix(loc, e.gh.WebURL+"/login") {
		alice.fatalf("after /authorize the browser is at %s, want the fake GitHub's sign-in page", loc)
	}
	cookies := alice.cookies(e.cookieURLs()...)

	alice.fillSignIn("alice")
	loc = alice.location()
	if !strings.HasPrefix(loc, "https://"+flowHost+"/") || !alice.has(approveButton) {
		alice.fatalf("after signing in the browser is at %s, want the consent page on %s", loc, flowHost)
	}
	if text := alice.text(); !strings.Contains(text, "alice") {
		alice.errorf("the consent page does not name the signed-in user alice")
	}
	cookies = append(cookies, alice.cookies(e.cookieURLs()...)...)

	resp := alice.click(approveButton)
	hits := e.redirect.hitsFor(az.state)
	if len(hits) != 1 {
		alice.fatalf("the redirect URI got %d responses for this flow, want 1 (last document: HTTP %d)", len(hits), resp.Status)
	}
	q := hits[0]
	if q.Get("error") != "" || q.Get("code") == "" {
		alice.fatalf("authorization response %v, want a code", q)
	}
	if want := "https://" + flowHost; q.Get("iss") != want {
		t.Errorf("iss = %q, want %q (RFC 9207)", q.Get("iss"), want)
	}
	cookies = append(cookies, alice.cookies(e.cookieURLs()...)...)

	tok := e.redeem(t, clientID, q.Get("code"), az.verifier)
	if tok.status != http.StatusOK || tok.str("access_token") == "" {
		t.Fatalf("redeeming the code: %v", tok)
	}
	claims := jwtClaims(t, tok.str("access_token"))
	if claims["login"] != "alice" {
		t.Errorf("token login = %v, want alice (claims %v)", claims["login"], claims)
	}
	if st := e.mcpStatus(t, tok.str("access_token")); st != http.StatusOK {
		t.Errorf("MCP initialize at %s with the token: HTTP %d, want 200", flowHost, st)
	}
	t.Logf("token for %v (scope %v, aud %v)", claims["login"], claims["scope"], claims["aud"])

	// The cookies as the browser stored them.
	seen := checkHostCookies(t, cookies)
	if !seenCookie(seen, "__Host-mcpgate-flow", flowHost) {
		t.Errorf("no __Host-mcpgate-flow cookie on %s was seen (cookies: %s)", flowHost, describeCookies(cookies))
	}
	if alice.visited("https://"+callbackHost+"/oauth/start") && !seenCookie(seen, "__Host-mcpgate-bind", callbackHost) {
		t.Errorf("the flow bounced through %s/oauth/start but no __Host-mcpgate-bind cookie was seen there (cookies: %s)",
			callbackHost, describeCookies(cookies))
	}
	t.Logf("mcpgate's cookies seen: %s", strings.Join(slices.Sorted(maps.Keys(seen)), ", "))
	t.Logf("browser path:%s", alice.describeTrace())
}

// attack is scenarios B (the victim gets the provider link) and C (the
// victim gets the callback host's /oauth/start link).
func (e *env) attack(t *testing.T, startLink bool) {
	clientID := e.register(t, "browser e2e (attack)")
	az := e.newAuthz(clientID)
	before := e.redirect.count()

	// The attacker starts a flow with his own client in his own browser
	// and stops where the link he wants leaves mcpgate.
	mallory := e.browser.newTab(t, "mallory")
	pattern, what := e.gh.AuthorizeURL+"*", "the identity provider's authorize URL"
	if startLink {
		pattern, what = "https://"+callbackHost+"/oauth/start*", "https://"+callbackHost+"/oauth/start"
	}
	link := mallory.stopAt(pattern, az.url)
	if link == "" {
		mallory.fatalf("the attacker's browser never requested %s (the flow has no such step?)", what)
	}
	flowID := mallory.flowID()
	if flowID == "" {
		mallory.fatalf("cannot tell the attacker's flow id from his browser's requests")
	}
	t.Logf("attacker's link: %s (flow %s…)", link, flowID[:min(8, len(flowID))])

	// The victim, signed in at the provider, follows it to the end,
	// approving whatever she is asked to.
	alice := e.browser.newTab(t, "alice")
	alice.signIn(e.gh.WebURL, "alice")
	resp := alice.navigate(link)
	if alice.has(approveButton) {
		t.Logf("the victim was shown a consent page (%s); she clicks Allow", alice.location())
		resp = alice.click(approveButton)
	}
	victimEnd, victimText := alice.location(), alice.text()
	if !startLink && !alice.visited("https://"+callbackHost+"/oauth/callback") {
		alice.fatalf("the victim's browser never reached mcpgate's callback: the provider step did not run")
	}

	// The attacker tries to continue his flow with his own cookies.
	mallory.stopIntercepting()
	cont := "https://" + flowHost + "/oauth/continue?" + url.Values{"flow": {flowID}}.Encode()
	resp2 := mallory.navigate(cont)
	if mallory.has(approveButton) {
		t.Logf("the attacker was shown a consent page (%s); he clicks Allow", mallory.location())
		if strings.Contains(mallory.text(), "alice") {
			t.Errorf("LOGIN CSRF: the attacker's consent page names the victim alice:\n%s", mallory.text())
		}
		resp2 = mallory.click(approveButton)
	}
	attackerEnd, attackerText := mallory.location(), mallory.text()

	// Nothing for this flow may reach the client, and no token may name
	// the victim.
	for _, q := range e.redirect.hitsFor(az.state) {
		msg := fmt.Sprintf("LOGIN CSRF: the attacker's client got an authorization response %v", redact(q))
		if code := q.Get("code"); code != "" {
			tok := e.redeem(t, clientID, code, az.verifier)
			if at := tok.str("access_token"); at != "" {
				msg += fmt.Sprintf("; redeemed: a token with login %v", jwtClaims(t, at)["login"])
			} else {
				msg += fmt.Sprintf("; redeeming it: %v", tok)
			}
		}
		t.Error(msg)
	}
	if n := e.redirect.count() - before; n > 0 && len(e.redirect.hitsFor(az.state)) == 0 {
		t.Errorf("the redirect URI got %d responses during the attack", n)
	}
	if resp.Status < 400 {
		t.Errorf("the victim's browser ended at %s with HTTP %d, want an error page:\n%s\npath:%s",
			victimEnd, resp.Status, victimText, alice.describeTrace())
	}
	if resp2.Status < 400 {
		t.Errorf("the attacker's browser ended at %s with HTTP %d, want an error page:\n%s\npath:%s",
			attackerEnd, resp2.Status, attackerText, mallory.describeTrace())
	}
	if strings.Contains(attackerText, "alice") {
		t.Errorf("the attacker's last page names the victim alice:\n%s", attackerText)
	}
	t.Logf("victim ended at %s (HTTP %d): %s", victimEnd, resp.Status, oneLine(victimText))
	t.Logf("attacker ended at %s (HTTP %d): %s", attackerEnd, resp2.Status, oneLine(attackerText))
	// Whatever mcpgate set in either browser has the right attributes.
	checkHostCookies(t, append(alice.cookies(e.cookieURLs()...), mallory.cookies(e.cookieURLs()...)...))
	if t.Failed() {
		t.Logf("victim's path:%s", alice.describeTrace())
		t.Logf("attacker's path:%s", mallory.describeTrace())
	}
}

// cookieURLs are the origins whose cookies the test reads.
func (e *env) cookieURLs() []string {
	return []string{"https://" + callbackHost + "/", "https://" + flowHost + "/", e.gh.WebURL + "/"}
}

// ---------------------------------------------------------------------------
// The MCP client's side, in Go.

type authz struct {
	url, state, verifier string
}

// newAuthz builds an authorization request at flowHost for clientID.
func (e *env) newAuthz(clientID string) authz {
	verifier := oauth2.GenerateVerifier()
	state := rand.Text()
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {e.redirect.uri},
		"scope":                 {"mcp"},
		"state":                 {state},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"},
		"resource":              {"https://" + flowHost + "/mcp"},
	}
	return authz{url: "https://" + flowHost + "/authorize?" + q.Encode(), state: state, verifier: verifier}
}

// register registers a public client (RFC 7591) at flowHost; such a client
// gets the consent page.
func (e *env) register(t *testing.T, name string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"client_name":                name,
		"redirect_uris":              []string{e.redirect.uri},
		"token_endpoint_auth_method": "none",
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
	})
	r := e.do(t, http.MethodPost, "https://"+flowHost+"/register", "application/json", bytes.NewReader(body))
	if r.status != http.StatusCreated || r.str("client_id") == "" {
		t.Fatalf("registering a client: %v", r)
	}
	return r.str("client_id")
}

// redeem exchanges a code at flowHost's token endpoint.
func (e *env) redeem(t *testing.T, clientID, code, verifier string) jsonResp {
	t.Helper()
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {e.redirect.uri},
		"code_verifier": {verifier},
		"client_id":     {clientID},
		"resource":      {"https://" + flowHost + "/mcp"},
	}
	return e.do(t, http.MethodPost, "https://"+flowHost+"/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
}

// mcpStatus sends an MCP initialize request with token to flowHost.
func (e *env) mcpStatus(t *testing.T, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"browser-e2e","version":"test"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+flowHost+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatalf("POST https://%s/mcp: %v", flowHost, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode
}

// jsonResp is a JSON answer of the authorization server.
type jsonResp struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r jsonResp) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func (r jsonResp) String() string { return fmt.Sprintf("HTTP %d %s", r.status, r.raw) }

func (e *env) do(t *testing.T, method, rawURL, contentType string, body io.Reader) jsonResp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	r := jsonResp{status: resp.StatusCode, raw: raw}
	if strings.Contains(resp.Header.Get("Content-Type"), "json") && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: HTTP %d, not a JSON object: %q", method, rawURL, resp.StatusCode, raw)
		}
	}
	return r
}

// jwtClaims decodes a JWT's claims without verifying it (the gateway
// accepting the token at /mcp is the verification).
func jwtClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWS compact serialization (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT claims: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatalf("JWT claims: %v", err)
	}
	return claims
}

// redirectServer is the client's loopback redirect URI; it records every
// authorization response.
type redirectServer struct {
	uri string

	mu   sync.Mutex
	hits []url.Values // guarded by mu
}

func newRedirectServer(t *testing.T) *redirectServer {
	rs := &redirectServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cb" {
			http.NotFound(w, r)
			return
		}
		rs.mu.Lock()
		rs.hits = append(rs.hits, r.URL.Query())
		rs.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>Signed in</title><h1 id=\"received\">You can close this window.</h1>\n")
	}))
	t.Cleanup(srv.Close)
	rs.uri = srv.URL + "/cb"
	return rs
}

func (rs *redirectServer) hitsFor(state string) []url.Values {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []url.Values
	for _, q := range rs.hits {
		if q.Get("state") == state {
			out = append(out, q)
		}
	}
	return out
}

func (rs *redirectServer) count() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.hits)
}

// redact hides a code in a message.
func redact(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		if k == "code" {
			v = []string{"(redacted)"}
		}
		out[k] = v
	}
	return out
}

// ---------------------------------------------------------------------------
// The browser.

// browser is one headless Chromium.
type browser struct {
	ctx     context.Context // its root chromedp context
	dataDir string
	closed  atomic.Bool // set at cleanup: chromedp may still log, the test may not

	mu     sync.Mutex
	output bytes.Buffer // guarded by mu; Chromium's stdout and stderr
}

func (b *browser) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.output.Len() < 1<<20 {
		b.output.Write(p)
	}
	return len(p), nil
}

// startBrowser starts Chromium with an empty profile. Every *.test name
// resolves to the gateway's https listener (port included), every other
// name but loopback addresses fails to resolve, and TLS accepts the pinned
// public keys only. Cleanup kills it and fails the test if any of its
// processes is left.
func startBrowser(t *testing.T, exe, gatewayAddr string, pins []string) *browser {
	b := &browser{dataDir: filepath.Join(t.TempDir(), "chromium-profile")}
	if err := os.MkdirAll(b.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	rules := "MAP *.test " + gatewayAddr + ", EXCLUDE 127.0.0.1, EXCLUDE localhost, MAP * ~NOTFOUND"
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.UserDataDir(b.dataDir),
		chromedp.Flag("host-resolver-rules", rules),
		chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(pins, ",")),
		chromedp.CombinedOutput(b),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// Its own process group, killed at cleanup; and killed if
			// this process dies.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		}),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(format string, args ...any) {
		if !b.closed.Load() {
			t.Logf("chromedp: "+format, args...)
		}
	}))
	b.ctx = ctx
	var pgid int
	t.Cleanup(func() {
		b.closed.Store(true)
		// Browser.close first, so that Chromium ends its own children;
		// then the allocator waits for the process.
		if err := bounded(10*time.Second, func() error { return chromedp.Cancel(ctx) }); err != nil {
			t.Logf("closing chromium: %v", err)
		}
		cancel()
		if err := bounded(10*time.Second, func() error { acancel(); return nil }); err != nil {
			t.Errorf("chromium did not exit within 10s of the end of the test: %v", err)
		}
		deadline := time.Now().Add(3 * time.Second)
		left := b.leftovers()
		for len(left) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			left = b.leftovers()
		}
		if pgid > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // its own group: anything of it still there
		}
		if len(left) > 0 {
			t.Errorf("chromium processes left 3s after the browser exited: %v; killing them", left)
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			b.mu.Lock()
			out := b.output.String()
			b.mu.Unlock()
			if len(out) > 16<<10 {
				out = "…" + out[len(out)-16<<10:]
			}
			t.Logf("chromium output:\n%s", out)
		}
	})
	if err := bounded(startTimeout, func() error { return chromedp.Do(ctx) }); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil {
		if p := c.Browser.Process(); p != nil {
			pgid = p.Pid
		}
	}
	v, err := chromedp.CallBrowser(ctx, cdpbrowser.GetVersion, cdp.Empty{})
	if err == nil {
		t.Logf("%s: %s", exe, v.Product)
	}
	return b
}

// leftovers lists the processes that still run with this browser's
// profile directory.
func (b *browser) leftovers() []int {
	want := []byte("--user-data-dir=" + b.dataDir)
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for arg := range bytes.SplitSeq(cmd, []byte{0}) {
			if bytes.Equal(arg, want) {
				if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && !zombie(st) {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

// zombie reports whether a /proc/PID/stat line is a zombie's.
func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// bounded runs f and gives up after d.
func bounded(d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("no answer within %v", d)
	}
}

// tab is a page in its own browser context: its own cookies.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu       sync.Mutex
	trace    []string             // guarded by mu; what the page's document requests did
	requests []string             // guarded by mu; URLs of document requests, in order
	stops    chan fetch.RequestID // requests paused by stopAt
	stopped  []string             // guarded by mu; URLs stopAt stopped
}

// newTab opens a page in a new browser context.
func (b *browser) newTab(t *testing.T, name string) *tab {
	t.Helper()
	tb := &tab{t: t, name: name, stops: make(chan fetch.RequestID, 16)}
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext(), chromedp.WithListener(tb.onEvent))
	tb.ctx = ctx
	t.Cleanup(cancel)
	if err := bounded(startTimeout, func() error { return chromedp.Do(ctx) }); err != nil {
		t.Fatalf("%s: opening a page: %v", name, err)
	}
	return tb
}

// onEvent runs in the tab's event loop: it only records.
func (tb *tab) onEvent(ev any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		if ev.Type != network.ResourceTypeDocument {
			return
		}
		if r := ev.RedirectResponse; r != nil {
			tb.trace = append(tb.trace, fmt.Sprintf("%d %s", r.Status, r.URL))
		}
		tb.trace = append(tb.trace, fmt.Sprintf("→ %s %s", ev.Request.Method, ev.Request.URL))
		tb.requests = append(tb.requests, ev.Request.URL)
	case *network.EventResponseReceived:
		if ev.Type == network.ResourceTypeDocument {
			tb.trace = append(tb.trace, fmt.Sprintf("%d %s", ev.Response.Status, ev.Response.URL))
		}
	case *network.EventLoadingFailed:
		if ev.Type == network.ResourceTypeDocument {
			tb.trace = append(tb.trace, "failed: "+ev.ErrorText)
		}
	case *fetch.EventRequestPaused:
		tb.stopped = append(tb.stopped, ev.Request.URL)
		select {
		case tb.stops <- ev.RequestID:
		default:
		}
	}
}

// step runs f with a deadline, failing the test with the page's state if
// it fails.
func (tb *tab) step(what string, f func(ctx context.Context) error) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if err := f(ctx); err != nil {
		tb.fatalf("%s: %v", what, err)
	}
}

// navigate loads u and returns the last document's response (after
// redirects).
func (tb *tab) navigate(u string) *network.Response {
	tb.t.Helper()
	var resp *network.Response
	tb.step("navigating to "+u, func(ctx context.Context) error {
		var err error
		resp, err = chromedp.Run(ctx, chromedp.NavigateResponse(u))
		if err == nil && resp == nil {
			err = errors.New("no document response")
		}
		return err
	})
	return resp
}

// click clicks the element sel (waiting until it is visible) and returns
// the response of the document the click leads to.
func (tb *tab) click(sel string) *network.Response {
	tb.t.Helper()
	var resp *network.Response
	tb.step("clicking "+sel, func(ctx context.Context) error {
		var err error
		resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
		if err == nil && resp == nil {
			err = errors.New("no document response")
		}
		return err
	})
	return resp
}

// fillSignIn signs in as login on the fake GitHub's sign-in page the tab
// shows, and returns the response of the page that follows.
func (tb *tab) fillSignIn(login string) *network.Response {
	tb.t.Helper()
	tb.step("filling in the sign-in form", func(ctx context.Context) error {
		return chromedp.Do(ctx,
			chromedp.WaitVisible(chromedp.CSS("#login_field")),
			chromedp.SendKeys(chromedp.CSS("#login_field"), login),
			chromedp.SendKeys(chromedp.CSS("#password"), "correct horse battery staple"),
		)
	})
	return tb.click(`input[type="submit"][name="commit"]`)
}

// signIn signs in at the fake GitHub's own sign-in page and checks the
// session cookie.
func (tb *tab) signIn(webURL, login string) {
	tb.t.Helper()
	tb.navigate(webURL + "/login")
	tb.fillSignIn(login)
	for _, c := range tb.cookies(webURL + "/") {
		if c.Name == "user_session" {
			return
		}
	}
	tb.fatalf("signing in as %s at the fake GitHub set no user_session cookie", login)
}

// stopAt makes the tab stop (fail) every request matching pattern, loads
// u, and returns the first stopped URL ("" if none was stopped when the
// page finished loading).
func (tb *tab) stopAt(pattern, u string) string {
	tb.t.Helper()
	tb.step("intercepting "+pattern, func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{
			Patterns: []*fetch.RequestPattern{{URLPattern: pattern, RequestStage: fetch.RequestStageRequest}},
		})
		return err
	})
	// Paused requests are failed from here, outside the event loop.
	go func() {
		for {
			select {
			case <-tb.ctx.Done():
				return
			case id := <-tb.stops:
				ctx, cancel := context.WithTimeout(tb.ctx, peekTimeout)
				_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: id, ErrorReason: network.ErrorReasonBlockedByClient})
				cancel()
			}
		}
	}()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	// The navigation fails where it is stopped.
	_, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.stopped) == 0 {
		tb.t.Logf("%s: loading %s (nothing stopped): %v", tb.name, u, err)
		return ""
	}
	return tb.stopped[0]
}

// stopIntercepting ends stopAt.
func (tb *tab) stopIntercepting() {
	tb.t.Helper()
	tb.step("ending the interception", func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{})
		return err
	})
}

// flowID is the attacker's flow id as his browser saw it: the flow
// parameter of the /oauth/start bounce, or else (no bounce) the state
// mcpgate sent to the provider.
func (tb *tab) flowID() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var fromState string
	for _, r := range append(append([]string(nil), tb.requests...), tb.stopped...) {
		u, err := url.Parse(r)
		if err != nil {
			continue
		}
		if u.Host == callbackHost && u.Path == "/oauth/start" && u.Query().Get("flow") != "" {
			return u.Query().Get("flow")
		}
		if u.Path == "/login/oauth/authorize" && fromState == "" {
			fromState = u.Query().Get("state")
		}
	}
	return fromState
}

// visited reports whether the tab requested a document whose URL starts
// with prefix.
func (tb *tab) visited(prefix string) bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, r := range tb.requests {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

// cookies returns the cookies of the tab's browser context for urls.
func (tb *tab) cookies(urls ...string) []*network.Cookie {
	tb.t.Helper()
	var out []*network.Cookie
	tb.step("reading cookies", func(ctx context.Context) error {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: urls})
		out = res.Cookies
		return err
	})
	return out
}

// has reports whether the page has an element matching sel.
func (tb *tab) has(sel string) bool {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, peekTimeout)
	defer cancel()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q) !== null", sel)))
	return err == nil && ok
}

// location is the page's URL ("" if it cannot be read).
func (tb *tab) location() string {
	ctx, cancel := context.WithTimeout(tb.ctx, peekTimeout)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return fmt.Sprintf("(location: %v)", err)
	}
	return loc
}

// text is the page's visible text.
func (tb *tab) text() string {
	ctx, cancel := context.WithTimeout(tb.ctx, peekTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return fmt.Sprintf("(text: %v)", err)
	}
	if len(s) > 4000 {
		s = s[:4000] + "…"
	}
	return strings.TrimSpace(s)
}

func (tb *tab) describeTrace() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var b strings.Builder
	for _, l := range tb.trace {
		b.WriteString("\n    " + l)
	}
	return b.String()
}

func (tb *tab) state() string {
	return fmt.Sprintf("%s's browser is at %s\npage text:\n%s\npath:%s", tb.name, tb.location(), tb.text(), tb.describeTrace())
}

func (tb *tab) fatalf(format string, args ...any) {
	tb.t.Helper()
	tb.t.Fatalf("%s: %s\n%s", tb.name, fmt.Sprintf(format, args...), tb.state())
}

func (tb *tab) errorf(format string, args ...any) {
	tb.t.Helper()
	tb.t.Errorf("%s: %s\n%s", tb.name, fmt.Sprintf(format, args...), tb.state())
}

// checkHostCookies fails for any __Host-mcpgate-* cookie that is not
// Secure, HttpOnly, SameSite=Lax, host-only and for Path=/, and returns the
// set of "name@domain" seen.
func checkHostCookies(t *testing.T, cookies []*network.Cookie) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cookies {
		if !strings.HasPrefix(c.Name, "__Host-mcpgate-") {
			continue
		}
		key := c.Name + "@" + c.Domain
		if seen[key] {
			continue
		}
		seen[key] = true
		if !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax || c.Path != "/" || strings.HasPrefix(c.Domain, ".") {
			t.Errorf("cookie %s: Secure=%v HttpOnly=%v SameSite=%q Path=%q Domain=%q; want Secure, HttpOnly, SameSite=Lax, Path=/, host-only",
				key, c.Secure, c.HTTPOnly, c.SameSite, c.Path, c.Domain)
		}
	}
	return seen
}

// seenCookie reports whether a cookie named prefix, or prefix and a
// per-flow suffix, was seen on domain.
func seenCookie(seen map[string]bool, prefix, domain string) bool {
	for k := range seen {
		name, d, _ := strings.Cut(k, "@")
		if d == domain && (name == prefix || strings.HasPrefix(name, prefix+"-") || strings.HasPrefix(name, prefix+"_")) {
			return true
		}
	}
	return false
}

func describeCookies(cookies []*network.Cookie) string {
	var names []string
	for _, c := range cookies {
		names = append(names, c.Name+"@"+c.Domain)
	}
	return strings.Join(names, ", ")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// spkiPin is Chromium's --ignore-certificate-errors-spki-list entry for
// the certificate in file: base64(SHA-256(SubjectPublicKeyInfo)).
func spkiPin(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
