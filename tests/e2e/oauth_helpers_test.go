package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/mcpgate/mcpgate/internal/headless"
	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/fakegithub"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// The users of every OAuth test's fake GitHub.
var oauthUsers = []fakegithub.User{
	{Login: "alice", ID: 101, Name: "Alice"},
	{Login: "bob", ID: 102},
	{Login: "octocat", ID: 583231, Name: "The Octocat"},
	{Login: "mallory", ID: 666},
}

// oauthEnv is a gateway whose proxies require OAuth, with fakegithub as
// the identity provider and a spied go-sdk MCP server behind each proxy.
type oauthEnv struct {
	g     *harness.Gateway
	gh    *fakegithub.Server
	oauth *harness.GitHubOAuth
	api   *http.Client // h2 to the gateway; redirects are returned, not followed
	spies map[string]*backendSpy

	mu      sync.Mutex
	secrets map[string]bool // guarded by mu; credentials seen, which must never be logged
}

// remember notes credentials that must never appear in the gateway's log.
func (e *oauthEnv) remember(vals ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.secrets == nil {
		e.secrets = map[string]bool{}
	}
	for _, v := range vals {
		if len(v) >= 16 {
			e.secrets[v] = true
		}
	}
}

var (
	jwtPattern    = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.eyJ`)
	githubPattern = regexp.MustCompile(`gh[opsu]_[A-Za-z0-9]{20,}`)
)

// checkLogSecrets fails if the gateway's log contains a credential: a
// remembered one, a JWT, a GitHub token or the GitHub client secret.
func (e *oauthEnv) checkLogSecrets(t *testing.T) {
	t.Helper()
	logs := e.g.Logs()
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for s := range e.secrets {
		if strings.Contains(logs, s) {
			n++
		}
	}
	if n > 0 {
		t.Errorf("%d of %d credentials the test saw appear in the gateway log", n, len(e.secrets))
	}
	if m := jwtPattern.FindString(logs); m != "" {
		t.Errorf("a JWT appears in the gateway log: %s…", m)
	}
	if m := githubPattern.FindString(logs); m != "" {
		t.Errorf("a GitHub token appears in the gateway log: %s…", m[:8])
	}
	if strings.Contains(logs, e.oauth.ClientSecret) {
		t.Error("the GitHub client secret appears in the gateway log")
	}
}

// cliClient is the [[oauth.clients]] table of the static public client
// most tests sign in with: "e2e-cli", redirecting to loopback.
const cliClient = `[[oauth.clients]]
client_id = "e2e-cli"
redirect_uris = ["http://127.0.0.1/callback"]
`

// startOAuth starts a gateway for proxies (a proxy with an empty Target gets
// a spied MCP backend; Auth defaults to `required = true`) with the OAuth
// configuration cfg. fakegithub signs everyone in as alice.
func startOAuth(t *testing.T, cfg harness.GitHubOAuthConfig, proxies ...harness.Proxy) *oauthEnv {
	t.Helper()
	return startOAuthWith(t, harness.Options{}, cfg, proxies...)
}

// startOAuthWith is startOAuth with further gateway options (QUIC, …).
func startOAuthWith(t *testing.T, opts harness.Options, cfg harness.GitHubOAuthConfig, proxies ...harness.Proxy) *oauthEnv {
	t.Helper()
	e := &oauthEnv{gh: fakegithub.New(t), spies: map[string]*backendSpy{}}
	for _, u := range oauthUsers {
		e.gh.AddUser(u)
	}
	e.gh.SetLoginAs("alice")
	for i := range proxies {
		p := &proxies[i]
		if p.Target == "" {
			spy := newBackendSpy(t, p.Name+"-backend")
			e.spies[p.Name] = spy
			p.Target = spy.URL
		}
		if p.Auth == "" {
			p.Auth = "required = true"
		}
	}
	e.oauth = harness.NewGitHubOAuth(t, e.gh, cfg)
	opts.Proxies, opts.ServerTOML = proxies, opts.ServerTOML+e.oauth.TOML()
	e.g = harness.Start(t, opts)
	e.api = e.g.HTTP2Client()
	e.api.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return e
}

// backendSpy is a reverse proxy in front of a go-sdk MCP server that
// records what the gateway sent to the backend.
type backendSpy struct {
	*httptest.Server

	mu       sync.Mutex
	requests int
	authz    []string      // guarded by mu; every Authorization header seen
	identity []http.Header // guarded by mu; the X-Mcpgate-* headers of each request
	reqIDs   [][]string    // guarded by mu; the X-Request-Id values of each request
}

func newBackendSpy(t *testing.T, name string) *backendSpy {
	t.Helper()
	mcpSrv := backends.NewMCP(t, name)
	target, err := url.Parse(mcpSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		FlushInterval: -1,
	}
	s := &backendSpy{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := http.Header{}
		for k, v := range r.Header {
			if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Mcpgate-") {
				id[k] = v
			}
		}
		s.mu.Lock()
		s.requests++
		s.authz = append(s.authz, r.Header.Values("Authorization")...)
		s.identity = append(s.identity, id)
		s.reqIDs = append(s.reqIDs, r.Header.Values("X-Request-Id"))
		s.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

// seen returns the request count, the Authorization headers and the
// identity headers the backend received.
func (s *backendSpy) seen() (int, []string, []http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, append([]string(nil), s.authz...), append([]http.Header(nil), s.identity...)
}

// requestIDs returns the X-Request-Id values of each request the backend
// received.
func (s *backendSpy) requestIDs() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.reqIDs...)
}

// flowStep is one response a user agent received during an authorization
// flow.
type flowStep struct {
	Method, URL string
	Status      int
	Header      http.Header
	Body        string // HTML bodies only
}

// flowRecorder is a RoundTripper recording every response, with the body
// of HTML pages.
type flowRecorder struct {
	base http.RoundTripper

	mu    sync.Mutex
	steps []flowStep // guarded by mu
}

func (r *flowRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	st := flowStep{Method: req.Method, URL: req.URL.String(), Status: resp.StatusCode, Header: resp.Header.Clone()}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		st.Body = string(b)
	}
	r.mu.Lock()
	r.steps = append(r.steps, st)
	r.mu.Unlock()
	return resp, nil
}

func (r *flowRecorder) Steps() []flowStep {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]flowStep(nil), r.steps...)
}

// find returns the first step whose URL path is path, or nil.
func findStep(steps []flowStep, path string) *flowStep {
	for i := range steps {
		if u, err := url.Parse(steps[i].URL); err == nil && u.Path == path {
			return &steps[i]
		}
	}
	return nil
}

func describeSteps(steps []flowStep) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "\n  %s %s -> %d", s.Method, s.URL, s.Status)
		if loc := s.Header.Get("Location"); loc != "" {
			fmt.Fprintf(&b, " Location: %s", loc)
		}
	}
	return b.String()
}

// loopbackRedirect is the redirect URI the manual flows use: the static
// clients register http://127.0.0.1/callback, and a loopback redirect may
// use any port (RFC 8252 section 7.3).
const loopbackRedirect = "http://127.0.0.1:45678/callback"

// authzRequest is an authorization request built by hand.
type authzRequest struct {
	host, clientID, redirectURI string
	scope                       string // "" means "mcp"; "-" none
	resource                    string // "" means https://<host>/mcp; "-" none
	challengeMethod             string // "" means S256; "-" no PKCE at all
	login                       string // fakegithub's user; "" means alice
	deny                        bool   // deny at the consent page
}

// authzResult is where the flow ended.
type authzResult struct {
	*headless.Result // nil if the flow did not reach the redirect URI
	err              error
	verifier, state  string
	steps            []flowStep
}

// authorize runs an authorization request through a fresh headless
// browser (its own cookie jar), approving consent if asked.
func (e *oauthEnv) authorize(t *testing.T, ar authzRequest) authzResult {
	t.Helper()
	if ar.redirectURI == "" {
		ar.redirectURI = loopbackRedirect
	}
	verifier := oauth2.GenerateVerifier()
	state := rand.Text()
	q := url.Values{
		"response_type": {"code"},
		"client_id":     {ar.clientID},
		"redirect_uri":  {ar.redirectURI},
		"state":         {state},
	}
	switch ar.scope {
	case "":
		q.Set("scope", "mcp")
	case "-":
	default:
		q.Set("scope", ar.scope)
	}
	switch ar.resource {
	case "":
		q.Set("resource", "https://"+ar.host+"/mcp")
	case "-":
	default:
		q.Set("resource", ar.resource)
	}
	switch ar.challengeMethod {
	case "":
		q.Set("code_challenge", oauth2.S256ChallengeFromVerifier(verifier))
		q.Set("code_challenge_method", "S256")
	case "-":
	case "plain":
		q.Set("code_challenge", verifier)
		q.Set("code_challenge_method", "plain")
	default:
		t.Fatalf("authorize: challenge method %q", ar.challengeMethod)
	}
	login := ar.login
	if login == "" {
		login = "alice"
	}
	e.gh.SetLoginAs(login)
	defer e.gh.SetLoginAs("alice")

	rec := &flowRecorder{base: e.g.BrowserTransport()}
	agent := &headless.Agent{Transport: rec, Login: login, Deny: ar.deny}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := agent.Authorize(ctx, "https://"+ar.host+"/authorize?"+q.Encode(), ar.redirectURI)
	return authzResult{Result: res, err: err, verifier: verifier, state: state, steps: rec.Steps()}
}

// code runs authorize and fails the test unless a code came back with
// the right state and iss.
func (e *oauthEnv) code(t *testing.T, ar authzRequest) authzResult {
	t.Helper()
	res := e.authorize(t, ar)
	if res.err != nil {
		t.Fatalf("authorization flow at %s for %s: %v%s", ar.host, ar.clientID, res.err, describeSteps(res.steps))
	}
	if res.Code == "" || res.State != res.state {
		t.Fatalf("authorization response: code %q, state %q (sent %q)", res.Code, res.State, res.state)
	}
	if want := "https://" + ar.host; res.Iss != want {
		t.Errorf("authorization response iss = %q, want %q (RFC 9207)", res.Iss, want)
	}
	if q := e.gh.LastAuthorizeQuery(); q.Has("resource") {
		t.Errorf("the client's resource reached GitHub's authorize endpoint: %v", q)
	}
	return res
}

// jsonResp is a JSON response of the authorization server.
type jsonResp struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (r jsonResp) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func (r jsonResp) String() string { return fmt.Sprintf("HTTP %d %s", r.status, r.raw) }

// postForm POSTs form to rawURL; user, if set, is sent with pass as HTTP
// Basic client credentials.
func (e *oauthEnv) postForm(t *testing.T, rawURL string, form url.Values, user, pass string) jsonResp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	e.remember(form.Get("code"), form.Get("refresh_token"), form.Get("code_verifier"), form.Get("client_secret"), form.Get("token"), pass)
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	return e.doJSON(t, req)
}

// postJSON POSTs v as JSON.
func (e *oauthEnv) postJSON(t *testing.T, rawURL string, v any) jsonResp {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return e.doJSON(t, req)
}

func (e *oauthEnv) getJSON(t *testing.T, rawURL string) jsonResp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.doJSON(t, req)
}

func (e *oauthEnv) doJSON(t *testing.T, req *http.Request) jsonResp {
	t.Helper()
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	r := jsonResp{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(bytes.TrimSpace(raw)) > 0 && strings.Contains(resp.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: HTTP %d, body is not a JSON object: %v: %q", req.Method, req.URL, resp.StatusCode, err, raw)
		}
	}
	e.remember(r.str("access_token"), r.str("refresh_token"), r.str("client_secret"), r.str("registration_access_token"))
	return r
}

// redeem exchanges the code of res for tokens as public client clientID.
func (e *oauthEnv) redeem(t *testing.T, host, clientID string, res authzResult, verifier string) jsonResp {
	t.Helper()
	return e.postForm(t, "https://"+host+"/token", url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {res.Code},
		"redirect_uri":  {loopbackRedirect},
		"code_verifier": {verifier},
		"client_id":     {clientID},
		"resource":      {"https://" + host + "/mcp"},
	}, "", "")
}

// tokens runs a whole flow for public client clientID at host and returns
// the access and refresh tokens.
func (e *oauthEnv) tokens(t *testing.T, host, clientID string) (access, refresh string) {
	t.Helper()
	res := e.code(t, authzRequest{host: host, clientID: clientID})
	tr := e.redeem(t, host, clientID, res, res.verifier)
	if tr.status != http.StatusOK || tr.str("access_token") == "" {
		t.Fatalf("redeeming a fresh code: %v", tr)
	}
	return tr.str("access_token"), tr.str("refresh_token")
}

// refresh uses a refresh token of public client clientID at host.
func (e *oauthEnv) refresh(t *testing.T, host, clientID, rt string) jsonResp {
	t.Helper()
	return e.postForm(t, "https://"+host+"/token", url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {rt},
		"client_id":     {clientID},
	}, "", "")
}

// initializeBody is an MCP initialize request.
const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"test"}}}`

// mcpStatus POSTs an initialize request to https://host/mcp with token as
// the bearer token (none if empty) and returns the status and the
// WWW-Authenticate header.
func (e *oauthEnv) mcpStatus(t *testing.T, host, token string, hdr http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+"/mcp", strings.NewReader(initializeBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatalf("POST https://%s/mcp: %v", host, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// wantAccepted fails unless token gets through to the backend at host.
func (e *oauthEnv) wantAccepted(t *testing.T, host, token, what string) {
	t.Helper()
	if st, www := e.mcpStatus(t, host, token, nil); st != http.StatusOK {
		t.Fatalf("%s at %s: status %d (WWW-Authenticate %q), want 200", what, host, st, www)
	}
}

// wantInvalidToken fails unless token is refused at host with 401 and
// error="invalid_token".
func (e *oauthEnv) wantInvalidToken(t *testing.T, host, token, what string) {
	t.Helper()
	st, www := e.mcpStatus(t, host, token, nil)
	if st != http.StatusUnauthorized || !strings.Contains(www, `error="invalid_token"`) {
		t.Errorf("%s at %s: status %d, WWW-Authenticate %q; want 401 with error=\"invalid_token\"", what, host, st, www)
	}
}

// waitRefused polls https://host/mcp with token until it is refused with
// 401 invalid_token, and fails unless that happened within limit. It gives
// up after 3 s.
func (e *oauthEnv) waitRefused(t *testing.T, host, token string, since time.Time, limit time.Duration, what string) {
	t.Helper()
	const giveUp = 3 * time.Second
	for {
		st, www := e.mcpStatus(t, host, token, nil)
		elapsed := time.Since(since)
		if st == http.StatusUnauthorized {
			if !strings.Contains(www, `error="invalid_token"`) {
				t.Errorf("%s: 401 without error=\"invalid_token\": %q", what, www)
			}
			if elapsed > limit {
				t.Errorf("%s: refused at %s only after %v, want within %v", what, host, elapsed.Round(time.Millisecond), limit)
			} else {
				t.Logf("%s: refused at %s after %v", what, host, elapsed.Round(time.Millisecond))
			}
			return
		}
		if elapsed > giveUp {
			t.Errorf("%s: still status %d at %s after %v, want 401 within %v", what, st, host, elapsed.Round(time.Millisecond), limit)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jwtParts decodes a JWT's header and claims without verifying it.
func jwtParts(t *testing.T, raw string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS compact serialization: %d parts", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("JWT part %d: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("JWT part %d: %v", i, err)
		}
	}
	return header, claims
}

func b64json(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signingKey reads the private key kid from the gateway's state_dir, as an
// attacker with a copy of the disk (or the test) could.
func signingKey(t *testing.T, stateDir, kid string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "keys", kid+".json"))
	if err != nil {
		t.Fatalf("reading the signing key: %v", err)
	}
	var kf struct {
		Kid        string `json:"kid"`
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(kf.PrivateKey))
	if blk == nil {
		t.Fatal("signing key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("signing key is %T, want RSA", k)
	}
	return rk
}

// signRS256 signs claims with key under header (alg is set to RS256).
func signRS256(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(claims))
	for k, v := range header {
		tok.Header[k] = v
	}
	tok.Header["alg"] = "RS256"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
