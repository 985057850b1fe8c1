package authserver

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpgate/mcpgate/internal/config"
)

// resolveResource decides the audience of the token a flow produces: the
// requested resource if it is one of this gateway's (RFC 8707), else the
// resource of the host the flow started on — never "every proxy". A
// request for a host's origin ("https://h" or "https://h/", as claude.ai
// and Claude Code send) means that host's protected resource.
func (s *Server) resolveResource(raw string, r *http.Request) (string, *config.Proxy, *oauthError) {
	if raw == "" {
		host := canonicalHost(r.Host)
		p := s.proxyFor(hostOnly(host))
		if p == nil {
			return "", nil, errInvalidTarget("this host is not a protected resource")
		}
		return "https://" + host + p.Auth.ResourcePath, p, nil
	}
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", nil, errInvalidTarget("resource must be an absolute https URI without query or fragment")
	}
	host := canonicalHost(u.Host)
	p := s.proxyFor(hostOnly(host))
	if p == nil {
		return "", nil, errInvalidTarget("the resource is not served by this gateway")
	}
	path := strings.TrimSuffix(u.Path, "/")
	want := strings.TrimSuffix(p.Auth.ResourcePath, "/")
	if path != "" && path != want {
		return "", nil, errInvalidTarget("the resource is not served by this gateway")
	}
	return "https://" + host + p.Auth.ResourcePath, p, nil
}

// proxyFor finds the protected proxy serving host.
func (s *Server) proxyFor(host string) *config.Proxy {
	for _, p := range s.o.Proxies {
		if p.Auth.Required && config.MatchHostname(p.Hostnames, host) {
			return p
		}
	}
	return nil
}

// users returns the effective lists for p: its own where set, else the
// global ones.
func (s *Server) users(p *config.Proxy) config.Users {
	g, own := s.o.OAuth.Users, p.Auth.Users
	pick := func(own, global []string) []string {
		if own != nil {
			return own
		}
		return global
	}
	return config.Users{
		Allowed: pick(own.Allowed, g.Allowed),
		Admin:   pick(own.Admin, g.Admin),
		User:    pick(own.User, g.User),
		MCP:     pick(own.MCP, g.MCP),
	}
}

func matchUser(list []string, login string) bool {
	for _, u := range list {
		if u == "*" || strings.EqualFold(u, login) {
			return true
		}
	}
	return false
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, strings.ToLower(x)) {
			return true
		}
	}
	return false
}

// allowed: the user matches allowed_users, and the org, team or group
// restrictions where they are set.
func (s *Server) allowed(p *config.Proxy, id *Identity) bool {
	if !matchUser(s.users(p).Allowed, id.Login) {
		return false
	}
	if gh := s.o.OAuth.GitHub; gh != nil && (len(gh.AllowedOrgs) > 0 || len(gh.AllowedTeams) > 0) {
		if !intersects(id.Orgs, gh.AllowedOrgs) && !intersects(id.Teams, gh.AllowedTeams) {
			return false
		}
	}
	if oc := s.o.OAuth.OIDC; oc != nil && len(oc.AllowedGroups) > 0 && !intersects(id.Orgs, oc.AllowedGroups) {
		return false
	}
	return true
}

// grant computes the scopes a user gets for p, intersected with what the
// client asked for when it asked for any scope mcpgate knows.
func (s *Server) grant(p *config.Proxy, login string, requested []string) []string {
	u := s.users(p)
	var granted []string
	if matchUser(u.Admin, login) {
		granted = append(granted, "admin")
	}
	if matchUser(u.User, login) {
		granted = append(granted, "user")
	}
	if matchUser(u.MCP, login) {
		granted = append(granted, "mcp")
	}
	var known []string
	for _, r := range requested {
		if r == "admin" || r == "user" || r == "mcp" {
			known = append(known, r)
		}
	}
	if len(known) == 0 {
		return granted
	}
	var out []string
	for _, g := range granted {
		if slices.Contains(known, g) {
			out = append(out, g)
		}
	}
	return out
}
