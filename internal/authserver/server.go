// Package authserver is the OAuth 2.1 authorization server every proxy
// host runs (issuer https://<host>): RFC 8414 metadata, authorization code
// flow with PKCE through the upstream identity provider, consent, token,
// dynamic client registration (RFC 7591/7592), client ID metadata
// documents, revocation (RFC 7009), introspection (RFC 7662) and JWKS.
// All hosts share one signing key set and one store, so any worker can
// finish a flow another started.
package authserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/store"
)

// Identity is who the upstream provider authenticated.
type Identity struct {
	Subject string
	Login   string
	Orgs    []string // GitHub organizations, or OpenID Connect groups
	Teams   []string // GitHub "org/team"
}

// Provider is the upstream identity provider.
type Provider interface {
	// AuthCodeURL is the provider's login URL for state (the flow's ID),
	// with the S256 challenge of the flow's verifier and its nonce.
	AuthCodeURL(state, redirectURI string, s idp.Secrets) string
	// Login redeems the provider's code with the same secrets.
	Login(ctx context.Context, code, redirectURI string, s idp.Secrets) (*Identity, error)
}

// AccessToken is an access token's content.
type AccessToken struct {
	Issuer    string
	Subject   string
	Audience  string
	ClientID  string
	Scope     string
	Login     string
	GrantID   string
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Tokens signs and parses access tokens.
type Tokens interface {
	// Issue signs t (JTI, IssuedAt are filled in by the caller).
	Issue(t *AccessToken) (string, error)
	// Parse verifies signature, issuer and expiry, for any audience.
	Parse(raw string) (*AccessToken, error)
	// JWKS is the public key set document.
	JWKS() []byte
}

// Options build a Server.
type Options struct {
	OAuth   *config.OAuth
	Proxies []*config.Proxy // every enabled proxy of the gateway
	Store   store.Store
	IDP     Provider
	Tokens  Tokens
	Log     *slog.Logger
	// MetadataClient fetches client ID metadata documents; nil: a client
	// with the SSRF guard.
	MetadataClient *http.Client
	// Revoked consults the revocation log (introspection).
	Revoked Revoked
	Now     func() time.Time
}

// Server serves the OAuth endpoints of one worker's hosts.
type Server struct {
	o              Options
	log            *slog.Logger
	now            func() time.Time
	callbackHost   string // host[:port] of callback_url, lower-case
	callbackPath   string
	callbackScheme string
	static         map[string]*client
	cimd           *metadataFetcher
	regLimit       *rateLimiter
	scopes         []string // scopes this gateway can issue
}

// Lifetimes that are not configurable.
const (
	codeTTL    = 5 * time.Minute
	pendingTTL = 15 * time.Minute
)

// New builds the server. Static client secrets are read here, from their
// files, once.
func New(o Options) (*Server, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	cb, err := url.Parse(o.OAuth.CallbackURL)
	if err != nil {
		return nil, fmt.Errorf("authserver: callback_url: %w", err)
	}
	s := &Server{
		o:              o,
		log:            o.Log,
		now:            o.Now,
		callbackHost:   strings.ToLower(cb.Host),
		callbackPath:   cb.Path,
		callbackScheme: cb.Scheme,
		static:         map[string]*client{},
		regLimit:       newRateLimiter(10, time.Minute),
	}
	for _, sc := range o.OAuth.Clients {
		c := &client{
			ID: sc.ID, Name: sc.Name, RedirectURIs: sc.RedirectURIs, Kind: kindStatic,
			Public: sc.SecretFile == "", RequireConsent: sc.RequireConsent,
			GrantTypes: []string{"authorization_code", "refresh_token"},
		}
		if sc.SecretFile != "" {
			b, err := os.ReadFile(sc.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("authserver: client %s: %w", sc.ID, err)
			}
			c.SecretHash = hashHex(strings.TrimSpace(string(b)))
		}
		s.static[sc.ID] = c
	}
	if o.OAuth.ClientMetadataDocuments {
		s.cimd = newMetadataFetcher(o.MetadataClient, o.OAuth.MetadataDocumentPrivateAddrs, o.Now)
	}
	s.scopes = issuableScopes(o.OAuth, o.Proxies)
	return s, nil
}

// issuableScopes lists the scopes some user can actually get.
func issuableScopes(o *config.OAuth, proxies []*config.Proxy) []string {
	var out []string
	add := func(name string, lists ...[]string) {
		for _, l := range lists {
			if len(l) > 0 && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	admin, user, mcp := [][]string{o.Users.Admin}, [][]string{o.Users.User}, [][]string{o.Users.MCP}
	for _, p := range proxies {
		admin = append(admin, p.Auth.Users.Admin)
		user = append(user, p.Auth.Users.User)
		mcp = append(mcp, p.Auth.Users.MCP)
	}
	add("admin", admin...)
	add("user", user...)
	add("mcp", mcp...)
	return out
}

// Handle serves r if it is for an OAuth endpoint and reports whether it did.
func (s *Server) Handle(w http.ResponseWriter, r *http.Request) bool {
	path := r.URL.Path
	if s.isCallbackHost(r.Host) {
		switch path {
		case s.callbackPath:
			s.callback(w, r)
			return true
		case startPath:
			s.start(w, r)
			return true
		}
	}
	switch path {
	case "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration":
		s.cors(w, r, s.metadata)
	case "/authorize":
		s.authorize(w, r)
	case "/token":
		s.cors(w, r, s.token)
	case "/register":
		if !s.o.OAuth.DynamicRegistration {
			return false
		}
		s.cors(w, r, s.register)
	case "/revoke":
		s.cors(w, r, s.revoke)
	case "/introspect":
		s.introspect(w, r)
	case "/jwks":
		s.cors(w, r, s.jwks)
	case continuePath:
		s.continueFlow(w, r)
	case consentPath:
		s.consent(w, r)
	default:
		if id, ok := strings.CutPrefix(path, "/register/"); ok && s.o.OAuth.DynamicRegistration {
			s.cors(w, r, func(w http.ResponseWriter, r *http.Request) { s.manageClient(w, r, id) })
			return true
		}
		return false
	}
	return true
}

// cors lets browser-based clients call the endpoint: no cookies are
// involved, so any origin may.
func (s *Server) cors(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "WWW-Authenticate, Mcp-Session-Id")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Mcp-Protocol-Version, Mcp-Session-Id")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	next(w, r)
}

// issuer is the issuer identifier for the host a request came to.
func issuer(r *http.Request) string { return "https://" + canonicalHost(r.Host) }

func canonicalHost(hostport string) string {
	h := strings.TrimSuffix(strings.ToLower(hostport), ":443")
	return strings.TrimSuffix(h, ".")
}

func hostOnly(hostport string) string {
	h := canonicalHost(hostport)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		return h[:i]
	}
	return h
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
