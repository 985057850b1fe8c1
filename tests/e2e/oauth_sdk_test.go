package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/mcpgate/mcpgate/internal/headless"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// sdkRedirect is the Go SDK client's redirect URI: the headless browser
// stops there, so nothing listens on it.
const sdkRedirect = "http://127.0.0.1:33418/callback"

// oauthTraffic is a RoundTripper in front of the SDK client's HTTP client
// that records the grant type of every token request, the registrations
// and the bearer tokens sent to the MCP endpoint.
type oauthTraffic struct {
	base http.RoundTripper

	mu            sync.Mutex
	grants        []string // guarded by mu; grant_type of each /token request
	registrations int      // guarded by mu
	bearers       []string // guarded by mu; tokens sent to the MCP endpoint
}

func (o *oauthTraffic) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req.URL.Path == "/token" && req.Body != nil:
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		form, _ := url.ParseQuery(string(b))
		o.mu.Lock()
		o.grants = append(o.grants, form.Get("grant_type"))
		o.mu.Unlock()
	case req.URL.Path == "/register":
		o.mu.Lock()
		o.registrations++
		o.mu.Unlock()
	case req.URL.Path == "/mcp":
		if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
			o.mu.Lock()
			if len(o.bearers) == 0 || o.bearers[len(o.bearers)-1] != tok {
				o.bearers = append(o.bearers, tok)
			}
			o.mu.Unlock()
		}
	}
	return o.base.RoundTrip(req)
}

func (o *oauthTraffic) snapshot() (grants []string, registrations int, bearers []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.grants), o.registrations, slices.Clone(o.bearers)
}

// sdkClient is the official Go SDK client with an authorization code
// handler whose browser is a headless agent.
type sdkClient struct {
	traffic *oauthTraffic
	browser *flowRecorder
	session *mcp.ClientSession
	flows   atomic.Int32 // authorization flows the handler started
}

// connectSDK connects the Go SDK client to endpoint through the OAuth
// flow. cfg is completed with the HTTP client, the redirect URL and a code
// fetcher driving a headless browser (signing in at fakegithub and
// approving consent).
func connectSDK(t *testing.T, ctx context.Context, e *oauthEnv, endpoint string, cfg *auth.AuthorizationCodeHandlerConfig) *sdkClient {
	t.Helper()
	c := &sdkClient{
		traffic: &oauthTraffic{base: e.g.HTTP2Client().Transport},
		browser: &flowRecorder{base: e.g.BrowserTransport()},
	}
	hc := &http.Client{Transport: c.traffic}
	cfg.Client = hc
	if cfg.RedirectURL == "" && cfg.DynamicClientRegistrationConfig == nil {
		cfg.RedirectURL = sdkRedirect
	}
	cfg.AuthorizationCodeFetcher = func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		c.flows.Add(1)
		agent := &headless.Agent{Transport: c.browser, Login: "unused", Logf: t.Logf}
		res, err := agent.Authorize(ctx, args.URL, cfg.RedirectURL)
		if err != nil {
			return nil, err
		}
		return &auth.AuthorizationResult{Code: res.Code, State: res.State, Iss: res.Iss}, nil
	}
	handler, err := auth.NewAuthorizationCodeHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-oauth", Version: "test"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:     endpoint,
		HTTPClient:   hc,
		OAuthHandler: handler,
		MaxRetries:   -1,
	}, nil)
	if err != nil {
		t.Fatalf("connecting to %s through OAuth: %v%s", endpoint, err, describeSteps(c.browser.Steps()))
	}
	t.Cleanup(func() { session.Close() })
	c.session = session
	return c
}

