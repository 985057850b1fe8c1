package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcpgate/mcpgate/internal/headless"
	"github.com/mcpgate/mcpgate/tests/fakeoidc"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// oidcEnv is a gateway logging users in through fakeoidc, with the static
// public client e2e-cli and one protected proxy, alpha.test, serving the
// callback.
type oidcEnv struct {
	*oauthEnv
	op *fakeoidc.Server
}

// startOIDC starts the gateway; oauthKeys and oidcKeys are raw TOML added
// inside [oauth] and [idp.oidc].
func startOIDC(t *testing.T, oauthKeys, oidcKeys string) *oidcEnv {
	t.Helper()
	op := fakeoidc.New(t)
	const callback = "https://alpha.test" + harness.CallbackPath
	op.RegisterClient("mcpgate-e2e", "e2e-oidc-secret", callback)
	secret := filepath.Join(t.TempDir(), "oidc.secret")
	if err := os.WriteFile(secret, []byte("e2e-oidc-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spy := newBackendSpy(t, "alpha-backend")
	toml := fmt.Sprintf(`
[oauth]
callback_url = %q
mcp_users = ["*"]
%s

[[oauth.clients]]
client_id = "e2e-cli"
redirect_uris = ["http://127.0.0.1/callback"]

[idp.oidc]
issuer = %q
client_id = "mcpgate-e2e"
client_secret_file = %q
scopes = ["openid", "profile", "email", "groups"]
%s
`, callback, oauthKeys, op.URL, secret, oidcKeys)
	g := harness.Start(t, harness.Options{
		Proxies:    []harness.Proxy{{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: spy.URL, Auth: "required = true"}},
		ServerTOML: toml,
	})
	api := g.HTTP2Client()
	api.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &oidcEnv{oauthEnv: &oauthEnv{g: g, api: api, spies: map[string]*backendSpy{"alpha": spy}}, op: op}
}

// login runs a flow at alpha.test as the provider's user sub and returns
// the flow's result (err set if no code came back).
func (e *oidcEnv) login(t *testing.T, sub string) authzResult {
	t.Helper()
	e.op.SetLoginAs(sub)
	verifier := oauth2.GenerateVerifier()
	rec := &flowRecorder{base: e.g.BrowserTransport()}
	agent := &headless.Agent{Transport: rec}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := agent.Authorize(ctx, authorizeURL("alpha.test", verifier), loopbackRedirect)
	return authzResult{Result: res, err: err, verifier: verifier, steps: rec.Steps()}
}

// identityOf runs a flow as sub and returns the X-Mcpgate-User header the
// backend received with the resulting token, or fails.
func (e *oidcEnv) identityOf(t *testing.T, sub string) string {
	t.Helper()
	res := e.login(t, sub)
	if res.err != nil {
		t.Fatalf("login as %s: %v%s", sub, res.err, describeSteps(res.steps))
	}
	tr := e.redeem(t, "alpha.test", "e2e-cli", res, res.verifier)
	if tr.status != http.StatusOK {
		t.Fatalf("token: %v", tr)
	}
	e.wantAccepted(t, "alpha.test", tr.str("access_token"), "token of "+sub)
	_, _, ids := e.spies["alpha"].seen()
	return ids[len(ids)-1].Get("X-Mcpgate-User")
}

// wantRefused fails unless a flow as sub ends at the callback with 403.
func (e *oidcEnv) wantRefused(t *testing.T, sub, why string) {
	t.Helper()
	res := e.login(t, sub)
	if res.err == nil {
		t.Errorf("%s: got a code", why)
		return
	}
	if cb := findStep(res.steps, harness.CallbackPath); cb == nil || cb.Status < 400 {
		t.Errorf("%s: want an error page at the callback:%s", why, describeSteps(res.steps))
	}
}

// TestOIDCStableIdentity (issue 10, item 12): the allow lists and the
// identity sent to the backend use the provider's stable sub, not the
// preferred_username a user may choose; groups match without regard to
// case; a login that only folds to an allowed name under Unicode rules is
// refused.
func TestOIDCStableIdentity(t *testing.T) {
	t.Parallel()
	e := startOIDC(t, `allowed_users = ["sub-alice", "kate"]`, "")
	e.op.AddUser(fakeoidc.User{Sub: "sub-alice", PreferredUsername: "alice"})
	// Mallory renamed herself after alice's sub.
	e.op.AddUser(fakeoidc.User{Sub: "sub-mallory", PreferredUsername: "sub-alice"})
	// A sub that folds to "kate" only with Unicode case folding (KELVIN SIGN).
	e.op.AddUser(fakeoidc.User{Sub: "\u212Aate", PreferredUsername: "kate"})

	if got := e.identityOf(t, "sub-alice"); got != "sub-alice" {
		t.Errorf("X-Mcpgate-User = %q, want the sub %q", got, "sub-alice")
	}
	e.wantRefused(t, "sub-mallory", "a preferred_username equal to an allowed sub")
	e.wantRefused(t, "\u212Aate", "a Kelvin-sign login against allowed_users = [\"kate\"]")
}

// TestOIDCGroupsCaseInsensitive: allowed_groups = ["MCP Users"] admits a
// member of "mcp users".
func TestOIDCGroupsCaseInsensitive(t *testing.T) {
	t.Parallel()
	e := startOIDC(t, "", `allowed_groups = ["MCP Users"]`)
	e.op.AddUser(fakeoidc.User{Sub: "sub-1", Groups: []string{"mcp users"}})
	e.op.AddUser(fakeoidc.User{Sub: "sub-2", Groups: []string{"other"}})
	e.identityOf(t, "sub-1")
	e.wantRefused(t, "sub-2", "a user outside allowed_groups")
}

// TestOIDCUsernameClaim: [idp.oidc] username_claim names the claim the
// lists use instead of sub.
func TestOIDCUsernameClaim(t *testing.T) {
	t.Parallel()
	e := startOIDC(t, `allowed_users = ["alice@example.com"]`, `username_claim = "email"`)
	e.op.AddUser(fakeoidc.User{Sub: "s-1", Email: "alice@example.com", EmailVerified: true})
	e.op.AddUser(fakeoidc.User{Sub: "alice@example.com"})
	if got := e.identityOf(t, "s-1"); !strings.EqualFold(got, "alice@example.com") {
		t.Errorf("X-Mcpgate-User = %q, want the email claim", got)
	}
	e.wantRefused(t, "alice@example.com", "a sub equal to the allowed email, without that email claim")
}
