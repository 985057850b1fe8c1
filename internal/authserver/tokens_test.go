package authserver

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
)

// fakeTokens "signs" access tokens by remembering them.
type fakeTokens struct {
	mu     sync.Mutex
	issued map[string]*identity.Principal // guarded by mu
}

func (f *fakeTokens) Issue(t *identity.Principal) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.issued == nil {
		f.issued = map[string]*identity.Principal{}
	}
	raw := "at-" + t.TokenID
	c := *t
	f.issued[raw] = &c
	return raw, nil
}

func (f *fakeTokens) VerifyAnyAudience(raw string) (*identity.Principal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.issued[raw]; ok {
		return t, nil
	}
	return nil, errors.New("unknown token")
}

func (f *fakeTokens) JWKS() []byte { return nil }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const (
	testTTL   = 24 * time.Hour
	testGrace = 5 * time.Second
)

// tokenServer is a Server on a fresh SQLite store, with a public client
// "cli", a confidential "rs" (introspect), a confidential "conf", one
// protected proxy notes.test and a clock.
func tokenServer(t *testing.T, path string) (*Server, *clock) {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "oauth.db")
	}
	st, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return tokenServerOn(t, st)
}

// tokenServerOn is tokenServer on the store st.
func tokenServerOn(t *testing.T, st store.Store) (*Server, *clock) {
	t.Helper()
	clk := &clock{t: time.Now().UTC().Truncate(time.Millisecond)}
	oauth := &config.OAuth{
		AccessTokenTTL: time.Hour, RefreshTokenTTL: testTTL, RefreshReuseGrace: testGrace,
		DynamicClientTTL: 720 * time.Hour,
		Users:            config.Users{Allowed: []string{"*"}, User: []string{"*"}, MCP: []string{"alice", "bob"}},
	}
	notes := &config.Proxy{Name: "notes", Hostnames: []string{"notes.test"}, Auth: config.Auth{Required: true, ResourcePath: "/mcp"}}
	tokens := &fakeTokens{}
	s := &Server{
		o: Options{
			OAuth:  oauth,
			Policy: policy.New([]*config.Proxy{notes}, oauth),
			Store:  st,
			Signer: tokens,
			Reader: tokens,
			Keys:   tokens,
		},
		log: slog.New(slog.DiscardHandler),
		now: clk.now,
		static: map[string]*client{
			"cli":  {ID: "cli", Public: true, GrantTypes: []string{"authorization_code", "refresh_token"}, Kind: kindStatic},
			"cli2": {ID: "cli2", Public: true, GrantTypes: []string{"authorization_code", "refresh_token"}, Kind: kindStatic},
			"rs":   {ID: "rs", SecretHash: hashHex("rs-secret"), Introspect: true, Kind: kindStatic},
			"conf": {ID: "conf", SecretHash: hashHex("conf-secret"), GrantTypes: []string{"authorization_code"}, Kind: kindStatic},
		},
	}
	s.o.Now = clk.now
	return s, clk
}

// post sends form to the endpoint handler h at notes.test, with Basic
// credentials if user is set, and returns the status and JSON body.
func post(t *testing.T, h http.HandlerFunc, form url.Values, user, pass string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest("POST", "https://notes.test/x", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		r.SetBasicAuth(user, pass)
	}
	w := httptest.NewRecorder()
	h(w, r)
	var body map[string]any
	json.Unmarshal(w.Body.Bytes(), &body)
	return w.Code, body
}

// family stores the first refresh token of a family for login, logged in
// at authTime with scope and memberships, and returns it.
func family(t *testing.T, s *Server, login, scope string, authTime time.Time, orgs, teams []string) string {
	t.Helper()
	raw := randomToken()
	err := s.o.Store.CreateRefreshToken(context.Background(), &store.RefreshToken{
		TokenHash: hashHex(raw), GrantID: "grant-" + raw[:8], ClientID: "cli", Subject: "sub-" + login, Login: login,
		Scope: scope, Resource: "https://notes.test/mcp", Host: "notes.test", Orgs: orgs, Teams: teams,
		AuthTime: authTime, CreatedAt: authTime, ExpiresAt: authTime.Add(s.o.OAuth.RefreshTokenTTL),
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func refreshForm(rt string, extra ...string) url.Values {
	f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"cli"}}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Set(extra[i], extra[i+1])
	}
	return f
}

