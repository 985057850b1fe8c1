package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcpgate/mcpgate/internal/headless"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
	"github.com/mcpgate/mcpgate/tests/fakegithub"
	"github.com/mcpgate/mcpgate/tests/fakeoidc"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestAttackLoginCSRF runs login CSRF (issue 10, item 1) and the unbounded
// authorization request (item 7) against the real binary, as an attacker
// would: with his own browser, and a victim's browser that is signed in
// at GitHub and follows a link the attacker sent.
//
// alpha.test serves callback_url; beta.test is another proxy host, whose
// flows go through the callback host twice (to bind the browser there,
// and back from GitHub).
func TestAttackLoginCSRF(t *testing.T) {
	t.Parallel()
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		AllowedUsers: []string{"alice", "bob", "mallory"},
		Tables: `[[oauth.clients]]
client_id = "e2e-cli"
name = "E2E CLI"
redirect_uris = ["http://127.0.0.1/callback"]
`,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "beta", Hostnames: []string{"beta.test"}},
	)
	for _, host := range []string{"alpha.test", "beta.test"} {
		t.Run("victim-follows-provider-url/"+host, func(t *testing.T) { testVictimFollowsProviderURL(t, e, host) })
	}
	t.Run("victim-follows-start-link", func(t *testing.T) { testVictimFollowsStartLink(t, e) })
	t.Run("start-link-single-use", func(t *testing.T) { testStartLinkSingleUse(t, e) })
	t.Run("other-host-completes", func(t *testing.T) { testOtherHostCompletes(t, e) })
	t.Run("upstream-pkce", func(t *testing.T) { testUpstreamPKCE(t, e) })
	t.Run("authorize-size-limits", func(t *testing.T) { testAuthorizeLimits(t, e) })
	// Last: it uses up the test address's allowance of pending flows.
	t.Run("pending-flows-per-address", func(t *testing.T) { testPendingPerAddress(t, e) })
	t.Run("no-credentials-in-logs", func(t *testing.T) { e.checkLogSecrets(t) })
}

// userAgent is a browser with its own cookie jar that follows redirects
// one by one, recording every response.
type userAgent struct {
	c   *http.Client
	rec *flowRecorder
	jar http.CookieJar
}

