package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/fakegithub"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// Attacks on refresh tokens, codes, registration and introspection (issue
// 10, items 8, 10, 11 and 13), each played as the attacker would: a user
// the operator removed, a thief holding an old refresh token, a client
// replaying somebody else's code, a registration flood spread over two
// workers, and a dynamic client asking about other clients' tokens.

// reloadOK reloads e's gateway and fails the test unless it succeeded.
func (e *oauthEnv) reloadOK(t *testing.T, what string) {
	t.Helper()
	if res := e.g.Reload(t); res.ExitCode != 0 {
		t.Fatalf("reload (%s): exit %d\nstdout:\n%s\nstderr:\n%s", what, res.ExitCode, res.Stdout, res.Stderr)
	}
	// The new policy is the new workers'. A connection opened before the
	// reload may still carry a request or two to its old worker until that
	// worker's GOAWAY (at most min(1s, drain_timeout/4), SECURITY.md); the
	// checks below are about the new policy, so they use new connections.
	e.api.CloseIdleConnections()
}

// tokensAs runs a whole flow as login at host for public client clientID
// asking for scope, and returns the token response.
func (e *oauthEnv) tokensAs(t *testing.T, host, clientID, login, scope string) jsonResp {
	t.Helper()
	res := e.code(t, authzRequest{host: host, clientID: clientID, login: login, scope: scope})
	tr := e.redeem(t, host, clientID, res, res.verifier)
	if tr.status != http.StatusOK || tr.str("refresh_token") == "" {
		t.Fatalf("redeeming %s's code: %v", login, tr)
	}
	return tr
}

// TestAttackRefreshAfterPolicyChange (item 8): a user the operator removed
// (from allowed_users, from a scope list, or whose organization is no
// longer allowed) must not keep access by refreshing; a narrowed policy
// narrows the refreshed scope. Access tokens already issued stay valid
// until they expire (access_token_ttl bounds that).
func TestAttackRefreshAfterPolicyChange(t *testing.T) {
	t.Parallel()
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		AllowedUsers: []string{"*"},
		GitHubKeys:   `allowed_orgs = ["acme", "globex"]`,
		Tables:       cliClient,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "beta", Hostnames: []string{"beta.test"}},
	)
	e.gh.AddUser(fakegithub.User{Login: "alice", ID: 101, Orgs: []string{"acme"}})
	e.gh.AddUser(fakegithub.User{Login: "bob", ID: 102, Orgs: []string{"globex"}})
	e.gh.AddUser(fakegithub.User{Login: "carol", ID: 103, Orgs: []string{"acme"}})

	beta := func(allowed, mcp, user string) {
		t.Helper()
		p := e.g.Proxies[1]
		p.Auth = fmt.Sprintf("required = true\nallowed_users = %s\nmcp_users = %s\nuser_users = %s", allowed, mcp, user)
		e.g.WriteProxy(t, p)
	}
	all := `["alice", "bob", "carol"]`
	beta(all, all, all)
	e.reloadOK(t, "everyone on beta")

	alice := e.tokensAs(t, "beta.test", "e2e-cli", "alice", "mcp user")
	if alice.str("scope") != "user mcp" {
		t.Fatalf("alice's scope at login: %q, want \"user mcp\"", alice.str("scope"))
	}
	bobRT := e.tokensAs(t, "beta.test", "e2e-cli", "bob", "mcp").str("refresh_token")
	carolRT := e.tokensAs(t, "beta.test", "e2e-cli", "carol", "mcp").str("refresh_token")

	// alice leaves allowed_users.
	beta(`["bob", "carol"]`, all, all)
	e.reloadOK(t, "alice removed from allowed_users")
	wantOAuthError(t, e.refresh(t, "beta.test", "e2e-cli", alice.str("refresh_token")), http.StatusBadRequest, "invalid_grant")
	e.wantAccepted(t, "beta.test", alice.str("access_token"), "alice's access token issued before the reload (valid until exp)")
	if r := e.refresh(t, "beta.test", "e2e-cli", bobRT); r.status != http.StatusOK {
		t.Errorf("bob, still allowed, refreshing: %v", r)
	} else {
		bobRT = r.str("refresh_token")
	}

	// alice is allowed again but leaves mcp_users: the refresh narrows to
	// what she still has.
	beta(all, `["bob", "carol"]`, all)
	e.reloadOK(t, "alice removed from mcp_users")
	r := e.refresh(t, "beta.test", "e2e-cli", alice.str("refresh_token"))
	if r.status != http.StatusOK || r.str("scope") != "user" {
		t.Fatalf("alice without mcp_users refreshing: %v; want scope narrowed to \"user\"", r)
	}
	aliceRT := r.str("refresh_token")

	// alice leaves user_users too: nothing is granted, so no refresh.
	beta(all, `["bob", "carol"]`, `["bob", "carol"]`)
	e.reloadOK(t, "alice removed from every scope list")
	wantOAuthError(t, e.refresh(t, "beta.test", "e2e-cli", aliceRT), http.StatusBadRequest, "invalid_grant")

	// Restoring the lists does not widen a family that was narrowed: that
	// takes a new login.
	beta(all, all, all)
	e.reloadOK(t, "everyone on beta again")
	if r := e.refresh(t, "beta.test", "e2e-cli", aliceRT); r.status != http.StatusOK || r.str("scope") != "user" {
		t.Errorf("alice refreshing a narrowed family after the lists were restored: %v; want scope \"user\"", r)
	}

	// acme is no longer an allowed organization: carol (acme) is out, bob
	// (globex) stays.
	cfgPath := filepath.Join(e.g.Dir, "mcpgate.toml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), `allowed_orgs = ["acme", "globex"]`, `allowed_orgs = ["globex"]`, 1)
	if cfg == string(b) {
		t.Fatal("allowed_orgs not found in mcpgate.toml")
	}
	e.g.WriteConfigFile(t, "mcpgate.toml", cfg)
	e.reloadOK(t, "acme no longer allowed")
	wantOAuthError(t, e.refresh(t, "beta.test", "e2e-cli", carolRT), http.StatusBadRequest, "invalid_grant")
	if r := e.refresh(t, "beta.test", "e2e-cli", bobRT); r.status != http.StatusOK {
		t.Errorf("bob (globex) refreshing after acme was dropped: %v", r)
	}
	e.checkLogSecrets(t)
}