func wantGrantError(t *testing.T, what string, status int, body map[string]any, code string) {
	t.Helper()
	if status == http.StatusOK || body["error"] != code {
		t.Errorf("%s: HTTP %d %v; want error %s", what, status, body, code)
	}
}

// TestRefreshReevaluatesPolicy (item 8): every refresh applies the
// configuration of the moment to the user and the memberships stored at
// the login.
func TestRefreshReevaluatesPolicy(t *testing.T) {
	s, clk := tokenServer(t, "")
	users := &s.o.OAuth.Users
	gh := &config.GitHubIDP{AllowedOrgs: []string{"acme"}, AllowedTeams: []string{"globex/ops"}}
	s.o.OAuth.GitHub = gh
	now := clk.now()
	alice := family(t, s, "alice", "user mcp", now, []string{"acme"}, nil)
	bob := family(t, s, "bob", "user mcp", now, []string{"initech"}, []string{"globex/ops"})
	carol := family(t, s, "carol", "user", now, []string{"acme"}, nil)

	refresh := func(rt string, extra ...string) (string, string, int, map[string]any) {
		st, body := post(t, s.token, refreshForm(rt, extra...), "", "")
		at, _ := body["refresh_token"].(string)
		sc, _ := body["scope"].(string)
		return at, sc, st, body
	}
	// Unchanged policy: same scope.
	alice2, sc, st, body := refresh(alice)
	if st != http.StatusOK || sc != "user mcp" {
		t.Fatalf("refresh under the login's policy: %d %v", st, body)
	}
	// Asking for less narrows the access token, not the family.
	alice3, sc, st, body := refresh(alice2, "scope", "mcp")
	if st != http.StatusOK || sc != "mcp" {
		t.Fatalf("refresh asking for mcp: %d %v", st, body)
	}
	if rt, _ := s.o.Store.GetRefreshToken(context.Background(), hashHex(alice3)); rt == nil || rt.Scope != "user mcp" {
		t.Errorf("the family's scope after a narrower request: %+v, want \"user mcp\"", rt)
	}
	_, _, st, body = refresh(alice3, "scope", "admin")
	wantGrantError(t, "refresh asking for more", st, body, "invalid_scope")

	// alice leaves mcp_users: narrowed.
	users.MCP = []string{"bob"}
	alice4, sc, st, body := refresh(alice3)
	if st != http.StatusOK || sc != "user" {
		t.Fatalf("refresh after leaving mcp_users: %d %v; want scope user", st, body)
	}
	// ...and user_users: nothing left.
	users.User = []string{"bob", "carol"}
	_, _, st, body = refresh(alice4)
	wantGrantError(t, "refresh with no scope left", st, body, "invalid_grant")
	users.User = []string{"*"}

	// A per-proxy allowed_users without alice.
	notes := s.o.Policy.Owner("notes.test")
	notes.Auth.Users.Allowed = []string{"bob", "carol"}
	_, _, st, body = refresh(alice4)
	wantGrantError(t, "refresh after leaving the proxy's allowed_users", st, body, "invalid_grant")
	notes.Auth.Users.Allowed = nil

	// Organizations and teams are checked against the stored memberships.
	bob2, _, st, body := refresh(bob)
	if st != http.StatusOK {
		t.Fatalf("bob (team globex/ops) refreshing: %d %v", st, body)
	}
	gh.AllowedTeams = nil
	_, _, st, body = refresh(bob2)
	wantGrantError(t, "refresh after bob's team was dropped from allowed_teams", st, body, "invalid_grant")
	gh.AllowedOrgs = []string{"globex"}
	_, _, st, body = refresh(carol)
	wantGrantError(t, "refresh after carol's org was dropped from allowed_orgs", st, body, "invalid_grant")

	// OpenID Connect groups live in Orgs too.
	s.o.OAuth.GitHub = nil
	s.o.OAuth.OIDC = &config.OIDCIDP{AllowedGroups: []string{"acme"}}
	if _, _, st, body = refresh(carol); st != http.StatusOK {
		t.Errorf("carol (group acme) refreshing with allowed_groups = [acme]: %d %v", st, body)
	}

	// The proxy is gone.
	s.o.OAuth.OIDC = nil
	s.o.Policy = policy.New(nil, s.o.OAuth)
	dave := family(t, s, "bob", "mcp", now, nil, nil)
	_, _, st, body = refresh(dave)
	wantGrantError(t, "refresh for a resource no longer served", st, body, "invalid_grant")
}

