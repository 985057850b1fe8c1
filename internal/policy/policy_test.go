package policy

import (
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mcpgate/mcpgate/internal/config"
)

func proxy(name, resourcePath string, required bool, users config.Users, hosts ...string) *config.Proxy {
	return &config.Proxy{Name: name, Hostnames: hosts, Enabled: true,
		Auth: config.Auth{Required: required, ResourcePath: resourcePath, Users: users}}
}

// The overlap of issue 10: a wildcard proxy listed first (file order) with
// open lists, an exact one with narrow lists.
func overlapping() *Table {
	wild := proxy("00wild", "/mcp", true, config.Users{}, "*.corp.test")
	secret := proxy("secret", "/mcp", true, config.Users{Allowed: []string{"alice"}, MCP: []string{"alice"}}, "secret.corp.test")
	deep := proxy("deep", "/", true, config.Users{}, "*.deep.corp.test", "deep.example")
	open := proxy("open", "/mcp", false, config.Users{}, "open.test")
	oauth := &config.OAuth{Users: config.Users{Allowed: []string{"*"}, MCP: []string{"*"}, Admin: []string{"root"}}}
	return New([]*config.Proxy{wild, secret, deep, open}, oauth)
}

func TestSite(t *testing.T) {
	tb := overlapping()
	for _, tc := range []struct {
		in, owner, authority, resource, metadata string
	}{
		{"secret.corp.test", "secret", "secret.corp.test", "https://secret.corp.test/mcp", "https://secret.corp.test/.well-known/oauth-protected-resource/mcp"},
		{"SECRET.Corp.Test.", "secret", "secret.corp.test", "https://secret.corp.test/mcp", ""},
		{"secret.corp.test:443", "secret", "secret.corp.test", "https://secret.corp.test/mcp", ""},
		{"secret.corp.test.:8443", "secret", "secret.corp.test:8443", "https://secret.corp.test:8443/mcp", ""},
		{"secret.corp.test:08443", "secret", "secret.corp.test:8443", "", ""},
		{"x.corp.test", "00wild", "x.corp.test", "https://x.corp.test/mcp", ""},
		{"a.b.corp.test", "", "", "", ""}, // a wildcard covers one label
		{"corp.test", "", "", "", ""},
		{"x.deep.corp.test", "deep", "x.deep.corp.test", "https://x.deep.corp.test/", "https://x.deep.corp.test/.well-known/oauth-protected-resource"},
		{"deep.example", "deep", "deep.example", "", ""},
		{"secret.corp.test..", "", "", "", ""},
		{".secret.corp.test", "", "", "", ""},
		{"secret.corp.test:99999", "", "", "", ""},
		{"secret.corp.test:x", "", "", "", ""},
		{"bücher.corp.test", "", "", "", ""}, // U-labels are refused, never mapped
		{"xn--bcher-kva.corp.test", "00wild", "xn--bcher-kva.corp.test", "", ""},
		{"ѕecret.corp.test", "", "", "", ""},     // Cyrillic ѕ: no look-alike folding
		{"ｓecret.corp.test", "", "", "", ""},     // fullwidth
		{"secret.corp.test\x00", "", "", "", ""}, // NUL
		{"[::1]:443", "", "", "", ""},
		{"", "", "", "", ""},
	} {
		s, ok := tb.Site(tc.in)
		owner := ""
		if ok {
			owner = s.Proxy.Name
		}
		if owner != tc.owner {
			t.Errorf("Site(%q) owner = %q, want %q", tc.in, owner, tc.owner)
		}
		if !ok || owner != tc.owner {
			continue
		}
		if s.Authority != tc.authority {
			t.Errorf("Site(%q).Authority = %q, want %q", tc.in, s.Authority, tc.authority)
		}
		if tc.resource != "" && s.ResourceURL() != tc.resource {
			t.Errorf("Site(%q).ResourceURL() = %q, want %q", tc.in, s.ResourceURL(), tc.resource)
		}
		if tc.metadata != "" && s.MetadataURL() != tc.metadata {
			t.Errorf("Site(%q).MetadataURL() = %q, want %q", tc.in, s.MetadataURL(), tc.metadata)
		}
	}
}

