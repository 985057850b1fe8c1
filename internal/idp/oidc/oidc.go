// Package oidc logs mcpgate's users in with any OpenID Connect provider:
// discovery from the issuer URL, the authorization code flow, and a fully
// verified id_token (signature against the provider's JWKS with the
// algorithm pinned, iss, aud, azp, exp, iat and the login's random nonce),
// PKCE (S256) on the code. The identity matched against allow lists is the
// stable sub claim, or a claim the operator names (username_claim).
package oidc

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/idp/internal/upstream"
)

// Defaults.
var (
	DefaultScopes = []string{"openid", "profile", "email"}
)

const (
	DefaultGroupsClaim = "groups"
	// DefaultUsernameClaim is the claim used as Identity.Login: sub is
	// unique and never reassigned by the provider, unlike
	// preferred_username, which users may often choose themselves.
	DefaultUsernameClaim = "sub"
	// leeway tolerates clock skew between mcpgate and the provider.
	leeway = time.Minute
)

// supportedAlgs are the id_token algorithms mcpgate verifies, in order of
// preference; the provider's discovery document narrows them.
var supportedAlgs = []string{"RS256", "ES256"}

// Config is the runtime configuration of the connector.
type Config struct {
	Issuer       string // exactly as the provider spells it in its discovery document
	ClientID     string
	ClientSecret string
	Scopes       []string // default openid profile email; "openid" is always added
	GroupsClaim  string   // id_token claim listed as Identity.Orgs; default "groups"
	// UsernameClaim is the id_token claim used as Identity.Login; default
	// "sub". "email" is accepted only with email_verified true.
	UsernameClaim string
	// Timeout bounds each call to the provider; zero means 10s.
	Timeout time.Duration
}

