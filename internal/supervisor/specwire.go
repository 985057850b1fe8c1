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
// JSON of config.Proxy without the fields the view leaves zero, which a
// worker (of any build) decodes to the same config.Proxy. 190 bytes a
// proxy instead of 330 with the zero fields.
type gatewayEntry struct {
	Name      string      `json:"name"`
	Enabled   bool        `json:"enabled"`
	Hostnames []string    `json:"hostnames"`
	Auth      config.Auth `json:"auth"`
}

// specJSON is wire.Spec as written to a worker, Gateway in its compact
// form (the outer field shadows the embedded one).
type specJSON struct {
	wire.Spec
	Gateway json.RawMessage `json:"gateway,omitempty"`
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
		es[i] = gatewayEntry{Name: p.Name, Enabled: p.Enabled, Hostnames: p.Hostnames, Auth: p.Auth}
	}
	b, _ := json.Marshal(es)
	gatewayCache.key, gatewayCache.n, gatewayCache.b = g[0], len(g), b
	return b
}

// encodeSpec is the spec as the worker reads it from FdSpec.
func encodeSpec(spec wire.Spec) []byte {
	b, _ := json.Marshal(specJSON{Spec: spec, Gateway: encodeGateway(spec.Gateway)})
	return b
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
