// Package fakegithub is a faithful local imitation of GitHub's OAuth app
// endpoints (github.com/login/oauth/...) and the REST API calls mcpgate
// makes (api.github.com/user, /user/orgs, /user/teams), for tests.
//
// Like GitHub, it serves the web endpoints and the API on two different
// origins, answers token errors with HTTP 200, expires codes after ten
// minutes, paginates lists with Link headers and checks PKCE (S256) when the
// authorize request carried a code_challenge. Tests choose who is logged in:
// SetLoginAs for every browser, or per browser by signing in on the web
// origin (GET /login, POST /session sets the user_session cookie), which
// beats SetLoginAs. They read counters afterwards.
package fakegithub

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Error descriptions and URIs exactly as GitHub sends them.
const (
	docsTokenErrors     = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
	docsAuthorizeErrors = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
	docsREST            = "https://docs.github.com/rest"
	// APIVersion is the only X-GitHub-Api-Version the fake accepts.
	APIVersion = "2022-11-28"
	// CodeLifetime is how long an authorization code stays valid.
	CodeLifetime = 10 * time.Minute
)

// TokenError is an access_token error body.
type TokenError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorURI         string `json:"error_uri"`
}

// The token endpoint errors GitHub documents.
var (
	ErrBadVerificationCode = TokenError{"bad_verification_code", "The code passed is incorrect or expired.",
		docsTokenErrors + "#bad-verification-code"}
	ErrIncorrectClientCredentials = TokenError{"incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.",
		docsTokenErrors + "#incorrect-client-credentials"}
	ErrRedirectURIMismatch = TokenError{"redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.",
		docsTokenErrors + "#redirect-uri-mismatch2"}
)

// User is a GitHub account.
type User struct {
	Login string
	ID    int64
	Name  string // "" is sent as null, like GitHub
	Email string // the public email; "" is sent as null
	// Orgs are organization logins; Teams are "org/team-slug" (the team's
	// organization is a membership too, as on GitHub).
	Orgs  []string
	Teams []string
}

type app struct{ id, secret, callback string }

type grant struct {
	clientID    string
	redirectURI string // as given on authorize; "" if none was given
	login       string
	scopes      []string
	challenge   string // PKCE S256 code_challenge; "" without PKCE
	expires     time.Time
	used        bool
}

// SessionCookie is the cookie a browser signed in at the fake carries, as
// on github.com.
const SessionCookie = "user_session"

type token struct {
	login  string
	scopes []string
}

// Server is the fake. Its exported URL fields are set by New.
type Server struct {
	// WebURL is the github.com stand-in; APIURL the api.github.com one.
	WebURL, APIURL         string
	AuthorizeURL, TokenURL string
	web, api               *httptest.Server

	mu     sync.Mutex       // guards everything below
	users  map[string]*User // by lower-case login
	apps   map[string]app
	grants map[string]*grant // by code
	tokens map[string]token
	// sessions maps user_session cookie values to logins.
	sessions map[string]string
	loginAs  string
	offset   time.Duration // added to time.Now by Advance
	// counters and recordings
	authorizeRequests, tokenRequests, issued int
	lastAuthorize                            url.Values
	lastTokenHeader                          http.Header
	lastTokenParams                          url.Values
	apiRequests                              map[string]int
	lastAPIHeader                            map[string]http.Header
}

// New starts the fake on two loopback listeners and closes them when the
// test ends.
func New(t testing.TB) *Server {
	s := &Server{
		users:         map[string]*User{},
		apps:          map[string]app{},
		grants:        map[string]*grant{},
		tokens:        map[string]token{},
		sessions:      map[string]string{},
		apiRequests:   map[string]int{},
		lastAPIHeader: map[string]http.Header{},
	}
	web := http.NewServeMux()
	web.HandleFunc("/login/oauth/authorize", s.authorize)
	web.HandleFunc("/login/oauth/access_token", s.accessToken)
	web.HandleFunc("/login", s.loginForm)
	web.HandleFunc("/session", s.session)
	web.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { notFoundPage(w) })
	s.web = httptest.NewServer(web)
	s.api = httptest.NewServer(http.HandlerFunc(s.serveAPI))
	t.Cleanup(s.web.Close)
	t.Cleanup(s.api.Close)
	s.WebURL, s.APIURL = s.web.URL, s.api.URL
	s.AuthorizeURL = s.WebURL + "/login/oauth/authorize"
	s.TokenURL = s.WebURL + "/login/oauth/access_token"
	return s
}

