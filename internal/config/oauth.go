package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/policy/host"
)

// oauth converts [oauth] and [idp.*]. It runs after the proxies are loaded
// because the callback URL must be served by one of them. It returns nil
// when mcpgate.toml has no [oauth].
func (l *loader) oauth(g *loadedGlobal, proxies []*loadedProxy) *OAuth {
	f, t := g.file, g.schema.OAuth
	var root keyPath
	if f == nil {
		return nil
	}
	if t == nil {
		if g.schema.IdP != nil {
			f.errorf(root.key("idp"), "only used with [oauth]: add [oauth] or remove [idp]")
		}
		return nil
	}
	p := root.key("oauth")
	o := &OAuth{
		AccessTokenTTL:               DefaultAccessTokenTTL,
		RefreshTokenTTL:              DefaultRefreshTokenTTL,
		RefreshReuseGrace:            DefaultRefreshReuseGrace,
		DynamicClientTTL:             DefaultDynamicClientTTL,
		DynamicRegistration:          true,
		ClientMetadataDocuments:      true,
		MetadataDocumentPrivateAddrs: t.MetadataDocumentPrivateAddresses,
	}
	if t.DynamicRegistration != nil {
		o.DynamicRegistration = *t.DynamicRegistration
	}
	if t.ClientMetadataDocuments != nil {
		o.ClientMetadataDocuments = *t.ClientMetadataDocuments
	}
	o.CallbackURL = f.callbackURL(p.key("callback_url"), t.CallbackURL, proxies)
	f.tokenLifetimes(p, t, o)
	o.AllowedOrigins = f.origins(p.key("allowed_origins"), t.AllowedOrigins)
	o.Clients = l.staticClients(f, p.key("clients"), t.Clients)
	l.identityProvider(f, g.schema.IdP, o)

	o.Users = f.users(p, t.users())
	for _, lst := range []*[]string{&o.Users.Admin, &o.Users.User, &o.Users.MCP} {
		if *lst == nil {
			*lst = []string{}
		}
	}
	if o.Users.Allowed == nil {
		// No silent "everyone on GitHub": with neither allowed_users nor a
		// provider-side restriction, the operator must say who.
		switch {
		case o.GitHub != nil && o.OIDC != nil: // reported above
		case o.GitHub != nil && len(o.GitHub.AllowedOrgs)+len(o.GitHub.AllowedTeams) == 0:
			f.errorf(p.key("allowed_users"), `set allowed_users ("*" for everyone the provider authenticates) or allowed_orgs / allowed_teams in [idp.github]`)
		case o.OIDC != nil && len(o.OIDC.AllowedGroups) == 0:
			f.errorf(p.key("allowed_users"), `set allowed_users ("*" for everyone the provider authenticates) or allowed_groups in [idp.oidc]`)
		}
		o.Users.Allowed = []string{"*"}
	}
	return o
}

// callbackURL checks [oauth] callback_url: an https URL (http for loopback)
// with a path, on a hostname of an enabled proxy, which serves it.
func (f *file) callbackURL(p keyPath, raw *string, proxies []*loadedProxy) string {
	if raw == nil {
		f.errorf(p, `required: the redirect URL registered at the identity provider, as in "https://auth.example.com/oauth/callback"`)
		return ""
	}
	u, err := checkWebURL(*raw)
	if err != nil {
		f.errorf(p, "%v", err)
		return ""
	}
	if u.Path == "" || u.Path == "/" {
		f.errorf(p, "needs a path, as in %s://%s/oauth/callback", u.Scheme, u.Host)
		return ""
	}
	name, err := host.Name([]byte(u.Hostname()))
	if err != nil {
		f.errorf(p, "%v", err)
		return ""
	}
	// The worker of the most specific enabled owner serves the callback,
	// as dispatch routes it.
	var enabled, disabled host.Index[*Proxy]
	for _, lp := range proxies {
		ix := &disabled
		if lp.proxy.Enabled {
			ix = &enabled
		}
		for _, h := range lp.proxy.Hostnames {
			ix.Add(h, lp.proxy)
		}
	}
	if _, ok := enabled.Lookup(name); ok {
		return *raw
	}
	if d, ok := disabled.Lookup(name); ok {
		f.errorf(p, "host %q belongs to proxy %q, which is disabled", name, d.Name)
	} else {
		f.errorf(p, "host %q is not a hostname of any enabled proxy; the proxy with that hostname serves the callback", name)
	}
	return *raw
}

