// Package devidp is the stand-in identity provider mcpgate ships for
// development and the demo, where no GitHub OAuth app exists: it serves
// GitHub's OAuth and REST paths, PKCE included (/login/oauth/authorize,
// /login/oauth/access_token, /user, /user/orgs, /user/teams) so mcpgate's
// GitHub connector talks to it unchanged, and its login page lets anyone
// log in as anyone. It therefore only ever listens on a loopback address,
// and says so loudly in its log and on its page.
package devidp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/logging"
)

// Warning is shown on the login page and logged at start and on every login.
const Warning = "DEVELOPMENT IDENTITY PROVIDER — anyone can log in as anyone; never use in production"

const (
	codeLifetime  = 10 * time.Minute
	tokenLifetime = time.Hour
	maxEntries    = 10000 // bound on outstanding codes and tokens each
)

// Options configure the provider.
type Options struct {
	// ClientID and ClientSecret, when set, are required of callers (at
	// authorize and at the token endpoint); empty accepts any.
	ClientID     string
	ClientSecret string
	// AutoLogin skips the login form and logs in as this user (scripted
	// demos).
	AutoLogin string
	// Orgs and Teams ("org/team-slug") every user is a member of.
	Orgs  []string
	Teams []string
	// Log receives the warnings; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// loginRe is GitHub's rule for user names: letters, digits and single
// hyphens, not at either end, at most 39 characters. Compiled on first
// use: every process of the binary (each worker) would pay for it at
// start otherwise.
var loginRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9](?:-?[A-Za-z0-9])*$`)
})

const loginPattern = `[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}`

// ValidLogin reports whether name is a valid GitHub-style user name.
func ValidLogin(name string) bool { return len(name) <= 39 && loginRe().MatchString(name) }

type grant struct {
	login, clientID, redirectURI, scope string
	challenge                           string // PKCE S256 code_challenge; "" without PKCE
	expires                             time.Time
}

type token struct {
	login, scope string
	expires      time.Time
}

type server struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex // guards codes and tokens
	codes  map[string]grant
	tokens map[string]token
}

// Handler returns the provider's HTTP handler.
func Handler(opts Options) http.Handler {
	s := &server{opts: opts, log: opts.Log, now: opts.Now, codes: map[string]grant{}, tokens: map[string]token{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/login/oauth/authorize", s.authorize)
	mux.HandleFunc("POST /login/oauth/access_token", s.accessToken)
	mux.HandleFunc("GET /user", s.api)
	mux.HandleFunc("GET /user/orgs", s.api)
	mux.HandleFunc("GET /user/teams", s.api)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			s.page(w, http.StatusOK, pageData{Home: true})
			return
		}
		http.NotFound(w, r)
	})
	return mux
}

// ErrNotLoopback is returned (wrapped) for an address that is not loopback.
var ErrNotLoopback = errors.New("the development identity provider lets anyone log in as anyone, so it listens only on a loopback address (127.0.0.0/8, ::1 or localhost)")

// CheckLoopback resolves the host of addr ("host:port") and fails unless
// every address it names is loopback. An empty host (all interfaces) fails.
func CheckLoopback(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devidp: listen address %q: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("devidp: refusing to listen on %q (every interface): %w", addr, ErrNotLoopback)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Unmap().IsLoopback() {
			return fmt.Errorf("devidp: refusing to listen on %q: %w", addr, ErrNotLoopback)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("devidp: listen address %q: %v", addr, err)
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return fmt.Errorf("devidp: refusing to listen on %q: %s resolves to %s: %w", addr, host, ip, ErrNotLoopback)
		}
	}
	if len(ips) == 0 {
		return fmt.Errorf("devidp: listen address %q: %s resolves to nothing", addr, host)
	}
	return nil
}

// Listen opens a TCP listener on addr after CheckLoopback, and checks the
// address it is bound to as well.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	if err := CheckLoopback(ctx, addr); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	if err := checkBound(ln.Addr()); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func checkBound(a net.Addr) error {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("devidp: refusing to serve on %s: %w", a, ErrNotLoopback)
	}
	return nil
}

// Run listens on addr (loopback only) and serves until ctx is done.
func Run(ctx context.Context, addr string, opts Options, log *slog.Logger) error {
	ln, err := Listen(ctx, addr)
	if err != nil {
		return err
	}
	return Serve(ctx, ln, opts, log)
}

// Serve serves on ln, which must be bound to a loopback address, until
// ctx is done; then it shuts down gracefully and returns nil.
func Serve(ctx context.Context, ln net.Listener, opts Options, log *slog.Logger) error {
	if err := checkBound(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opts.Log = log
	base := "http://" + ln.Addr().String()
	log.Warn(Warning, "listen", ln.Addr().String())
	log.Info("devidp: point mcpgate's [idp.github] here",
		"authorize_url", base+"/login/oauth/authorize",
		"token_url", base+"/login/oauth/access_token",
		"api_url", base,
		"auto_login", opts.AutoLogin)
	srv := &http.Server{
		Handler:           logging.Access(log, Handler(opts)),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("devidp: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("devidp: %w", err)
	}
	log.Info("devidp: stopped")
	return nil
}

// userID derives a stable, positive GitHub-style id from a login, so the
// mcpgate subject of a user survives restarts.
func userID(login string) int64 {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(login)))
	return int64(h.Sum32()&0x7fffffff) + 1
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// checkRedirect accepts an absolute http(s) URL without fragment or user
// info: any client may use the dev provider, but not with a javascript:
// or relative target.
func checkRedirect(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" || u.User != nil {
		return nil, false
	}
	return u, true
}

func (s *server) clientOK(id string) bool {
	return s.opts.ClientID == "" || id == s.opts.ClientID
}

func (s *server) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
	}
	// GET carries the OAuth parameters in the query; the login form posts
	// them back as hidden fields.
	p := r.URL.Query()
	if r.Method == http.MethodPost {
		p = r.PostForm
	}
	d := pageData{ClientID: p.Get("client_id"), RedirectURI: p.Get("redirect_uri"), State: p.Get("state"), Scope: p.Get("scope"),
		Challenge: p.Get("code_challenge"), ChallengeMethod: p.Get("code_challenge_method")}
	if !s.clientOK(d.ClientID) {
		s.page(w, http.StatusNotFound, pageData{Problem: "Unknown client_id."})
		return
	}
	// PKCE as GitHub does it: S256 only, checked at the token endpoint.
	if d.Challenge != "" && (d.ChallengeMethod != "S256" || len(d.Challenge) != 43) {
		s.page(w, http.StatusBadRequest, pageData{Problem: "code_challenge must be an S256 challenge (code_challenge_method=S256)."})
		return
	}
	ru, ok := checkRedirect(d.RedirectURI)
	if !ok {
		s.page(w, http.StatusBadRequest, pageData{Problem: "The redirect_uri parameter must be an absolute http or https URL."})
		return
	}
	d.RedirectHost = ru.Host
	login := s.opts.AutoLogin
	if login == "" {
		if r.Method == http.MethodGet {
			s.page(w, http.StatusOK, d)
			return
		}
		login = strings.TrimSpace(r.PostForm.Get("login"))
		if !ValidLogin(login) {
			d.Login = login
			d.Invalid = true
			s.page(w, http.StatusUnprocessableEntity, d)
			return
		}
	}
	login = strings.ToLower(login)
	code := randomHex(10)
	s.mu.Lock()
	s.pruneLocked()
	full := len(s.codes) >= maxEntries
	if !full {
		s.codes[code] = grant{login: login, clientID: d.ClientID, redirectURI: d.RedirectURI, scope: d.Scope,
			challenge: d.Challenge, expires: s.now().Add(codeLifetime)}
	}
	s.mu.Unlock()
	if full {
		http.Error(w, "too many logins in progress", http.StatusServiceUnavailable)
		return
	}
	s.log.Warn("devidp: login without any authentication — development only",
		"login", login, "client_id", d.ClientID, "redirect_host", ru.Host, "auto_login", s.opts.AutoLogin != "")
	q := ru.Query()
	q.Set("code", code)
	if d.State != "" {
		q.Set("state", d.State)
	}
	ru.RawQuery = q.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

// pruneLocked drops expired codes and tokens. Call with mu held.
func (s *server) pruneLocked() {
	now := s.now()
	for k, g := range s.codes {
		if !now.Before(g.expires) {
			delete(s.codes, k)
		}
	}
	for k, t := range s.tokens {
		if !now.Before(t.expires) {
			delete(s.tokens, k)
		}
	}
}

// tokenError is GitHub's access_token error shape, sent with HTTP 200.
type tokenError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorURI         string `json:"error_uri"`
}

const docs = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"

var (
	errBadCode     = tokenError{"bad_verification_code", "The code passed is incorrect or expired.", docs + "#bad-verification-code"}
	errBadClient   = tokenError{"incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.", docs + "#incorrect-client-credentials"}
	errBadRedirect = tokenError{"redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.", docs + "#redirect-uri-mismatch2"}
)

func (s *server) accessToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	p := url.Values{}
	if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/json") {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		for k, v := range body {
			if sv, ok := v.(string); ok {
				p.Set(k, sv)
			}
		}
	} else if err := r.ParseForm(); err == nil {
		p = r.Form
	}
	id, secret := p.Get("client_id"), p.Get("client_secret")
	if bid, bsec, ok := r.BasicAuth(); ok && id == "" {
		id, secret = bid, bsec
	}
	if !s.clientOK(id) || (s.opts.ClientSecret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1) {
		writeToken(w, r, errBadClient)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	code := p.Get("code")
	g, ok := s.codes[code]
	if !ok || g.clientID != id || !s.now().Before(g.expires) {
		writeToken(w, r, errBadCode)
		return
	}
	if ru := p.Get("redirect_uri"); ru != "" && ru != g.redirectURI {
		writeToken(w, r, errBadRedirect)
		return
	}
	if g.challenge != "" && !verifierMatches(p.Get("code_verifier"), g.challenge) {
		// Like GitHub, a wrong verifier is a bad code; the code stays
		// usable until it expires, so a racing attacker gains nothing.
		writeToken(w, r, errBadCode)
		return
	}
	delete(s.codes, code)
	s.pruneLocked()
	if len(s.tokens) >= maxEntries {
		http.Error(w, "too many tokens outstanding", http.StatusServiceUnavailable)
		return
	}
	tok := "gho_" + randomHex(18)
	scope := strings.Join(strings.FieldsFunc(g.scope, func(r rune) bool { return r == ' ' || r == ',' }), ",")
	s.tokens[tok] = token{login: g.login, scope: scope, expires: s.now().Add(tokenLifetime)}
	writeToken(w, r, map[string]string{"access_token": tok, "token_type": "bearer", "scope": scope})
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
	case tokenError:
		form.Set("error", v.Error)
		form.Set("error_description", v.ErrorDescription)
		form.Set("error_uri", v.ErrorURI)
	case map[string]string:
		for k, val := range v {
			form.Set(k, val)
		}
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	io.WriteString(w, form.Encode())
}

func apiJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-GitHub-Media-Type", "github.v3; format=json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *server) api(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	s.mu.Lock()
	t, ok := s.tokens[strings.TrimSpace(tok)]
	s.mu.Unlock()
	if !ok || !s.now().Before(t.expires) || (!strings.EqualFold(scheme, "bearer") && !strings.EqualFold(scheme, "token")) {
		apiJSON(w, http.StatusUnauthorized, map[string]string{
			"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
		return
	}
	w.Header().Set("X-OAuth-Scopes", strings.ReplaceAll(t.scope, ",", ", "))
	switch r.URL.Path {
	case "/user":
		id := userID(t.login)
		apiJSON(w, http.StatusOK, map[string]any{
			"login": t.login, "id": id, "node_id": "U_devidp" + strconv.FormatInt(id, 10),
			"type": "User", "site_admin": false, "name": t.login, "email": nil,
		})
	case "/user/orgs":
		out := []map[string]any{}
		for _, o := range s.orgs() {
			out = append(out, map[string]any{"login": o, "id": userID("org:" + o), "description": nil})
		}
		apiJSON(w, http.StatusOK, out)
	case "/user/teams":
		out := []map[string]any{}
		for _, tm := range s.opts.Teams {
			org, slug, _ := strings.Cut(tm, "/")
			out = append(out, map[string]any{"id": userID("team:" + tm), "name": slug, "slug": slug,
				"organization": map[string]any{"login": org, "id": userID("org:" + org)}})
		}
		apiJSON(w, http.StatusOK, out)
	}
}

// orgs is Options.Orgs plus the organizations of Options.Teams.
func (s *server) orgs() []string {
	out := slices.Clone(s.opts.Orgs)
	for _, t := range s.opts.Teams {
		if org, _, _ := strings.Cut(t, "/"); org != "" && !slices.Contains(out, org) {
			out = append(out, org)
		}
	}
	return out
}

type pageData struct {
	Home                                bool
	Problem                             string
	ClientID, RedirectURI, State, Scope string
	Challenge, ChallengeMethod          string
	RedirectHost, Login                 string
	Invalid                             bool
}

func (s *server) page(w http.ResponseWriter, status int, d pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	pageTmpl().Execute(w, struct {
		pageData
		Warning, Pattern string
	}{d, Warning, loginPattern})
}

// pageTmpl is parsed on first use, like loginRe.
var pageTmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("page").Parse(pageHTML))
})

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Sign in · mcpgate development identity provider</title>
<style>
body{margin:0;font:1rem/1.5 system-ui,sans-serif;color:#1b1b1b;background:#f6f6f6}
.banner{margin:0;padding:.9rem 1rem;background:#b00020;color:#fff;font-weight:700;text-align:center;font-size:1.05rem}
main{max-width:26rem;margin:2rem auto;padding:1.5rem;background:#fff;border:1px solid #ccc;border-radius:.5rem}
h1{font-size:1.4rem;margin-top:0}
label{display:block;font-weight:600;margin-bottom:.25rem}
input[type=text]{box-sizing:border-box;width:100%;padding:.5rem;font:inherit;border:2px solid #555;border-radius:.25rem}
input[type=text]:focus,button:focus{outline:3px solid #1a5fb4;outline-offset:2px}
.hint{color:#444;font-size:.9rem;margin:.25rem 0 1rem}
.error{color:#b00020;font-weight:600}
button{padding:.55rem 1.2rem;font:inherit;font-weight:600;color:#fff;background:#1a5fb4;border:0;border-radius:.25rem;cursor:pointer}
</style>
</head>
<body>
<p class="banner" role="alert">{{.Warning}}</p>
<main>
{{- if .Home}}
<h1>mcpgate development identity provider</h1>
<p>This server imitates GitHub's OAuth endpoints for local development. Point mcpgate's <code>[idp.github]</code> authorize_url, token_url and api_url at it.</p>
{{- else if .Problem}}
<h1>Cannot sign in</h1>
<p class="error">{{.Problem}}</p>
{{- else}}
<h1>Sign in</h1>
<p>Signing in to <strong>{{.RedirectHost}}</strong>. No password: type any user name.</p>
<form method="post" action="/login/oauth/authorize">
<label for="login">User name</label>
<input type="text" id="login" name="login" value="{{.Login}}" required autofocus autocomplete="username"
 autocapitalize="none" spellcheck="false" maxlength="39" pattern="{{.Pattern}}"
 aria-describedby="login-hint{{if .Invalid}} login-error{{end}}"{{if .Invalid}} aria-invalid="true"{{end}}>
<p class="hint" id="login-hint">Letters, digits and single hyphens, up to 39 characters, like a GitHub user name.</p>
{{- if .Invalid}}
<p class="error" id="login-error">That is not a valid user name.</p>
{{- end}}
<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="scope" value="{{.Scope}}">
{{- if .Challenge}}
<input type="hidden" name="code_challenge" value="{{.Challenge}}">
<input type="hidden" name="code_challenge_method" value="{{.ChallengeMethod}}">
{{- end}}
<button type="submit">Sign in</button>
</form>
{{- end}}
</main>
</body>
</html>
`