// The most specific match wins whatever the order of the proxies.
func TestOwnerIndependentOfOrder(t *testing.T) {
	wild := proxy("wild", "/mcp", true, config.Users{}, "*.corp.test")
	exact := proxy("exact", "/mcp", true, config.Users{}, "secret.corp.test")
	for _, order := range [][]*config.Proxy{{wild, exact}, {exact, wild}} {
		tb := New(order, nil)
		if p := tb.Owner("secret.corp.test"); p == nil || p.Name != "exact" {
			t.Errorf("order %s,%s: owner of secret.corp.test = %v, want exact", order[0].Name, order[1].Name, p)
		}
		if p := tb.Owner("other.corp.test"); p == nil || p.Name != "wild" {
			t.Errorf("order %s,%s: owner of other.corp.test = %v, want wild", order[0].Name, order[1].Name, p)
		}
	}
}

func TestResource(t *testing.T) {
	tb := overlapping()
	for _, tc := range []struct {
		raw, want string
		err       error
	}{
		{"https://secret.corp.test/mcp", "https://secret.corp.test/mcp", nil},
		{"https://secret.corp.test/mcp/", "https://secret.corp.test/mcp", nil},
		{"https://secret.corp.test/", "https://secret.corp.test/mcp", nil},
		{"https://secret.corp.test", "https://secret.corp.test/mcp", nil},
		{"HTTPS://SECRET.corp.test:443/mcp", "https://secret.corp.test/mcp", nil},
		{"https://secret.corp.test.:8443/mcp", "https://secret.corp.test:8443/mcp", nil},
		{"https://x.deep.corp.test/", "https://x.deep.corp.test/", nil},
		{"https://secret.corp.test/other", "", ErrUnknownResource},
		{"https://secret.corp.test/mcpx", "", ErrUnknownResource},
		{"https://open.test/mcp", "", ErrUnknownResource}, // not protected
		{"https://nobody.test/mcp", "", ErrUnknownResource},
		{"http://secret.corp.test/mcp", "", ErrBadResource},
		{"https://u@secret.corp.test/mcp", "", ErrBadResource},
		{"https://secret.corp.test/mcp?x", "", ErrBadResource},
		{"https://secret.corp.test/mcp?", "", ErrBadResource},
		{"https://secret.corp.test/mcp#f", "", ErrBadResource},
		{"/mcp", "", ErrBadResource},
		{"", "", ErrBadResource},
	} {
		s, err := tb.Resource(tc.raw)
		if err != tc.err {
			t.Errorf("Resource(%q) error = %v, want %v", tc.raw, err, tc.err)
			continue
		}
		if err == nil && s.ResourceURL() != tc.want {
			t.Errorf("Resource(%q) = %q, want %q", tc.raw, s.ResourceURL(), tc.want)
		}
	}
}

func TestIsIssuer(t *testing.T) {
	tb := overlapping()
	for iss, want := range map[string]bool{
		"https://secret.corp.test":       true,
		"https://secret.corp.test:8443":  true,
		"https://x.corp.test":            true,
		"https://open.test":              true,
		"https://SECRET.corp.test":       false, // not as the gateway spells it
		"https://secret.corp.test:443":   false,
		"https://secret.corp.test/":      false,
		"https://secret.corp.test/x":     false,
		"https://a@secret.corp.test":     false,
		"http://secret.corp.test":        false,
		"https://elsewhere.test":         false,
		"https://secret.corp.test?x=1":   false,
		"https://secret.corp.test#frag":  false,
		"https://secret.corp.test.:8443": false,
	} {
		if got := tb.IsIssuer(iss); got != want {
			t.Errorf("IsIssuer(%q) = %v, want %v", iss, got, want)
		}
	}
}