func (f *file) tokenLifetimes(p keyPath, t *oauthTable, o *OAuth) {
	accessOK := true
	if d := t.AccessTokenTTL; d != nil {
		switch ap := p.key("access_token_ttl"); {
		case d.Duration <= 0:
			f.errorf(ap, "must be greater than zero")
			accessOK = false
		case d.Duration > MaxAccessTokenTTL:
			f.errorf(ap, "must be at most %s", formatDuration(MaxAccessTokenTTL))
			accessOK = false
		case d.Duration%time.Second != 0:
			// JWT times are whole seconds (RFC 7519 NumericDate).
			f.errorf(ap, "must be a whole number of seconds")
			accessOK = false
		default:
			o.AccessTokenTTL = d.Duration
		}
	}
	if d := t.RefreshTokenTTL; d != nil {
		switch rp := p.key("refresh_token_ttl"); {
		case d.Duration <= 0:
			f.errorf(rp, "must be greater than zero")
		case accessOK && d.Duration <= o.AccessTokenTTL:
			f.errorf(rp, "must be longer than access_token_ttl (%s)", formatDuration(o.AccessTokenTTL))
		default:
			o.RefreshTokenTTL = d.Duration
		}
	}
	if d := t.DynamicClientTTL; d != nil {
		if dp := p.key("dynamic_client_ttl"); d.Duration < MinDynamicClientTTL {
			f.errorf(dp, "must be at least %s: a client's last use is recorded about once an hour", formatDuration(MinDynamicClientTTL))
		} else {
			o.DynamicClientTTL = d.Duration
		}
	}
	if d := t.RefreshReuseGrace; d != nil {
		switch gp := p.key("refresh_reuse_grace"); {
		case d.Duration < 0:
			f.errorf(gp, "must not be negative")
		case d.Duration > MaxRefreshReuseGrace:
			f.errorf(gp, "must be at most %s: a longer window lets a stolen refresh token be used unnoticed", formatDuration(MaxRefreshReuseGrace))
		default:
			o.RefreshReuseGrace = d.Duration
		}
	}
}

// formatDuration writes d as an operator would: "24h", not "24h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// origins checks allowed_origins and returns them normalized.
func (f *file) origins(p keyPath, in []string) []string {
	var out []string
	for i, o := range in {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		norm, err := normalizeOrigin(o)
		switch {
		case err != nil:
			f.errorf(ep, "%q: %v", o, err)
		case slices.Contains(out, norm):
			f.errorAt(p, ep, "%q is listed more than once", norm)
		default:
			out = append(out, norm)
		}
	}
	return out
}

// normalizeOrigin checks a browser origin, scheme://host[:port], and spells
// it as browsers send it in the Origin header: lower-case, without the
// scheme's default port.
func normalizeOrigin(s string) (string, error) {
	const form = `not an origin: write scheme://host[:port], as in "https://app.example.com"`
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" || u.Host == "" {
		return "", errors.New(form)
	}
	switch {
	case u.User != nil:
		return "", errors.New("must not contain user info")
	case u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return "", errors.New(`an origin has no path, query or fragment: write scheme://host[:port], as in "https://app.example.com"`)
	case u.Hostname() == "":
		return "", errors.New("missing host")
	case !validPort(u):
		return "", fmt.Errorf("invalid port %q", u.Port())
	}
	host := strings.ToLower(u.Host)
	if port := u.Port(); (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		host = strings.TrimSuffix(host, ":"+port)
	}
	return u.Scheme + "://" + host, nil
}

// checkWebURL checks an http(s) URL mcpgate serves or calls: absolute,
// https (http only for a loopback host), no user info, query or fragment.
func checkWebURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("must not be empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("invalid URL: %v", err)
	}
	switch {
	case u.Scheme == "":
		return nil, fmt.Errorf("%q is not an absolute URL (use https://host/path)", raw)
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("scheme %q is not supported (use https)", u.Scheme)
	case u.User != nil:
		return nil, errors.New("must not contain user info")
	case u.Hostname() == "":
		return nil, errors.New("missing host")
	case !validPort(u):
		return nil, fmt.Errorf("invalid port %q", u.Port())
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("must not contain a query")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, errors.New("must not contain a fragment")
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return nil, errors.New("http is only allowed for loopback hosts (localhost, 127.0.0.0/8, ::1); use https")
	}
	return u, nil
}

