package fakegithub

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var noFollow = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       5 * time.Second,
}

func get(t *testing.T, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func postToken(t *testing.T, s *Server, form url.Values, accept string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const callback = "http://127.0.0.1:5555/oauth/callback"

func setup(t *testing.T) *Server {
	s := New(t)
	s.RegisterApp("Iv1.app", "s3cret", callback)
	s.AddUser(User{Login: "Alice", ID: 42, Name: "Alice A.", Orgs: []string{"Acme"}, Teams: []string{"acme/devs", "other/ops"}})
	s.SetLoginAs("alice")
	return s
}

// authorize runs the authorize step and returns the code.
func authorize(t *testing.T, s *Server, scope string) string {
	t.Helper()
	resp, _ := get(t, s.AuthorizeURL+"?"+url.Values{"client_id": {"Iv1.app"}, "redirect_uri": {callback},
		"state": {"st"}, "scope": {scope}, "resource": {"https://mcp.example/mcp"}}.Encode())
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if got := loc.Query().Get("state"); got != "st" {
		t.Fatalf("state %q", got)
	}
	if !regexp.MustCompile(`^[0-9a-f]{20}$`).MatchString(loc.Query().Get("code")) {
		t.Fatalf("code %q", loc.Query().Get("code"))
	}
	return loc.Query().Get("code")
}

func TestWebFlowAndAPI(t *testing.T) {
	s := setup(t)
	code := authorize(t, s, "read:user read:org")
	if s.LastAuthorizeQuery().Get("resource") == "" || s.AuthorizeRequests() != 1 {
		t.Fatal("authorize request not recorded")
	}
	form := url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {code}, "redirect_uri": {callback}}
	resp, body := postToken(t, s, form, "application/json")
	var tok map[string]string
	if err := json.Unmarshal([]byte(body), &tok); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if !regexp.MustCompile(`^gho_[0-9A-Za-z]{36}$`).MatchString(tok["access_token"]) ||
		tok["token_type"] != "bearer" || tok["scope"] != "read:user,read:org" || len(tok) != 3 {
		t.Fatalf("token response %v", tok)
	}
	// Single use.
	_, body = postToken(t, s, form, "application/json")
	if !strings.Contains(body, `"error":"bad_verification_code"`) {
		t.Fatalf("reuse: %s", body)
	}
	if s.TokenExchanges() != 2 || s.TokensIssued() != 1 {
		t.Fatalf("counters %d %d", s.TokenExchanges(), s.TokensIssued())
	}

	auth := "Bearer " + tok["access_token"]
	resp, body = get(t, s.APIURL+"/user", "Authorization", auth)
	var u map[string]any
	json.Unmarshal([]byte(body), &u)
	if resp.StatusCode != 200 || u["login"] != "Alice" || u["id"] != 42.0 || u["email"] != nil || u["name"] != "Alice A." {
		t.Fatalf("/user: %d %v", resp.StatusCode, u)
	}
	if got := resp.Header.Get("X-OAuth-Scopes"); got != "read:user, read:org" {
		t.Fatalf("X-OAuth-Scopes %q", got)
	}

	// Pagination: three teams' worth of orgs at per_page=1.
	resp, body = get(t, s.APIURL+"/user/orgs?per_page=1", "Authorization", auth)
	if !strings.Contains(body, `"login":"Acme"`) {
		t.Fatalf("orgs page 1: %s", body)
	}
	link := resp.Header.Get("Link")
	want := `<` + s.APIURL + `/user/orgs?page=2&per_page=1>; rel="next", <` + s.APIURL + `/user/orgs?page=2&per_page=1>; rel="last"`
	if link != want {
		t.Fatalf("Link\n got %s\nwant %s", link, want)
	}
	resp, body = get(t, s.APIURL+"/user/orgs?per_page=1&page=2", "Authorization", auth)
	if !strings.Contains(body, `"login":"other"`) || !strings.Contains(resp.Header.Get("Link"), `rel="prev"`) ||
		strings.Contains(resp.Header.Get("Link"), `rel="next"`) {
		t.Fatalf("orgs page 2: %s %s", resp.Header.Get("Link"), body)
	}
	_, body = get(t, s.APIURL+"/user/teams", "Authorization", auth)
	var teams []struct {
		Slug         string
		Organization struct{ Login string }
	}
	json.Unmarshal([]byte(body), &teams)
	if len(teams) != 2 || teams[0].Slug != "devs" || teams[0].Organization.Login != "acme" {
		t.Fatalf("teams %s", body)
	}
}

func TestTokenErrors(t *testing.T) {
	s := setup(t)
	code := authorize(t, s, "read:user")
	cases := []struct {
		name string
		form url.Values
		want TokenError
	}{
		{"bad secret", url.Values{"client_id": {"Iv1.app"}, "client_secret": {"nope"}, "code": {code}}, ErrIncorrectClientCredentials},
		{"unknown client", url.Values{"client_id": {"x"}, "client_secret": {"s3cret"}, "code": {code}}, ErrIncorrectClientCredentials},
		{"bad code", url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {"0123"}}, ErrBadVerificationCode},
		{"redirect", url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {code},
			"redirect_uri": {"http://127.0.0.1:5555/elsewhere"}}, ErrRedirectURIMismatch},
	}
	for _, c := range cases {
		resp, body := postToken(t, s, c.form, "application/json")
		want, _ := json.Marshal(c.want)
		if resp.StatusCode != 200 || strings.TrimSpace(body) != string(want) {
			t.Errorf("%s: %d %s, want 200 %s", c.name, resp.StatusCode, body, want)
		}
	}
	// Without Accept: form encoded, still 200.
	resp, body := postToken(t, s, url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {"zz"}}, "")
	want := "error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com%2Fapps%2Fmanaging-oauth-apps%2Ftroubleshooting-oauth-app-access-token-request-errors%2F%23bad-verification-code"
	if resp.StatusCode != 200 || body != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		t.Fatalf("form error: %d %q", resp.StatusCode, body)
	}
	// Expired code.
	s.Advance(CodeLifetime + time.Second)
	_, body = postToken(t, s, url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {code}}, "application/json")
	if !strings.Contains(body, "bad_verification_code") {
		t.Fatalf("expired: %s", body)
	}
}