// TestRefreshAbsoluteLifetime (item 8): rotations never push a family past
// its login + refresh_token_ttl, and a shorter ttl after a reload applies
// at once.
func TestRefreshAbsoluteLifetime(t *testing.T) {
	s, clk := tokenServer(t, "")
	login := clk.now()
	rt := family(t, s, "alice", "mcp", login, nil, nil)
	for range 5 {
		clk.add(4 * time.Hour)
		st, body := post(t, s.token, refreshForm(rt), "", "")
		if st != http.StatusOK {
			t.Fatalf("refresh %v after login: %d %v", clk.now().Sub(login), st, body)
		}
		rt = body["refresh_token"].(string)
		stored, err := s.o.Store.GetRefreshToken(context.Background(), hashHex(rt))
		if err != nil {
			t.Fatal(err)
		}
		if !stored.ExpiresAt.Equal(login.Add(testTTL)) || !stored.AuthTime.Equal(login) {
			t.Fatalf("successor expires %v (auth time %v), want the login + ttl %v", stored.ExpiresAt, stored.AuthTime, login.Add(testTTL))
		}
	}
	// A shorter refresh_token_ttl applies to existing families.
	s.o.OAuth.RefreshTokenTTL = 20 * time.Hour
	clk.add(30 * time.Minute) // 20h30m after the login
	st, body := post(t, s.token, refreshForm(rt), "", "")
	wantGrantError(t, "refresh past the shortened family lifetime", st, body, "invalid_grant")
	// And the original one ends the family too.
	s.o.OAuth.RefreshTokenTTL = testTTL
	clk.add(3*time.Hour + 30*time.Minute) // 24h after the login
	st, body = post(t, s.token, refreshForm(rt), "", "")
	wantGrantError(t, "refresh at login + refresh_token_ttl", st, body, "invalid_grant")
}

func TestSuccessorToken(t *testing.T) {
	a, b := successorToken("token-a", "nonce-1"), successorToken("token-a", "nonce-1")
	if a != b || len(a) != 43 {
		t.Fatalf("successorToken not deterministic or not 32 bytes base64url: %q %q", a, b)
	}
	for _, other := range []string{successorToken("token-b", "nonce-1"), successorToken("token-a", "nonce-2"), successorToken("token-an", "once-1")} {
		if other == a {
			t.Error("successorToken ignores part of its input")
		}
	}
}

// TestRefreshRetryReturnsSameSuccessor (item 10): retries inside the grace
// window, sequential or concurrent, from one or two Server instances on one
// store (two workers), get the one stored successor; after the grace a
// reuse revokes the family.
func TestRefreshRetryReturnsSameSuccessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oauth.db")
	s1, clk := tokenServer(t, path)
	s2, _ := tokenServer(t, path)
	s2.now, s2.o.Now = clk.now, clk.now
	testRefreshRetry(t, s1, s2, clk)
}

// testRefreshRetry is TestRefreshRetryReturnsSameSuccessor on two Servers
// sharing one store, whose clocks are clk.
func testRefreshRetry(t *testing.T, s1, s2 *Server, clk *clock) {
	rt := family(t, s1, "alice", "mcp", clk.now(), nil, nil)

	const n = 8
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		srv := s1
		if i%2 == 1 {
			srv = s2
		}
		wg.Go(func() {
			st, body := post(t, srv.token, refreshForm(rt), "", "")
			if st != http.StatusOK {
				t.Errorf("concurrent refresh %d: %d %v", i, st, body)
				return
			}
			got[i], _ = body["refresh_token"].(string)
		})
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || got[0] == "" {
			t.Fatalf("concurrent refreshes returned different successors: %q", got)
		}
	}
	succ := got[0]
	clk.add(testGrace / 2)
	if st, body := post(t, s2.token, refreshForm(rt), "", ""); st != http.StatusOK || body["refresh_token"] != succ {
		t.Fatalf("retry inside the grace: %d %v; want the same successor", st, body)
	}
	// The client moved on; a late duplicate of the first request follows
	// the family to its current token.
	st, body := post(t, s1.token, refreshForm(succ), "", "")
	if st != http.StatusOK || body["refresh_token"] == succ {
		t.Fatalf("rotating the successor: %d %v", st, body)
	}
	third := body["refresh_token"].(string)
	if st, body := post(t, s1.token, refreshForm(rt), "", ""); st != http.StatusOK || body["refresh_token"] != third {
		t.Fatalf("retry of the first token after the successor rotated: %d %v; want the current token", st, body)
	}

	// After the grace: reuse is theft.
	clk.add(testGrace)
	st, body = post(t, s1.token, refreshForm(rt), "", "")
	wantGrantError(t, "reuse after the grace", st, body, "invalid_grant")
	st, body = post(t, s2.token, refreshForm(third), "", "")
	wantGrantError(t, "the current token of a revoked family", st, body, "invalid_grant")
}

