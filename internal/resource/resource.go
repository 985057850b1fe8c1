// Package resource makes a proxy an OAuth 2.0 protected resource as the MCP
// authorization spec requires: RFC 9728 metadata, the bearer check with
// RFC 6750 challenges, audience binding (RFC 8707), Origin validation and
// CORS. A request that passes reaches the backend without the client's
// token, carrying the identity mcpgate vouches for instead.
package resource

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/metrics"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/proxy"
	"github.com/mcpgate/mcpgate/internal/token"
)

// Verifier checks an access token for an audience (the canonical resource
// URI) and says who it stands for (token.Verifier). Any error means the
// token is unusable here.
type Verifier interface {
	Verify(raw, audience string) (*identity.Principal, error)
}

// MetadataPath is where RFC 9728 metadata lives (plus the resource path
// as a suffix).
const MetadataPath = policy.MetadataPath

// Guard protects one proxy.
type Guard struct {
	auth           config.Auth
	policy         *policy.Table
	verifier       Verifier
	allowedOrigins []string
	name           string
}

// New returns the guard for p; t says under which names p is reached and
// what its resource is called there. verifier may be nil only when auth is
// not required.
func New(p *config.Proxy, t *policy.Table, verifier Verifier, allowedOrigins []string) *Guard {
	return &Guard{auth: p.Auth, policy: t, verifier: verifier, allowedOrigins: allowedOrigins, name: p.Name}
}

// site is the request's host as policy sees it. The worker has refused
// hosts this proxy does not own before the guard runs; a zero Site here
// (no owner) makes every URL below empty, and the bearer check fails.
func (g *Guard) site(r *http.Request) policy.Site {
	s, _ := g.policy.Site(r.Host)
	return s
}

