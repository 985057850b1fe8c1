// Package policy decides, in one place, who may reach what: which proxy
// owns a host name (the most specific pattern wins, never file order), what
// that proxy's protected resource is called when reached under that name,
// and which user lists and scopes apply to a user there. The supervisor's
// dispatch (through package host), the worker's host check, the
// authorization server and the bearer check all ask it; nothing else in the
// tree computes these facts.
package policy

import (
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/policy/host"
)

// MetadataPath is where RFC 9728 protected resource metadata lives (plus
// the resource path as a suffix).
const MetadataPath = "/.well-known/oauth-protected-resource"

// Table is the policy of one gateway configuration. It is immutable.
type Table struct {
	oauth *config.OAuth
	// The proxies and their host index, built once, at New or at the
	// first question of a NewLazy table.
	once    sync.Once
	load    func() []*config.Proxy
	owners  host.Index[*config.Proxy]
	proxies []*config.Proxy
}

// New builds the table of the enabled proxies of a configuration (what the
// supervisor routes to) and its [oauth] (nil when there is none).
func New(proxies []*config.Proxy, oauth *config.OAuth) *Table {
	t := &Table{oauth: oauth}
	t.once.Do(func() { t.build(proxies) })
	return t
}

// NewLazy is New with the proxies from load, called once, at the first
// question that needs them. A worker's spec carries every proxy of the
// gateway (500 at 500 proxies) for the questions about other proxies'
// hosts and resources; decoding them before its first request was as
// much CPU as the rest of its start. A nil list from load answers like a
// gateway without proxies: no host owned, no resource, no issuer.
func NewLazy(load func() []*config.Proxy, oauth *config.OAuth) *Table {
	return &Table{oauth: oauth, load: load}
}

func (t *Table) build(proxies []*config.Proxy) {
	t.proxies = proxies
	for _, p := range proxies {
		for _, h := range p.Hostnames {
			t.owners.Add(h, p)
		}
	}
}

func (t *Table) ready() {
	t.once.Do(func() {
		t.build(t.load())
		t.load = nil
	})
}

// Site is a proxy as reached under one of its names.
type Site struct {
	Proxy *config.Proxy
	// Authority is the canonical host, with ":port" unless the port is
	// the default 443.
	Authority string
}

// Site finds the proxy that owns a request's host ("host", "host:port",
// any case, one trailing dot). ok is false for a host no proxy owns and
// for one that is not a valid host name.
func (t *Table) Site(hostport string) (s Site, ok bool) {
	name, auth, ok := authority(hostport)
	if !ok {
		return Site{}, false
	}
	t.ready()
	p, ok := t.owners.Lookup(name)
	if !ok {
		return Site{}, false
	}
	return Site{Proxy: p, Authority: auth}, true
}

// Authority is the canonical form of a request's host[:port]: host
// canonical (package host), ":port" only when it is not 443.
func Authority(hostport string) (string, bool) {
	_, auth, ok := authority(hostport)
	return auth, ok
}

// HostName is the canonical host name of a request's host[:port], without
// the port.
func HostName(hostport string) (string, bool) {
	name, _, ok := authority(hostport)
	return name, ok
}

func authority(hostport string) (name, auth string, ok bool) {
	name, port, err := host.Authority([]byte(hostport))
	if err != nil {
		return "", "", false
	}
	auth = name
	if strings.IndexByte(name, ':') >= 0 {
		auth = "[" + name + "]"
	}
	if port != 0 && port != 443 {
		auth += ":" + strconv.Itoa(port)
	}
	return name, auth, true
}

// Owner is the proxy owning a host name (no port), or nil.
func (t *Table) Owner(hostport string) *config.Proxy {
	s, _ := t.Site(hostport)
	return s.Proxy
}

// Origin is https://authority: the issuer of the authorization server
// under this name, and the origin browsers see.
func (s Site) Origin() string { return "https://" + s.Authority }

// ResourceURL is the canonical URI of the protected resource (RFC 8707):
// the audience of tokens for this proxy under this name, and the
// "resource" of its RFC 9728 metadata.
func (s Site) ResourceURL() string { return s.Origin() + s.Proxy.Auth.ResourcePath }

// MetadataURL is the path-suffixed RFC 9728 metadata URL.
func (s Site) MetadataURL() string {
	suffix := s.Proxy.Auth.ResourcePath
	if suffix == "/" {
		suffix = ""
	}
	return s.Origin() + MetadataPath + suffix
}

// Protected reports whether the site's proxy requires tokens, i.e. is a
// protected resource tokens can be issued for.
func (s Site) Protected() bool { return s.Proxy != nil && s.Proxy.Auth.Required }

// ErrUnknownResource: the resource is not one of this gateway's protected
// resources (OAuth "invalid_target").
var ErrUnknownResource = errors.New("the resource is not served by this gateway")