func newUserAgent(e *oauthEnv) *userAgent {
	jar, _ := cookiejar.New(nil)
	rec := &flowRecorder{base: e.g.BrowserTransport()}
	return &userAgent{
		c: &http.Client{
			Transport:     rec,
			Jar:           jar,
			Timeout:       15 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		rec: rec,
		jar: jar,
	}
}

// signInAtGitHub gives the browser a GitHub session as login, as if the
// user had signed in at github.com earlier.
func (a *userAgent) signInAtGitHub(gh *fakegithub.Server, login string) {
	u, _ := url.Parse(gh.WebURL)
	a.jar.SetCookies(u, []*http.Cookie{{Name: fakegithub.SessionCookie, Value: gh.SignIn(login), Path: "/"}})
}

// walk GETs rawURL and follows redirects until stop says so for a
// Location (which is then returned, not fetched) or a response is not a
// redirect (nil is returned).
func (a *userAgent) walk(t *testing.T, rawURL string, stop func(*url.URL) bool) *url.URL {
	t.Helper()
	for range 15 {
		resp, err := a.c.Get(rawURL)
		if err != nil {
			t.Fatalf("GET %s: %v", rawURL, err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			return nil
		}
		if stop(loc) {
			return loc
		}
		rawURL = loc.String()
	}
	t.Fatalf("too many redirects from %s", rawURL)
	return nil
}

func isGitHub(gh *fakegithub.Server) func(*url.URL) bool {
	return func(u *url.URL) bool { return strings.HasPrefix(u.String(), gh.AuthorizeURL) }
}

func isRedirectURI(u *url.URL) bool { return strings.HasPrefix(u.String(), loopbackRedirect) }

// authorizeURL is an authorization request of the static client e2e-cli
// for host's resource.
func authorizeURL(host, verifier string) string {
	return "https://" + host + "/authorize?" + url.Values{
		"response_type": {"code"}, "client_id": {"e2e-cli"}, "redirect_uri": {loopbackRedirect},
		"state": {rand.Text()}, "scope": {"mcp"}, "resource": {"https://" + host + "/mcp"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
	}.Encode()
}

// wantNoCodeFor fails if loc delivers an authorization code; if it does,
// it redeems it to say whose token the attacker got.
func wantNoCodeFor(t *testing.T, e *oauthEnv, host string, loc *url.URL, verifier, what string) {
	t.Helper()
	if loc == nil || loc.Query().Get("code") == "" {
		return
	}
	tr := e.postForm(t, "https://"+host+"/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {loopbackRedirect},
		"code_verifier": {verifier}, "client_id": {"e2e-cli"}, "resource": {"https://" + host + "/mcp"},
	}, "", "")
	login := "?"
	if at := tr.str("access_token"); at != "" {
		_, claims := jwtParts(t, at)
		login, _ = claims["login"].(string)
	}
	t.Errorf("%s: the attacker got an authorization code (token for %q)", what, login)
}

// testVictimFollowsProviderURL: the attacker starts a flow and sends the
// victim the GitHub URL it leads to. The victim's browser, signed in at
// GitHub, comes back to the callback without the bind cookie: refused
// before the code is redeemed, and the attacker's flow gets nothing.
func testVictimFollowsProviderURL(t *testing.T, e *oauthEnv, host string) {
	e.gh.SetLoginAs("") // each browser is who its GitHub session says
	defer e.gh.SetLoginAs("alice")
	verifier := oauth2.GenerateVerifier()
	attacker := newUserAgent(e)
	attacker.signInAtGitHub(e.gh, "mallory")
	provider := attacker.walk(t, authorizeURL(host, verifier), isGitHub(e.gh))
	if provider == nil {
		t.Fatalf("the attacker's flow did not reach GitHub:%s", describeSteps(attacker.rec.Steps()))
	}
	flow := provider.Query().Get("state")

	exchanges := e.gh.TokenExchanges()
	victim := newUserAgent(e)
	victim.signInAtGitHub(e.gh, "bob")
	end := victim.walk(t, provider.String(), isRedirectURI)
	steps := victim.rec.Steps()
	if n := e.gh.TokenExchanges() - exchanges; n != 0 {
		t.Errorf("the callback redeemed %d GitHub code(s) for a browser that did not start the flow:%s", n, describeSteps(steps))
	}
	cb := findStep(steps, harness.CallbackPath)
	if cb == nil || cb.Status != http.StatusForbidden || !strings.Contains(cb.Body, "browser") {
		t.Errorf("callback in the victim's browser: want a 403 page saying the sign-in was not started in this browser:%s", describeSteps(steps))
	}
	if end != nil {
		t.Errorf("the victim's browser was redirected to the client: %s", end)
	}
	// The attacker continues his flow with his own cookies.
	loc := attacker.walk(t, "https://"+host+"/oauth/continue?flow="+url.QueryEscape(flow), isRedirectURI)
	wantNoCodeFor(t, e, host, loc, verifier, "continue after the victim's login")
}

// testVictimFollowsStartLink: the flow starts on beta.test, whose
// authorization request leads to https://alpha.test/oauth/start. The
// attacker sends that link instead: the victim's browser binds the flow
// and signs in, but continuing needs both the flow cookie (the attacker's)
// and the proof (the victim's).
func testVictimFollowsStartLink(t *testing.T, e *oauthEnv) {
	e.gh.SetLoginAs("")
	defer e.gh.SetLoginAs("alice")
	verifier := oauth2.GenerateVerifier()
	attacker := newUserAgent(e)
	resp, err := attacker.c.Get(authorizeURL("beta.test", verifier))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	start, err := resp.Location()
	if err != nil || start.Host != "alpha.test" || start.Path != "/oauth/start" {
		t.Fatalf("authorization request at beta.test: status %d, Location %q; want a redirect to https://alpha.test/oauth/start", resp.StatusCode, resp.Header.Get("Location"))
	}
	flow := start.Query().Get("flow")

	victim := newUserAgent(e)
	victim.signInAtGitHub(e.gh, "bob")
	end := victim.walk(t, start.String(), isRedirectURI)
	steps := victim.rec.Steps()
	if end != nil {
		t.Errorf("the victim's browser reached the client: %s", end)
	}
	cont := findStep(steps, "/oauth/continue")
	if cont == nil || cont.Status != http.StatusForbidden {
		t.Errorf("the victim's continue without the flow cookie: want 403:%s", describeSteps(steps))
	}
	// The attacker has the flow cookie but not the proof.
	loc := attacker.walk(t, "https://beta.test/oauth/continue?flow="+url.QueryEscape(flow), isRedirectURI)
	wantNoCodeFor(t, e, "beta.test", loc, verifier, "continue without the proof")
	if st := attacker.rec.Steps(); st[len(st)-1].Status != http.StatusForbidden {
		t.Errorf("the attacker's continue: want 403:%s", describeSteps(st))
	}
	// Nor does a guessed proof help.
	loc = attacker.walk(t, "https://beta.test/oauth/continue?flow="+url.QueryEscape(flow)+"&proof="+rand.Text(), isRedirectURI)
	wantNoCodeFor(t, e, "beta.test", loc, verifier, "continue with a guessed proof")
}

// testStartLinkSingleUse: the start link binds one browser; a second
// browser following it (the victim, after the attacker used it) is
// refused there and never sent to GitHub.
func testStartLinkSingleUse(t *testing.T, e *oauthEnv) {
	verifier := oauth2.GenerateVerifier()
	attacker := newUserAgent(e)
	start := attacker.walk(t, authorizeURL("beta.test", verifier), func(u *url.URL) bool { return u.Path == "/oauth/start" })
	if start == nil {
		t.Fatalf("no redirect to /oauth/start:%s", describeSteps(attacker.rec.Steps()))
	}
	if gh := attacker.walk(t, start.String(), isGitHub(e.gh)); gh == nil {
		t.Fatalf("the first visit of the start link did not lead to GitHub:%s", describeSteps(attacker.rec.Steps()))
	}
	authorizes := e.gh.AuthorizeRequests()
	victim := newUserAgent(e)
	victim.walk(t, start.String(), isGitHub(e.gh))
	steps := victim.rec.Steps()
	if len(steps) != 1 || steps[0].Status < 400 || steps[0].Header.Get("Location") != "" {
		t.Errorf("second visit of the start link: want an error page:%s", describeSteps(steps))
	}
	if e.gh.AuthorizeRequests() != authorizes {
		t.Error("the second browser was sent to GitHub")
	}
}

// testOtherHostCompletes: a flow started on a host other than the
// callback host completes in one browser, through /oauth/start.
func testOtherHostCompletes(t *testing.T, e *oauthEnv) {
	res := e.code(t, authzRequest{host: "beta.test", clientID: "e2e-cli"})
	start := findStep(res.steps, "/oauth/start")
	if start == nil || !strings.HasPrefix(start.URL, "https://alpha.test/oauth/start?") {
		t.Errorf("the flow did not bind the browser at the callback host:%s", describeSteps(res.steps))
	}
	tr := e.redeem(t, "beta.test", "e2e-cli", res, res.verifier)
	if tr.status != http.StatusOK {
		t.Fatalf("token: %v", tr)
	}
	e.wantAccepted(t, "beta.test", tr.str("access_token"), "token of a flow started on beta.test")
	// The flow's cookies do not outlive it.
	for _, s := range res.steps {
		for _, c := range (&http.Response{Header: s.Header}).Cookies() {
			if !strings.HasPrefix(c.Name, "__Host-") || !c.Secure || !c.HttpOnly || c.Path != "/" || c.SameSite != http.SameSiteLaxMode {
				t.Errorf("cookie %s from %s: want __Host- prefix, Secure, HttpOnly, Path=/ and SameSite=Lax", c.Name, s.URL)
			}
		}
	}
}

// testUpstreamPKCE: GitHub gets an S256 challenge, and the exchange the
// matching verifier.
func testUpstreamPKCE(t *testing.T, e *oauthEnv) {
	e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
	q, p := e.gh.LastAuthorizeQuery(), e.gh.LastTokenParams()
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		t.Fatalf("GitHub's authorize request: code_challenge %q, method %q; want S256", q.Get("code_challenge"), q.Get("code_challenge_method"))
	}
	sum := sha256.Sum256([]byte(p.Get("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != q.Get("code_challenge") {
		t.Errorf("the code_verifier of the exchange does not match the challenge")
	}
	e.remember(p.Get("code_verifier"))
}

// pendingFlows counts the live pending flows of the test's address in the
// gateway's store.
func pendingFlows(t *testing.T, e *oauthEnv) int {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(e.g.StateDir, "oauth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := st.CountPending(context.Background(), "127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// testAuthorizeLimits: oversized authorization requests are refused with
// 400 before anything is stored.
func testAuthorizeLimits(t *testing.T, e *oauthEnv) {
	verifier := oauth2.GenerateVerifier()
	base, _ := url.Parse(authorizeURL("alpha.test", verifier))
	before := pendingFlows(t, e)
	for _, c := range []struct {
		name string
		edit func(q url.Values)
		post bool
	}{
		{"1 MiB body", func(q url.Values) { q.Set("pad", strings.Repeat("a", 1<<20)) }, true},
		{"state over 1 KiB", func(q url.Values) { q.Set("state", strings.Repeat("s", 1025)) }, false},
		{"state over 1 KiB in a POST", func(q url.Values) { q.Set("state", strings.Repeat("s", 1025)) }, true},
		{"scope over 512 bytes", func(q url.Values) { q.Set("scope", "mcp "+strings.Repeat("x", 510)) }, false},
	} {
		q := base.Query()
		c.edit(q)
		var req *http.Request
		if c.post {
			req, _ = http.NewRequest(http.MethodPost, "https://alpha.test/authorize", strings.NewReader(q.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req, _ = http.NewRequest(http.MethodGet, "https://alpha.test/authorize?"+q.Encode(), nil)
		}
		resp, err := e.api.Do(req)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("%s: status %d, Location %.80q; want 400", c.name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// Limits at their edge are accepted.
	q := base.Query()
	q.Set("state", strings.Repeat("s", 1024))
	q.Set("scope", "mcp "+strings.Repeat("x", 508))
	resp, err := e.api.Get("https://alpha.test/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("state of 1 KiB and scope of 512 bytes: status %d, want 302", resp.StatusCode)
	}
	if after := pendingFlows(t, e); after != before+1 {
		t.Errorf("pending flows of 127.0.0.1: %d before, %d after; want only the accepted request stored", before, after)
	}
}

// testPendingPerAddress: one address may hold a bounded number of live
// pending flows; beyond, 429 with Retry-After, in every worker (the count
// is in the shared store).
func testPendingPerAddress(t *testing.T, e *oauthEnv) {
	const limit = 30
	n := pendingFlows(t, e)
	get := func(host string) *http.Response {
		resp, err := e.api.Get(authorizeURL(host, oauth2.GenerateVerifier()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := n; i < limit; i++ {
		host := []string{"alpha.test", "beta.test"}[i%2]
		if resp := get(host); resp.StatusCode != http.StatusFound {
			t.Fatalf("pending flow %d of %d at %s: status %d, want 302", i+1, limit, host, resp.StatusCode)
		}
	}
	for _, host := range []string{"alpha.test", "beta.test"} {
		resp := get(host)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("pending flow %d at %s: status %d, Retry-After %q; want 429 with Retry-After", limit+1, host, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if got := pendingFlows(t, e); got != limit {
		t.Errorf("live pending flows of 127.0.0.1: %d, want %d", got, limit)
	}
}

// TestAttackOIDCNonce: the id_token must carry the nonce of this login,
// which is random and stored with the flow. A token with another nonce is
// refused, and so is one with the nonce an older mcpgate derived from
// state (anyone who saw the state could mint it).
func TestAttackOIDCNonce(t *testing.T) {
	t.Parallel()
	e := startOIDC(t, `allowed_users = ["*"]`, "")
	e.op.AddUser(fakeoidc.User{Sub: "sub-alice", PreferredUsername: "alice"})

	// Derived the way mcpgate once did: SHA-256 of a label and the state.
	derived := func(state string) string {
		sum := sha256.Sum256([]byte("mcpgate oidc nonce\x00" + state))
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	var mu sync.Mutex
	var state string // the upstream state of the current login
	for _, c := range []struct {
		name  string
		nonce func() string
	}{
		{"another nonce", func() string { return rand.Text() }},
		{"nonce derived from state", func() string { mu.Lock(); defer mu.Unlock(); return derived(state) }},
		{"no nonce", func() string { return "" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.op.EditClaims(func(claims map[string]any) {
				if n := c.nonce(); n != "" {
					claims["nonce"] = n
				} else {
					delete(claims, "nonce")
				}
			})
			defer e.op.EditClaims(nil)
			e.op.SetLoginAs("sub-alice")
			rec := &flowRecorder{base: stateSpy{e.g.BrowserTransport(), e.op.URL, func(s string) { mu.Lock(); state = s; mu.Unlock() }}}
			agent := &headless.Agent{Transport: rec}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := agent.Authorize(ctx, authorizeURL("alpha.test", oauth2.GenerateVerifier()), loopbackRedirect)
			steps := rec.Steps()
			if err == nil {
				t.Fatalf("an id_token with %s was accepted: %+v", c.name, res)
			}
			if cb := findStep(steps, harness.CallbackPath); cb == nil || cb.Status != http.StatusBadGateway {
				t.Errorf("want 502 \"Sign-in failed\" at the callback:%s", describeSteps(steps))
			}
		})
	}
	if e.op.LastAuthorizeQuery().Get("nonce") == derived(e.op.LastAuthorizeQuery().Get("state")) {
		t.Error("the nonce sent to the provider is derived from state")
	}
	// The genuine nonce passes.
	if res := e.login(t, "sub-alice"); res.err != nil {
		t.Fatalf("login with the genuine nonce: %v%s", res.err, describeSteps(res.steps))
	}
}

// stateSpy tells seen the state of each request to the provider's
// authorize endpoint.
type stateSpy struct {
	base   http.RoundTripper
	issuer string
	seen   func(string)
}

func (s stateSpy) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.String(), s.issuer+"/authorize") {
		s.seen(r.URL.Query().Get("state"))
	}
	return s.base.RoundTrip(r)
}