// AddUser adds or replaces a user. ID 0 gets a deterministic one.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.ID == 0 {
		u.ID = 1000 + int64(len(s.users))
	}
	s.users[strings.ToLower(u.Login)] = &u
}

// SetLoginAs makes the authorize endpoint auto-approve as login for every
// browser that is not signed in with its own user_session cookie; ""
// means nobody is logged in, and authorize sends such a browser to
// GitHub's sign-in page (/login?return_to=...).
func (s *Server) SetLoginAs(login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginAs = login
}

// RegisterApp registers an OAuth app with its authorization callback URL.
func (s *Server) RegisterApp(clientID, clientSecret, callbackURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[clientID] = app{clientID, clientSecret, callbackURL}
}

// Advance moves the fake's clock forward (to expire codes).
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

// IssueToken returns a valid access token for login with scopes, as if
// the web flow had run.
func (s *Server) IssueToken(login string, scopes ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newToken(login, scopes)
}

// AuthorizeRequests counts requests to /login/oauth/authorize.
func (s *Server) AuthorizeRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authorizeRequests
}

// LastAuthorizeQuery is the query of the last authorize request (to assert,
// for example, that no "resource" parameter was forwarded).
func (s *Server) LastAuthorizeQuery() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := url.Values{}
	for k, v := range s.lastAuthorize {
		q[k] = slices.Clone(v)
	}
	return q
}

// TokenExchanges counts POSTs to /login/oauth/access_token, failed ones
// included.
func (s *Server) TokenExchanges() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// TokensIssued counts access tokens issued by the token endpoint.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// LastTokenParams are the parameters of the last access_token request
// (query and body together; the client secret is removed).
func (s *Server) LastTokenParams() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := url.Values{}
	for k, v := range s.lastTokenParams {
		q[k] = slices.Clone(v)
	}
	return q
}

// SignIn creates a session for login, as POST /session does, and returns
// the user_session cookie value (for a test that builds its own browser).
func (s *Server) SignIn(login string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newSession(login)
}

// newSession creates a session. Call with mu held.
func (s *Server) newSession(login string) string {
	v := base64.RawURLEncoding.EncodeToString(random(24))
	s.sessions[v] = login
	return v
}

// LastTokenRequestHeader is the header of the last access_token request.
func (s *Server) LastTokenRequestHeader() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastTokenHeader.Clone()
}

// APIRequests counts API requests to path ("/user", "/user/orgs"...),
// rejected ones included.
func (s *Server) APIRequests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiRequests[path]
}

// LastAPIHeader is the header of the last API request to path.
func (s *Server) LastAPIHeader(path string) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAPIHeader[path].Clone()
}

func (s *Server) now() time.Time { return time.Now().Add(s.offset) }

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newToken returns "gho_" and 36 base-62 characters, like GitHub's OAuth
// access tokens. Call with mu held.
func (s *Server) newToken(login string, scopes []string) string {
	b := random(36)
	for i := range b {
		b[i] = base62[int(b[i])%len(base62)]
	}
	tok := "gho_" + string(b)
	s.tokens[tok] = token{login: login, scopes: scopes}
	return tok
}

// splitScopes accepts GitHub's space-delimited scope lists (and commas).
func splitScopes(s string) []string {
	var out []string
	for f := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ' ' || r == ',' }) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// redirectAllowed applies GitHub's OAuth app redirect URL rules: same
