package config

import (
	"slices"
	"strings"
)

// noOAuthRequired is the error for a proxy that needs tokens nobody issues.
const noOAuthRequired = "authentication is required (the default) but mcpgate.toml has no [oauth] section: configure [oauth] and an [idp.*], or set [auth] required = false"

// auth converts a proxy's [auth] (t is nil when the file has none),
// applying the defaults: required, scopes DefaultAuthScopes, resource
// path DefaultResourcePath, user lists inherited.
func (l *loader) auth(f *file, p keyPath, t *authTable, enabled bool) Auth {
	a := Auth{
		Required:     true,
		Scopes:       slices.Clone(DefaultAuthScopes),
		ResourcePath: DefaultResourcePath,
	}
	if t == nil {
		t = &authTable{}
	}
	if t.Required != nil {
		a.Required = *t.Required
	}
	// Secure by default: a proxy is never open because OAuth is missing.
	// A disabled proxy serves nothing, so it may wait for [oauth].
	if a.Required && enabled && l.noOAuth {
		at := p
		if t.Required != nil {
			at = p.key("required")
		}
		f.errorf(at, noOAuthRequired)
	}
	if t.Scopes != nil {
		a.Scopes = f.scopes(p.key("scopes"), *t.Scopes)
	}
	if t.ResourcePath != nil {
		rp := p.key("resource_path")
		if path, err := resourcePath(*t.ResourcePath); err != nil {
			f.errorf(rp, "%q: %v", *t.ResourcePath, err)
		} else {
			a.ResourcePath = path
		}
	}
	a.PublicPaths = f.publicPaths(p.key("public_paths"), t.PublicPaths, a.ResourcePath)
	a.Users = f.users(p, t.users())
	return a
}

// resourcePath checks resource_path: like a route path, but "/" is allowed.
func resourcePath(s string) (string, error) {
	if s == "/" {
		return s, nil
	}
	return routePath(s)
}

// publicPaths checks public_paths: route-path syntax, never "/", and never
// covering the MCP endpoint itself.
func (f *file) publicPaths(p keyPath, in []string, resource string) []string {
	var out []string
	for i, s := range in {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		if s == "/" {
			f.errorf(ep, `"/": would make every path public; set required = false instead`)
			continue
		}
		path, err := routePath(s)
		switch {
		case err != nil:
			f.errorf(ep, "%q: %v", s, err)
		case slices.Contains(out, path):
			f.errorAt(p, ep, "%q is listed more than once", path)
		case pathCovers(path, resource):
			f.errorf(ep, "%q covers resource_path %q, which would make the MCP endpoint public", path, resource)
		default:
			out = append(out, path)
		}
	}
	return out
}

// pathCovers reports whether the segment-boundary prefix covers path.
func pathCovers(prefix, path string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// authSummary says in a word or two what a request needs.
func (a *Auth) summary() string {
	switch {
	case !a.Required:
		return "off"
	case len(a.Scopes) == 0:
		return "any scope"
	}
	return strings.Join(a.Scopes, " ")
}
