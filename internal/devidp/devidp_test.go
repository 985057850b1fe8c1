package devidp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/idp/github"
	"github.com/mcpgate/mcpgate/internal/logging/logtest"
)

const callback = "http://127.0.0.1:8443/oauth/callback"

var noFollow = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       5 * time.Second,
}

func start(t *testing.T, opts Options) (*httptest.Server, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	opts.Log = slog.New(slog.NewTextHandler(logs, nil))
	srv := httptest.NewServer(Handler(opts))
	t.Cleanup(srv.Close)
	return srv, logs
}

func connector(t *testing.T, base string, needOrgs bool, secret string) *github.Provider {
	t.Helper()
	p, err := github.New(github.Config{ClientID: "mcpgate-dev", ClientSecret: secret,
		AuthorizeURL: base + "/login/oauth/authorize", TokenURL: base + "/login/oauth/access_token",
		APIURL: base, NeedOrgs: needOrgs, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func getURL(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := noFollow.Get(u)
	return read(t, resp, err)
}

func postForm(t *testing.T, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := noFollow.PostForm(u, form)
	return read(t, resp, err)
}

func read(t *testing.T, resp *http.Response, err error) (*http.Response, string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// sec are the per-login secrets of the tests' logins.
var sec = idp.Secrets{Verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", Nonce: "n"}

// codeFrom checks a redirect to callback and returns its code.
func codeFrom(t *testing.T, resp *http.Response, state string) string {
	t.Helper()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), callback+"?") ||
		loc.Query().Get("state") != state || loc.Query().Get("code") == "" {
		t.Fatalf("want redirect to callback: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

func TestLoginRoundTripWithGitHubConnector(t *testing.T) {
	srv, logs := start(t, Options{Orgs: []string{"Demo"}, Teams: []string{"demo/admins"}})
	p := connector(t, srv.URL, true, "anything")

	resp, body := getURL(t, p.AuthCodeURL("st-1", callback, sec))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, Warning) {
		t.Fatalf("login page: %d\n%s", resp.StatusCode, body)
	}
	form := url.Values{"login": {"Alice-B"}}
	for _, name := range []string{"client_id", "redirect_uri", "state", "scope", "code_challenge", "code_challenge_method"} {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no hidden field %s", name)
		}
		form.Set(name, htmlUnescape(m[1]))
	}
	resp, _ = postForm(t, srv.URL+"/login/oauth/authorize", form)
	code := codeFrom(t, resp, "st-1")

	// PKCE: the wrong verifier is a bad code (and does not use it up).
	if _, err := p.Exchange(context.Background(), code, callback, idp.Secrets{Verifier: strings.Repeat("x", 43)}); err == nil || !strings.Contains(err.Error(), "bad_verification_code") {
		t.Fatalf("wrong verifier: %v", err)
	}
	id, err := p.Exchange(context.Background(), code, callback, sec)
	if err != nil {
		t.Fatal(err)
	}
	want := identity.User{Subject: fmt.Sprintf("github:%d", userID("alice-b")), Login: "alice-b", Name: "alice-b",
		Orgs: []string{"demo"}, Teams: []string{"demo/admins"}}
	if fmt.Sprint(*id) != fmt.Sprint(want) {
		t.Fatalf("identity %+v, want %+v", *id, want)
	}
	// Single use.
	if _, err := p.Exchange(context.Background(), code, callback, sec); err == nil || !strings.Contains(err.Error(), "bad_verification_code") {
		t.Fatalf("reuse: %v", err)
	}
	l := logs.String()
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "login=alice-b") || strings.Contains(l, code) {
		t.Fatalf("logs:\n%s", l)
	}
}

func htmlUnescape(s string) string {
	r := strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">")
	return r.Replace(s)
}

func TestAutoLoginAndClientCredentials(t *testing.T) {
	srv, _ := start(t, Options{AutoLogin: "bob", ClientID: "mcpgate-dev", ClientSecret: "dev-secret"})
	p := connector(t, srv.URL, false, "dev-secret")
	resp, _ := getURL(t, p.AuthCodeURL("s", callback, sec))
	code := codeFrom(t, resp, "s")
	id, err := p.Exchange(context.Background(), code, callback, sec)
	if err != nil || id.Login != "bob" || id.Orgs != nil {
		t.Fatalf("%+v %v", id, err)
	}

	wrong := connector(t, srv.URL, false, "wrong")
	resp, _ = getURL(t, wrong.AuthCodeURL("s", callback, sec))
	_, err = wrong.Exchange(context.Background(), codeFrom(t, resp, "s"), callback, sec)
	var e *idp.Error
	if !errors.As(err, &e) || e.Code != "incorrect_client_credentials" {
		t.Fatalf("wrong secret: %v", err)
	}
	resp, _ = getURL(t, srv.URL+"/login/oauth/authorize?client_id=other&redirect_uri="+url.QueryEscape(callback))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown client: %d", resp.StatusCode)
	}
}

func TestLoginPage(t *testing.T) {
	srv, _ := start(t, Options{})
	q := url.Values{"client_id": {"x"}, "redirect_uri": {callback}, "state": {`"><script>`}, "scope": {"read:user"}}
	resp, body := getURL(t, srv.URL+"/login/oauth/authorize?"+q.Encode())
	if resp.StatusCode != 200 || !strings.Contains(body, `<p class="banner" role="alert">`+Warning+`</p>`) {
		t.Fatalf("%d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, `"><script>`) {
		t.Fatal("state not escaped")
	}
	for _, m := range regexp.MustCompile(`(?i)\b(src|href|action)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(body, -1) {
		if m[1] != "action" || m[2] != "/login/oauth/authorize" {
			t.Errorf("external or unexpected reference %s", m[0])
		}
	}
	for _, bad := range []string{"<script", "<link", "<img", "@import", "url("} {
		if strings.Contains(strings.ToLower(body), bad) {
			t.Errorf("page contains %s", bad)
		}
	}
	for _, must := range []string{`<html lang="en">`, `<label for="login">`, `id="login"`, `aria-describedby="login-hint"`} {
		if !strings.Contains(body, must) {
			t.Errorf("page lacks %s", must)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}

	// Invalid names are refused with the form again.
	for _, name := range []string{"-alice", "al--ice", "alice-", strings.Repeat("a", 40), "al ice", ""} {
		form := url.Values{"login": {name}, "client_id": {"x"}, "redirect_uri": {callback}}
		resp, body := postForm(t, srv.URL+"/login/oauth/authorize", form)
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `aria-invalid="true"`) {
			t.Errorf("%q: %d", name, resp.StatusCode)
		}
	}
	// A redirect_uri that is not an absolute http(s) URL.
	for _, ru := range []string{"javascript:alert(1)", "/relative", "http://u:p@host/cb", ""} {
		resp, _ := getURL(t, srv.URL+"/login/oauth/authorize?client_id=x&redirect_uri="+url.QueryEscape(ru))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("redirect_uri %q: %d", ru, resp.StatusCode)
		}
	}
}

func TestValidLogin(t *testing.T) {
	pat := regexp.MustCompile(`^(?:` + loginPattern + `)$`)
	for name, want := range map[string]bool{
		"a": true, "alice": true, "Alice-B": true, "a-b-c": true, strings.Repeat("a", 39): true,
		"": false, "-a": false, "a-": false, "a--b": false, strings.Repeat("a", 40): false, "a_b": false, "ä": false,
	} {
		if got := ValidLogin(name); got != want {
			t.Errorf("ValidLogin(%q) = %v", name, got)
		}
		// The HTML pattern (with maxlength) agrees with the server.
		if got := pat.MatchString(name) && len(name) <= 39; got != want {
			t.Errorf("pattern on %q = %v", name, got)
		}
	}
}

func TestNonLoopbackRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9000", ":9000", "[::]:9000", "192.0.2.10:9000", "[2001:db8::1]:9000", "10.0.0.1:0"} {
		err := Run(context.Background(), addr, Options{}, nil)
		if !errors.Is(err, ErrNotLoopback) || !strings.Contains(err.Error(), "refusing to listen on") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	if err := Run(context.Background(), "127.0.0.1", Options{}, nil); err == nil || !strings.Contains(err.Error(), "missing port") {
		t.Errorf("no port: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "127.9.9.9:0", "[::1]:0", "[::ffff:127.0.0.1]:0", "localhost:0"} {
		if err := CheckLoopback(context.Background(), addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Options{AutoLogin: "carol"}, slog.New(slog.NewTextHandler(logs, nil))) }()
	resp, body := getURL(t, "http://"+ln.Addr().String()+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, Warning) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN msg=\""+Warning) || !strings.Contains(l, "api_url=http://127.0.0.1:") {
		t.Fatalf("start log:\n%s", l)
	}
}
