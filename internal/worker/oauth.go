package worker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/authserver"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/idp/github"
	"github.com/mcpgate/mcpgate/internal/idp/oidc"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/resource"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
	"github.com/mcpgate/mcpgate/internal/token"
)

// How often a worker reads the revocation log: revocations take effect in
// every worker within a second.
const revocationPoll = 250 * time.Millisecond

// keyRefresh: how often a worker looks for keys rotated by another.
const keyRefresh = time.Minute

// oauth is a worker's authorization and resource server.
type oauth struct {
	store    store.Store
	keys     *keys.Set
	issuer   *token.Issuer
	verifier *token.Verifier
	revoked  *revocations
	server   *authserver.Server
	guard    *resource.Guard
	stop     context.CancelFunc
}

// setupOAuth opens the shared state and builds the servers. Without [oauth]
// only the guard exists (and lets everything through: config validation
// guarantees no proxy requires auth then).
func (w *Worker) setupOAuth() (*oauth, error) {
	spec := w.spec
	o := &oauth{}
	if spec.OAuth == nil {
		o.guard = resource.New(spec.Proxy, nil, nil)
		return o, nil
	}
	oc := spec.OAuth
	st, err := sqlite.Open(filepath.Join(spec.StateDir, "oauth.db"))
	if err != nil {
		return nil, err
	}
	o.store = st
	ks, err := keys.Open(spec.StateDir, keys.Options{RetainFor: oc.AccessTokenTTL + 2*keyRefresh})
	if err != nil {
		st.Close()
		return nil, err
	}
	o.keys = ks
	o.revoked = newRevocations(st)
	o.issuer = token.NewIssuer(ks, oc.AccessTokenTTL)
	gateway := spec.Gateway
	o.verifier, err = token.NewVerifier(token.VerifierOptions{
		Keys:         ks,
		AcceptIssuer: func(iss string) bool { return acceptIssuer(gateway, iss) },
		Revoked:      func(c *token.Claims) bool { return o.revoked.covers(c.ID, c.GrantID, c.ClientID) },
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	provider, err := newProvider(oc)
	if err != nil {
		st.Close()
		return nil, err
	}
	o.server, err = authserver.New(authserver.Options{
		OAuth:   oc,
		Proxies: gateway,
		Store:   st,
		IDP:     provider,
		Tokens:  &tokens{issuer: o.issuer, verifier: o.verifier, keys: ks},
		Log:     w.log.With("component", "oauth"),
		Revoked: o.revoked.covers,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	var origins []string
	for _, a := range oc.AllowedOrigins {
		origins = append(origins, strings.ToLower(a))
	}
	o.guard = resource.New(spec.Proxy, &accessVerifier{o.verifier}, origins)
	ctx, cancel := context.WithCancel(context.Background())
	o.stop = cancel
	go o.revoked.poll(ctx, w.log)
	go o.maintain(ctx, w)
	return o, nil
}

// maintain refreshes keys and cleans the store now and then.
func (o *oauth) maintain(ctx context.Context, w *Worker) {
	t := time.NewTicker(keyRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := o.keys.Refresh(); err != nil {
				w.log.Warn("refreshing signing keys", "err", err)
			}
			if err := o.store.Cleanup(ctx, time.Now()); err != nil {
				w.log.Warn("cleaning the OAuth store", "err", err)
			}
		}
	}
}

func (o *oauth) close() {
	if o.stop != nil {
		o.stop()
	}
	if o.store != nil {
		o.store.Close()
	}
}

// acceptIssuer: tokens may come from the authorization server of any host
// of this gateway.
func acceptIssuer(gateway []*config.Proxy, iss string) bool {
	u, err := url.Parse(iss)
	if err != nil || u.Scheme != "https" || u.Path != "" {
		return false
	}
	host := u.Hostname()
	for _, p := range gateway {
		if config.MatchHostname(p.Hostnames, host) {
			return true
		}
	}
	return false
}

func newProvider(oc *config.OAuth) (authserver.Provider, error) {
	switch {
	case oc.GitHub != nil:
		secret, err := readSecret(oc.GitHub.SecretFile)
		if err != nil {
			return nil, err
		}
		p, err := github.New(github.Config{
			ClientID: oc.GitHub.ClientID, ClientSecret: secret,
			AuthorizeURL: oc.GitHub.AuthorizeURL, TokenURL: oc.GitHub.TokenURL, APIURL: oc.GitHub.APIURL,
			NeedOrgs: len(oc.GitHub.AllowedOrgs) > 0 || len(oc.GitHub.AllowedTeams) > 0,
		}, nil)
		if err != nil {
			return nil, err
		}
		return &provider{p}, nil
	case oc.OIDC != nil:
		secret, err := readSecret(oc.OIDC.SecretFile)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		p, err := oidc.New(ctx, oidc.Config{
			Issuer: oc.OIDC.Issuer, ClientID: oc.OIDC.ClientID, ClientSecret: secret,
			Scopes: oc.OIDC.Scopes, GroupsClaim: oc.OIDC.GroupsClaim, UsernameClaim: oc.OIDC.UsernameClaim,
		}, nil)
		if err != nil {
			return nil, err
		}
		return &provider{p}, nil
	}
	return nil, errors.New("no identity provider configured")
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("client secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("client secret: %s is empty", path)
	}
	return s, nil
}

// provider adapts an idp.Provider to the authorization server.
type provider struct{ p idp.Provider }

func (a *provider) AuthCodeURL(state, redirectURI string, s idp.Secrets) string {
	return a.p.AuthCodeURL(state, redirectURI, s)
}

func (a *provider) Login(ctx context.Context, code, redirectURI string, s idp.Secrets) (*authserver.Identity, error) {
	id, err := a.p.Exchange(ctx, code, redirectURI, s)
	if err != nil {
		return nil, err
	}
	return &authserver.Identity{Subject: id.Subject, Login: id.Login, Orgs: id.Orgs, Teams: id.Teams}, nil
}

// tokens adapts the token package to the authorization server.
type tokens struct {
	issuer   *token.Issuer
	verifier *token.Verifier
	keys     *keys.Set
}

func (t *tokens) Issue(at *authserver.AccessToken) (string, error) {
	return t.issuer.Issue(token.Claims{
		Issuer: at.Issuer, Subject: at.Subject, Audience: []string{at.Audience},
		ExpiresAt: numericDate(at.ExpiresAt), IssuedAt: numericDate(at.IssuedAt),
		ID: at.JTI, ClientID: at.ClientID, Scope: at.Scope, Login: at.Login, GrantID: at.GrantID,
	})
}

// Parse verifies a token for revocation and introspection, whatever its
// audience.
func (t *tokens) Parse(raw string) (*authserver.AccessToken, error) {
	c, err := t.verifier.VerifyAnyAudience(raw)
	if err != nil {
		return nil, err
	}
	at := &authserver.AccessToken{
		Issuer: c.Issuer, Subject: c.Subject, ClientID: c.ClientID, Scope: c.Scope,
		Login: c.Login, GrantID: c.GrantID, JTI: c.ID,
	}
	if len(c.Audience) > 0 {
		at.Audience = c.Audience[0]
	}
	if c.ExpiresAt != nil {
		at.ExpiresAt = c.ExpiresAt.Time
	}
	if c.IssuedAt != nil {
		at.IssuedAt = c.IssuedAt.Time
	}
	return at, nil
}

func (t *tokens) JWKS() []byte { return t.keys.JWKS() }

// accessVerifier adapts the token verifier to the resource guard.
type accessVerifier struct{ v *token.Verifier }

func (a *accessVerifier) VerifyAccess(raw, audience string) (*resource.TokenInfo, error) {
	c, err := a.v.Verify(raw, audience)
	if err != nil {
		return nil, err
	}
	ti := &resource.TokenInfo{Subject: c.Subject, Login: c.Login, ClientID: c.ClientID, Scopes: strings.Fields(c.Scope)}
	if c.ExpiresAt != nil {
		ti.Expiry = c.ExpiresAt.Time
	}
	return ti, nil
}

// revocations mirrors the store's revocation log in memory, so the bearer
// check stays a map lookup.
type revocations struct {
	st store.Store

	mu      sync.RWMutex
	after   int64                // guarded by mu
	entries map[string]time.Time // guarded by mu; kind+":"+value → expiry
}

func newRevocations(st store.Store) *revocations {
	return &revocations{st: st, entries: map[string]time.Time{}}
}

func (r *revocations) covers(jti, grantID, clientID string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.entries) == 0 {
		return false
	}
	_, a := r.entries[string(store.RevokeToken)+":"+jti]
	_, b := r.entries[string(store.RevokeGrant)+":"+grantID]
	_, c := r.entries[string(store.RevokeClient)+":"+clientID]
	return a || b || c
}

func (r *revocations) poll(ctx context.Context, log interface{ Warn(string, ...any) }) {
	t := time.NewTicker(revocationPoll)
	defer t.Stop()
	for {
		if err := r.load(ctx); err != nil && ctx.Err() == nil {
			log.Warn("reading revocations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *revocations) load(ctx context.Context) error {
	for {
		r.mu.RLock()
		after := r.after
		r.mu.RUnlock()
		batch, err := r.st.Revocations(ctx, after, 1000)
		if err != nil {
			return err
		}
		now := time.Now()
		r.mu.Lock()
		for _, e := range batch {
			r.entries[string(e.Kind)+":"+e.Value] = e.ExpiresAt
			r.after = e.Seq
		}
		for k, exp := range r.entries {
			if now.After(exp) {
				delete(r.entries, k)
			}
		}
		r.mu.Unlock()
		if len(batch) < 1000 {
			return nil
		}
	}
}

func numericDate(t time.Time) *jwt.NumericDate {
	if t.IsZero() {
		return nil
	}
	return jwt.NewNumericDate(t)
}
