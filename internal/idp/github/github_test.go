package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/tests/fakegithub"
)

const callback = "http://127.0.0.1:8443/oauth/callback"

var noFollow = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       5 * time.Second,
}

func newFake(t *testing.T) *fakegithub.Server {
	gh := fakegithub.New(t)
	gh.RegisterApp("Iv1.test", "topsecret", callback)
	gh.AddUser(fakegithub.User{Login: "Alice", ID: 4242, Name: "Alice Liddell", Email: "alice@example.com",
		Orgs: []string{"Wonderland"}, Teams: []string{"Wonderland/Tea-Party"}})
	gh.SetLoginAs("alice")
	return gh
}

func newProvider(t *testing.T, gh *fakegithub.Server, needOrgs bool) *Provider {
	t.Helper()
	p, err := New(Config{ClientID: "Iv1.test", ClientSecret: "topsecret", AuthorizeURL: gh.AuthorizeURL,
		TokenURL: gh.TokenURL, APIURL: gh.APIURL, NeedOrgs: needOrgs, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sec are the per-login secrets of the tests (RFC 7636 appendix B's
// verifier).
var sec = idp.Secrets{Verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", Nonce: "unused"}

// login follows AuthCodeURL on the fake and returns code and state.
func login(t *testing.T, p *Provider, state string) (code string) {
	t.Helper()
	resp, err := noFollow.Get(p.AuthCodeURL(state, callback, sec))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Query().Get("state") != state {
		t.Fatalf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

func TestLogin(t *testing.T) {
	gh := newFake(t)
	p := newProvider(t, gh, false)
	code := login(t, p, "state-1")
	q := gh.LastAuthorizeQuery()
	if q.Get("scope") != "read:user" || q.Get("client_id") != "Iv1.test" || q.Get("redirect_uri") != callback || q.Has("resource") {
		t.Fatalf("authorize query %v", q)
	}
	id, err := p.Exchange(context.Background(), code, callback, sec)
	if err != nil {
		t.Fatal(err)
	}
	want := idp.Identity{Subject: "github:4242", Login: "Alice", Name: "Alice Liddell", Email: "alice@example.com"}
	if fmt.Sprint(*id) != fmt.Sprint(want) {
		t.Fatalf("identity %+v, want %+v", *id, want)
	}
	if n := gh.APIRequests("/user/orgs") + gh.APIRequests("/user/teams"); n != 0 {
		t.Fatalf("orgs/teams fetched without NeedOrgs: %d", n)
	}
	if h := gh.LastTokenRequestHeader(); h.Get("Accept") != "application/json" {
		t.Fatalf("token Accept %q", h.Get("Accept"))
	}
	h := gh.LastAPIHeader("/user")
	if h.Get("Accept") != "application/vnd.github+json" || h.Get("X-GitHub-Api-Version") != "2022-11-28" ||
		!strings.HasPrefix(h.Get("Authorization"), "Bearer gho_") {
		t.Fatalf("API headers %v", h)
	}
}

func TestLoginOrgsAndTeamsPaginated(t *testing.T) {
	gh := newFake(t)
	var orgs, teams []string
	for i := range 250 {
		orgs = append(orgs, fmt.Sprintf("Org%03d", i))
	}
	for i := range 120 {
		teams = append(teams, fmt.Sprintf("Org%03d/Team-%d", i, i))
	}
	gh.AddUser(fakegithub.User{Login: "bob", ID: 7, Orgs: orgs, Teams: teams})
	gh.SetLoginAs("bob")
	p := newProvider(t, gh, true)
	code := login(t, p, "s")
	if got := gh.LastAuthorizeQuery().Get("scope"); got != "read:user read:org" {
		t.Fatalf("scope %q", got)
	}
	id, err := p.Exchange(context.Background(), code, callback, sec)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Orgs) != 250 || id.Orgs[0] != "org000" || len(id.Teams) != 120 || !slices.Contains(id.Teams, "org007/team-7") {
		t.Fatalf("orgs %d %v teams %d", len(id.Orgs), id.Orgs[:3], len(id.Teams))
	}
	if gh.APIRequests("/user/orgs") != 3 || gh.APIRequests("/user/teams") != 2 {
		t.Fatalf("pages fetched: orgs %d teams %d", gh.APIRequests("/user/orgs"), gh.APIRequests("/user/teams"))
	}
	if id.Name != "" || id.Email != "" {
		t.Fatalf("null name/email became %q %q", id.Name, id.Email)
	}
}

func TestLoginTeamOrgsLowerCase(t *testing.T) {
	gh := newFake(t)
	p := newProvider(t, gh, true)
	id, err := p.Exchange(context.Background(), login(t, p, "s"), callback, sec)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(id.Orgs, id.Teams) != "[wonderland] [wonderland/tea-party]" {
		t.Fatalf("orgs %v teams %v", id.Orgs, id.Teams)
	}
}

// checkSafe fails if err's text leaks a secret.
func checkSafe(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error %q contains %q", err, s)
		}
	}
}

func TestTokenErrorsFromFake(t *testing.T) {
	gh := newFake(t)
	p := newProvider(t, gh, false)
	code := login(t, p, "s")
	if _, err := p.Exchange(context.Background(), code, callback, sec); err != nil {
		t.Fatal(err)
	}
	// Reused code: GitHub's HTTP 200 error.
	_, err := p.Exchange(context.Background(), code, callback, sec)
	var e *idp.Error
	if !errors.As(err, &e) || e.Code != "bad_verification_code" || e.Status != 0 {
		t.Fatalf("reuse: %v", err)
	}
	if got := err.Error(); got != "github: token exchange: bad_verification_code: The code passed is incorrect or expired." {
		t.Fatalf("message %q", got)
	}
	checkSafe(t, err, code, "topsecret")

	bad, _ := New(Config{ClientID: "Iv1.test", ClientSecret: "wrong", AuthorizeURL: gh.AuthorizeURL, TokenURL: gh.TokenURL, APIURL: gh.APIURL}, nil)
	code = login(t, p, "s")
	_, err = bad.Exchange(context.Background(), code, callback, sec)
	if !errors.As(err, &e) || e.Code != "incorrect_client_credentials" {
		t.Fatalf("bad secret: %v", err)
	}
	checkSafe(t, err, code, "wrong")

	_, err = p.Exchange(context.Background(), code, "http://127.0.0.1:8443/other", sec)
	if !errors.As(err, &e) || e.Code != "redirect_uri_mismatch" {
		t.Fatalf("redirect: %v", err)
	}
}

// rawGitHub serves token and API from one handler for odd shapes.
func rawGitHub(t *testing.T, token, api http.HandlerFunc) *Provider {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/login/oauth/access_token", token)
	mux.HandleFunc("/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p, err := New(Config{ClientID: "id", ClientSecret: "sekrit", AuthorizeURL: srv.URL + "/login/oauth/authorize",
		TokenURL: srv.URL + "/login/oauth/access_token", APIURL: srv.URL + "/api/v3/", NeedOrgs: true, Timeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func okToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"gho_TOKENVALUE","token_type":"bearer","scope":"read:org,read:user"}`)
}

func TestOddResponses(t *testing.T) {
	const code = "c0dec0dec0dec0dec0de"
	user := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/api/v3/user" {
			fmt.Fprint(w, `{"login":"octocat","id":1,"name":null,"email":null}`)
			return true
		}
		return false
	}
	cases := []struct {
		name       string
		token, api http.HandlerFunc
		want       string
	}{
		{"token 500 html", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>oops "+r.FormValue("code")+"</html>", 500)
		}, nil, "github: token exchange: HTTP 500"},
		{"token 4xx json error", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":"invalid_request","error_description":"bad code %s and secret %s"}`, r.FormValue("code"), r.FormValue("client_secret"))
		}, nil, "github: token exchange: HTTP 400: invalid_request: bad code [redacted] and secret [redacted]"},
		{"token redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/steal", http.StatusTemporaryRedirect)
		}, nil, "github: token exchange: HTTP 307"},
		{"token not json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
			fmt.Fprint(w, "access_token=gho_x&token_type=bearer")
		}, nil, "github: token exchange: response is not JSON (application/x-www-form-urlencoded)"},
		{"token without access_token", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) },
			nil, "github: token exchange: response has no access_token"},
		{"token type mac", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"access_token":"x","token_type":"mac"}`) },
			nil, `github: token exchange: unexpected token_type "mac"`},
		{"bad credentials", okToken, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(401)
			fmt.Fprint(w, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`)
		}, "github: GET /user: HTTP 401: Bad credentials"},
		{"user without id", okToken, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"login":"x"}`) },
			"github: GET /user: response has no login or id"},
		{"rate limited orgs", okToken, func(w http.ResponseWriter, r *http.Request) {
			if !user(w, r) {
				w.WriteHeader(403)
				fmt.Fprint(w, `{"message":"API rate limit exceeded for user ID 1."}`)
			}
		}, "github: GET /user/orgs: HTTP 403: API rate limit exceeded for user ID 1."},
		{"next link to another origin", okToken, func(w http.ResponseWriter, r *http.Request) {
			if !user(w, r) {
				w.Header().Set("Link", `<https://evil.example/api/v3/user/orgs?page=2>; rel="next"`)
				fmt.Fprint(w, `[{"login":"a"}]`)
			}
		}, `github: GET /user/orgs: Link rel="next" leaves the API origin`},
		{"endless pages", okToken, func(w http.ResponseWriter, r *http.Request) {
			if !user(w, r) {
				w.Header().Set("Link", `</api/v3/user/orgs?per_page=100&page=999>; rel="next"`)
				fmt.Fprint(w, `[{"login":"a"}]`)
			}
		}, "github: GET /user/orgs: more than 10 pages of 100 entries"},
		{"orgs not a list", okToken, func(w http.ResponseWriter, r *http.Request) {
			if !user(w, r) {
				fmt.Fprint(w, `{"message":"?"}`)
			}
		}, "github: GET /user/orgs: response is not the expected JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := c.api
			if api == nil {
				api = func(w http.ResponseWriter, r *http.Request) { t.Error("API called after a failed exchange") }
			}
			p := rawGitHub(t, c.token, api)
			_, err := p.Exchange(context.Background(), code, callback, sec)
			if err == nil || err.Error() != c.want {
				t.Fatalf("got %v\nwant %s", err, c.want)
			}
			checkSafe(t, err, code, "sekrit", "gho_TOKENVALUE")
		})
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	p := rawGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, http.NotFound)
	p.cfg.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := p.Exchange(context.Background(), "code", callback, sec)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %s", err, time.Since(start))
	}
}