// Wrap returns next guarded.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.serveMetadata(w, r) {
			return
		}
		origin := r.Header.Get("Origin")
		if origin != "" {
			if !g.originAllowed(origin, r) {
				// DNS rebinding and cross-site calls: an Origin that is not
				// ours or allowed never reaches the MCP server.
				metrics.Default.BearerRejected(metrics.BearerOrigin)
				writeError(w, http.StatusForbidden, "forbidden_origin", "this origin may not call this MCP server")
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", exposeHeaders)
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				preflight(w)
				return
			}
		}
		if !g.auth.Required {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			// A preflight without Origin is not a browser's; answer it anyway
			// without a token, as CORS demands.
			preflight(w)
			return
		}
		if g.isPublic(r.URL.Path) {
			r.Header.Del("Authorization")
			next.ServeHTTP(w, r)
			return
		}
		raw, err := bearer(r)
		if err != nil {
			metrics.Default.BearerRejected(metrics.BearerMalformed)
			g.challenge(w, r, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		if raw == "" {
			metrics.Default.BearerRejected(metrics.BearerMissing)
			g.challenge(w, r, http.StatusUnauthorized, "", "")
			return
		}
		site := g.site(r)
		if site.Proxy == nil || site.Proxy.Name != g.name {
			metrics.Default.BearerRejected(metrics.BearerInvalid)
			g.challenge(w, r, http.StatusUnauthorized, "invalid_token", "the access token is invalid, expired, revoked or not for this resource")
			return
		}
		who, err := g.verifier.Verify(raw, site.ResourceURL())
		if err != nil {
			metrics.Default.BearerRejected(rejectReason(err))
			g.challenge(w, r, http.StatusUnauthorized, "invalid_token", "the access token is invalid, expired, revoked or not for this resource")
			return
		}
		for _, s := range g.auth.Scopes {
			if !who.HasScope(s) {
				metrics.Default.BearerRejected(metrics.BearerScope)
				g.challenge(w, r, http.StatusForbidden, "insufficient_scope", "the access token lacks a required scope")
				return
			}
		}
		// No token passthrough: the backend gets mcpgate's word for who
		// this is, never the client's credential.
		r.Header.Del("Authorization")
		if rec := logging.RequestFrom(r.Context()); rec != nil {
			rec.Principal = who // who made the request, for the access log
		}
		ctx := proxy.WithIdentity(r.Context(), who)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// rejectReason is the metrics label of a token the verifier refused: the
// two causes an operator acts on apart, else "invalid".
func rejectReason(err error) metrics.BearerReason {
	switch {
	case errors.Is(err, token.ErrExpired):
		return metrics.BearerExpired
	case errors.Is(err, token.ErrAudience):
		return metrics.BearerAudience
	}
	return metrics.BearerInvalid
}

const exposeHeaders = "WWW-Authenticate, Mcp-Session-Id, Mcp-Protocol-Version"

func preflight(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

func (g *Guard) isPublic(path string) bool {
	for _, p := range g.auth.PublicPaths {
		if proxy.MatchPrefix(path, p) {
			return true
		}
	}
	return false
}

func (g *Guard) originAllowed(origin string, r *http.Request) bool {
	o := strings.ToLower(origin)
	if s := g.site(r); s.Proxy != nil && o == s.Origin() {
		return true
	}
	return slices.Contains(g.allowedOrigins, o)
}

var errMultipleTokens = errors.New("more than one access token in the request")

// bearer extracts the token from the Authorization header; tokens in the
// query string or form are refused (RFC 6750 §2.3 is insecure for MCP).
func bearer(r *http.Request) (string, error) {
	if r.URL.RawQuery != "" && r.URL.Query().Has("access_token") {
		return "", errors.New("access tokens are accepted only in the Authorization header")
	}
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", nil
	}
	if len(vals) > 1 {
		return "", errMultipleTokens
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		// Another scheme (Basic, …) is a request without a bearer token.
		return "", nil
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || strings.ContainsAny(tok, " \t,") {
		return "", errors.New("malformed bearer token")
	}
	return tok, nil
}

// challenge writes a 400/401/403 with the RFC 6750 / RFC 9728 challenge.
func (g *Guard) challenge(w http.ResponseWriter, r *http.Request, status int, code, desc string) {
	var b strings.Builder
	b.WriteString("Bearer ")
	if code != "" {
		b.WriteString(`error="` + code + `", `)
		if desc != "" {
			b.WriteString(`error_description="` + desc + `", `)
		}
	}
	b.WriteString(`resource_metadata="` + g.site(r).MetadataURL() + `"`)
	if len(g.auth.Scopes) > 0 {
		b.WriteString(`, scope="` + strings.Join(g.auth.Scopes, " ") + `"`)
	}
	h := w.Header()
	h.Set("WWW-Authenticate", b.String())
	if h.Get("Access-Control-Allow-Origin") == "" {
		// Browser clients must be able to read the challenge to start the
		// flow; without credentials a wildcard is safe.
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", exposeHeaders)
	}
	if code == "" {
		code = "unauthorized"
		desc = "an access token is required"
	}
	writeError(w, status, code, desc)
}

func writeError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// Metadata is the RFC 9728 document.
type Metadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ResourceName           string   `json:"resource_name,omitempty"`
}

// serveMetadata answers the two RFC 9728 URLs. The path-suffixed one names
// the MCP endpoint's resource; the root one names the origin, which the
// authorization server maps to the same resource.
func (g *Guard) serveMetadata(w http.ResponseWriter, r *http.Request) bool {
	if !g.auth.Required {
		return false
	}
	site := g.site(r)
	if site.Proxy == nil {
		return false
	}
	var resource string
	switch r.URL.Path {
	case MetadataPath + g.auth.ResourcePath:
		resource = site.ResourceURL()
	case MetadataPath, MetadataPath + "/":
		resource = site.Origin()
		if g.auth.ResourcePath == "/" {
			resource = site.ResourceURL()
		}
	default:
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		preflight(w)
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET")
		return true
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=300")
	json.NewEncoder(w).Encode(Metadata{
		Resource:               resource,
		AuthorizationServers:   []string{site.Origin()},
		ScopesSupported:        g.auth.Scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           g.name,
	})
	return true
}