// TestCodeReplay (item 10): replaying a redeemed code revokes its grant
// only when its own client presents it with the PKCE verifier.
func TestCodeReplay(t *testing.T) {
	s, clk := tokenServer(t, "")
	ctx := context.Background()
	verifier := strings.Repeat("v", 43)
	issue := func(code string) {
		t.Helper()
		err := s.o.Store.CreateAuthCode(ctx, &store.AuthCode{
			CodeHash: hashHex(code), GrantID: "grant-" + code, ClientID: "cli", RedirectURI: "http://127.0.0.1/cb",
			CodeChallenge: s256(verifier), Resource: "https://notes.test/mcp", Scope: "mcp", Subject: "s", Login: "alice",
			Host: "notes.test", AuthTime: clk.now(), ExpiresAt: clk.now().Add(time.Minute),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	redeem := func(code, clientID, v string) (int, map[string]any) {
		return post(t, s.token, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {v}, "client_id": {clientID}}, "", "")
	}
	revoked := func() int {
		r, err := s.o.Store.Revocations(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(r)
	}
	issue("c1")
	if st, body := redeem("c1", "cli", verifier); st != http.StatusOK || body["refresh_token"] == nil {
		t.Fatalf("first redemption: %d %v", st, body)
	}
	st, body := redeem("c1", "cli2", verifier)
	wantGrantError(t, "replay by another client", st, body, "invalid_grant")
	st, body = redeem("c1", "cli", strings.Repeat("w", 43))
	wantGrantError(t, "replay without the verifier", st, body, "invalid_grant")
	if n := revoked(); n != 0 {
		t.Fatalf("%d revocations after replays by others, want none", n)
	}
	st, body = redeem("c1", "cli", verifier)
	wantGrantError(t, "replay by its own client", st, body, "invalid_grant")
	r, _ := s.o.Store.Revocations(ctx, 0, 100)
	if len(r) != 1 || r[0].Kind != store.RevokeGrant || r[0].Value != "grant-c1" {
		t.Errorf("revocations after its own client replayed the code: %+v, want grant-c1", r)
	}
}

// TestIntrospectionAccess (item 13).
func TestIntrospectionAccess(t *testing.T) {
	s, clk := tokenServer(t, "")
	ctx := context.Background()
	err := s.o.Store.CreateClient(ctx, &store.Client{ID: "dyn", SecretHash: hashHex("dyn-secret"),
		GrantTypes: []string{"authorization_code"}, CreatedAt: clk.now(), UpdatedAt: clk.now(), LastUsedAt: clk.now()})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(clientID string) string {
		raw, _ := s.o.Signer.Issue(&identity.Principal{ClientID: clientID, TokenID: clientID + "-jti", Login: "alice", ExpiresAt: clk.now().Add(time.Hour)})
		return raw
	}
	cliTok, dynTok := mint("cli"), mint("dyn")
	rt := family(t, s, "alice", "mcp", clk.now(), nil, nil)
	for _, tc := range []struct {
		user, pass, tok string
		status          int
		active          bool
	}{
		{"rs", "rs-secret", cliTok, 200, true},
		{"rs", "rs-secret", rt, 200, true},
		{"conf", "conf-secret", cliTok, 200, false},
		{"dyn", "dyn-secret", cliTok, 200, false},
		{"dyn", "dyn-secret", rt, 200, false},
		{"dyn", "dyn-secret", dynTok, 200, true}, // its own
		{"rs", "wrong", cliTok, 401, false},
		{"", "", cliTok, 401, false},
	} {
		form := url.Values{"token": {tc.tok}}
		if tc.user == "" {
			form.Set("client_id", "cli")
		}
		st, body := post(t, s.introspect, form, tc.user, tc.pass)
		what := fmt.Sprintf("%s introspecting %.8s", tc.user, tc.tok)
		switch {
		case st != tc.status:
			t.Errorf("%s: status %d %v, want %d", what, st, body, tc.status)
		case st == 200 && body["active"] != tc.active:
			t.Errorf("%s: %v, want active=%v", what, body, tc.active)
		case st == 200 && !tc.active && len(body) != 1:
			t.Errorf("%s: %v, want exactly {\"active\": false}", what, body)
		case st == 401 && body["error"] != "invalid_client":
			t.Errorf("%s: %v, want invalid_client", what, body)
		}
	}
}

// TestRegistrationLimit (item 11): one budget per client network shared by
// every Server on the store (every worker); an IPv6 /64 is one network.
func TestRegistrationLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oauth.db")
	s1, clk := tokenServer(t, path)
	s2, _ := tokenServer(t, path)
	s2.now = clk.now
	try := func(s *Server, addr string) bool {
		t.Helper()
		r := httptest.NewRequest("POST", "https://notes.test/register", nil)
		r.RemoteAddr = addr
		ok, err := s.allowRegistration(r)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for i := range registrationLimit {
		srv := []*Server{s1, s2}[i%2]
		addr := fmt.Sprintf("[2001:db8:1:2::%x]:%d", i+1, 40000+i) // one /64, many addresses
		if !try(srv, addr) {
			t.Fatalf("registration %d from the /64 refused", i+1)
		}
	}
	if try(s2, "[2001:db8:1:2:ffff:ffff:ffff:ffff]:1") || try(s1, "[2001:db8:1:2::abc]:2") {
		t.Error("more registrations than the limit from one /64 across two workers")
	}
	if !try(s1, "[2001:db8:1:3::1]:1") {
		t.Error("another /64 refused")
	}
	if !try(s2, "192.0.2.1:1") {
		t.Error("an IPv4 client refused")
	}
	clk.add(registrationWindow)
	if !try(s2, "[2001:db8:1:2::1]:1") {
		t.Error("the /64 still refused after the window")
	}
}

// TestClientCollection (item 11): a use refreshes a registered client's
// last use at most hourly; CollectClients deletes clients unused for
// dynamic_client_ttl and revokes their tokens.
func TestClientCollection(t *testing.T) {
	s, clk := tokenServer(t, "")
	ctx := context.Background()
	t0 := clk.now()
	for _, id := range []string{"used", "idle"} {
		if err := s.o.Store.CreateClient(ctx, &store.Client{ID: id, CreatedAt: t0, UpdatedAt: t0, LastUsedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	lastUsed := func(id string) time.Time {
		c, err := s.o.Store.GetClient(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return c.LastUsedAt
	}
	clk.add(30 * time.Minute)
	if _, err := s.lookupClient(ctx, "used"); err != nil {
		t.Fatal(err)
	}
	if !lastUsed("used").Equal(t0) {
		t.Error("a use within the hour was written")
	}
	clk.add(700 * time.Hour)
	if _, err := s.lookupClient(ctx, "used"); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed("used"); !got.Equal(clk.now()) {
		t.Errorf("last use %v after a use at %v", got, clk.now())
	}
	clk.add(30 * time.Hour) // idle: 730.5 h unused; used: 30 h
	if err := s.CollectClients(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.lookupClient(ctx, "idle"); !errors.Is(err, errUnknownClient) {
		t.Errorf("idle client after collection: %v, want unknown", err)
	}
	if _, err := s.lookupClient(ctx, "used"); err != nil {
		t.Errorf("used client after collection: %v", err)
	}
	r, _ := s.o.Store.Revocations(ctx, 0, 100)
	if len(r) != 1 || r[0].Kind != store.RevokeClient || r[0].Value != "idle" {
		t.Errorf("revocations after collection: %+v, want the idle client's", r)
	}
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
