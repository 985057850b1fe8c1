package supervisor

import (
	"encoding/json"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// gatewayView is the spec's Gateway: every enabled proxy with only what
// the worker's policy reads of the others (name, host names, [auth]). The
// full entries made each worker's spec O(proxies) large: at 500 proxies
// 291 KB that every worker read and decoded at start-up (as much CPU as
// the rest of a worker's start) and kept, about 0.4 MiB of private memory
// per worker. A worker has its own proxy in full in Spec.Proxy.
func gatewayView(enabled []*config.Proxy) []*config.Proxy {
	out := make([]*config.Proxy, len(enabled))
	for i, p := range enabled {
		out[i] = &config.Proxy{Name: p.Name, Enabled: p.Enabled, Hostnames: p.Hostnames, Auth: p.Auth}
	}
	return out
}

// gatewayEntry is how a gatewayView entry is written to a worker: the
// JSON of config.Proxy without the members that decode to zero values
// anyway, so a worker (of any build) decodes it to the same config.Proxy:
// ≈110 bytes a proxy instead of 330 with the zero fields.
type gatewayEntry struct {
	Name      string      `json:"name"`
	Enabled   bool        `json:"enabled"`
	Hostnames []string    `json:"hostnames"`
	Auth      gatewayAuth `json:"auth"`
}

// gatewayAuth is config.Auth with Users left out when all its lists are
// nil (inherit); an empty list is written as []. TestGatewayAuthFields
// fails when config.Auth gains a field this does not carry.
type gatewayAuth struct {
	Required     bool          `json:"required"`
	Scopes       []string      `json:"scopes"`
	ResourcePath string        `json:"resource_path"`
	PublicPaths  []string      `json:"public_paths,omitempty"`
	Users        *config.Users `json:"users,omitempty"`
}

func newGatewayEntry(p *config.Proxy) gatewayEntry {
	a := p.Auth
	e := gatewayEntry{Name: p.Name, Enabled: p.Enabled, Hostnames: p.Hostnames,
		Auth: gatewayAuth{Required: a.Required, Scopes: a.Scopes, ResourcePath: a.ResourcePath, PublicPaths: a.PublicPaths}}
	if u := a.Users; u.Allowed != nil || u.Admin != nil || u.User != nil || u.MCP != nil {
		e.Auth.Users = &u
	}
	return e
}

// gatewayCache holds the encoded Gateway of the latest configuration:
// every worker of one apply shares the same view, so it is encoded once,
// not once per worker (500 × 500 entries at a start of 500 proxies).
var gatewayCache struct {
	sync.Mutex
	key *config.Proxy // the view's first entry identifies it
	n   int
	b   json.RawMessage
}

func encodeGateway(g []*config.Proxy) json.RawMessage {
	if len(g) == 0 {
		return nil
	}
	gatewayCache.Lock()
	defer gatewayCache.Unlock()
	if gatewayCache.key == g[0] && gatewayCache.n == len(g) {
		return gatewayCache.b
	}
	es := make([]gatewayEntry, len(g))
	for i, p := range g {
		es[i] = newGatewayEntry(p)
	}
	b, _ := json.Marshal(es)
	gatewayCache.key, gatewayCache.n, gatewayCache.b = g[0], len(g), b
	return b
}

// encodeSpec is the spec as the worker reads it from FdSpec: the rest of
// the spec marshalled, the cached Gateway spliced in as the last member
// (marshalling it as a json.RawMessage would validate it again for every
// worker: half the supervisor's CPU at a start of 500 proxies).
func encodeSpec(spec wire.Spec) []byte {
	gw := encodeGateway(spec.Gateway)
	spec.Gateway = nil // omitempty: not written
	b, _ := json.Marshal(spec)
	if len(gw) == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+len(wire.GatewayMember)+len(gw))
	out = append(out, b[:len(b)-1]...) // without the closing brace
	out = append(out, wire.GatewayMember...)
	out = append(out, gw...)
	return append(out, '}')
}

// fitPipe grows the pipe w to hold n bytes where the kernel lets it (a
// spec of hundreds of proxies is larger than the default 64 KiB), so the
// write of the spec does not wait for the worker to read it.
func fitPipe(w *os.File, n int) {
	if n <= 64<<10 {
		return
	}
	if rc, err := w.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, n) })
	}
}
