package authserver

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
)

// fakeProvider records what the authorization server asks of the
// identity provider.
type fakeProvider struct {
	mu      sync.Mutex
	logins  int         // guarded by mu; Exchange calls (code redemptions)
	secrets idp.Secrets // guarded by mu; those of the last AuthCodeURL
}

func (f *fakeProvider) AuthCodeURL(state, redirectURI string, s idp.Secrets) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets = s
	return "https://idp.example/authorize?" + url.Values{"state": {state}, "code_challenge": {s.Challenge()}, "nonce": {s.Nonce}}.Encode()
}

func (f *fakeProvider) Exchange(ctx context.Context, code, redirectURI string, s idp.Secrets) (*identity.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins++
	return &identity.User{Subject: "github:1", Login: "alice"}, nil
}

// flowServer is a server for notes.test (the callback host) and
// other.test, with the public static client "cli".
func flowServer(t *testing.T) (*Server, *fakeProvider) {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "oauth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fp := &fakeProvider{}
	oauth := &config.OAuth{
		CallbackURL: "https://notes.test/oauth/callback",
		Users:       config.Users{Allowed: []string{"*"}, MCP: []string{"*"}},
		Clients:     []config.StaticClient{{ID: "cli", RedirectURIs: []string{"http://127.0.0.1/cb"}}},
	}
	s, err := New(Options{
		OAuth: oauth,
		Policy: policy.New([]*config.Proxy{
			{Name: "notes", Hostnames: []string{"notes.test"}, Auth: config.Auth{Required: true, ResourcePath: "/mcp"}},
			{Name: "other", Hostnames: []string{"other.test"}, Auth: config.Auth{Required: true, ResourcePath: "/mcp"}},
		}, oauth),
		Store: st,
		IDP:   fp,
		Log:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, fp
}

// browser is a cookie jar driving the server's handler directly.
type browser struct {
	s       *Server
	cookies map[string]map[string]string // host → name → value
}

func newBrowser(s *Server) *browser { return &browser{s: s, cookies: map[string]map[string]string{}} }

func (b *browser) get(rawURL string) *http.Response {
	u, _ := url.Parse(rawURL)
	r := httptest.NewRequest(http.MethodGet, rawURL, nil)
	r.RemoteAddr = "192.0.2.1:1234"
	for n, v := range b.cookies[u.Host] {
		r.AddCookie(&http.Cookie{Name: n, Value: v})
	}
	w := httptest.NewRecorder()
	if !b.s.Handle(w, r) {
		w.WriteHeader(http.StatusNotFound)
	}
	resp := w.Result()
	for _, c := range resp.Cookies() {
		if b.cookies[u.Host] == nil {
			b.cookies[u.Host] = map[string]string{}
		}
		if c.MaxAge < 0 {
			delete(b.cookies[u.Host], c.Name)
		} else {
			b.cookies[u.Host][c.Name] = c.Value
		}
	}
	return resp
}

func authzURL(host string) string {
	return "https://" + host + "/authorize?" + url.Values{"response_type": {"code"}, "client_id": {"cli"},
		"redirect_uri": {"http://127.0.0.1:9/cb"}, "state": {"st"}, "code_challenge": {strings.Repeat("A", 43)},
		"code_challenge_method": {"S256"}}.Encode()
}

func TestCallbackNeedsTheBindingBrowser(t *testing.T) {
	s, fp := flowServer(t)
	attacker, victim := newBrowser(s), newBrowser(s)
	loc, _ := attacker.get(authzURL("notes.test")).Location()
	if loc == nil || loc.Host != "idp.example" {
		t.Fatalf("authorize on the callback host: Location %v, want the provider", loc)
	}
	if fp.secrets.Verifier == "" || fp.secrets.Nonce == "" || fp.secrets.Nonce == loc.Query().Get("state") {
		t.Fatalf("upstream secrets %+v", fp.secrets)
	}
	cb := "https://notes.test/oauth/callback?" + url.Values{"state": {loc.Query().Get("state")}, "code": {"c"}}.Encode()
	if resp := victim.get(cb); resp.StatusCode != http.StatusForbidden {
		t.Errorf("callback in another browser: %d, want 403", resp.StatusCode)
	}
	if fp.logins != 0 {
		t.Errorf("the provider's code was redeemed %d times", fp.logins)
	}
	// The flow is gone, also for its own browser.
	if resp := attacker.get(cb); resp.StatusCode != http.StatusBadRequest || fp.logins != 0 {
		t.Errorf("callback after a refused one: %d, %d logins", resp.StatusCode, fp.logins)
	}
}

func TestFlowThroughStart(t *testing.T) {
	s, fp := flowServer(t)
	b := newBrowser(s)
	start, _ := b.get(authzURL("other.test")).Location()
	if start == nil || start.String() != "https://notes.test/oauth/start?flow="+url.QueryEscape(start.Query().Get("flow")) {
		t.Fatalf("authorize on other.test: Location %v", start)
	}
	idpURL, _ := b.get(start.String()).Location()
	if idpURL == nil || idpURL.Host != "idp.example" {
		t.Fatalf("start: Location %v", idpURL)
	}
	// Single use: another browser gets an error page, not the provider.
	if resp := newBrowser(s).get(start.String()); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" {
		t.Errorf("second start: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cont, _ := b.get("https://notes.test/oauth/callback?" + url.Values{"state": {idpURL.Query().Get("state")}, "code": {"c"}}.Encode()).Location()
	if cont == nil || cont.Host != "other.test" || cont.Path != continuePath || cont.Query().Get("proof") == "" || fp.logins != 1 {
		t.Fatalf("callback: Location %v, %d logins", cont, fp.logins)
	}
	if _, ok := b.cookies["notes.test"][bindCookieName(start.Query().Get("flow"))]; ok {
		t.Error("the bind cookie outlived the callback")
	}
	// Without the proof, the flow cookie alone gets nothing, and the flow
	// is dead.
	noProof := *cont
	q := noProof.Query()
	q.Del("proof")
	noProof.RawQuery = q.Encode()
	if resp := b.get(noProof.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("continue without proof: %d", resp.StatusCode)
	}
	if resp := b.get(cont.String()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("continue after a refused one: %d, want 400", resp.StatusCode)
	}
}

func TestFlowCompletes(t *testing.T) {
	s, _ := flowServer(t)
	b := newBrowser(s)
	start, _ := b.get(authzURL("other.test")).Location()
	idpURL, _ := b.get(start.String()).Location()
	cont, _ := b.get("https://notes.test/oauth/callback?" + url.Values{"state": {idpURL.Query().Get("state")}, "code": {"c"}}.Encode()).Location()
	// A browser without the flow cookie gets nothing; one without flow
	// cookie or proof does not disturb the flow.
	stranger := *cont
	stranger.RawQuery = url.Values{"flow": {cont.Query().Get("flow")}}.Encode()
	if resp := newBrowser(s).get(stranger.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("continue in another browser without the proof: %d", resp.StatusCode)
	}
	done, _ := b.get(cont.String()).Location()
	if done == nil || !strings.HasPrefix(done.String(), "http://127.0.0.1:9/cb?") || done.Query().Get("code") == "" {
		t.Fatalf("continue: Location %v", done)
	}
}

// TestProofInAnotherBrowser: the proof without the flow cookie (the
// browser that signed in is not the one that started) kills the flow, so
// the proof cannot be carried to the starter's browser afterwards.
func TestProofInAnotherBrowser(t *testing.T) {
	s, _ := flowServer(t)
	b := newBrowser(s)
	start, _ := b.get(authzURL("other.test")).Location()
	idpURL, _ := b.get(start.String()).Location()
	cont, _ := b.get("https://notes.test/oauth/callback?" + url.Values{"state": {idpURL.Query().Get("state")}, "code": {"c"}}.Encode()).Location()
	if resp := newBrowser(s).get(cont.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("continue with the proof in another browser: %d", resp.StatusCode)
	}
	if resp := b.get(cont.String()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("continue afterwards with flow cookie and proof: %d, want 400 (flow gone)", resp.StatusCode)
	}
}

func TestAuthorizeLimits(t *testing.T) {
	s, _ := flowServer(t)
	b := newBrowser(s)
	long := func(key string, n int) string {
		u, _ := url.Parse(authzURL("notes.test"))
		q := u.Query()
		q.Set(key, strings.Repeat("x", n))
		u.RawQuery = q.Encode()
		return u.String()
	}
	for _, c := range []struct {
		url  string
		want int
	}{
		{long("state", maxStateLen+1), http.StatusBadRequest},
		{long("scope", maxScopeLen+1), http.StatusBadRequest},
		{long("state", maxStateLen), http.StatusFound},
	} {
		if resp := b.get(c.url); resp.StatusCode != c.want {
			t.Errorf("%.60s…: %d, want %d", c.url, resp.StatusCode, c.want)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "https://notes.test/authorize", strings.NewReader("pad="+strings.Repeat("x", maxAuthorizeBody)))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	s.Handle(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("body over %d bytes: %d", maxAuthorizeBody, w.Code)
	}
	for i := 1; i < maxPendingPerKey; i++ {
		if resp := b.get(authzURL("notes.test")); resp.StatusCode != http.StatusFound {
			t.Fatalf("flow %d: %d", i+1, resp.StatusCode)
		}
	}
	resp := b.get(authzURL("other.test"))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("flow %d: %d, Retry-After %q", maxPendingPerKey+1, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