// TestAttackRefreshAbsoluteLifetime (item 8): rotating a refresh token
// does not extend its family: refresh_token_ttl counts from the login.
func TestAttackRefreshAbsoluteLifetime(t *testing.T) {
	t.Parallel()
	const ttl = 4 * time.Second
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		OAuthKeys:    fmt.Sprintf("access_token_ttl = \"1s\"\nrefresh_token_ttl = %q", ttl.String()),
		Tables:       cliClient,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}})

	// The gateway and the test share the clock, so the bounds are exact:
	// the family's login time lies between start and loggedIn; a refresh
	// sent at or after loggedIn + ttl must fail, and one that fails must
	// have been answered at or after start + ttl.
	start := time.Now()
	_, rt := e.tokens(t, "alpha.test", "e2e-cli")
	loggedIn := time.Now()
	refused := false
	for time.Since(loggedIn) < ttl+2*time.Second {
		time.Sleep(700 * time.Millisecond)
		sent := time.Now()
		r := e.refresh(t, "alpha.test", "e2e-cli", rt)
		answered := time.Now()
		if r.status == http.StatusOK {
			if !sent.Before(loggedIn.Add(ttl)) {
				t.Fatalf("refresh sent %v after the login succeeded; refresh_token_ttl is %v from the login", sent.Sub(loggedIn).Round(time.Millisecond), ttl)
			}
			rt = r.str("refresh_token")
			continue
		}
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
		if answered.Before(start.Add(ttl)) {
			t.Fatalf("refresh refused only %v after the login: %v", answered.Sub(start).Round(time.Millisecond), r)
		}
		refused = true
		break
	}
	if !refused {
		t.Errorf("rotating every 0.7 s kept the family alive for %v, past refresh_token_ttl %v", time.Since(start).Round(time.Millisecond), ttl)
	}
}

// attackEnv is the gateway of TestAttackTokens: two proxies (two worker
// processes), two public static clients, and a grace window long enough
// to retry in.
func attackEnv(t *testing.T) *oauthEnv {
	return startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		OAuthKeys:    `refresh_reuse_grace = "3s"`,
		Tables: `[[oauth.clients]]
client_id = "e2e-cli"
redirect_uris = ["http://127.0.0.1/callback"]

[[oauth.clients]]
client_id = "e2e-other"
redirect_uris = ["http://127.0.0.1/callback"]
`,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "beta", Hostnames: []string{"beta.test"}},
	)
}

