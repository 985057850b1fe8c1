package authserver

import (
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
)

func TestMatchRedirect(t *testing.T) {
	reg := []string{"http://127.0.0.1:33418/callback", "https://app.example.com/cb", "cursor://anysphere.cursor-retrieval/oauth/callback", "http://localhost/cb"}
	tests := []struct {
		uri  string
		want bool
	}{
		{"https://app.example.com/cb", true},
		{"https://app.example.com/cb/", false},
		{"https://app.example.com:444/cb", false},
		{"http://127.0.0.1:5555/callback", true}, // loopback: any port (RFC 8252 §7.3)
		{"http://127.0.0.1/callback", true},
		{"http://127.0.0.1:5555/other", false},
		{"http://localhost:9999/cb", true},
		{"http://[::1]:9999/callback", false}, // another loopback host is another URI
		{"cursor://anysphere.cursor-retrieval/oauth/callback", true},
		{"cursor://anysphere.cursor-retrieval/oauth/callback?x=1", false},
		{"https://evil.example.com/cb", false},
	}
	for _, tt := range tests {
		if got := matchRedirect(reg, tt.uri); got != tt.want {
			t.Errorf("matchRedirect(%q) = %v, want %v", tt.uri, got, tt.want)
		}
	}
}

func TestCheckRedirectURI(t *testing.T) {
	ok := []string{"https://a.example/cb", "http://127.0.0.1:1/cb", "http://[::1]/cb", "http://localhost/cb", "vscode://x/cb", "cursor://anysphere.cursor-retrieval/oauth/callback", "com.example.app:/cb"}
	bad := []string{"javascript:alert(1)", "data:text/html,x", "http://example.com/cb", "https://a.example/cb#frag", "https://u:p@a.example/cb", "file:///etc/passwd", "relative/cb", "https:///nohost"}
	for _, u := range ok {
		if err := checkRedirectURI(u); err != nil {
			t.Errorf("checkRedirectURI(%q) = %v, want ok", u, err)
		}
	}
	for _, u := range bad {
		if err := checkRedirectURI(u); err == nil {
			t.Errorf("checkRedirectURI(%q) accepted", u)
		}
	}
}

// testServer returns a server and its proxies: notes, wild, open.
func testServer() (*Server, []*config.Proxy) {
	oauth := &config.OAuth{Users: config.Users{Allowed: []string{"*"}, User: []string{"*"}, MCP: []string{"alice"}, Admin: []string{"root"}}}
	proxies := []*config.Proxy{
		{Name: "notes", Hostnames: []string{"notes.test"}, Auth: config.Auth{Required: true, ResourcePath: "/mcp"}},
		{Name: "wild", Hostnames: []string{"*.wild.test"}, Auth: config.Auth{Required: true, ResourcePath: "/api/mcp", Users: config.Users{MCP: []string{"bob"}}}},
		{Name: "open", Hostnames: []string{"open.test"}, Auth: config.Auth{Required: false, ResourcePath: "/mcp"}},
	}
	return &Server{o: Options{OAuth: oauth, Policy: policy.New(proxies, oauth)}}, proxies
}

func TestResolveResource(t *testing.T) {
	s, _ := testServer()
	tests := []struct {
		requested, host, want, wantErr string
	}{
		{"", "notes.test:8443", "https://notes.test:8443/mcp", ""},
		{"", "NOTES.test:443", "https://notes.test/mcp", ""},
		{"https://notes.test/mcp", "notes.test", "https://notes.test/mcp", ""},
		{"https://NOTES.TEST/mcp/", "notes.test", "https://notes.test/mcp", ""},
		{"https://notes.test/", "a.wild.test", "https://notes.test/mcp", ""}, // origin means the host's resource
		{"https://notes.test", "a.wild.test", "https://notes.test/mcp", ""},
		{"https://x.wild.test/api/mcp", "notes.test", "https://x.wild.test/api/mcp", ""},
		{"https://notes.test/other", "notes.test", "", "invalid_target"},
		{"https://open.test/mcp", "notes.test", "", "invalid_target"}, // not protected
		{"https://elsewhere.test/mcp", "notes.test", "", "invalid_target"},
		{"http://notes.test/mcp", "notes.test", "", "invalid_target"},
		{"https://notes.test/mcp?x=1", "notes.test", "", "invalid_target"},
		{"", "open.test", "", "invalid_target"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "https://"+tt.host+"/authorize", nil)
		r.Host = tt.host
		got, _, oe := s.resolveResource(tt.requested, r)
		gotErr := ""
		if oe != nil {
			gotErr = oe.Code
		}
		if got != tt.want || gotErr != tt.wantErr {
			t.Errorf("resolveResource(%q) at %s = %q, %q; want %q, %q", tt.requested, tt.host, got, gotErr, tt.want, tt.wantErr)
		}
	}
}