// TestOAuthGoSDKDynamicRegistration runs the official Go SDK client through
// the gateway to a real MCP server: discovery (RFC 9728, RFC 8414),
// dynamic registration, consent, sign-in at (fake) GitHub, token, tool
// call; then, with a 3 s access token, a refresh and another tool call.
// The resource and issuer carry a non-default port, as in the demo.
func TestOAuthGoSDKDynamicRegistration(t *testing.T) {
	t.Parallel()
	const host = "alpha.test:8443"
	const ttl = 3 * time.Second
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: host,
		MCPUsers:     []string{"octocat"},
		OAuthKeys:    `access_token_ttl = "3s"`,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}})
	e.gh.SetLoginAs("octocat")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	c := connectSDK(t, ctx, e, "https://"+host+"/mcp", &auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				RedirectURIs:            []string{sdkRedirect},
				TokenEndpointAuthMethod: "none",
				GrantTypes:              []string{"authorization_code", "refresh_token"},
				ClientName:              "mcpgate e2e SDK client",
			},
		},
		// The SDK's default token source refreshes 10 s before expiry,
		// which for a 3 s token means before every request. Refresh 1.5 s
		// before expiry instead, so the first token is used, then
		// replaced. (Not 1 s: exp is whole seconds, so a "3s" token may
		// live only a little over 2 s at the gateway, and the client must
		// never send one the gateway already considers expired.)
		NewTokenSource: func(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			return oauth2.ReuseTokenSourceWithExpiry(tok, cfg.TokenSource(ctx, tok), 1500*time.Millisecond), nil
		},
	})
	if got := callText(ctx, t, c.session, "whoami", nil); got != "octocat" {
		t.Errorf("whoami = %q, want the fakegithub login octocat", got)
	}

	// The flow: one registration, one sign-in at GitHub, consent shown.
	grants, registrations, bearers := c.traffic.snapshot()
	if registrations != 1 || c.flows.Load() != 1 {
		t.Errorf("%d registrations and %d authorization flows, want 1 and 1", registrations, c.flows.Load())
	}
	if n := e.gh.AuthorizeRequests(); n != 1 {
		t.Errorf("fakegithub saw %d authorize requests, want 1", n)
	}
	if n := e.gh.TokensIssued(); n != 1 {
		t.Errorf("fakegithub issued %d tokens, want 1 (one code exchange by mcpgate)", n)
	}
	if n := e.gh.APIRequests("/user"); n < 1 {
		t.Errorf("mcpgate never asked fakegithub's /user who signed in")
	}
	q := e.gh.LastAuthorizeQuery()
	if q.Has("resource") {
		t.Errorf("the client's resource parameter reached GitHub: %v", q)
	}
	if got := q.Get("redirect_uri"); got != e.oauth.CallbackURL {
		t.Errorf("redirect_uri sent to GitHub = %q, want callback_url %q", got, e.oauth.CallbackURL)
	}
	steps := c.browser.Steps()
	consent := findStep(steps, "/oauth/continue")
	switch {
	case consent == nil || consent.Status != http.StatusOK || !strings.Contains(consent.Body, `name="decision"`):
		t.Errorf("no consent page for a dynamically registered client; flow:%s", describeSteps(steps))
	default:
		for _, want := range []string{"mcpgate e2e SDK client", "127.0.0.1:33418", "octocat", "<code>mcp</code>"} {
			if !strings.Contains(consent.Body, want) {
				t.Errorf("consent page does not show %q:\n%s", want, consent.Body)
			}
		}
		if csp := consent.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("consent page CSP %q lacks frame-ancestors 'none'", csp)
		}
		var csrf string
		for _, sc := range consent.Header.Values("Set-Cookie") {
			if strings.HasPrefix(sc, "__Host-") && strings.Contains(sc, "csrf") {
				csrf = sc
			}
		}
		l := strings.ToLower(csrf)
		if csrf == "" || !strings.Contains(l, "secure") || !strings.Contains(l, "httponly") || !strings.Contains(l, "samesite=lax") || !strings.Contains(l, "path=/") {
			t.Errorf("consent CSRF cookie %q, want a __Host- cookie with Secure, HttpOnly, SameSite=Lax, Path=/", csrf)
		}
	}
	if slices.Contains(grants, "refresh_token") {
		// Only possible if the machine was slow enough for the 2 s to pass.
		t.Logf("a refresh happened before the first tool call returned: %v", grants)
	}
	if len(bearers) == 0 {
		t.Fatal("the SDK client sent no bearer token to /mcp")
	}
	first := bearers[0]
	_, claims := jwtParts(t, first)
	if claims["iss"] != "https://"+host || claims["aud"] != "https://"+host+"/mcp" || claims["login"] != "octocat" {
		t.Errorf("access token claims iss=%v aud=%v login=%v, want https://%s, https://%s/mcp, octocat", claims["iss"], claims["aud"], claims["login"], host, host)
	}

	// Expiry: once the first token's exp has passed, the gateway refuses
	// it, and the SDK client refreshes on its own.
	exp, _ := claims["exp"].(float64)
	if wait := time.Until(time.Unix(int64(exp), 0).Add(300 * time.Millisecond)); wait > 0 {
		if wait > ttl+time.Second {
			t.Fatalf("first token expires in %v, want about %v", wait, ttl)
		}
		time.Sleep(wait)
	}
	e.wantInvalidToken(t, host, first, "the expired first access token")

	if got := callText(ctx, t, c.session, "whoami", nil); got != "octocat" {
		t.Errorf("whoami after refresh = %q, want octocat", got)
	}
	grants, registrations, bearers = c.traffic.snapshot()
	if !slices.Contains(grants, "refresh_token") {
		t.Errorf("token requests %v: no refresh_token grant after the access token expired", grants)
	}
	if n := countOf(grants, "authorization_code"); n != 1 || registrations != 1 || c.flows.Load() != 1 {
		t.Errorf("%d code exchanges, %d registrations, %d flows: the refresh should need none of them", n, registrations, c.flows.Load())
	}
	if last := bearers[len(bearers)-1]; last == first {
		t.Error("the tool call after expiry still sent the first access token")
	}
	if n := e.gh.AuthorizeRequests(); n != 1 {
		t.Errorf("fakegithub saw %d authorize requests, want still 1: refreshing needs no new sign-in", n)
	}

	for _, b := range bearers {
		e.remember(b)
	}
	e.checkLogSecrets(t)

	// No token passthrough.
	n, authz, ids := e.spies["alpha"].seen()
	if n == 0 {
		t.Fatal("the backend saw no request")
	}
	if len(authz) > 0 {
		t.Errorf("the backend received Authorization headers: %d of them", len(authz))
	}
	for _, id := range ids {
		if got := id.Get("X-Mcpgate-User"); got != "octocat" {
			t.Errorf("backend request with X-MCPGate-User %q, want octocat", got)
			break
		}
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// TestOAuthGoSDKPreregistered runs the Go SDK client with clients from
// [[oauth.clients]]: a public one and a confidential one (client secret in
// a file). Static clients are trusted by the operator: no consent page.
func TestOAuthGoSDKPreregistered(t *testing.T) {
	t.Parallel()
	secret := "e2e-confidential-secret-0123456789"
	secretFile := filepath.Join(t.TempDir(), "confidential.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		MCPUsers:     []string{"alice"},
		Tables: `[[oauth.clients]]
client_id = "e2e-public"
name = "E2E public client"
redirect_uris = ["http://127.0.0.1/callback"]

[[oauth.clients]]
client_id = "e2e-confidential"
name = "E2E confidential client"
client_secret_file = "` + secretFile + `"
redirect_uris = ["` + sdkRedirect + `"]
`,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}})

	for _, tc := range []struct {
		name     string
		creds    *oauthex.ClientCredentials
		redirect string
	}{
		// Registered without a port: any loopback port is accepted.
		{"public", &oauthex.ClientCredentials{ClientID: "e2e-public"}, "http://127.0.0.1:38001/callback"},
		{"confidential", &oauthex.ClientCredentials{
			ClientID:         "e2e-confidential",
			ClientSecretAuth: &oauthex.ClientSecretAuth{ClientSecret: secret},
			Issuer:           "https://alpha.test",
		}, sdkRedirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			before := e.gh.AuthorizeRequests()
			c := connectSDK(t, ctx, e, "https://alpha.test/mcp", &auth.AuthorizationCodeHandlerConfig{
				PreregisteredClient: tc.creds,
				RedirectURL:         tc.redirect,
			})
			if got := callText(ctx, t, c.session, "whoami", nil); got != "alice" {
				t.Errorf("whoami = %q, want alice", got)
			}
			steps := c.browser.Steps()
			if s := findStep(steps, "/oauth/continue"); s == nil || s.Status != http.StatusFound {
				t.Errorf("a static client must get its code without a consent page; flow:%s", describeSteps(steps))
			}
			for _, s := range steps {
				if strings.Contains(s.Body, `name="decision"`) {
					t.Errorf("consent page shown to static client %s at %s", tc.creds.ClientID, s.URL)
				}
			}
			grants, registrations, _ := c.traffic.snapshot()
			if registrations != 0 || countOf(grants, "authorization_code") != 1 {
				t.Errorf("%d registrations, token grants %v; want none and one code exchange", registrations, grants)
			}
			if n := e.gh.AuthorizeRequests() - before; n != 1 {
				t.Errorf("%d sign-ins at fakegithub, want 1", n)
			}
		})
	}

	t.Run("confidential-wrong-secret", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The SDK's own client: a token request with a wrong secret fails
		// the connection (invalid_client), it never reaches the backend.
		traffic := &oauthTraffic{base: e.g.HTTP2Client().Transport}
		hc := &http.Client{Transport: traffic}
		browser := &flowRecorder{base: e.g.BrowserTransport()}
		handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
			PreregisteredClient: &oauthex.ClientCredentials{
				ClientID:         "e2e-confidential",
				ClientSecretAuth: &oauthex.ClientSecretAuth{ClientSecret: "wrong"},
			},
			RedirectURL: sdkRedirect,
			Client:      hc,
			AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
				res, err := (&headless.Agent{Transport: browser}).Authorize(ctx, args.URL, sdkRedirect)
				if err != nil {
					return nil, err
				}
				return &auth.AuthorizationResult{Code: res.Code, State: res.State, Iss: res.Iss}, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		client := mcp.NewClient(&mcp.Implementation{Name: "e2e-oauth", Version: "test"}, nil)
		session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint: "https://alpha.test/mcp", HTTPClient: hc, OAuthHandler: handler, MaxRetries: -1,
		}, nil)
		if err == nil {
			session.Close()
			t.Fatal("connected with a wrong client secret")
		}
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
			t.Errorf("connect error %v, want the token endpoint's 401 invalid_client", err)
		}
	})
}