func TestNew(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{ClientSecret: "s"}, "github: client_id is required"},
		{Config{ClientID: "i"}, "github: client secret is required"},
		{Config{ClientID: "i", ClientSecret: "s", TokenURL: "http://github.example/t"},
			`github: token_url "http://github.example/t": must be https (http only to a loopback address)`},
		{Config{ClientID: "i", ClientSecret: "s", APIURL: "api.github.com"}, `github: api_url "api.github.com": not an absolute URL`},
		{Config{ClientID: "i", ClientSecret: "s", APIURL: "https://u:p@ghe.example/api/v3"}, `github: api_url: must not contain user info`},
	} {
		if _, err := New(c.cfg, nil); err == nil || err.Error() != c.want {
			t.Errorf("%+v: %v, want %s", c.cfg, err, c.want)
		}
	}
	p, err := New(Config{ClientID: "Iv1.x", ClientSecret: "s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The challenge of RFC 7636 appendix B's verifier.
	want := "https://github.com/login/oauth/authorize?client_id=Iv1.x&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&redirect_uri=https%3A%2F%2Fauth.example.com%2Foauth%2Fcallback&scope=read%3Auser&state=abc"
	if got := p.AuthCodeURL("abc", "https://auth.example.com/oauth/callback", sec); got != want {
		t.Fatalf("AuthCodeURL\n got %s\nwant %s", got, want)
	}
	if p.Name() != "github" || p.apiURL.String() != DefaultAPIURL || p.tokenURL.String() != DefaultTokenURL {
		t.Fatal("defaults")
	}
}

func TestNextLink(t *testing.T) {
	for in, want := range map[string]string{
		`<https://api.github.com/user/orgs?page=2>; rel="next", <https://api.github.com/user/orgs?page=5>; rel="last"`: "https://api.github.com/user/orgs?page=2",
		`<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next"`:                                           "https://a/x?page=3",
		`<https://a/x?page=3>;rel=next`:     "https://a/x?page=3",
		`<https://a/x?page=1>; rel="first"`: "",
		`garbage`:                           "",
	} {
		if got := nextLink([]string{in}); got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}

func TestCallbackError(t *testing.T) {
	q := url.Values{"error": {"access_denied"}, "error_description": {"The user has denied your application access."}, "state": {"x"}}
	err := idp.CallbackError("github", q)
	if err == nil || err.Error() != "github: callback: access_denied: The user has denied your application access." {
		t.Fatalf("%v", err)
	}
	if idp.CallbackError("github", url.Values{"code": {"x"}}) != nil {
		t.Fatal("no error expected")
	}
}

func TestPKCE(t *testing.T) {
	gh := newFake(t)
	p := newProvider(t, gh, false)
	code := login(t, p, "s")
	if q := gh.LastAuthorizeQuery(); q.Get("code_challenge") != sec.Challenge() || q.Get("code_challenge_method") != "S256" {
		t.Fatalf("authorize query %v, want the S256 challenge", q)
	}
	other := idp.Secrets{Verifier: strings.Repeat("v", 43)}
	_, err := p.Exchange(context.Background(), code, callback, other)
	var e *idp.Error
	if !errors.As(err, &e) || e.Code != "bad_verification_code" || strings.Contains(err.Error(), other.Verifier) {
		t.Fatalf("wrong verifier: %v", err)
	}
	if _, err := p.Exchange(context.Background(), code, callback, idp.Secrets{}); err == nil || !strings.Contains(err.Error(), "no PKCE verifier") {
		t.Fatalf("no verifier: %v", err)
	}
	if _, err := p.Exchange(context.Background(), code, callback, sec); err != nil {
		t.Fatalf("right verifier: %v", err)
	}
	if got := gh.LastTokenParams().Get("code_verifier"); got != sec.Verifier {
		t.Errorf("code_verifier sent %q", got)
	}
}
