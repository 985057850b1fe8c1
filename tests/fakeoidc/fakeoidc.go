// Package fakeoidc is a small OpenID Connect provider for tests: discovery,
// an authorize endpoint that auto-approves as a chosen user, a token
// endpoint that returns an id_token signed RS256 (or ES256) carrying the
// authorization request's nonce, and the JWKS. PKCE (S256) is advertised
// and checked when the authorization request carried a code_challenge.
// Knobs make it misbehave the ways a connector must notice: another issuer
// in discovery, edited claims, a rotated or unpublished signing key.
package fakeoidc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// User is an account at the provider.
type User struct {
	Sub               string
	PreferredUsername string
	Name              string
	Email             string
	EmailVerified     bool
	Groups            []string
}

type client struct {
	secret    string
	redirects []string
}

type grant struct {
	clientID, redirectURI, sub, nonce, scope string
	challenge                                string // S256 code_challenge; "" without PKCE
	expires                                  time.Time
	used                                     bool
}

type key struct {
	kid, alg string
	priv     crypto.Signer
}

// Server is the fake provider. URL is also the issuer.
type Server struct {
	URL string
	srv *httptest.Server

	mu          sync.Mutex // guards everything below
	users       map[string]User
	clients     map[string]client
	grants      map[string]*grant
	loginAs     string
	authMethod  string
	keys        []*key // keys[0] signs; all are published
	unpublished bool   // sign with a key outside the JWKS under keys[0]'s kid
	discovery   func(map[string]any)
	claims      func(map[string]any)
	// counters and recordings
	jwksFetches, tokenRequests int
	lastAuthorize              url.Values
}

// New starts the provider on a loopback listener, signing RS256.
func New(t testing.TB) *Server {
	s := &Server{
		users:      map[string]User{},
		clients:    map[string]client{},
		grants:     map[string]*grant{},
		authMethod: "client_secret_basic",
	}
	s.keys = []*key{newKey("RS256")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveDiscovery)
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("GET /jwks", s.serveJWKS)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	return s
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// newKey makes a signing key. The first RSA key is shared by every
// server in the process (key generation is slow under -race); RotateKey
// makes fresh ones.
func newKey(alg string) *key {
	k := &key{kid: hex.EncodeToString(random(8)), alg: alg}
	switch alg {
	case "ES256":
		k.priv, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		rsaOnce.Do(func() { rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048) })
		k.priv = rsaKey
	}
	return k
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// AddUser adds or replaces a user.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.Sub] = u
}

// SetLoginAs makes authorize auto-approve as the user with this sub; ""
// shows a login page instead.
func (s *Server) SetLoginAs(sub string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginAs = sub
}

// RegisterClient registers a client; redirect URIs match exactly.
func (s *Server) RegisterClient(id, secret string, redirectURIs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = client{secret, redirectURIs}
}

// SetTokenAuthMethod sets the one client authentication method the token
// endpoint advertises and accepts: client_secret_basic (default),
// client_secret_post or none.
func (s *Server) SetTokenAuthMethod(m string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authMethod = m
}

// EditDiscovery installs f to edit every discovery document served.
func (s *Server) EditDiscovery(f func(doc map[string]any)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.discovery = f
}

// EditClaims installs f to edit the claims of every id_token issued (for
// example to replace the nonce, as a replayed or injected token would
// carry another one).
func (s *Server) EditClaims(f func(claims map[string]any)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims = f
}

// RotateKey replaces the signing key with a fresh one of alg ("RS256" or
// "ES256"); the old key is no longer published.
func (s *Server) RotateKey(alg string) {
	k := &key{kid: hex.EncodeToString(random(8)), alg: alg, priv: newKeyMaterial(alg)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = []*key{k}
}

// SignWithUnpublishedKey makes id_tokens carry the published kid but a
// signature by another key: a bad signature.
func (s *Server) SignWithUnpublishedKey(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unpublished = on
}

// JWKSFetches counts requests to the JWKS.
func (s *Server) JWKSFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwksFetches
}

