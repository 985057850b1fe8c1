package harness

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/fakegithub"
)

// GitHubOAuth is mcpgate's OAuth configuration with a fakegithub instance
// as the identity provider: the [oauth] and [idp.github] tables for
// mcpgate.toml, and the OAuth app registered at the fake.
type GitHubOAuth struct {
	Fake         *fakegithub.Server
	ClientID     string // mcpgate's client id at the fake
	ClientSecret string
	SecretFile   string // holds ClientSecret; [idp.github] client_secret_file
	CallbackURL  string // [oauth] callback_url, also the app's callback at the fake

	toml string
}

// GitHubOAuthConfig configures NewGitHubOAuth.
type GitHubOAuthConfig struct {
	// CallbackHost is the host (with an optional port) of callback_url,
	// e.g. "alpha.test" or "alpha.test:8443": a hostname of an enabled
	// proxy, which then serves https://<CallbackHost>/oauth/callback.
	CallbackHost string
	// AllowedUsers, MCPUsers, AdminUsers and UserUsers are the global user
	// lists; nil AllowedUsers and MCPUsers mean ["*"], nil AdminUsers and
	// UserUsers leave the key out (nobody).
	AllowedUsers, MCPUsers, AdminUsers, UserUsers []string
	// OAuthKeys is raw TOML added inside [oauth], e.g.
	// `access_token_ttl = "3s"`.
	OAuthKeys string
	// Tables is raw TOML added after [oauth], e.g. [[oauth.clients]]
	// entries.
	Tables string
	// GitHubKeys is raw TOML added inside [idp.github].
	GitHubKeys string
}

// CallbackPath is the path of the callback_url NewGitHubOAuth configures.
const CallbackPath = "/oauth/callback"

// NewGitHubOAuth registers an OAuth app for mcpgate at fake (its callback
// is the configured callback_url) and writes its client secret to a file.
// Put TOML() into Options.ServerTOML.
func NewGitHubOAuth(t testing.TB, fake *fakegithub.Server, cfg GitHubOAuthConfig) *GitHubOAuth {
	t.Helper()
	if cfg.CallbackHost == "" {
		t.Fatal("harness: GitHubOAuthConfig.CallbackHost is required")
	}
	o := &GitHubOAuth{
		Fake:         fake,
		ClientID:     "Iv1.e2e" + fmt.Sprint(time.Now().UnixNano()%1e9),
		ClientSecret: "e2e-github-secret-" + fmt.Sprint(time.Now().UnixNano()),
		CallbackURL:  "https://" + cfg.CallbackHost + CallbackPath,
	}
	o.SecretFile = filepath.Join(t.TempDir(), "github.secret")
	if err := os.WriteFile(o.SecretFile, []byte(o.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fake.RegisterApp(o.ClientID, o.ClientSecret, o.CallbackURL)
	o.toml = o.render(cfg)
	return o
}

// TOML is the [oauth] and [idp.github] configuration, to append to
// [server] through Options.ServerTOML.
func (o *GitHubOAuth) TOML() string { return o.toml }

func (o *GitHubOAuth) render(cfg GitHubOAuthConfig) string {
	list := func(l []string) string {
		q := make([]string, len(l))
		for i, s := range l {
			q[i] = quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	star := []string{"*"}
	var b strings.Builder
	fmt.Fprintf(&b, "\n[oauth]\ncallback_url = %s\n", quote(o.CallbackURL))
	if cfg.AllowedUsers == nil {
		cfg.AllowedUsers = star
	}
	if cfg.MCPUsers == nil {
		cfg.MCPUsers = star
	}
	fmt.Fprintf(&b, "allowed_users = %s\nmcp_users = %s\n", list(cfg.AllowedUsers), list(cfg.MCPUsers))
	if cfg.AdminUsers != nil {
		fmt.Fprintf(&b, "admin_users = %s\n", list(cfg.AdminUsers))
	}
	if cfg.UserUsers != nil {
		fmt.Fprintf(&b, "user_users = %s\n", list(cfg.UserUsers))
	}
	if cfg.OAuthKeys != "" {
		fmt.Fprintf(&b, "%s\n", cfg.OAuthKeys)
	}
	if cfg.Tables != "" {
		fmt.Fprintf(&b, "\n%s\n", cfg.Tables)
	}
	fmt.Fprintf(&b, "\n[idp.github]\nclient_id = %s\nclient_secret_file = %s\n", quote(o.ClientID), quote(o.SecretFile))
	fmt.Fprintf(&b, "authorize_url = %s\ntoken_url = %s\napi_url = %s\n",
		quote(o.Fake.AuthorizeURL), quote(o.Fake.TokenURL), quote(o.Fake.APIURL))
	if cfg.GitHubKeys != "" {
		fmt.Fprintf(&b, "%s\n", cfg.GitHubKeys)
	}
	return b.String()
}

// BrowserTransport is what a browser on the test machine would reach: URLs
// on a loopback IP or localhost (in-process fakes such as fakegithub) are
// fetched directly, every other host goes to the gateway like the clients
// of Client. It offers h2 and http/1.1 to the gateway.
func (g *Gateway) BrowserTransport() http.RoundTripper {
	direct := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 15 * time.Second,
		Proxy:                 nil,
	}
	g.track(direct)
	return &browserTransport{gateway: g.HTTP2Client().Transport, direct: direct}
}

type browserTransport struct {
	gateway, direct http.RoundTripper
}

func (b *browserTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h := r.URL.Hostname()
	if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || strings.EqualFold(h, "localhost") {
		return b.direct.RoundTrip(r)
	}
	return b.gateway.RoundTrip(r)
}
