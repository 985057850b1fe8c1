package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
)

// Load reads the configuration directory dir: mcpgate.toml (optional) and
// one <name>.toml per proxy. If anything is wrong it returns an ErrorList
// with every problem in every file, sorted by file and line.
func Load(dir string) (*Config, error) {
	return LoadWith(dir, Options{})
}

// Options change how LoadWith looks at what lies outside the directory.
type Options struct {
	// Credential resolves client_secret_credential names where
	// $CREDENTIALS_DIRECTORY is not set (a shell, not the service), for
	// `mcpgate check`. It returns the file holding the credential, "" and
	// nil when the credential exists but cannot be read here (the caller
	// reports that itself), or an error, reported at the key. Nil: such a
	// name is an error, as in Load.
	Credential func(name string) (path string, err error)
}

// LoadWith is Load with options.
func LoadWith(dir string, o Options) (*Config, error) {
	l, err := newLoader(dir)
	if err != nil {
		return nil, err
	}
	l.opts = o
	g := l.global()
	proxies := l.proxies()
	oauth := l.oauth(g, proxies)
	acme := l.acme(g)
	var st *Store
	if g.file != nil {
		st = l.store(g.file, g.schema.Store)
	}
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}
	cfg := &Config{Dir: l.abs, Server: *g.server, OAuth: oauth, Store: st, ACME: acme, Proxies: make([]*Proxy, len(proxies))}
	for i, lp := range proxies {
		lp.proxy.Hash = lp.proxy.hash(oauth, acme, st)
		cfg.Proxies[i] = lp.proxy
	}
	return cfg, nil
}

// LoadGlobal reads only mcpgate.toml from dir. It lets a caller find the
// state directory even when a proxy file is broken. It reports keys that
// cannot be decoded anywhere in the file, but checks [oauth] and [idp]
// no further: those checks read secret files and $CREDENTIALS_DIRECTORY,
// which an operator's shell (`mcpgate reload`) may not see.
func LoadGlobal(dir string) (*Server, error) {
	l, err := newLoader(dir)
	if err != nil {
		return nil, err
	}
	g := l.global()
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}
	return g.server, nil
}

// loader holds what one Load call has found so far.
type loader struct {
	dir  string // as passed in; errors name files below it
	abs  string // absolute; relative paths in values are resolved against it
	errs ErrorList
	// noOAuth: mcpgate.toml certainly has no [oauth] (absent, or parsed
	// without one), so proxies requiring auth are errors.
	noOAuth bool
	opts    Options
}

func newLoader(dir string) (*loader, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, ErrorList{{File: dir, Msg: err.Error(), err: err}}
	}
	// Checked up front so that a mistyped directory is an error even for
	// LoadGlobal, rather than a silent "no mcpgate.toml, all defaults".
	info, err := os.Stat(dir)
	if err != nil {
		return nil, ErrorList{ioError(dir, err)}
	}
	if !info.IsDir() {
		return nil, ErrorList{{File: dir, Msg: "not a directory"}}
	}
	return &loader{dir: dir, abs: abs}, nil
}

// path resolves a path from a config value against the config directory.
func (l *loader) path(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(l.abs, p)
}

// proxyName is what a proxy file may be called (without .toml): the name
// ends up in process titles and logs, so it must be plain.
var proxyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// loadedProxy is a proxy with what cross-file checks need to know about
// where it came from.
type loadedProxy struct {
	proxy     *Proxy
	file      *file
	hostLines []int // line of each of proxy.Hostnames
}

// proxies loads every proxy file in the directory, in name order, and checks
// that no two enabled proxies claim the same hostname.
func (l *loader) proxies() []*loadedProxy {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		l.errs = append(l.errs, ioError(l.dir, err))
		return nil
	}
	var out []*loadedProxy
	for _, e := range entries { // ReadDir sorts by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".toml") || name == GlobalFile {
			continue
		}
		display := filepath.Join(l.dir, name)
		if !e.Type().IsRegular() {
			// Follow symlinks (e.g. into a sites-available directory); a
			// dangling one is reported, anything else not a file ignored.
			info, err := os.Stat(display)
			if err != nil {
				l.errs = append(l.errs, ioError(display, err))
				continue
			}
			if !info.Mode().IsRegular() {
				continue
			}
		}
		base := strings.TrimSuffix(name, ".toml")
		if !proxyName.MatchString(base) {
			l.errs = append(l.errs, &Error{File: display, Msg: fmt.Sprintf(
				"%q is not a valid proxy name: use letters, digits, '_', '.' and '-', starting with a letter or digit", base)})
			continue
		}
		f, doc := readFile(display, &l.errs)
		if f == nil {
			continue
		}
		var pf proxyFile
		f.bind(nil, doc, reflect.ValueOf(&pf).Elem())
		out = append(out, l.proxy(f, base, filepath.Join(l.abs, name), &pf))
	}
	l.checkHostnameConflicts(out)
	return out
}

// checkHostnameConflicts reports a hostname claimed by two enabled proxies at
// the later file, naming the earlier one, so the operator sees both places.
func (l *loader) checkHostnameConflicts(proxies []*loadedProxy) {
	type claim struct {
		file string
		line int
	}
	claimed := map[string]claim{}
	for _, lp := range proxies {
		if !lp.proxy.Enabled {
			continue
		}
		for i, h := range lp.proxy.Hostnames {
			if c, ok := claimed[h]; ok {
				where := c.file
				if c.line > 0 {
					where = fmt.Sprintf("%s:%d", c.file, c.line)
				}
				l.errs = append(l.errs, &Error{
					File: lp.file.name,
					Line: lp.hostLines[i],
					Key:  "hostnames",
					Msg:  fmt.Sprintf("%q is also claimed by %s", h, where),
				})
				continue
			}
			claimed[h] = claim{lp.file.name, lp.hostLines[i]}
		}
	}
}

// hash identifies the proxy's effective configuration, so a reload can tell
// which workers need restarting. Every proxy host runs the authorization
// server and inherits the global user lists, so [oauth] is part of it; so
// is [acme] for a proxy that gets its certificates there (only then, so
// that editing [acme] restarts no other worker), and [store]. encoding/json
// sorts map keys, which keeps it stable.
func (p *Proxy) hash(oauth *OAuth, acme *ACME, st *Store) string {
	c := *p
	c.Hash = ""
	if !p.TLS.ACME {
		acme = nil
	}
	b, err := json.Marshal(struct {
		Proxy *Proxy `json:"proxy"`
		OAuth *OAuth `json:"oauth"`
		ACME  *ACME  `json:"acme,omitempty"`
		Store *Store `json:"store,omitempty"` // omitted when nil: hashes of old configs stay
	}{&c, oauth, acme, st})
	if err != nil {
		panic("config: marshal proxy: " + err.Error()) // only plain types inside
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Summary describes the proxy on one line, for `mcpgate check`.
func (p *Proxy) Summary() string {
	tls := "files"
	switch {
	case p.TLS.SelfSigned:
		tls = "self-signed"
	case p.TLS.ACME:
		tls = "acme"
	}
	s := fmt.Sprintf("%s: %s -> %s (routes: %d, tls: %s, auth: %s)",
		p.Name, strings.Join(p.Hostnames, ", "), p.Target.Raw, len(p.Routes), tls, p.Auth.summary())
	if !p.Enabled {
		s += " (disabled)"
	}
	return s
}