// isLoopbackHost reports whether host (without brackets or port) is
// localhost, in 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// Schemes a redirect URI may never use: they run code in, or read from,
// the browser or the machine rather than hand a code to a client.
var forbiddenRedirectSchemes = map[string]bool{
	"javascript": true, "data": true, "file": true, "vbscript": true, "about": true, "blob": true,
}

// CheckRedirectURI reports whether raw may be registered as an OAuth
// redirect URI (OAuth 2.1, RFC 8252): https; http only to a loopback host
// (localhost, 127.0.0.0/8, [::1]); or a private-use scheme of a native app
// such as cursor:// or com.example.app:/cb. Never javascript:, data:,
// file:, vbscript:, about: or blob:; never a fragment or user info. The
// [[oauth.clients]] loader uses it, and so can dynamic registration.
func CheckRedirectURI(raw string) error {
	if raw == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("must not contain spaces or control characters")
	}
	// Named before parsing, so a dangerous URI is called what it is even
	// when it does not parse.
	if scheme, _, ok := strings.Cut(raw, ":"); ok && forbiddenRedirectSchemes[strings.ToLower(scheme)] {
		return fmt.Errorf("scheme %q is not allowed", strings.ToLower(scheme))
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("invalid URI: %v", err)
	}
	switch {
	case u.Scheme == "":
		return errors.New("not an absolute URI: use https://…, http://127.0.0.1/… or a private-use scheme such as cursor://…")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("must not contain a fragment")
	case u.User != nil:
		return errors.New("must not contain user info")
	}
	switch u.Scheme {
	case "https", "http":
		switch {
		case u.Opaque != "" || u.Hostname() == "":
			return errors.New("missing host")
		case !validPort(u):
			return fmt.Errorf("invalid port %q", u.Port())
		case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
			return errors.New("http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1]); use https")
		}
	default:
		if u.Opaque == "" && u.Host == "" && u.Path == "" {
			return fmt.Errorf("nothing after the scheme %q", u.Scheme+":")
		}
	}
	return nil
}

