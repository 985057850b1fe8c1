package authserver

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

type clientKind int

const (
	kindStatic   clientKind = iota // [[oauth.clients]]
	kindDynamic                    // RFC 7591 registration
	kindMetadata                   // client ID metadata document
)

// client is a client as the endpoints need it, whatever its origin.
type client struct {
	ID             string
	Name           string
	RedirectURIs   []string
	Public         bool
	SecretHash     string
	GrantTypes     []string
	Kind           clientKind
	RequireConsent bool
	// Introspect: a resource server ([[oauth.clients]] introspect = true),
	// which may introspect any token. Only static confidential clients.
	Introspect bool
}

func (c *client) allowsRefresh() bool { return slices.Contains(c.GrantTypes, "refresh_token") }

// needsConsent: a client someone registered without the operator (DCR,
// metadata documents) must be approved by the user, because mcpgate logs
// users in upstream with one shared client id (the confused deputy).
func (c *client) needsConsent() bool {
	return c.Kind != kindStatic || c.RequireConsent
}

var errUnknownClient = errors.New("unknown client")

// lookupClient finds a client by id: static, metadata document, or
// registered.
func (s *Server) lookupClient(ctx context.Context, id string) (*client, error) {
	if id == "" {
		return nil, errUnknownClient
	}
	if c, ok := s.static[id]; ok {
		return c, nil
	}
	if isMetadataDocumentID(id) {
		if s.cimd == nil {
			return nil, errUnknownClient
		}
		return s.cimd.get(ctx, id)
	}
	sc, err := s.o.Store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnknownClient
	}
	if err != nil {
		return nil, err
	}
	s.touch(ctx, sc)
	return &client{
		ID: sc.ID, Name: sc.Name, RedirectURIs: sc.RedirectURIs, Public: sc.SecretHash == "",
		SecretHash: sc.SecretHash, GrantTypes: sc.GrantTypes, Kind: kindDynamic,
	}, nil
}

// touchEvery is how stale a registered client's last use may get before a
// use is written: at most one write per client and hour, not one per
// request.
const touchEvery = time.Hour

// touch records that a registered client was used (any request naming it:
// /authorize, /token, revocation, introspection), so that
// dynamic_client_ttl counts from its last use. The row was just read, so
// deciding costs nothing.
func (s *Server) touch(ctx context.Context, c *store.Client) {
	now := s.now()
	if now.Sub(c.LastUsedAt) < touchEvery {
		return
	}
	if err := s.o.Store.TouchClient(ctx, c.ID, now); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("recording a client's use", "client_id", c.ID, "err", err)
	}
}

// CollectClients deletes dynamically registered clients unused for
// [oauth] dynamic_client_ttl, with their consents, codes and refresh
// tokens, and revokes their access tokens in every worker. Clients from
// metadata documents are not stored (only cached in memory), so there is
// nothing of theirs to collect.
func (s *Server) CollectClients(ctx context.Context) error {
	ttl := s.o.OAuth.DynamicClientTTL
	if ttl <= 0 {
		return nil // not configured (tests building Options by hand)
	}
	now := s.now()
	n, err := s.o.Store.DeleteUnusedClients(ctx, now.Add(-ttl), now.Add(s.o.OAuth.AccessTokenTTL+time.Minute))
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("deleted unused dynamically registered clients", "count", n, "unused_for", ttl.String())
	}
	return nil
}

// isMetadataDocumentID: an https URL with a path is a client ID metadata
// document URL.
func isMetadataDocumentID(id string) bool {
	u, err := url.Parse(id)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.Path != "" && u.Path != "/"
}

// matchRedirect reports whether uri is one of the registered ones: exact,
// except that a loopback http redirect may use any port (RFC 8252 §7.3).
func matchRedirect(registered []string, uri string) bool {
	if slices.Contains(registered, uri) {
		return true
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "http" || !isLoopbackHost(u.Hostname()) {
		return false
	}
	for _, reg := range registered {
		ru, err := url.Parse(reg)
		if err != nil || ru.Scheme != "http" || !isLoopbackHost(ru.Hostname()) {
			continue
		}
		if ru.Hostname() == u.Hostname() && ru.Path == u.Path && ru.RawQuery == u.RawQuery {
			return true
		}
	}
	return false
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkRedirectURI applies the registration rules: https, http only to a
// loopback host, or a private-use scheme; never script or data schemes,
// fragments or user info.
func checkRedirectURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return errors.New("not an absolute URI")
	}
	if u.Fragment != "" || strings.Contains(uri, "#") {
		return errors.New("must not contain a fragment")
	}
	if u.User != nil {
		return errors.New("must not contain user information")
	}
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "https":
		if u.Host == "" {
			return errors.New("https redirect URIs need a host")
		}
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return errors.New("http is allowed only for loopback redirect URIs (127.0.0.1, [::1], localhost); use https")
		}
	case "javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws", "wss":
		return errors.New("scheme " + scheme + " is not allowed")
	default:
		// Private-use schemes of native apps (cursor://, vscode://).
		if !validScheme(scheme) {
			return errors.New("invalid scheme")
		}
	}
	return nil
}

func validScheme(s string) bool {
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// authenticateClient checks the client at the token, revocation and
// introspection endpoints: client_secret_basic, client_secret_post, or
// none for public clients (client_id alone).
func (s *Server) authenticateClient(r *http.Request) (*client, *oauthError) {
	id, secret, basic := r.BasicAuth()
	// RFC 6749 2.3.1 form-encodes Basic credentials, but many clients (the
	// TypeScript MCP SDK, curl -u) send them as they are: accept either.
	secrets := []string{secret}
	var ids []string
	if basic {
		ids = append(ids, id)
		if v, err := url.QueryUnescape(id); err == nil && v != id {
			ids = append([]string{v}, ids...) // the RFC's form first
		}
		if v, err := url.QueryUnescape(secret); err == nil && v != secret {
			secrets = append(secrets, v)
		}
		if pid := r.PostForm.Get("client_id"); pid != "" && !slices.Contains(ids, pid) {
			return nil, errInvalidRequest("client_id does not match the authenticated client")
		}
	} else {
		ids = []string{r.PostForm.Get("client_id")}
		secrets = []string{r.PostForm.Get("client_secret")}
	}
	if ids[0] == "" {
		return nil, errInvalidClient("client authentication is required")
	}
	var c *client
	var err error
	for _, id := range ids {
		if c, err = s.lookupClient(r.Context(), id); err == nil {
			break
		}
	}
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			s.log.Warn("client lookup failed", "err", err)
			return nil, errUnavailable()
		}
		if !errors.Is(err, errUnknownClient) {
			s.log.Warn("client lookup failed", "err", err)
		}
		return nil, errInvalidClient("unknown client")
	}
	if c.Public {
		if secrets[0] != "" {
			return nil, errInvalidClient("this client is public; it has no secret")
		}
		return c, nil
	}
	if secrets[0] == "" {
		return nil, errInvalidClient("this client must authenticate")
	}
	for _, sec := range secrets {
		if subtle.ConstantTimeCompare([]byte(hashHex(sec)), []byte(c.SecretHash)) == 1 {
			return c, nil
		}
	}
	return nil, errInvalidClient("client authentication failed")
}