// TestAttackTokens runs the attacks of items 10, 11 and 13 against one
// gateway. Registrations share one budget per address, so the attacker's
// client for introspection registers first and the limit test counts it.
func TestAttackTokens(t *testing.T) {
	t.Parallel()
	e := attackEnv(t)
	reg := e.postJSON(t, "https://beta.test/register", map[string]any{
		"redirect_uris": []string{"https://evil.example/cb"}, "token_endpoint_auth_method": "client_secret_basic",
	})
	if reg.status != http.StatusCreated {
		t.Fatalf("registration: %v", reg)
	}
	testRegistrationLimitShared(t, e, 1)
	testRefreshRetryIdempotent(t, e)
	testCodeReplayOtherClient(t, e)
	testIntrospectionDynamicClient(t, e, reg.str("client_id"), reg.str("client_secret"))
	e.checkLogSecrets(t)
}

// testRegistrationLimitShared (item 11): the registration limit is one
// budget for the client address across every worker, not one per process.
// done registrations from this address were made in the last minute.
func testRegistrationLimitShared(t *testing.T, e *oauthEnv, done int) {
	const limit = 10
	meta := map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "token_endpoint_auth_method": "none"}
	created := done
	for i := range limit + 1 - done {
		host := "alpha.test"
		if i%2 == 1 {
			host = "beta.test"
		}
		r := e.postJSON(t, "https://"+host+"/register", meta)
		switch {
		case r.status == http.StatusCreated:
			created++
		case r.status == http.StatusTooManyRequests && r.header.Get("Retry-After") != "":
		default:
			t.Fatalf("registration %d at %s: %v", i+1, host, r)
		}
	}
	if created != limit {
		t.Errorf("%d registrations from one address spread over two workers succeeded within a minute, want %d", created, limit)
	}
}

// testRefreshRetryIdempotent (item 10): a retried refresh inside the
// grace window, at any worker and concurrently, gets the very successor
// the first one got, not a second live token.
func testRefreshRetryIdempotent(t *testing.T, e *oauthEnv) {
	_, rt := e.tokens(t, "alpha.test", "e2e-cli")
	const n = 4
	got := make([]jsonResp, n)
	var wg sync.WaitGroup
	for i := range n {
		host := "alpha.test"
		if i%2 == 1 {
			host = "beta.test"
		}
		wg.Go(func() { got[i] = e.refreshNoFatal(host, "e2e-cli", rt) })
	}
	wg.Wait()
	succ := ""
	for i, r := range got {
		if r.status != http.StatusOK {
			t.Fatalf("concurrent refresh %d: %v", i, r)
		}
		if succ == "" {
			succ = r.str("refresh_token")
		}
		if r.str("refresh_token") != succ {
			t.Errorf("concurrent refreshes of one token returned different refresh tokens")
		}
	}
	again := e.refresh(t, "beta.test", "e2e-cli", rt)
	if again.status != http.StatusOK || again.str("refresh_token") != succ {
		t.Errorf("a retry inside the grace window: %v; want the same successor", again)
	}
	// The successor is live and rotates normally.
	next := e.refresh(t, "alpha.test", "e2e-cli", succ)
	if next.status != http.StatusOK || next.str("refresh_token") == succ {
		t.Fatalf("rotating the successor: %v", next)
	}
	e.wantAccepted(t, "alpha.test", next.str("access_token"), "access token of the successor's successor")
}

// refreshNoFatal is refresh for other goroutines: errors are in the
// response (status 0).
func (e *oauthEnv) refreshNoFatal(host, clientID, rt string) jsonResp {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.api.Do(req)
	if err != nil {
		return jsonResp{raw: []byte(err.Error())}
	}
	defer resp.Body.Close()
	r := jsonResp{status: resp.StatusCode, header: resp.Header}
	r.raw, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	json.Unmarshal(r.raw, &r.body)
	e.remember(r.str("access_token"), r.str("refresh_token"))
	return r
}