func TestAuthorizeEdges(t *testing.T) {
	s := setup(t)
	resp, body := get(t, s.AuthorizeURL+"?client_id=unknown")
	if resp.StatusCode != 404 || !strings.Contains(body, "not the web page") {
		t.Fatalf("unknown client: %d", resp.StatusCode)
	}
	resp, _ = get(t, s.AuthorizeURL+"?client_id=Iv1.app&state=x&redirect_uri="+url.QueryEscape("http://evil.example/oauth/callback"))
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 302 || !strings.HasPrefix(loc, callback+"?error=redirect_uri_mismatch&") || !strings.HasSuffix(loc, "&state=x") {
		t.Fatalf("mismatch: %d %s", resp.StatusCode, loc)
	}
	s.SetLoginAs("")
	resp, _ = get(t, s.AuthorizeURL+"?client_id=Iv1.app")
	if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || loc != "/login?return_to="+url.QueryEscape("/login/oauth/authorize?client_id=Iv1.app") {
		t.Fatalf("signed out: %d %s, want a redirect to the sign-in page", resp.StatusCode, loc)
	}
	resp, body = get(t, s.WebURL+"/login?return_to=%2Flogin%2Foauth%2Fauthorize")
	if resp.StatusCode != 200 || !strings.Contains(body, "Sign in to GitHub") {
		t.Fatalf("login page: %d", resp.StatusCode)
	}
	resp, body = get(t, s.APIURL+"/user", "Authorization", "Bearer gho_nope")
	if resp.StatusCode != 401 || strings.TrimSpace(body) != `{"documentation_url":"https://docs.github.com/rest","message":"Bad credentials","status":"401"}` {
		t.Fatalf("bad credentials: %d %s", resp.StatusCode, body)
	}
}

func TestRedirectRules(t *testing.T) {
	for _, c := range []struct {
		cb, ru string
		ok     bool
	}{
		{"http://example.com/path", "http://example.com/path", true},
		{"http://example.com/path", "http://example.com/path/subdir/other", true},
		{"http://example.com/path", "http://oauth.example.com/path", true},
		{"http://example.com/path", "http://oauth.example.com/path/subdir/other", true},
		{"http://example.com/path", "http://example.com/bar", false},
		{"http://example.com/path", "http://example.com/", false},
		{"http://example.com/path", "http://example.com:8080/path", false},
		{"http://example.com/path", "http://oauth.example.com:8080/path", false},
		{"http://example.com/path", "http://example.org", false},
		{"http://example.com/path", "http://example.com/pathology", false},
		{"http://example.com/path", "https://example.com/path", false},
		{"http://127.0.0.1/path", "http://127.0.0.1:1234/path", true},
	} {
		if got := redirectAllowed(c.cb, c.ru); got != c.ok {
			t.Errorf("callback %s redirect %s: %v, want %v", c.cb, c.ru, got, c.ok)
		}
	}
}