// TokenRequests counts requests to the token endpoint.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// LastAuthorizeQuery is the query of the last authorize request.
func (s *Server) LastAuthorizeQuery() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := url.Values{}
	for k, v := range s.lastAuthorize {
		q[k] = slices.Clone(v)
	}
	return q
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var algs []string
	for _, k := range s.keys {
		if !slices.Contains(algs, k.alg) {
			algs = append(algs, k.alg)
		}
	}
	doc := map[string]any{
		"issuer":                                s.URL,
		"authorization_endpoint":                s.URL + "/authorize",
		"token_endpoint":                        s.URL + "/token",
		"jwks_uri":                              s.URL + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": algs,
		"token_endpoint_auth_methods_supported": []string{s.authMethod},
		"scopes_supported":                      []string{"openid", "profile", "email", "groups"},
		"grant_types_supported":                 []string{"authorization_code"},
		"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "nonce", "name", "email", "email_verified", "preferred_username", "groups"},
		"code_challenge_methods_supported":      []string{"S256"},
	}
	if s.discovery != nil {
		s.discovery(doc)
	}
	writeJSON(w, http.StatusOK, doc)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwksFetches++
	var keys []map[string]any
	for _, k := range s.keys {
		m := map[string]any{"kid": k.kid, "alg": k.alg, "use": "sig"}
		switch pub := k.priv.Public().(type) {
		case *rsa.PublicKey:
			m["kty"], m["n"], m["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
		case *ecdsa.PublicKey:
			raw, _ := pub.Bytes() // 0x04 || X || Y
			m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
		}
		keys = append(keys, m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAuthorize = q
	c, ok := s.clients[q.Get("client_id")]
	redirect := q.Get("redirect_uri")
	if !ok || !slices.Contains(c.redirects, redirect) {
		http.Error(w, "unknown client or redirect_uri", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		if st := q.Get("state"); st != "" {
			params.Set("state", st)
		}
		u, _ := url.Parse(redirect)
		rq := u.Query()
		for k, v := range params {
			rq[k] = v
		}
		u.RawQuery = rq.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		back(url.Values{"error": {"unsupported_response_type"}})
		return
	}
	if !slices.Contains(strings.Fields(q.Get("scope")), "openid") {
		back(url.Values{"error": {"invalid_scope"}, "error_description": {"openid scope is required"}})
		return
	}
	if s.loginAs == "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!DOCTYPE html><html lang=\"en\"><head><title>Log in</title></head><body><h1>Log in to fakeoidc</h1></body></html>\n")
		return
	}
	challenge := q.Get("code_challenge")
	if challenge != "" && q.Get("code_challenge_method") != "S256" {
		back(url.Values{"error": {"invalid_request"}, "error_description": {"code_challenge_method must be S256"}})
		return
	}
	code := b64(random(24))
	s.grants[code] = &grant{clientID: q.Get("client_id"), redirectURI: redirect, sub: s.loginAs,
		nonce: q.Get("nonce"), scope: q.Get("scope"), challenge: challenge, expires: time.Now().Add(time.Minute)}
	back(url.Values{"code": {code}})
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="fakeoidc"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenRequests++
	var id, secret string
	basicID, basicSecret, hasBasic := r.BasicAuth()
	switch s.authMethod {
	case "client_secret_basic":
		if !hasBasic || r.PostForm.Has("client_secret") {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "use client_secret_basic")
			return
		}
		id, _ = url.QueryUnescape(basicID)
		secret, _ = url.QueryUnescape(basicSecret)
	case "client_secret_post":
		if hasBasic {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "use client_secret_post")
			return
		}
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	case "none":
		id = r.PostForm.Get("client_id")
	}
	c, ok := s.clients[id]
	if !ok || (s.authMethod != "none" && c.secret != secret) {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	g, ok := s.grants[r.PostForm.Get("code")]
	if !ok || g.used || g.clientID != id || time.Now().After(g.expires) || g.redirectURI != r.PostForm.Get("redirect_uri") {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the code is invalid, expired, used, or for another client or redirect_uri")
		return
	}
	if g.challenge != "" {
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if subtle.ConstantTimeCompare([]byte(b64(sum[:])), []byte(g.challenge)) != 1 {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		}
	}
	g.used = true
	u := s.users[g.sub]
	now := time.Now()
	claims := map[string]any{
		"iss":       s.URL,
		"sub":       u.Sub,
		"aud":       id,
		"exp":       now.Add(time.Hour).Unix(),
		"iat":       now.Unix(),
		"auth_time": now.Unix(),
	}
	if g.nonce != "" {
		claims["nonce"] = g.nonce
	}
	scopes := strings.Fields(g.scope)
	if slices.Contains(scopes, "profile") {
		if u.PreferredUsername != "" {
			claims["preferred_username"] = u.PreferredUsername
		}
		if u.Name != "" {
			claims["name"] = u.Name
		}
	}
	if slices.Contains(scopes, "email") && u.Email != "" {
		claims["email"] = u.Email
		claims["email_verified"] = u.EmailVerified
	}
	if len(u.Groups) > 0 {
		claims["groups"] = u.Groups
	}
	if s.claims != nil {
		s.claims(claims)
	}
	idToken, err := s.sign(claims)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": b64(random(24)),
		"token_type":   "Bearer",
		"expires_in":   3600,
		"id_token":     idToken,
		"scope":        g.scope,
	})
}

// Sign signs claims with the current key, as the token endpoint does (for
// tests that build id_tokens by hand).
func (s *Server) Sign(claims map[string]any) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sign(claims)
}

func (s *Server) sign(claims map[string]any) (string, error) {
	k := s.keys[0]
	priv := k.priv
	if s.unpublished {
		priv = newKeyMaterial(k.alg)
	}
	method := jwt.GetSigningMethod(k.alg)
	t := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	t.Header["kid"] = k.kid
	return t.SignedString(priv)
}

func newKeyMaterial(alg string) crypto.Signer {
	if alg == "ES256" {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k
	}
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	return k
}