// Metadata is the part of the discovery document the connector uses.
type Metadata struct {
	Issuer                           string   `json:"issuer"`
	AuthorizationEndpoint            string   `json:"authorization_endpoint"`
	TokenEndpoint                    string   `json:"token_endpoint"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	TokenEndpointAuthMethods         []string `json:"token_endpoint_auth_methods_supported"`
	CodeChallengeMethods             []string `json:"code_challenge_methods_supported"`
}

// Provider is the OpenID Connect connector.
type Provider struct {
	cfg        Config
	meta       Metadata
	authURL    *url.URL
	tokenURL   *url.URL
	authMethod string   // client_secret_basic, client_secret_post or none
	pkce       bool     // send S256 PKCE (unless discovery lists methods without S256)
	algs       []string // pinned id_token algorithms
	subjectKey string   // issuer host and path, for Identity.Subject
	post       *http.Client
	keys       *keySet
	now        func() time.Time
}

var _ idp.Provider = (*Provider)(nil)

// New fetches the issuer's discovery document, checks it and returns the
// connector. httpClient may be nil.
func New(ctx context.Context, cfg Config, httpClient *http.Client) (*Provider, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("oidc: client_id is required")
	}
	iss, err := upstream.CheckURL("oidc: issuer", cfg.Issuer)
	if err != nil {
		return nil, err
	}
	if iss.RawQuery != "" {
		return nil, fmt.Errorf("oidc: issuer %q: must not contain a query", cfg.Issuer)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = DefaultScopes
	}
	if !slices.Contains(cfg.Scopes, "openid") {
		cfg.Scopes = append([]string{"openid"}, cfg.Scopes...)
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = DefaultGroupsClaim
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = DefaultUsernameClaim
	}
	get := upstream.Client(httpClient)
	p := &Provider{
		cfg:        cfg,
		subjectKey: strings.ToLower(iss.Host) + strings.TrimRight(iss.EscapedPath(), "/"),
		post:       upstream.NoRedirects(httpClient),
		now:        time.Now,
	}
	if err := p.discover(ctx, get); err != nil {
		return nil, err
	}
	p.keys = &keySet{client: get, uri: p.meta.JWKSURI, timeout: cfg.Timeout, minRefetch: 10 * time.Second, now: time.Now}
	return p, nil
}

func (p *Provider) discover(ctx context.Context, c *http.Client) error {
	fail := func(format string, args ...any) error {
		return &idp.Error{Provider: "oidc", Op: "discovery", Description: fmt.Sprintf(format, args...)}
	}
	u := strings.TrimRight(p.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return &idp.Error{Provider: "oidc", Op: "discovery", Err: err}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := upstream.Do(ctx, c, req, p.cfg.Timeout)
	if err != nil {
		return &idp.Error{Provider: "oidc", Op: "discovery", Err: err}
	}
	if resp.Status != http.StatusOK {
		return &idp.Error{Provider: "oidc", Op: "discovery", Status: resp.Status, Description: u}
	}
	m := &p.meta
	if err := json.Unmarshal(resp.Body, m); err != nil {
		return fail("%s: not a JSON discovery document", u)
	}
	if m.Issuer != p.cfg.Issuer {
		return fail("issuer %q in %s does not equal the configured issuer %q", idp.Sanitize(m.Issuer), u, p.cfg.Issuer)
	}
	if p.authURL, err = upstream.CheckURL("authorization_endpoint", m.AuthorizationEndpoint); err != nil {
		return fail("%s", err)
	}
	if p.tokenURL, err = upstream.CheckURL("token_endpoint", m.TokenEndpoint); err != nil {
		return fail("%s", err)
	}
	if _, err = upstream.CheckURL("jwks_uri", m.JWKSURI); err != nil {
		return fail("%s", err)
	}
	if len(m.ResponseTypesSupported) > 0 && !slices.Contains(m.ResponseTypesSupported, "code") {
		return fail("the provider does not support response_type code")
	}
	for _, a := range supportedAlgs {
		if slices.Contains(m.IDTokenSigningAlgValuesSupported, a) {
			p.algs = append(p.algs, a)
		}
	}
	if len(p.algs) == 0 {
		return fail("id_token_signing_alg_values_supported %q has none of %q",
			m.IDTokenSigningAlgValuesSupported, supportedAlgs)
	}
	// PKCE whenever the provider does not say it lacks S256: many support it
	// without advertising it, and RFC 6749 §3.1 has servers ignore unknown
	// parameters. A list without S256 means it would be refused.
	p.pkce = len(m.CodeChallengeMethods) == 0 || slices.Contains(m.CodeChallengeMethods, "S256")
	methods := m.TokenEndpointAuthMethods
	if len(methods) == 0 {
		methods = []string{"client_secret_basic"} // the default of OpenID Connect Discovery
	}
	switch {
	case p.cfg.ClientSecret == "" && slices.Contains(methods, "none"):
		p.authMethod = "none"
	case p.cfg.ClientSecret == "":
		return fail("no client secret configured and the provider does not accept public clients (token_endpoint_auth_methods_supported %q)", methods)
	case slices.Contains(methods, "client_secret_basic"):
		p.authMethod = "client_secret_basic"
	case slices.Contains(methods, "client_secret_post"):
		p.authMethod = "client_secret_post"
	default:
		return fail("token_endpoint_auth_methods_supported %q has neither client_secret_basic nor client_secret_post", methods)
	}
	return nil
}

// Name is "oidc".
func (p *Provider) Name() string { return "oidc" }

// Metadata returns the provider's discovery document as read by New.
func (p *Provider) Metadata() Metadata { return p.meta }

// AuthCodeURL returns the provider's authorization URL for state and
// redirectURI, with the login's nonce and S256 PKCE challenge.
func (p *Provider) AuthCodeURL(state, redirectURI string, s idp.Secrets) string {
	u := *p.authURL
	q := u.Query()
	q.Set("response_type", "code")
	q.Set("client_id", p.cfg.ClientID)
	q.Set("redirect_uri", redirectURI)
	q.Set("scope", strings.Join(p.cfg.Scopes, " "))
	q.Set("state", state)
	q.Set("nonce", s.Nonce)
	if p.pkce && s.Verifier != "" {
		q.Set("code_challenge", s.Challenge())
		q.Set("code_challenge_method", "S256")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Exchange redeems code at the token endpoint with the PKCE verifier,
// verifies the id_token (including the login's nonce) and maps its claims.
func (p *Provider) Exchange(ctx context.Context, code, redirectURI string, s idp.Secrets) (*idp.Identity, error) {
	if code == "" {
		return nil, &idp.Error{Provider: "oidc", Op: "token exchange", Description: "empty authorization code"}
	}
	if s.Nonce == "" || s.Verifier == "" {
		return nil, &idp.Error{Provider: "oidc", Op: "token exchange", Description: "no nonce or PKCE verifier for this login"}
	}
	raw, err := p.exchange(ctx, code, redirectURI, s.Verifier)
	if err != nil {
		return nil, err
	}
	claims, err := p.verify(ctx, raw, s.Nonce)
	if err != nil {
		return nil, &idp.Error{Provider: "oidc", Op: "id_token", Err: err}
	}
	return p.identity(claims)
}

func (p *Provider) exchange(ctx context.Context, code, redirectURI, verifier string) (string, error) {
	const op = "token exchange"
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"redirect_uri": {redirectURI},
	}
	if p.pkce {
		form.Set("code_verifier", verifier)
	}
	switch p.authMethod {
	case "client_secret_post":
		form.Set("client_id", p.cfg.ClientID)
		form.Set("client_secret", p.cfg.ClientSecret)
	case "none":
		form.Set("client_id", p.cfg.ClientID)
	}
	req, err := http.NewRequest(http.MethodPost, p.tokenURL.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return "", &idp.Error{Provider: "oidc", Op: op, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if p.authMethod == "client_secret_basic" {
		// RFC 6749 §2.3.1: form-encode both before Basic.
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(p.cfg.ClientSecret))
	}
	resp, err := upstream.Do(ctx, p.post, req, p.cfg.Timeout)
	if err != nil {
		return "", &idp.Error{Provider: "oidc", Op: op, Err: err}
	}
	var tr struct {
		IDToken          string `json:"id_token"`
		TokenType        string `json:"token_type"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	decodeErr := json.Unmarshal(resp.Body, &tr)
	secrets := []string{code, p.cfg.ClientSecret, verifier}
	if resp.Status != http.StatusOK || tr.Error != "" {
		e := &idp.Error{Provider: "oidc", Op: op, Status: resp.Status}
		if resp.Status == http.StatusOK {
			e.Status = 0
		}
		if decodeErr == nil {
			e.Code = idp.Sanitize(tr.Error, secrets...)
			e.Description = idp.Sanitize(tr.ErrorDescription, secrets...)
		}
		return "", e
	}
	if decodeErr != nil {
		return "", &idp.Error{Provider: "oidc", Op: op, Description: "response is not JSON"}
	}
	if tr.IDToken == "" {
		return "", &idp.Error{Provider: "oidc", Op: op, Description: "response has no id_token (is scope openid granted?)"}
	}
	return tr.IDToken, nil
}

// verify checks the id_token and returns its claims.
func (p *Provider) verify(ctx context.Context, raw, nonce string) (jwt.MapClaims, error) {
	parser := jwt.NewParser(
		jwt.WithValidMethods(p.algs),
		jwt.WithIssuer(p.cfg.Issuer),
		jwt.WithAudience(p.cfg.ClientID),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(p.now),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return p.keys.get(ctx, kid, t.Method.Alg())
	})
	if err != nil {
		return nil, err
	}
	if _, ok := claims["iat"]; !ok {
		return nil, errors.New("no iat claim")
	}
	if sub, _ := claims["sub"].(string); sub == "" {
		return nil, errors.New("no sub claim")
	}
	aud, _ := claims.GetAudience()
	azp, hasAzp := claims["azp"].(string)
	if hasAzp && azp != p.cfg.ClientID {
		return nil, errors.New("azp is not our client_id")
	}
	if len(aud) > 1 && !hasAzp {
		return nil, errors.New("several audiences and no azp claim")
	}
	got, _ := claims["nonce"].(string)
	if got == "" || nonce == "" || subtle.ConstantTimeCompare([]byte(got), []byte(nonce)) != 1 {
		return nil, errors.New("nonce does not match this login")
	}
	return claims, nil
}

func str(c jwt.MapClaims, name string) string {
	s, _ := c[name].(string)
	return s
}

// boolClaim reads a boolean claim, accepting "true"/"false" strings (some
// providers send email_verified as a string).
func boolClaim(c jwt.MapClaims, name string) (value, present bool) {
	switch v := c[name].(type) {
	case bool:
		return v, true
	case string:
		return strings.EqualFold(v, "true"), strings.EqualFold(v, "true") || strings.EqualFold(v, "false")
	}
	return false, false
}

func (p *Provider) identity(c jwt.MapClaims) (*idp.Identity, error) {
	sub := str(c, "sub")
	verified, hasVerified := boolClaim(c, "email_verified")
	id := &idp.Identity{
		Subject: "oidc:" + p.subjectKey + ":" + sub,
		Name:    str(c, "name"),
	}
	if id.Name == "" {
		id.Name = str(c, "preferred_username") // display only
	}
	// An email the provider says is unverified is not passed on; when it
	// says nothing, the email is informational only and never a login.
	if email := str(c, "email"); email != "" && (verified || !hasVerified) {
		id.Email = email
	}
	switch claim := p.cfg.UsernameClaim; claim {
	case "sub":
		id.Login = sub
	case "email":
		if !verified || id.Email == "" {
			return nil, &idp.Error{Provider: "oidc", Op: "id_token", Description: "username_claim is email, but the id_token has no email with email_verified true"}
		}
		id.Login = id.Email
	default:
		v, ok := c[claim].(string)
		if !ok || strings.TrimSpace(v) == "" {
			return nil, &idp.Error{Provider: "oidc", Op: "id_token", Description: fmt.Sprintf("username_claim %q is missing, empty or not a string", claim)}
		}
		id.Login = v
	}
	switch g := c[p.cfg.GroupsClaim].(type) {
	case string:
		if g != "" {
			id.Orgs = []string{g}
		}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok && s != "" {
				id.Orgs = append(id.Orgs, s)
			}
		}
	case nil:
	default:
		return nil, &idp.Error{Provider: "oidc", Op: "id_token", Description: fmt.Sprintf("claim %q is neither a string nor a list", p.cfg.GroupsClaim)}
	}
	slices.Sort(id.Orgs)
	id.Orgs = slices.Compact(id.Orgs)
	return id, nil
}
