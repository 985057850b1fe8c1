// Package github logs mcpgate's users in with a GitHub OAuth app (or the
// same endpoints on GitHub Enterprise Server, or mcpgate's development
// identity provider): the web application flow, then the REST API for the
// user and, when the configuration restricts organizations, their
// organizations and teams.
package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/idp/internal/upstream"
)

// Defaults for github.com.
const (
	DefaultAuthorizeURL = "https://github.com/login/oauth/authorize"
	DefaultTokenURL     = "https://github.com/login/oauth/access_token"
	DefaultAPIURL       = "https://api.github.com"
)

// APIVersion is the REST API version mcpgate is written against.
const APIVersion = "2022-11-28"

const (
	perPage = 100
	// maxPages bounds how many pages of organizations or teams one login
	// fetches (maxPages*perPage entries); more is an error, not a silent
	// truncation.
	maxPages = 10
)

// Config is the runtime configuration of the connector.
type Config struct {
	ClientID     string
	ClientSecret string
	// Endpoints; empty means github.com's. GitHub Enterprise Server uses
	// https://HOST/login/oauth/... and https://HOST/api/v3.
	AuthorizeURL string
	TokenURL     string
	APIURL       string
	// NeedOrgs requests scope read:org and fetches the user's
	// organizations and teams (set when allowed_orgs is configured).
	NeedOrgs bool
	// Timeout bounds each call to GitHub; zero means 10s.
	Timeout time.Duration
}

// Provider is the GitHub connector.
type Provider struct {
	cfg          Config
	authorizeURL *url.URL
	tokenURL     *url.URL
	apiURL       *url.URL
	client       *http.Client // never follows redirects
}

var _ idp.Provider = (*Provider)(nil)

// New checks cfg and returns the connector. httpClient may be nil.
func New(cfg Config, httpClient *http.Client) (*Provider, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("github: client_id is required")
	}
	if cfg.ClientSecret == "" {
		return nil, errors.New("github: client secret is required")
	}
	if cfg.AuthorizeURL == "" {
		cfg.AuthorizeURL = DefaultAuthorizeURL
	}
	if cfg.TokenURL == "" {
		cfg.TokenURL = DefaultTokenURL
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	p := &Provider{cfg: cfg, client: upstream.NoRedirects(httpClient)}
	var err error
	if p.authorizeURL, err = upstream.CheckURL("github: authorize_url", cfg.AuthorizeURL); err != nil {
		return nil, err
	}
	if p.tokenURL, err = upstream.CheckURL("github: token_url", cfg.TokenURL); err != nil {
		return nil, err
	}
	if p.apiURL, err = upstream.CheckURL("github: api_url", cfg.APIURL); err != nil {
		return nil, err
	}
	if p.apiURL.RawQuery != "" {
		return nil, fmt.Errorf("github: api_url %q: must not contain a query", cfg.APIURL)
	}
	return p, nil
}

// Name is "github".
func (p *Provider) Name() string { return "github" }

// Scopes are the OAuth scopes the connector requests.
func (p *Provider) Scopes() []string {
	if p.cfg.NeedOrgs {
		return []string{"read:user", "read:org"}
	}
	return []string{"read:user"}
}