// scheme; host equal to the callback's or a subdomain of it; port equal,
// except that a loopback redirect may use any port; path equal to the
// callback's or below it.
func redirectAllowed(callback, redirect string) bool {
	cb, err1 := url.Parse(callback)
	ru, err2 := url.Parse(redirect)
	if err1 != nil || err2 != nil || !ru.IsAbs() || ru.Fragment != "" || ru.User != nil {
		return false
	}
	if !strings.EqualFold(cb.Scheme, ru.Scheme) {
		return false
	}
	ch, rh := strings.ToLower(cb.Hostname()), strings.ToLower(ru.Hostname())
	if rh != ch && !strings.HasSuffix(rh, "."+ch) {
		return false
	}
	ip, err := netip.ParseAddr(rh)
	loopback := rh == "localhost" || (err == nil && ip.IsLoopback())
	if !loopback && cb.Port() != ru.Port() {
		return false
	}
	cp := strings.TrimSuffix(cb.EscapedPath(), "/")
	rp := ru.EscapedPath()
	return rp == cp || rp == cp+"/" || strings.HasPrefix(rp, cp+"/")
}

var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to GitHub · GitHub</title></head>
<body><main><h1>Sign in to GitHub</h1>{{if .Error}}<p role="alert">{{.Error}}</p>{{end}}
<form action="/session" method="post"><label for="login_field">Username or email address</label>
<input type="text" name="login" id="login_field"><label for="password">Password</label>
<input type="password" name="password" id="password"><input type="hidden" name="return_to" value="{{.ReturnTo}}">
<input type="submit" name="commit" value="Sign in"></form>
</main></body></html>
`))

// localPath accepts a return_to that stays on the fake's origin: an
// absolute path, not a scheme-relative "//host".
func localPath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "//") && !strings.HasPrefix(p, "/\\")
}

// loginForm imitates GET https://github.com/login?return_to=...
func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		notFoundPage(w)
		return
	}
	rt := r.URL.Query().Get("return_to")
	if !localPath(rt) {
		rt = "/"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	loginPage.Execute(w, map[string]string{"ReturnTo": rt})
}

// session imitates POST https://github.com/session: a known login (any
// password) gets a user_session cookie and goes back to return_to.
func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		notFoundPage(w)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	login := strings.TrimSpace(r.PostForm.Get("login"))
	rt := r.PostForm.Get("return_to")
	if !localPath(rt) {
		rt = "/"
	}
	s.mu.Lock()
	u, ok := s.users[strings.ToLower(login)]
	var sess string
	if ok {
		sess = s.newSession(u.Login)
	}
	s.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnprocessableEntity)
		loginPage.Execute(w, map[string]string{"ReturnTo": rt, "Error": "Incorrect username or password."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sess, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, rt, http.StatusFound)
}

func notFoundPage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprint(w, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Page not found · GitHub</title></head>\n"+
		"<body><main><h1>404</h1><p>This is not the web page you are looking for.</p></main></body></html>\n")
}

// appendQuery adds params to u's existing query.
func appendQuery(u string, params url.Values) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := pu.Query()
	for k, v := range params {
		q[k] = v
	}
	pu.RawQuery = q.Encode()
	return pu.String()
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		notFoundPage(w)
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorizeRequests++
	s.lastAuthorize = q
	a, ok := s.apps[q.Get("client_id")]
	if !ok {
		notFoundPage(w)
		return
	}
	state := q.Get("state")
	redirect := q.Get("redirect_uri")
	if redirect != "" && !redirectAllowed(a.callback, redirect) {
		// GitHub sends the browser to the registered callback URL.
		params := url.Values{
			"error":             {"redirect_uri_mismatch"},
			"error_description": {"The redirect_uri MUST match the registered callback URL for this application."},
			"error_uri":         {docsAuthorizeErrors + "#redirect-uri-mismatch"},
		}
		if state != "" {
			params.Set("state", state)
		}
		http.Redirect(w, r, appendQuery(a.callback, params), http.StatusFound)
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	if challenge != "" && method != "S256" {
		// GitHub supports S256 only.
		params := url.Values{"error": {"invalid_request"}, "error_description": {"code_challenge_method must be S256"}}
		if state != "" {
			params.Set("state", state)
		}
		http.Redirect(w, r, appendQuery(a.callback, params), http.StatusFound)
		return
	}
	// A browser signed in with its own session is that user (and, the app
	// being registered, approves at once as for an app already authorized);
	// otherwise SetLoginAs decides; otherwise GitHub's sign-in page.
	login := s.loginAs
	if c, err := r.Cookie(SessionCookie); err == nil && s.sessions[c.Value] != "" {
		login = s.sessions[c.Value]
	}
	if login == "" {
		http.Redirect(w, r, "/login?"+url.Values{"return_to": {r.URL.RequestURI()}}.Encode(), http.StatusFound)
		return
	}
	if _, ok := s.users[strings.ToLower(login)]; !ok {
		http.Error(w, fmt.Sprintf("fakegithub: SetLoginAs(%q) names no user added with AddUser", login), http.StatusInternalServerError)
		return
	}
	code := hex.EncodeToString(random(10)) // GitHub codes are 20 hex digits
	s.grants[code] = &grant{
		clientID:    a.id,
		redirectURI: redirect,
		login:       login,
		scopes:      splitScopes(q.Get("scope")),
		challenge:   challenge,
		expires:     s.now().Add(CodeLifetime),
	}
	target := redirect
	if target == "" {
		target = a.callback
	}
	params := url.Values{"code": {code}}
	if state != "" {
		params.Set("state", state)
	}
	http.Redirect(w, r, appendQuery(target, params), http.StatusFound)
}

// accessToken imitates POST /login/oauth/access_token: parameters in the
// query, a form or a JSON body; client credentials in them or HTTP Basic;
// every outcome HTTP 200, as JSON when Accept asks for it, else form
// encoded.
func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		notFoundPage(w)
		return
	}
	params := r.URL.Query()
	if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/json") {
		var body map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err == nil {
			for k, v := range body {
				if sv, ok := v.(string); ok {
					params.Set(k, sv)
				}
			}
		}
	} else if err := r.ParseForm(); err == nil {
		for k, v := range r.PostForm {
			params[k] = v
		}
	}
	clientID, secret := params.Get("client_id"), params.Get("client_secret")
	if id, sec, ok := r.BasicAuth(); ok && clientID == "" {
		clientID, secret = id, sec
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenRequests++
	s.lastTokenHeader = r.Header.Clone()
	s.lastTokenParams = url.Values{}
	for k, v := range params {
		if k != "client_secret" {
			s.lastTokenParams[k] = slices.Clone(v)
		}
	}
	a, ok := s.apps[clientID]
	if !ok || secret == "" || a.secret != secret {
		writeToken(w, r, ErrIncorrectClientCredentials)
		return
	}
	g, ok := s.grants[params.Get("code")]
	if !ok || g.used || g.clientID != clientID || !s.now().Before(g.expires) {
		writeToken(w, r, ErrBadVerificationCode)
		return
	}
	if ru := params.Get("redirect_uri"); ru != "" {
		if !redirectAllowed(a.callback, ru) || (g.redirectURI != "" && ru != g.redirectURI) {
			writeToken(w, r, ErrRedirectURIMismatch)
			return
		}
	}
	if g.challenge != "" && !verifierMatches(params.Get("code_verifier"), g.challenge) {
		writeToken(w, r, ErrBadVerificationCode)
		return
	}
	g.used = true
	s.issued++
	tok := s.newToken(g.login, g.scopes)
	writeToken(w, r, map[string]string{
		"access_token": tok,
		"token_type":   "bearer",
		"scope":        strings.Join(g.scopes, ","),
	})
}

// verifierMatches checks an RFC 7636 S256 code_verifier.
func verifierMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

func writeToken(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Cache-Control", "no-store")
	if strings.Contains(strings.ToLower(r.Header.Get("Accept")), "application/json") {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(v)
		return
	}
	form := url.Values{}
	switch v := v.(type) {
	case TokenError:
		form.Set("error", v.Error)
		form.Set("error_description", v.ErrorDescription)
		form.Set("error_uri", v.ErrorURI)
	case map[string]string:
		for k, val := range v {
			form.Set(k, val)
		}
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	fmt.Fprint(w, form.Encode())
}

// apiError writes GitHub's REST error shape.
func apiError(w http.ResponseWriter, status int, message, docs string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{
		"message":           message,
		"documentation_url": docs,
		"status":            strconv.Itoa(status),
	})
}

var apiDocs = map[string]string{
	"/user":       docsREST + "/users/users#get-the-authenticated-user",
	"/user/orgs":  docsREST + "/orgs/orgs#list-organizations-for-the-authenticated-user",
	"/user/teams": docsREST + "/teams/teams#list-teams-for-the-authenticated-user",
}

func hasScope(scopes []string, any ...string) bool {
	for _, s := range any {
		if slices.Contains(scopes, s) {
			return true
		}
	}
	return false
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := r.URL.Path
	s.apiRequests[path]++
	s.lastAPIHeader[path] = r.Header.Clone()
	w.Header().Set("X-GitHub-Media-Type", "github.v3; format=json")
	w.Header().Set("X-RateLimit-Limit", "5000")
	w.Header().Set("X-RateLimit-Remaining", "4999")
	docs, known := apiDocs[path]
	if !known || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		apiError(w, http.StatusNotFound, "Not Found", docsREST)
		return
	}
	if v := r.Header.Get("X-GitHub-Api-Version"); v != "" && v != APIVersion {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("API version %s is not supported.", v), docsREST+"/overview/api-versions")
		return
	}
	w.Header().Set("X-GitHub-Api-Version-Selected", APIVersion)
	auth := r.Header.Get("Authorization")
	if auth == "" {
		apiError(w, http.StatusUnauthorized, "Requires authentication", docs)
		return
	}
	scheme, tok, _ := strings.Cut(auth, " ")
	t, ok := s.tokens[strings.TrimSpace(tok)]
	u := s.users[strings.ToLower(t.login)]
	if !ok || u == nil || (!strings.EqualFold(scheme, "bearer") && !strings.EqualFold(scheme, "token")) {
		apiError(w, http.StatusUnauthorized, "Bad credentials", docsREST)
		return
	}
	w.Header().Set("X-OAuth-Scopes", strings.Join(t.scopes, ", "))
	switch path {
	case "/user":
		w.Header().Set("X-Accepted-OAuth-Scopes", "")
		writeJSON(w, s.userJSON(u))
	case "/user/orgs":
		w.Header().Set("X-Accepted-OAuth-Scopes", "admin:org, read:org, repo, user, write:org")
		var orgs []any
		// Without an org scope GitHub lists only public memberships; the
		// fake models every membership as private.
		if hasScope(t.scopes, "read:org", "write:org", "admin:org", "user") {
			for _, o := range userOrgs(u) {
				orgs = append(orgs, s.orgJSON(o))
			}
		}
		s.paginate(w, r, orgs)
	case "/user/teams":
		w.Header().Set("X-Accepted-OAuth-Scopes", "admin:org, read:org, repo, user, write:org")
		if !hasScope(t.scopes, "read:org", "write:org", "admin:org", "user", "repo") {
			apiError(w, http.StatusForbidden, "Resource not accessible by integration", docs)
			return
		}
		var teams []any
		for _, tm := range u.Teams {
			org, slug, _ := strings.Cut(tm, "/")
			teams = append(teams, s.teamJSON(org, slug))
		}
		s.paginate(w, r, teams)
	}
}

// userOrgs is the user's organizations, including those of their teams.
func userOrgs(u *User) []string {
	var out []string
	add := func(o string) {
		if o != "" && !slices.ContainsFunc(out, func(x string) bool { return strings.EqualFold(x, o) }) {
			out = append(out, o)
		}
	}
	for _, o := range u.Orgs {
		add(o)
	}
	for _, t := range u.Teams {
		o, _, _ := strings.Cut(t, "/")
		add(o)
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v)
}

// paginate writes one page of items with GitHub's per_page (default 30,
// at most 100) and page parameters and its Link header.
func (s *Server) paginate(w http.ResponseWriter, r *http.Request, items []any) {
	q := r.URL.Query()
	per, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || per <= 0 {
		per = 30
	}
	per = min(per, 100)
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page <= 0 {
		page = 1
	}
	last := max(1, (len(items)+per-1)/per)
	link := func(p int, rel string) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(p))
		return fmt.Sprintf(`<%s%s?%s>; rel="%s"`, s.APIURL, r.URL.Path, q.Encode(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(min(page-1, last), "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	start := min((page-1)*per, len(items))
	end := min(start+per, len(items))
	out := items[start:end]
	if out == nil {
		out = []any{}
	}
	writeJSON(w, out)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// stableID derives a positive id for orgs and teams from their name.
func stableID(s string) int64 {
	var h int64 = 7
	for _, c := range strings.ToLower(s) {
		h = (h*31 + int64(c)) % 100_000_000
	}
	return h + 1
}

func (s *Server) userJSON(u *User) map[string]any {
	api := s.APIURL + "/users/" + u.Login
	return map[string]any{
		"login":                     u.Login,
		"id":                        u.ID,
		"node_id":                   fmt.Sprintf("U_fake%d", u.ID),
		"avatar_url":                fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", u.ID),
		"gravatar_id":               "",
		"url":                       api,
		"html_url":                  s.WebURL + "/" + u.Login,
		"followers_url":             api + "/followers",
		"organizations_url":         api + "/orgs",
		"repos_url":                 api + "/repos",
		"type":                      "User",
		"user_view_type":            "public",
		"site_admin":                false,
		"name":                      nullable(u.Name),
		"company":                   nil,
		"blog":                      "",
		"location":                  nil,
		"email":                     nullable(u.Email),
		"hireable":                  nil,
		"bio":                       nil,
		"twitter_username":          nil,
		"notification_email":        nullable(u.Email),
		"public_repos":              0,
		"public_gists":              0,
		"followers":                 0,
		"following":                 0,
		"created_at":                "2020-01-01T00:00:00Z",
		"updated_at":                "2024-01-01T00:00:00Z",
		"private_gists":             0,
		"total_private_repos":       0,
		"owned_private_repos":       0,
		"disk_usage":                0,
		"collaborators":             0,
		"two_factor_authentication": true,
	}
}

func (s *Server) orgJSON(login string) map[string]any {
	api := s.APIURL + "/orgs/" + login
	id := stableID(login)
	return map[string]any{
		"login":              login,
		"id":                 id,
		"node_id":            fmt.Sprintf("O_fake%d", id),
		"url":                api,
		"repos_url":          api + "/repos",
		"events_url":         api + "/events",
		"hooks_url":          api + "/hooks",
		"issues_url":         api + "/issues",
		"members_url":        api + "/members{/member}",
		"public_members_url": api + "/public_members{/member}",
		"avatar_url":         fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", id),
		"description":        nil,
	}
}

func (s *Server) teamJSON(org, slug string) map[string]any {
	id := stableID(org + "/" + slug)
	o := s.orgJSON(org)
	o["name"] = org
	o["html_url"] = s.WebURL + "/" + org
	o["type"] = "Organization"
	o["is_verified"] = false
	o["has_organization_projects"] = true
	o["has_repository_projects"] = true
	o["created_at"] = "2020-01-01T00:00:00Z"
	o["updated_at"] = "2024-01-01T00:00:00Z"
	api := fmt.Sprintf("%s/organizations/%d/team/%d", s.APIURL, stableID(org), id)
	return map[string]any{
		"id":                   id,
		"node_id":              fmt.Sprintf("T_fake%d", id),
		"url":                  api,
		"html_url":             s.WebURL + "/orgs/" + org + "/teams/" + slug,
		"name":                 slug,
		"slug":                 slug,
		"description":          "",
		"privacy":              "closed",
		"notification_setting": "notifications_enabled",
		"permission":           "pull",
		"members_url":          api + "/members{/member}",
		"repositories_url":     api + "/repos",
		"parent":               nil,
		"members_count":        1,
		"repos_count":          0,
		"created_at":           "2020-01-01T00:00:00Z",
		"updated_at":           "2024-01-01T00:00:00Z",
		"organization":         o,
	}
}