// staticClients converts [[oauth.clients]].
func (l *loader) staticClients(f *file, p keyPath, in []clientTable) []StaticClient {
	var out []StaticClient
	seen := map[string]int{} // client_id -> index
	for i := range in {
		t := &in[i]
		cp := p.at(i)
		if f.isBad(cp) {
			continue
		}
		c := StaticClient{RequireConsent: t.RequireConsent, Introspect: t.Introspect}
		ok := true
		idp := cp.key("client_id")
		switch {
		case t.ClientID == nil:
			f.errorf(idp, "required")
			ok = false
		default:
			if err := checkStaticClientID(*t.ClientID); err != nil {
				f.errorf(idp, "%q: %v", *t.ClientID, err)
				ok = false
			} else if j, dup := seen[*t.ClientID]; dup {
				f.errorf(idp, "%q is already used by %s", *t.ClientID, p.at(j))
				ok = false
			} else {
				seen[*t.ClientID] = i
				c.ID = *t.ClientID
			}
		}
		c.Name = c.ID
		if t.Name != nil {
			if err := checkDisplayName(*t.Name); err != nil {
				f.errorf(cp.key("name"), "%v", err)
			} else {
				c.Name = *t.Name
			}
		}
		c.SecretFile = l.secret(f, cp, t.secret(), false)
		if t.Introspect && t.ClientSecretFile == nil && t.ClientSecretCredential == nil {
			// A public client proves nothing by its client_id, and an
			// introspecting client learns about every token.
			f.errorf(cp.key("introspect"), "needs client_secret_file or client_secret_credential: only a confidential client (a resource server) may introspect")
		}
		c.RedirectURIs = f.redirectURIs(cp.key("redirect_uris"), t.RedirectURIs)
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// checkStaticClientID: printable ASCII without spaces, and not an https
// URL, which would be taken for a Client ID Metadata Document.
func checkStaticClientID(id string) error {
	switch {
	case id == "":
		return errors.New("must not be empty")
	case strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }):
		return errors.New("use printable ASCII without spaces")
	case hasPrefixFold(id, "https:") || hasPrefixFold(id, "http:"):
		return errors.New("a URL client_id names a Client ID Metadata Document; use a plain name")
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// checkDisplayName checks a name shown on consent pages.
func checkDisplayName(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return errors.New("must not be empty")
	case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return errors.New("must not contain control characters")
	}
	return nil
}

func (f *file) redirectURIs(p keyPath, in *[]string) []string {
	if in == nil || len(*in) == 0 {
		f.errorf(p, "at least one redirect URI is required")
		return nil
	}
	var out []string
	for i, u := range *in {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		switch err := CheckRedirectURI(u); {
		case err != nil:
			f.errorf(ep, "%q: %v", u, err)
		case slices.Contains(out, u):
			f.errorAt(p, ep, "%q is listed more than once", u)
		default:
			out = append(out, u)
		}
	}
	return out
}

// identityProvider converts [idp.github] or [idp.oidc]; exactly one must
// be set.
func (l *loader) identityProvider(f *file, t *idpTable, o *OAuth) {
	p := keyPath{}.key("idp")
	switch {
	case t == nil:
		f.errorAt(p, keyPath{}.key("oauth"), "[oauth] needs an identity provider: add [idp.github] or [idp.oidc]")
		return
	case t.GitHub == nil && t.OIDC == nil:
		f.errorf(p, "[oauth] needs an identity provider: add [idp.github] or [idp.oidc]")
		return
	case t.GitHub != nil && t.OIDC != nil:
		f.errorAt(p, p.key("oidc"), "set only one of [idp.github] and [idp.oidc]")
	}
	if t.GitHub != nil {
		o.GitHub = l.github(f, p.key("github"), t.GitHub)
	}
	if t.OIDC != nil {
		o.OIDC = l.oidc(f, p.key("oidc"), t.OIDC)
	}
}

func (l *loader) github(f *file, p keyPath, t *githubTable) *GitHubIDP {
	g := &GitHubIDP{
		AuthorizeURL: DefaultGitHubAuthorizeURL,
		TokenURL:     DefaultGitHubTokenURL,
		APIURL:       DefaultGitHubAPIURL,
	}
	g.ClientID = f.idpClientID(p.key("client_id"), t.ClientID)
	g.SecretFile = l.secret(f, p, t.secret(), true)
	for _, u := range []struct {
		key string
		raw *string
		dst *string
	}{
		{"authorize_url", t.AuthorizeURL, &g.AuthorizeURL},
		{"token_url", t.TokenURL, &g.TokenURL},
		{"api_url", t.APIURL, &g.APIURL},
	} {
		if u.raw == nil {
			continue
		}
		if _, err := checkWebURL(*u.raw); err != nil {
			f.errorf(p.key(u.key), "%v", err)
			continue
		}
		*u.dst = *u.raw
	}
	g.APIURL = strings.TrimRight(g.APIURL, "/")
	g.AllowedOrgs = f.names(p.key("allowed_orgs"), t.AllowedOrgs, checkGitHubOrg)
	g.AllowedTeams = f.names(p.key("allowed_teams"), t.AllowedTeams, checkGitHubTeam)
	return g
}

func (l *loader) oidc(f *file, p keyPath, t *oidcTable) *OIDCIDP {
	o := &OIDCIDP{
		Scopes:        slices.Clone(DefaultOIDCScopes),
		GroupsClaim:   DefaultOIDCGroupsClaim,
		UsernameClaim: DefaultOIDCUsernameClaim,
	}
	if t.Issuer == nil {
		f.errorf(p.key("issuer"), `required: the provider's issuer URL, as in "https://login.example.com"`)
	} else if _, err := checkWebURL(*t.Issuer); err != nil {
		f.errorf(p.key("issuer"), "%v", err)
	} else {
		o.Issuer = *t.Issuer
	}
	o.ClientID = f.idpClientID(p.key("client_id"), t.ClientID)
	o.SecretFile = l.secret(f, p, t.secret(), true)
	if t.Scopes != nil {
		sp := p.key("scopes")
		o.Scopes = f.scopes(sp, *t.Scopes)
		if !f.isBad(sp) && !slices.Contains(*t.Scopes, "openid") {
			f.errorf(sp, `must include "openid"`)
		}
	}
	if t.GroupsClaim != nil {
		if *t.GroupsClaim == "" {
			f.errorf(p.key("groups_claim"), "must not be empty")
		} else {
			o.GroupsClaim = *t.GroupsClaim
		}
	}
	if t.UsernameClaim != nil {
		o.UsernameClaim = f.usernameClaim(p.key("username_claim"), *t.UsernameClaim)
	}
	o.AllowedGroups = f.names(p.key("allowed_groups"), t.AllowedGroups, checkGroupName)
	return o
}

// usernameClaim checks [idp.oidc] username_claim: a claim name, not one
// that says nothing about who logged in, and not one users typically
// choose themselves.
func (f *file) usernameClaim(p keyPath, c string) string {
	switch c {
	case "":
		f.errorf(p, `must not be empty (the default is "sub")`)
	case "preferred_username", "name", "nickname", "given_name", "family_name":
		f.errorf(p, `%q is chosen by the user at many providers and may name someone else; use "sub" (the default), "email" (verified only) or a claim the provider controls`, c)
	case "iss", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash", "c_hash", "auth_time", "jti", "acr", "amr", "sid":
		f.errorf(p, `%q does not identify the user; use "sub" (the default), "email" or another claim naming the user`, c)
	default:
		if strings.ContainsFunc(c, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			f.errorf(p, "%q: must not contain spaces or control characters", c)
			break
		}
		return c
	}
	return DefaultOIDCUsernameClaim
}

// idpClientID checks the client_id mcpgate has at the identity provider.
func (f *file) idpClientID(p keyPath, id *string) string {
	switch {
	case id == nil:
		f.errorf(p, "required: the client ID of mcpgate's app at the identity provider")
	case *id == "":
		f.errorf(p, "must not be empty")
	case strings.ContainsFunc(*id, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		f.errorf(p, "%q: must not contain spaces or control characters", *id)
	default:
		return *id
	}
	return ""
}

// names checks a list of names (orgs, teams, groups) with check, which
// returns the name normalized. Duplicates are errors.
func (f *file) names(p keyPath, in []string, check func(string) (string, error)) []string {
	var out []string
	for i, n := range in {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		norm, err := check(n)
		switch {
		case err != nil:
			f.errorf(ep, "%q: %v", n, err)
		case slices.Contains(out, norm):
			f.errorAt(p, ep, "%q is listed more than once", norm)
		default:
			out = append(out, norm)
		}
	}
	return out
}

// checkGitHubOrg lower-cases an organization login; GitHub compares them
// case-insensitively.
func checkGitHubOrg(s string) (string, error) {
	s = strings.ToLower(s)
	if s == "" {
		return "", errors.New("must not be empty")
	}
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || s[0] == '-' {
		return "", errors.New("not a GitHub organization name (letters, digits and '-')")
	}
	return s, nil
}

// checkGitHubTeam checks "org/team-slug" and lower-cases it.
func checkGitHubTeam(s string) (string, error) {
	org, slug, ok := strings.Cut(strings.ToLower(s), "/")
	if !ok || slug == "" || strings.Contains(slug, "/") {
		return "", errors.New(`use "org/team-slug"`)
	}
	if _, err := checkGitHubOrg(org); err != nil {
		return "", err
	}
	if strings.Trim(slug, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
		return "", errors.New(`not a team slug: use the slug from the team's URL, as in "acme/platform-team"`)
	}
	return org + "/" + slug, nil
}

// checkUserName checks a user name (a login): not empty, no whitespace or
// control characters, kept as written.
func checkUserName(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("must not be empty")
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", errors.New("must not contain spaces or control characters")
	}
	return s, nil
}

// checkGroupName checks a group name from the provider's groups claim,
// which may contain spaces ("MCP Users"), kept as written.
func checkGroupName(s string) (string, error) {
	switch {
	case strings.TrimSpace(s) == "":
		return "", errors.New("must not be empty")
	case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return "", errors.New("must not contain control characters")
	}
	return s, nil
}

// users converts the four user lists below p; an omitted one stays nil.
func (f *file) users(p keyPath, k userKeys) Users {
	list := func(key string, in *[]string) []string {
		if in == nil {
			return nil
		}
		out := f.names(p.key(key), *in, checkUserName)
		if out == nil {
			out = []string{} // explicit [] means nobody, not "inherit"
		}
		return out
	}
	return Users{
		Allowed: list("allowed_users", k.Allowed),
		Admin:   list("admin_users", k.Admin),
		User:    list("user_users", k.User),
		MCP:     list("mcp_users", k.MCP),
	}
}

// scopes checks a list of scope tokens (RFC 6749 section 3.3). It returns
// a non-nil slice, so an explicit [] stays "none".
func (f *file) scopes(p keyPath, in []string) []string {
	out := make([]string, 0, len(in))
	for i, s := range in {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		switch {
		case !isScopeToken(s):
			f.errorf(ep, `%q is not a valid scope token (printable ASCII except space, '"' and '\')`, s)
		case slices.Contains(out, s):
			f.errorAt(p, ep, "%q is listed more than once", s)
		default:
			out = append(out, s)
		}
	}
	return out
}

// isScopeToken: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func isScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

const inlineSecret = "secrets are never written inline: put the secret in a file and set client_secret_file, or name a systemd credential with client_secret_credential"

// secret resolves client_secret_file or client_secret_credential below p
// to the absolute path of a readable, non-empty file. The secret itself is
// not kept. required: one of the two must be set.
func (l *loader) secret(f *file, p keyPath, s secretKeys, required bool) string {
	if s.Inline != nil {
		f.errorf(p.key("client_secret"), inlineSecret)
	}
	fp, cp := p.key("client_secret_file"), p.key("client_secret_credential")
	switch {
	case s.File != nil && s.Credential != nil:
		f.errorf(cp, "cannot be combined with client_secret_file")
	case s.File != nil:
		if *s.File == "" {
			f.errorf(fp, "must not be empty")
			return ""
		}
		path := l.path(*s.File)
		if err := checkSecretFile(path); err != nil {
			f.errorf(fp, "%v", err)
		}
		return path
	case s.Credential != nil && l.opts.Credential != nil && os.Getenv("CREDENTIALS_DIRECTORY") == "":
		if !f.credentialName(cp, *s.Credential) {
			return ""
		}
		path, err := l.opts.Credential(*s.Credential)
		if err != nil {
			f.errorf(cp, "credential %q: %v", *s.Credential, err)
		}
		return path
	case s.Credential != nil:
		return f.credential(cp, *s.Credential)
	case required && s.Inline == nil:
		f.errorf(p, "set client_secret_file or client_secret_credential")
	}
	return ""
}

// credential resolves a systemd credential name to its file in
// $CREDENTIALS_DIRECTORY.
func (f *file) credential(p keyPath, name string) string {
	if !f.credentialName(p, name) {
		return ""
	}
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		f.errorf(p, "$CREDENTIALS_DIRECTORY is not set: credentials exist only in a service started by systemd with LoadCredential=; elsewhere use client_secret_file")
		return ""
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	path := filepath.Join(dir, name)
	if err := checkSecretFile(path); err != nil {
		// The shipped unit loads a whole directory (LoadCredential=
		// mcpgate:/etc/mcpgate/credentials), which prefixes every name.
		if alt := "mcpgate_" + name; errors.Is(err, fs.ErrNotExist) && checkSecretFile(filepath.Join(dir, alt)) == nil {
			f.errorf(p, "credential %q: %v (did you mean %q?)", name, err, alt)
		} else {
			f.errorf(p, "credential %q: %v", name, err)
		}
	}
	return path
}

// credentialName reports (at p) a name that cannot be a credential's.
func (f *file) credentialName(p keyPath, name string) bool {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		f.errorf(p, `%q is not a credential name (a file name in $CREDENTIALS_DIRECTORY, without "/")`, name)
		return false
	}
	return true
}

// CheckSecretFile checks that path is a regular, readable file holding
// more than whitespace, as Load does for every secret.
func CheckSecretFile(path string) error { return checkSecretFile(path) }

// checkSecretFile checks that path is a regular file that can be read and
// holds more than whitespace. Only the first bytes are read, and only to
// check; the secret is read again by whoever uses it.
func checkSecretFile(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return pathError(err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	// Checked before reading: files in /proc claim size 0, and some of
	// them block when read.
	if info.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	fh, err := os.Open(path)
	if err != nil {
		return pathError(err)
	}
	defer fh.Close()
	const peek = 4096
	b, err := io.ReadAll(io.LimitReader(fh, peek))
	if err != nil {
		return pathError(err)
	}
	if len(bytes.TrimSpace(b)) == 0 && len(b) < peek {
		return fmt.Errorf("%s is empty", path)
	}
	return nil
}

// pathError words an *fs.PathError as "path: reason", dropping the
// operation ("stat", "open"), which says nothing to an operator.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &wrapped{msg: pe.Path + ": " + pe.Err.Error(), err: err}
	}
	return err
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }
