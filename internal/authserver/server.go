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
	"strings"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/store"
)

// Provider is the upstream identity provider (idp/github, idp/oidc).
type Provider interface {
	// AuthCodeURL is the provider's login URL for state (the flow's ID),
	// with the S256 challenge of the flow's verifier and its nonce.
	AuthCodeURL(state, redirectURI string, s idp.Secrets) string
	// Exchange redeems the provider's code with the same secrets.
	Exchange(ctx context.Context, code, redirectURI string, s idp.Secrets) (*identity.User, error)
}

// Signer signs access tokens (token.Issuer).
type Signer interface {
	Issue(p *identity.Principal) (string, error)
}

// TokenReader verifies access tokens whatever their audience, for
// revocation and introspection (token.Verifier).
type TokenReader interface {
	VerifyAnyAudience(raw string) (*identity.Principal, error)
}

// KeySet publishes the verification keys (keys.Set).
type KeySet interface {
	JWKS() []byte
}

// Options build a Server.
type Options struct {
	OAuth *config.OAuth
	// Policy decides which proxy owns a host, its resource and its users.
	Policy *policy.Table
	Store  store.Store
	IDP    Provider
	Signer Signer
	Reader TokenReader
	Keys   KeySet
	Log    *slog.Logger
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
	callbackName   string // canonical host name of callback_url, for comparisons
	callbackHost   string // host[:port] of callback_url, for URLs
	callbackPath   string
	callbackScheme string
	static         map[string]*client
	cimd           *metadataFetcher
	scopes         func() []string // scopes this gateway can issue
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
	cbHost, ok := policy.HostName(cb.Host)
	cbAuthority, _ := policy.Authority(cb.Host)
	if !ok {
		return nil, fmt.Errorf("authserver: callback_url: invalid host %q", cb.Host)
	}
	s := &Server{
		o:              o,
		log:            o.Log,
		now:            o.Now,
		callbackName:   cbHost,
		callbackHost:   cbAuthority,
		callbackPath:   cb.Path,
		callbackScheme: cb.Scheme,
		static:         map[string]*client{},
	}
	for _, sc := range o.OAuth.Clients {
		c := &client{
			ID: sc.ID, Name: sc.Name, RedirectURIs: sc.RedirectURIs, Kind: kindStatic,
			Public: sc.SecretFile == "", RequireConsent: sc.RequireConsent, Introspect: sc.Introspect && sc.SecretFile != "",
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
	// On first use: the answer needs every proxy of the gateway, which a
	// worker's policy decodes at the first question (policy.NewLazy).
	s.scopes = sync.OnceValue(o.Policy.IssuableScopes)
	return s, nil
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