// ErrBadResource: the resource parameter is not an absolute https URI
// without query or fragment.
var ErrBadResource = errors.New("resource must be an absolute https URI without query or fragment")

// Resource resolves an RFC 8707 resource parameter to the site it names.
// A request for a host's origin ("https://h" or "https://h/", as claude.ai
// and Claude Code send) means that host's protected resource.
func (t *Table) Resource(raw string) (Site, error) {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return Site{}, ErrBadResource
	}
	s, ok := t.Site(u.Host)
	if !ok || !s.Protected() {
		return Site{}, ErrUnknownResource
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	if path != "" && path != strings.TrimSuffix(s.Proxy.Auth.ResourcePath, "/") {
		return Site{}, ErrUnknownResource
	}
	return s, nil
}

// IsIssuer reports whether iss is the issuer identifier of one of the
// gateway's hosts, exactly as Site.Origin spells it: tokens are accepted
// from any of them, since all share one key set and one store.
func (t *Table) IsIssuer(iss string) bool {
	rest, ok := strings.CutPrefix(iss, "https://")
	if !ok || strings.ContainsAny(rest, "/?#@") {
		return false
	}
	s, ok := t.Site(rest)
	return ok && s.Origin() == iss
}

// Users returns the lists that apply on p: each of p's [auth] lists where
// set (an empty list included), else the global one from [oauth].
func (t *Table) Users(p *config.Proxy) config.Users {
	var g config.Users
	if t.oauth != nil {
		g = t.oauth.Users
	}
	pick := func(own, global []string) []string {
		if own != nil {
			return own
		}
		return global
	}
	u := p.Auth.Users
	return config.Users{
		Allowed: pick(u.Allowed, g.Allowed),
		Admin:   pick(u.Admin, g.Admin),
		User:    pick(u.User, g.User),
		MCP:     pick(u.MCP, g.MCP),
	}
}

// Member is what the identity provider said about a user, as far as
// policy needs it.
type Member struct {
	// Login is the stable name the lists hold: a GitHub login, or an
	// OpenID Connect subject (or the configured claim).
	Login string
	// Orgs are GitHub organizations or OpenID Connect groups; Teams are
	// GitHub "org/team".
	Orgs, Teams []string
}

// Admit reports whether m may use p at all: listed in allowed_users, and
// in an allowed organization, team or group where those are set.
func (t *Table) Admit(p *config.Proxy, m Member) bool {
	if !matchUser(t.Users(p).Allowed, m.Login) {
		return false
	}
	if t.oauth == nil {
		return false
	}
	if gh := t.oauth.GitHub; gh != nil && (len(gh.AllowedOrgs) > 0 || len(gh.AllowedTeams) > 0) {
		if !intersects(m.Orgs, gh.AllowedOrgs) && !intersects(m.Teams, gh.AllowedTeams) {
			return false
		}
	}
	if oc := t.oauth.OIDC; oc != nil && len(oc.AllowedGroups) > 0 && !intersects(m.Orgs, oc.AllowedGroups) {
		return false
	}
	return true
}

// Listed reports whether allowed_users on p names login (the part of Admit
// that needs no provider data).
func (t *Table) Listed(p *config.Proxy, login string) bool {
	return matchUser(t.Users(p).Allowed, login)
}

// Scopes are the scopes m holds on p, narrowed to those requested when the
// request names any scope mcpgate knows. An empty result means no access.
func (t *Table) Scopes(p *config.Proxy, m Member, requested []string) []string {
	u := t.Users(p)
	var granted []string
	if matchUser(u.Admin, m.Login) {
		granted = append(granted, "admin")
	}
	if matchUser(u.User, m.Login) {
		granted = append(granted, "user")
	}
	if matchUser(u.MCP, m.Login) {
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

// IssuableScopes lists the scopes some user can actually get somewhere.
func (t *Table) IssuableScopes() []string {
	t.ready()
	var out []string
	for _, name := range []string{"admin", "user", "mcp"} {
		for _, p := range t.proxies {
			if !p.Auth.Required {
				continue
			}
			u := t.Users(p)
			l := map[string][]string{"admin": u.Admin, "user": u.User, "mcp": u.MCP}[name]
			if len(l) > 0 {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// matchUser: "*" or the login, compared with ASCII case folding only.
// Unicode folding would let "\u212Aate" (Kelvin sign) pass for "kate".
func matchUser(list []string, login string) bool {
	if login == "" {
		return false
	}
	for _, u := range list {
		if u == "*" || asciiEqualFold(u, login) {
			return true
		}
	}
	return false
}

// intersects compares names case-insensitively (ASCII) on both sides:
// providers and operators spell organizations and groups differently.
func intersects(have, allowed []string) bool {
	for _, x := range have {
		for _, y := range allowed {
			if asciiEqualFold(x, y) {
				return true
			}
		}
	}
	return false
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