func TestGrant(t *testing.T) {
	s, proxies := testServer()
	notes, wild := proxies[0], proxies[1]
	tests := []struct {
		p         *config.Proxy
		login     string
		requested []string
		want      []string
	}{
		{notes, "alice", nil, []string{"user", "mcp"}},
		{notes, "ALICE", nil, []string{"user", "mcp"}}, // GitHub logins are case-insensitive
		{notes, "root", nil, []string{"admin", "user"}},
		{notes, "carol", nil, []string{"user"}},
		{notes, "alice", []string{"mcp"}, []string{"mcp"}},
		{notes, "alice", []string{"openid", "offline_access"}, []string{"user", "mcp"}}, // unknown scopes: not a restriction
		{notes, "carol", []string{"mcp"}, nil},
		{wild, "bob", nil, []string{"user", "mcp"}}, // per-proxy mcp_users override
		{wild, "alice", nil, []string{"user"}},
	}
	for _, tt := range tests {
		if got := s.grant(tt.p, &identity.User{Login: tt.login}, tt.requested); !slices.Equal(got, tt.want) {
			t.Errorf("grant(%s, %s, %v) = %v, want %v", tt.p.Name, tt.login, tt.requested, got, tt.want)
		}
	}
}

func TestAllowedOrgs(t *testing.T) {
	s, proxies := testServer()
	s.o.OAuth.GitHub = &config.GitHubIDP{AllowedOrgs: []string{"acme"}, AllowedTeams: []string{"other/admins"}}
	p := proxies[0]
	for _, tt := range []struct {
		id   identity.User
		want bool
	}{
		{identity.User{Login: "a", Orgs: []string{"acme"}}, true},
		{identity.User{Login: "a", Orgs: []string{"Acme"}}, true},
		{identity.User{Login: "a", Orgs: []string{"evil"}}, false},
		{identity.User{Login: "a", Teams: []string{"other/admins"}}, true},
		{identity.User{Login: "a"}, false},
	} {
		if got := s.allowed(p, &tt.id); got != tt.want {
			t.Errorf("allowed(%+v) = %v, want %v", tt.id, got, tt.want)
		}
	}
	s.o.OAuth.Users.Allowed = []string{"bob"}
	if s.allowed(p, &identity.User{Login: "a", Orgs: []string{"acme"}}) {
		t.Error("allowed_users and allowed_orgs must both hold")
	}
}

func TestPKCE(t *testing.T) {
	verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	if challenge != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Fatalf("RFC 7636 appendix B example: got %s", challenge)
	}
	if !validVerifier(verifier) || !pkceMatches(verifier, challenge) {
		t.Error("the RFC 7636 example does not verify")
	}
	if pkceMatches(verifier+"x", challenge) || validVerifier("short") || validVerifier(verifier+"!") {
		t.Error("bad verifiers accepted")
	}
}

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true,
		"127.0.0.1": false, "10.1.2.3": false, "192.168.1.1": false, "172.16.0.1": false,
		"169.254.169.254": false, "::1": false, "fe80::1": false, "fc00::1": false, "100.64.0.1": false,
		"::ffff:127.0.0.1": false, "0.0.0.0": false, "224.0.0.1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestCacheLifetime(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"":                  cimdMinCache,
		"max-age=3600":      time.Hour,
		"no-store":          cimdMinCache,
		"public, max-age=5": cimdMinCache,
		"max-age=999999999": cimdMaxCache,
	} {
		if got := cacheLifetime(cc); got != want {
			t.Errorf("cacheLifetime(%q) = %v, want %v", cc, got, want)
		}
	}
}

// TestClientSecretBasic: RFC 6749 §2.3.1 form-encodes Basic credentials,
// but many clients (the TypeScript MCP SDK, curl -u) send them raw; both
// must work, and a wrong secret must not.
func TestClientSecretBasic(t *testing.T) {
	const secret = "s3cr+t/with=%2B"
	s, _ := testServer()
	s.static = map[string]*client{"cli": {ID: "cli", SecretHash: hashHex(secret), GrantTypes: []string{"authorization_code"}}}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "oauth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s.o.Store = st
	s.log = slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"raw", "cli", secret, true},
		{"form-encoded", "cli", url.QueryEscape(secret), true},
		{"wrong", "cli", "s3cr t/with=%2B", false},
		{"unknown client", "nobody", secret, false},
	} {
		r := httptest.NewRequest("POST", "https://notes.test/token", strings.NewReader("grant_type=authorization_code"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(tt.user, tt.pass)
		r.ParseForm()
		c, oe := s.authenticateClient(r)
		if (oe == nil) != tt.ok || (tt.ok && c.ID != "cli") {
			t.Errorf("%s: client %v, error %v; want ok=%v", tt.name, c, oe, tt.ok)
		}
	}
}