func TestUsersFallback(t *testing.T) {
	global := config.Users{Allowed: []string{"*"}, Admin: []string{"root"}, User: []string{"*"}, MCP: []string{"bob"}}
	own := config.Users{Allowed: []string{"alice"}, Admin: []string{}, MCP: []string{"alice", "charlie"}}
	p := proxy("notes", "/mcp", true, own, "notes.test")
	q := proxy("auth", "/mcp", true, config.Users{}, "auth.test")
	tb := New([]*config.Proxy{p, q}, &config.OAuth{Users: global})
	// Per-proxy lists override the global ones, an empty one included.
	want := config.Users{Allowed: []string{"alice"}, Admin: []string{}, User: []string{"*"}, MCP: []string{"alice", "charlie"}}
	if got := tb.Users(p); !reflect.DeepEqual(got, want) {
		t.Errorf("Users(notes) = %+v, want %+v", got, want)
	}
	if got := tb.Users(q); !reflect.DeepEqual(got, global) {
		t.Errorf("Users(auth) = %+v, want the global %+v", got, global)
	}
}

func TestAdmitAndScopes(t *testing.T) {
	tb := overlapping()
	secret, wild := tb.Owner("secret.corp.test"), tb.Owner("x.corp.test")
	for _, tc := range []struct {
		p         *config.Proxy
		login     string
		requested []string
		admit     bool
		scopes    []string
	}{
		{secret, "alice", nil, true, []string{"mcp"}},
		{secret, "ALICE", nil, true, []string{"mcp"}},
		{secret, "mallory", nil, false, nil},
		{secret, "\u212Alice", nil, false, nil}, // not "alice", whatever Unicode folding says
		{wild, "mallory", nil, true, []string{"mcp"}},
		{wild, "root", nil, true, []string{"admin", "mcp"}},
		{wild, "root", []string{"mcp", "openid"}, true, []string{"mcp"}},
		{wild, "root", []string{"openid"}, true, []string{"admin", "mcp"}},
		{wild, "", nil, false, nil},
	} {
		m := Member{Login: tc.login}
		if got := tb.Admit(tc.p, m); got != tc.admit {
			t.Errorf("Admit(%s, %q) = %v, want %v", tc.p.Name, tc.login, got, tc.admit)
		}
		if tc.admit {
			if got := tb.Scopes(tc.p, m, tc.requested); !reflect.DeepEqual(got, tc.scopes) {
				t.Errorf("Scopes(%s, %q, %v) = %v, want %v", tc.p.Name, tc.login, tc.requested, got, tc.scopes)
			}
		}
	}
	// Kelvin sign: ASCII folding only.
	kate := New([]*config.Proxy{proxy("k", "/mcp", true, config.Users{Allowed: []string{"kate"}, MCP: []string{"kate"}}, "k.test")},
		&config.OAuth{})
	if kate.Admit(kate.Owner("k.test"), Member{Login: "\u212Aate"}) {
		t.Error(`"\u212Aate" was admitted for "kate"`)
	}
	if !kate.Admit(kate.Owner("k.test"), Member{Login: "Kate"}) {
		t.Error(`"Kate" was refused for "kate"`)
	}
}