// testCodeReplayOtherClient (item 10): a code that leaked after its
// redemption, replayed by another client (or without the PKCE verifier),
// must not let the attacker revoke the victim's grant; the victim's own
// replay still does.
func testCodeReplayOtherClient(t *testing.T, e *oauthEnv) {
	res := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
	first := e.redeem(t, "alpha.test", "e2e-cli", res, res.verifier)
	if first.status != http.StatusOK {
		t.Fatalf("victim's redemption: %v", first)
	}
	access, refresh := first.str("access_token"), first.str("refresh_token")

	wantOAuthError(t, e.redeem(t, "alpha.test", "e2e-other", res, res.verifier), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, e.redeem(t, "alpha.test", "e2e-cli", res, "wrong-verifier-wrong-verifier-wrong-verifier-0"), http.StatusBadRequest, "invalid_grant")
	time.Sleep(time.Second) // revocations reach every worker within 250 ms
	if st, _ := e.mcpStatus(t, "alpha.test", access, nil); st != http.StatusOK {
		t.Errorf("the victim's access token after another client replayed its code: status %d, want 200", st)
	}
	r := e.refresh(t, "alpha.test", "e2e-cli", refresh)
	if r.status != http.StatusOK {
		t.Errorf("the victim's refresh after another client replayed its code: %v", r)
		return
	}

	// The victim's client replaying its own code: the code leaked with
	// its verifier, so everything it issued is revoked, as before.
	wantOAuthError(t, e.redeem(t, "alpha.test", "e2e-cli", res, res.verifier), http.StatusBadRequest, "invalid_grant")
	e.waitRefused(t, "alpha.test", r.str("access_token"), time.Now(), time.Second, "access token of a grant whose code its own client replayed")
	wantOAuthError(t, e.refresh(t, "alpha.test", "e2e-cli", r.str("refresh_token")), http.StatusBadRequest, "invalid_grant")
}

// testIntrospectionDynamicClient (item 13): a dynamically registered
// confidential client (id, secret) learns nothing about other clients'
// tokens.
func testIntrospectionDynamicClient(t *testing.T, e *oauthEnv, id, secret string) {
	access, refresh := e.tokens(t, "alpha.test", "e2e-cli")
	for _, tok := range []string{access, refresh} {
		r := e.postForm(t, "https://alpha.test/introspect", url.Values{"token": {tok}}, id, secret)
		if r.status != http.StatusOK || r.body["active"] != false || len(r.body) != 1 {
			t.Errorf("a dynamic client introspecting another client's token: %v; want exactly {\"active\": false}", r)
		}
	}
	wantOAuthError(t, e.postForm(t, "https://alpha.test/introspect", url.Values{"token": {access}}, "", ""), http.StatusUnauthorized, "invalid_client")
}

// TestAttackIntrospectionResourceServer (item 13): only a static client
// marked introspect = true (a resource server) sees other clients'
// tokens; another static confidential client does not.
func TestAttackIntrospectionResourceServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rsSecret, otherSecret := "e2e-resource-server-secret-42", "e2e-confidential-secret-43"
	for name, s := range map[string]string{"rs.secret": rsSecret, "other.secret": otherSecret} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables: `[[oauth.clients]]
client_id = "e2e-cli"
redirect_uris = ["http://127.0.0.1/callback"]

[[oauth.clients]]
client_id = "e2e-rs"
client_secret_file = "` + filepath.Join(dir, "rs.secret") + `"
redirect_uris = ["https://rs.example.com/callback"]
introspect = true

[[oauth.clients]]
client_id = "e2e-conf"
client_secret_file = "` + filepath.Join(dir, "other.secret") + `"
redirect_uris = ["https://conf.example.com/callback"]
`,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}})
	access, _ := e.tokens(t, "alpha.test", "e2e-cli")
	r := e.postForm(t, "https://alpha.test/introspect", url.Values{"token": {access}}, "e2e-rs", rsSecret)
	if r.status != http.StatusOK || r.body["active"] != true || r.str("client_id") != "e2e-cli" || r.str("username") != "alice" {
		t.Errorf("the resource server introspecting a live token: %v; want active", r)
	}
	r = e.postForm(t, "https://alpha.test/introspect", url.Values{"token": {access}}, "e2e-conf", otherSecret)
	if r.status != http.StatusOK || r.body["active"] != false || len(r.body) != 1 {
		t.Errorf("a static client without introspect introspecting another client's token: %v; want exactly {\"active\": false}", r)
	}
}