func TestScopesLimitOrgsAndTeams(t *testing.T) {
	s := setup(t)
	tok := s.IssueToken("alice", "read:user")
	_, body := get(t, s.APIURL+"/user/orgs", "Authorization", "token "+tok)
	if strings.TrimSpace(body) != "[]" {
		t.Fatalf("orgs without read:org: %s", body)
	}
	resp, _ := get(t, s.APIURL+"/user/teams", "Authorization", "Bearer "+tok)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("teams without read:org: %d", resp.StatusCode)
	}
	resp, _ = get(t, s.APIURL+"/user", "Authorization", "Bearer "+tok, "X-GitHub-Api-Version", "1999-01-01")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad API version: %d", resp.StatusCode)
	}
}

func TestPKCE(t *testing.T) {
	s := setup(t)
	verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	challenge := "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // RFC 7636 appendix B
	code := func() string {
		resp, _ := get(t, s.AuthorizeURL+"?"+url.Values{"client_id": {"Iv1.app"}, "redirect_uri": {callback}, "state": {"st"},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}}.Encode())
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc.Query().Get("code")
	}
	for _, v := range []string{"", "wrong-verifier-wrong-verifier-wrong-verifier-x"} {
		form := url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {code()}}
		if v != "" {
			form.Set("code_verifier", v)
		}
		_, body := postToken(t, s, form, "application/json")
		if !strings.Contains(body, `"bad_verification_code"`) {
			t.Errorf("verifier %q: %s", v, body)
		}
	}
	form := url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {code()}, "code_verifier": {verifier}}
	_, body := postToken(t, s, form, "application/json")
	if !strings.Contains(body, "access_token") {
		t.Fatalf("right verifier: %s", body)
	}
	if got := s.LastTokenParams(); got.Get("code_verifier") != verifier || got.Has("client_secret") {
		t.Errorf("LastTokenParams %v", got)
	}
	resp, _ := get(t, s.AuthorizeURL+"?"+url.Values{"client_id": {"Iv1.app"}, "state": {"st"},
		"code_challenge": {verifier}, "code_challenge_method": {"plain"}}.Encode())
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=invalid_request") {
		t.Errorf("plain PKCE: %s", loc)
	}
}

// TestBrowserSession pins the contract the browser test relies on: a
// signed-out browser is sent to /login, signs in through POST /session,
// and its user_session cookie then decides who it is, before SetLoginAs.
func TestBrowserSession(t *testing.T) {
	s := setup(t)
	s.AddUser(User{Login: "bob", ID: 43})
	s.SetLoginAs("")
	authz := s.AuthorizeURL + "?" + url.Values{"client_id": {"Iv1.app"}, "redirect_uri": {callback}, "state": {"st"}}.Encode()
	resp, _ := get(t, authz)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 302 || err != nil || loc.Path != "/login" {
		t.Fatalf("signed out: %d %v", resp.StatusCode, loc)
	}
	rt := loc.Query().Get("return_to")
	_, page := get(t, s.WebURL+loc.String())
	for _, want := range []string{`<form action="/session" method="post">`, `name="login" id="login_field"`,
		`name="return_to" value="` + strings.ReplaceAll(rt, "&", "&amp;") + `"`, `name="commit" value="Sign in"`} {
		if !strings.Contains(page, want) {
			t.Errorf("login page lacks %s:\n%s", want, page)
		}
	}
	post := func(login string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, s.WebURL+"/session", strings.NewReader(url.Values{"login": {login}, "return_to": {rt}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post("nobody"); resp.StatusCode == 302 {
		t.Error("unknown login signed in")
	}
	resp = post("bob")
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			sess = c
		}
	}
	if resp.StatusCode != 302 || resp.Header.Get("Location") != rt || sess == nil || !sess.HttpOnly || sess.Path != "/" {
		t.Fatalf("POST /session: %d %q %+v", resp.StatusCode, resp.Header.Get("Location"), sess)
	}
	s.SetLoginAs("alice") // the cookie beats it
	resp, _ = get(t, s.WebURL+rt, "Cookie", SessionCookie+"="+sess.Value)
	cb, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 302 || cb.Query().Get("code") == "" {
		t.Fatalf("signed-in authorize: %d %v", resp.StatusCode, cb)
	}
	_, body := postToken(t, s, url.Values{"client_id": {"Iv1.app"}, "client_secret": {"s3cret"}, "code": {cb.Query().Get("code")}}, "application/json")
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(body), &tr)
	_, user := get(t, s.APIURL+"/user", "Authorization", "Bearer "+tr.AccessToken)
	if !strings.Contains(user, `"login":"bob"`) {
		t.Errorf("the session's user is not the one who logged in: %s", user)
	}
	if s.SignIn("alice") == "" {
		t.Error("SignIn")
	}
}