func TestAdmitGroups(t *testing.T) {
	p := proxy("p", "/mcp", true, config.Users{}, "p.test")
	oidc := New([]*config.Proxy{p}, &config.OAuth{Users: config.Users{Allowed: []string{"*"}},
		OIDC: &config.OIDCIDP{AllowedGroups: []string{"MCP Users"}}})
	for groups, want := range map[string]bool{"mcp users": true, "MCP USERS": true, "MCP Users": true, "mcp-users": false, "": false} {
		m := Member{Login: "sub-1", Orgs: []string{groups}}
		if groups == "" {
			m.Orgs = nil
		}
		if got := oidc.Admit(p, m); got != want {
			t.Errorf("groups %q: Admit = %v, want %v", groups, got, want)
		}
	}
	gh := New([]*config.Proxy{p}, &config.OAuth{Users: config.Users{Allowed: []string{"*"}},
		GitHub: &config.GitHubIDP{AllowedOrgs: []string{"acme"}, AllowedTeams: []string{"other/platform"}}})
	for _, tc := range []struct {
		orgs, teams []string
		want        bool
	}{
		{[]string{"Acme"}, nil, true},
		{[]string{"evil"}, []string{"other/Platform"}, true},
		{[]string{"evil"}, []string{"other/ops"}, false},
		{nil, nil, false},
	} {
		if got := gh.Admit(p, Member{Login: "x", Orgs: tc.orgs, Teams: tc.teams}); got != tc.want {
			t.Errorf("orgs %v teams %v: Admit = %v, want %v", tc.orgs, tc.teams, got, tc.want)
		}
	}
	if New([]*config.Proxy{p}, nil).Admit(p, Member{Login: "x"}) {
		t.Error("admitted without [oauth]")
	}
}

func TestIssuableScopes(t *testing.T) {
	tb := overlapping()
	if got, want := tb.IssuableScopes(), []string{"admin", "mcp"}; !reflect.DeepEqual(got, want) {
		t.Errorf("IssuableScopes() = %v, want %v", got, want)
	}
}

// TestNewLazy: a lazy table loads its proxies once, at the first question
// that needs them, even when many ask at once, and answers every question
// as the table New builds from the same proxies.
func TestNewLazy(t *testing.T) {
	eager := overlapping()
	var loads atomic.Int32
	lazy := NewLazy(func() []*config.Proxy {
		loads.Add(1)
		return eager.proxies
	}, eager.oauth)
	if n := loads.Load(); n != 0 {
		t.Fatalf("loaded %d times before any question", n)
	}
	// Questions that need no proxies do not load them.
	lazy.Users(eager.proxies[0])
	if n := loads.Load(); n != 0 {
		t.Fatalf("Users loaded the proxies (%d)", n)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lazy.Owner("secret.corp.test")
		}()
	}
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("loaded %d times, want once", n)
	}
	for _, h := range []string{"secret.corp.test", "x.corp.test", "x.deep.corp.test", "open.test", "a.b.corp.test", "nowhere.test", "SECRET.corp.test.:8443"} {
		es, eok := eager.Site(h)
		ls, lok := lazy.Site(h)
		if es != ls || eok != lok {
			t.Errorf("Site(%q): lazy %+v %v, eager %+v %v", h, ls, lok, es, eok)
		}
		for _, raw := range []string{"https://" + h + "/mcp", "https://" + h} {
			es, eerr := eager.Resource(raw)
			ls, lerr := lazy.Resource(raw)
			if es != ls || eerr != lerr {
				t.Errorf("Resource(%q): lazy %+v %v, eager %+v %v", raw, ls, lerr, es, eerr)
			}
		}
		if e, l := eager.IsIssuer("https://"+h), lazy.IsIssuer("https://"+h); e != l {
			t.Errorf("IsIssuer(https://%s): lazy %v, eager %v", h, l, e)
		}
	}
	if e, l := eager.IssuableScopes(), lazy.IssuableScopes(); !reflect.DeepEqual(e, l) {
		t.Errorf("IssuableScopes: lazy %v, eager %v", l, e)
	}

	// A table whose proxies did not load owns nothing: no host, no
	// resource, no issuer.
	empty := NewLazy(func() []*config.Proxy { return nil }, eager.oauth)
	if _, ok := empty.Site("secret.corp.test"); ok {
		t.Error("an unloaded table owns secret.corp.test")
	}
	if _, err := empty.Resource("https://secret.corp.test/mcp"); err == nil {
		t.Error("an unloaded table resolves a resource")
	}
	if empty.IsIssuer("https://secret.corp.test") {
		t.Error("an unloaded table accepts an issuer")
	}
}