// AuthCodeURL returns GitHub's authorize URL for state and redirectURI,
// with the S256 PKCE challenge of s.Verifier (GitHub ignores a nonce).
func (p *Provider) AuthCodeURL(state, redirectURI string, s idp.Secrets) string {
	u := *p.authorizeURL
	q := u.Query()
	q.Set("client_id", p.cfg.ClientID)
	q.Set("redirect_uri", redirectURI)
	q.Set("scope", strings.Join(p.Scopes(), " "))
	q.Set("state", state)
	if s.Verifier != "" {
		q.Set("code_challenge", s.Challenge())
		q.Set("code_challenge_method", "S256")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Exchange redeems code with the PKCE verifier and returns the GitHub user.
// The state was checked by the authorization server before.
func (p *Provider) Exchange(ctx context.Context, code, redirectURI string, s idp.Secrets) (*idp.Identity, error) {
	if code == "" {
		return nil, p.err("token exchange", errors.New("empty authorization code"))
	}
	if s.Verifier == "" {
		return nil, p.err("token exchange", errors.New("no PKCE verifier for this login"))
	}
	token, err := p.exchange(ctx, code, redirectURI, s.Verifier)
	if err != nil {
		return nil, err
	}
	var u struct {
		Login string  `json:"login"`
		ID    int64   `json:"id"`
		Name  *string `json:"name"`
		Email *string `json:"email"`
	}
	if _, err := p.get(ctx, token, p.endpoint("/user"), &u); err != nil {
		return nil, err
	}
	if u.Login == "" || u.ID <= 0 {
		return nil, &idp.Error{Provider: "github", Op: "GET /user", Description: "response has no login or id"}
	}
	id := &idp.Identity{
		Subject: "github:" + strconv.FormatInt(u.ID, 10),
		Login:   u.Login,
	}
	if u.Name != nil {
		id.Name = *u.Name
	}
	if u.Email != nil {
		id.Email = *u.Email
	}
	if !p.cfg.NeedOrgs {
		return id, nil
	}
	orgs, err := list[struct {
		Login string `json:"login"`
	}](ctx, p, token, "/user/orgs")
	if err != nil {
		return nil, err
	}
	for _, o := range orgs {
		if o.Login != "" {
			id.Orgs = append(id.Orgs, strings.ToLower(o.Login))
		}
	}
	teams, err := list[struct {
		Slug         string `json:"slug"`
		Organization struct {
			Login string `json:"login"`
		} `json:"organization"`
	}](ctx, p, token, "/user/teams")
	if err != nil {
		return nil, err
	}
	for _, t := range teams {
		if t.Slug != "" && t.Organization.Login != "" {
			id.Teams = append(id.Teams, strings.ToLower(t.Organization.Login+"/"+t.Slug))
		}
	}
	id.Orgs = sortUniq(id.Orgs)
	id.Teams = sortUniq(id.Teams)
	return id, nil
}

func sortUniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

func (p *Provider) err(op string, err error) *idp.Error {
	return &idp.Error{Provider: "github", Op: op, Err: err}
}

// tokenResponse is GitHub's answer on the access_token endpoint: errors
// come with HTTP 200 and the error fields set.
type tokenResponse struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorURI         string `json:"error_uri"`
}

func (p *Provider) exchange(ctx context.Context, code, redirectURI, verifier string) (string, error) {
	const op = "token exchange"
	form := url.Values{
		"client_id":     {p.cfg.ClientID},
		"client_secret": {p.cfg.ClientSecret},
		"code":          {code},
		"code_verifier": {verifier},
	}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	req, err := http.NewRequest(http.MethodPost, p.tokenURL.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return "", p.err(op, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := upstream.Do(ctx, p.client, req, p.cfg.Timeout)
	if err != nil {
		return "", p.err(op, err)
	}
	secrets := []string{code, p.cfg.ClientSecret, verifier}
	var tr tokenResponse
	decodeErr := json.Unmarshal(resp.Body, &tr)
	if decodeErr == nil && tr.Error != "" {
		// The normal shape of a failure: HTTP 200 with error fields.
		e := &idp.Error{Provider: "github", Op: op,
			Code: idp.Sanitize(tr.Error, secrets...), Description: idp.Sanitize(tr.ErrorDescription, secrets...)}
		if resp.Status != http.StatusOK {
			e.Status = resp.Status
		}
		return "", e
	}
	if resp.Status != http.StatusOK {
		return "", &idp.Error{Provider: "github", Op: op, Status: resp.Status}
	}
	if decodeErr != nil {
		return "", &idp.Error{Provider: "github", Op: op,
			Description: "response is not JSON (" + idp.Sanitize(upstream.MediaType(resp.Header)) + ")"}
	}
	if tr.AccessToken == "" {
		return "", &idp.Error{Provider: "github", Op: op, Description: "response has no access_token"}
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return "", &idp.Error{Provider: "github", Op: op,
			Description: "unexpected token_type " + strconv.Quote(idp.Sanitize(tr.TokenType, tr.AccessToken))}
	}
	return tr.AccessToken, nil
}

// endpoint returns the API URL of path with per_page set for lists.
func (p *Provider) endpoint(path string) *url.URL {
	u := *p.apiURL
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	return &u
}

// get fetches u with token into v and returns the response headers.
func (p *Provider) get(ctx context.Context, token string, u *url.URL, v any) (http.Header, error) {
	op := "GET " + strings.TrimPrefix(u.Path, strings.TrimRight(p.apiURL.Path, "/"))
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, p.err(op, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", APIVersion)
	resp, err := upstream.Do(ctx, p.client, req, p.cfg.Timeout)
	if err != nil {
		return nil, p.err(op, err)
	}
	if resp.Status != http.StatusOK {
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(resp.Body, &m)
		return nil, &idp.Error{Provider: "github", Op: op, Status: resp.Status, Description: idp.Sanitize(m.Message, token)}
	}
	if err := json.Unmarshal(resp.Body, v); err != nil {
		return nil, &idp.Error{Provider: "github", Op: op, Description: "response is not the expected JSON"}
	}
	return resp.Header, nil
}

// list fetches every page of a list endpoint, following Link rel="next"
// on the API's own origin, at most maxPages pages.
func list[T any](ctx context.Context, p *Provider, token, path string) ([]T, error) {
	u := p.endpoint(path)
	u.RawQuery = url.Values{"per_page": {strconv.Itoa(perPage)}}.Encode()
	var all []T
	for page := 1; ; page++ {
		var items []T
		h, err := p.get(ctx, token, u, &items)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		next := nextLink(h.Values("Link"))
		if next == "" {
			return all, nil
		}
		if page == maxPages {
			return nil, &idp.Error{Provider: "github", Op: "GET " + path,
				Description: fmt.Sprintf("more than %d pages of %d entries", maxPages, perPage)}
		}
		nu, err := u.Parse(next)
		if err != nil || !upstream.SameOrigin(nu, p.apiURL) {
			return nil, &idp.Error{Provider: "github", Op: "GET " + path, Description: "Link rel=\"next\" leaves the API origin"}
		}
		u = nu
	}
}

// nextLink returns the rel="next" target of RFC 8288 Link header values
// such as `<https://api.github.com/user/orgs?page=2>; rel="next", <…>; rel="last"`.
func nextLink(values []string) string {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
			target = strings.TrimSpace(target)
			if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				continue
			}
			for param := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(param), "=")
				if !strings.EqualFold(strings.TrimSpace(k), "rel") {
					continue
				}
				for rel := range strings.FieldsSeq(strings.Trim(strings.TrimSpace(val), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target[1 : len(target)-1]
					}
				}
			}
		}
	}
	return ""
}
