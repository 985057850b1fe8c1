// Package config reads mcpgate's TOML files and turns them into immutable
// runtime values. The file schema (schema.go) is kept apart from the runtime
// types here, so the rest of mcpgate never sees TOML details.
package config

import (
	"strings"
	"time"
)

// Defaults applied when a key is omitted. An explicit empty list is kept as
// "none"; only an omitted key takes these.
var (
	DefaultHTTPS          = []string{"127.0.0.1:8443"}
	DefaultHTTP           = []string{"127.0.0.1:8080"}
	DefaultStateDir       = "/var/lib/mcpgate"
	DefaultDrainTimeout   = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	// MCP tool calls answered with application/json send their headers only
	// when the tool finishes, so the header timeout must be generous.
	DefaultResponseHeaderTimeout = 5 * time.Minute
)

// GlobalFile is the name of the global settings file in the config
// directory; every other *.toml file there is one proxy.
const GlobalFile = "mcpgate.toml"

// Config is a validated configuration: the global settings and every proxy.
type Config struct {
	Dir     string   `json:"dir"`
	Server  Server   `json:"server"`
	Proxies []*Proxy `json:"proxies"` // sorted by Name; includes disabled ones
}

// Server holds the [server] table of mcpgate.toml.
type Server struct {
	File         string        `json:"file,omitempty"` // "" when mcpgate.toml is absent
	HTTPS        []string      `json:"https"`          // used only without socket activation
	HTTP         []string      `json:"http"`
	StateDir     string        `json:"state_dir"` // absolute
	DrainTimeout time.Duration `json:"drain_timeout"`
}

// Proxy is one proxied MCP server, from one <name>.toml file.
type Proxy struct {
	Name      string   `json:"name"`
	File      string   `json:"file"`
	Enabled   bool     `json:"enabled"`
	Hostnames []string `json:"hostnames"` // lower-case; "*.example.com" wildcards allowed
	Target    Upstream `json:"target"`
	// Routes send path prefixes to other upstreams; sorted longest prefix first.
	Routes       []Route  `json:"routes,omitempty"`
	PreserveHost bool     `json:"preserve_host,omitempty"`
	TLS          TLS      `json:"tls"`
	Headers      Headers  `json:"headers"`
	Timeouts     Timeouts `json:"timeouts"`
	// Hash identifies this proxy's effective configuration (hex sha256).
	Hash string `json:"hash"`
}

// Upstream is where requests go.
type Upstream struct {
	Raw    string `json:"raw"`              // as written in the file
	Scheme string `json:"scheme"`           // "http" or "https" ("http" for unix sockets)
	Host   string `json:"host"`             // host[:port]; the proxy name for unix sockets
	Path   string `json:"path,omitempty"`   // base path prefixed to every request path
	Socket string `json:"socket,omitempty"` // absolute unix socket path, or ""
}

// Route sends requests whose path is Path or below it (segment boundary:
// "/token" matches "/token" and "/token/x", never "/tokens") to Target.
type Route struct {
	Path   string   `json:"path"`
	Target Upstream `json:"target"`
}

// TLS says where a proxy's certificate comes from.
type TLS struct {
	CertFile   string `json:"cert_file,omitempty"` // absolute
	KeyFile    string `json:"key_file,omitempty"`  // absolute
	SelfSigned bool   `json:"self_signed,omitempty"`
}

// Headers are added to requests to the backend and to responses to clients.
type Headers struct {
	Request        map[string]string `json:"request,omitempty"`  // canonical names; set (replace)
	Response       map[string]string `json:"response,omitempty"` // canonical names; set (replace)
	RemoveRequest  []string          `json:"remove_request,omitempty"`
	RemoveResponse []string          `json:"remove_response,omitempty"`
}

// Timeouts bound the upstream connection. Streams have no read timeout.
type Timeouts struct {
	Connect        time.Duration `json:"connect"`
	ResponseHeader time.Duration `json:"response_header"`
}

// Enabled returns the enabled proxies.
func (c *Config) Enabled() []*Proxy {
	var out []*Proxy
	for _, p := range c.Proxies {
		if p.Enabled {
			out = append(out, p)
		}
	}
	return out
}

// Proxy returns the proxy with the given name, or nil.
func (c *Config) Proxy(name string) *Proxy {
	for _, p := range c.Proxies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// MatchHostname reports whether host (lower-case, no port) is one of names,
// exactly or through a "*.suffix" wildcard covering exactly one label.
func MatchHostname(names []string, host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, n := range names {
		if n == host {
			return true
		}
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			if i := strings.IndexByte(host, '.'); i > 0 && host[i+1:] == suffix {
				return true
			}
		}
	}
	return false
}
