// Package proxy forwards a proxy's requests to its MCP backend: path
// routes, header policy, streaming without buffering, and upstream
// failures as small JSON errors. Backends are reached over HTTP/1.1
// through h1Transport, which pools a connection only when no response
// could have desynchronised it, on a direct path (forward.go) for all but
// WebSocket upgrades and requests with trailers, which take
// httputil.ReverseProxy.
package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/metrics"
)

// IdentityPrefix is reserved for headers mcpgate sets for the backend; any
// client-supplied header with it, in any case, is removed on the way to
// the backend, as is every header whose name could be read as one of them
// (X_MCPGate_User; see plainName).
const IdentityPrefix = "X-Mcpgate-"

type identityKey struct{}

// WithIdentity attaches who the resource server verified to a request's
// context; the backend receives it as X-MCPGate-User, X-MCPGate-Scopes and
// X-MCPGate-Client-Id.
func WithIdentity(ctx context.Context, who *identity.Principal) context.Context {
	return context.WithValue(ctx, identityKey{}, who)
}

// IdentityFrom returns the principal attached by WithIdentity.
func IdentityFrom(ctx context.Context) (*identity.Principal, bool) {
	who, ok := ctx.Value(identityKey{}).(*identity.Principal)
	return who, ok && who != nil
}

// Handler proxies one proxy's requests.
type Handler struct {
	name    string
	cfg     *config.Proxy
	log     *slog.Logger
	def     *upstream
	routes  []routeUp // longest prefix first
	headers config.Headers
	buffers httputil.BufferPool // copy buffers; a field so a test can count them

	endCtx     context.Context // done when open streams must end
	endStreams context.CancelFunc
	detached   sync.WaitGroup // streams served outside net/http (detach.go)
	access     AccessWatcher  // nil: streams are not watched (no OAuth)
}

// AccessWatcher ends a stream when the access it was opened with is
// withdrawn: the bearer check runs once, when a stream begins, and a
// stream may stay open for hours after its token was revoked.
type AccessWatcher interface {
	// Watch calls end, once, when who's token is revoked, until stop.
	Watch(who *identity.Principal, end func()) (stop func())
}

// WatchAccess sets the watcher of every stream; before serving.
func (h *Handler) WatchAccess(a AccessWatcher) { h.access = a }

// openStream counts a stream of who (nil: no verified principal) and runs
// end when it must end early: at the drain's stream deadline
// (EndStreams), so clients resume on the new worker, or when who's token is
// revoked. release, once the stream is over, undoes both; it may be called
// more than once.
func (h *Handler) openStream(who *identity.Principal, end func()) (release func()) {
	stop := context.AfterFunc(h.endCtx, end)
	unwatch := h.watch(who, end)
	return streamOpened(func() { stop(); unwatch() })
}

// watch runs end when who's token is revoked, until stop. A stream whose
// request passed no bearer check (auth not required, public paths) has
// no principal, and is not watched.
//
// The token's expiry does not end a stream: it is routine (every
// access_token_ttl), and MCP clients refresh for their next request, not
// for a stream they hold; a client whose GET stream ended at each expiry
// saw it as a failure (the Go SDK with retries off). Access is withdrawn
// by revocation, which ends every stream, and by a policy change, whose
// reload drains the old workers and ends their streams.
func (h *Handler) watch(who *identity.Principal, end func()) (stop func()) {
	if h.access == nil || who == nil {
		return func() {}
	}
	return h.access.Watch(who, end)
}

type routeUp struct {
	prefix string
	up     *upstream
}

type upstream struct {
	url *url.URL
	rp  *httputil.ReverseProxy
	tr  interface{ CloseIdleConnections() }
	h1  *h1Transport // plain HTTP/1.1 backends: the direct path (forward.go)
}

// New builds the handler for p.
func New(p *config.Proxy, log *slog.Logger) (*Handler, error) {
	h := &Handler{name: p.Name, cfg: p, log: log, headers: p.Headers, buffers: copyBuffers}
	h.endCtx, h.endStreams = context.WithCancel(context.Background())
	var err error
	if h.def, err = h.newUpstream(p.Target); err != nil {
		return nil, err
	}
	for _, r := range p.Routes {
		up, err := h.newUpstream(r.Target)
		if err != nil {
			return nil, err
		}
		h.routes = append(h.routes, routeUp{prefix: r.Path, up: up})
	}
	return h, nil
}

func (h *Handler) newUpstream(t config.Upstream) (*upstream, error) {
	u := &url.URL{Scheme: t.Scheme, Host: t.Host, Path: t.Path}
	dialer := &net.Dialer{Timeout: h.cfg.Timeouts.Connect, KeepAlive: 30 * time.Second}
	// Every backend, plain or https, TCP or unix socket, is reached over
	// HTTP/1.1 with mcpgate's own client, which never reuses a connection
	// a response could have desynchronised (see h1Transport). https
	// backends are asked for HTTP/1.1 only (ALPN): http.Transport would
	// pool their connections with the same race as plain ones.
	h1 := &h1Transport{
		respHeaderTimeout: h.cfg.Timeouts.ResponseHeader,
		idleTimeout:       90 * time.Second,
		maxIdle:           256,
	}
	addr := t.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if t.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), port)
	}
	switch {
	case t.Socket != "":
		sock := t.Socket
		h1.dial = func(ctx context.Context) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
	case t.Scheme == "https":
		host, _, _ := net.SplitHostPort(addr)
		h1.tls = &tls.Config{
			ServerName:         host,
			NextProtos:         []string{"http/1.1"},
			MinVersion:         tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(64),
		}
		h1.dial = func(ctx context.Context) (net.Conn, error) {
			if d := h.cfg.Timeouts.Connect; d > 0 {
				// The handshake too, as http.Transport's TLSHandshakeTimeout.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			c, err := dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, h1.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		}
	default:
		h1.dial = func(ctx context.Context) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}
	}
	rt := http.RoundTripper(h1)
	up := &upstream{url: u, tr: h1, h1: h1}
	up.rp = &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { h.rewrite(pr, up) },
		Transport:      &endTransport{rt: rt, h: h},
		BufferPool:     h.buffers,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.errorHandler,
		ErrorLog:       slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		// FlushInterval 0: ReverseProxy already flushes every write of
		// text/event-stream and unknown-length responses, which is what
		// MCP streaming needs, and batches the rest.
	}
	return up, nil
}

// copyBuffers recycles ReverseProxy's copy buffers: without a pool it
// allocates 32 KiB per response, which was 70 % of a worker's allocated
// bytes under load (make bench, Go allocation profile).
var copyBuffers httputil.BufferPool = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte    { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := h.pick(r.URL.Path)
	if up.h1 != nil && direct(r) {
		h.forward(w, r, up)
		return
	}
	up.rp.ServeHTTP(w, r)
}

func (h *Handler) pick(path string) *upstream {
	for _, rt := range h.routes {
		if MatchPrefix(path, rt.prefix) {
			return rt.up
		}
	}
	return h.def
}

// MatchPrefix reports whether path is prefix or lies below it, on a path
// segment boundary: "/token" matches "/token" and "/token/x", not "/tokens".
func MatchPrefix(path, prefix string) bool {
	if prefix == "/" {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

func (h *Handler) rewrite(pr *httputil.ProxyRequest, up *upstream) {
	pr.SetURL(up.url)
	// Rewrite has already dropped the client's X-Forwarded-*; these are set
	// from the real connection (RemoteAddr comes from the PROXY header).
	pr.SetXForwarded()
	out := pr.Out.Header
	out.Del("Forwarded")
	out.Del("X-Real-Ip")
	// Before the identity is set: nothing the client sent may sit beside
	// it under a name the backend could read as the same header.
	h.dropHeaders(out, "header")
	// Request trailers are declared to the backend in a Trailer field
	// built from this map.
	h.dropHeaders(pr.Out.Trailer, "trailer")
	stripGatewayCookies(out)
	if restrictUpgrade(out) {
		h.log.Debug("dropped a request's protocol switch other than WebSocket", "path", pr.In.URL.Path)
	}
	if who, ok := IdentityFrom(pr.In.Context()); ok {
		out.Set(IdentityPrefix+"User", who.Login)
		out.Set(IdentityPrefix+"Scopes", who.Scope())
		out.Set(IdentityPrefix+"Client-Id", who.ClientID)
	}
	// The access log's id, which it checked; a client's own id never
	// passes unchecked.
	if rec := logging.RequestFrom(pr.In.Context()); rec != nil {
		out[logging.RequestIDHeader] = []string{rec.ID}
	} else {
		out.Del(logging.RequestIDHeader)
	}
	if h.cfg.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	for _, k := range h.headers.RemoveRequest {
		out.Del(k)
	}
	for k, v := range h.headers.Request {
		out.Set(k, v)
	}
}

func (h *Handler) modifyResponse(res *http.Response) error {
	if err := checkSwitch(res); err != nil {
		return err
	}
	if n := dropGatewaySetCookies(res.Header); n > 0 {
		h.log.Debug("dropped the backend's Set-Cookie for mcpgate's cookies", "count", n)
	}
	// Clear-Site-Data "cookies" would wipe mcpgate's cookies (logins in
	// progress) along with the backend's: the backend may clear its own
	// with Set-Cookie, never the gateway's.
	res.Header.Del("Clear-Site-Data")
	// The client already has the gateway's request id (set by the access
	// log); the backend's copy would make it two.
	res.Header.Del(logging.RequestIDHeader)
	for _, k := range h.headers.RemoveResponse {
		res.Header.Del(k)
	}
	for k, v := range h.headers.Response {
		res.Header.Set(k, v)
	}
	return nil
}

// errorHandler answers upstream failures with a small JSON body naming the
// proxy; the cause goes to the log only.
func (h *Handler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; nothing to answer.
		h.log.Debug("client canceled request", "path", r.URL.Path)
		return
	}
	status, code, msg := http.StatusBadGateway, "bad_gateway", "the MCP server behind this proxy could not be reached"
	switch {
	case isTimeout(err):
		status, code, msg = http.StatusGatewayTimeout, "gateway_timeout", "the MCP server behind this proxy did not answer in time"
	case errors.Is(err, errUpgradeRefused):
		msg = "the MCP server behind this proxy switched to a protocol mcpgate does not relay"
	}
	metrics.Default.UpstreamError(upstreamKind(err))
	h.log.Warn("upstream error", "path", r.URL.Path, "status", status, "err", err)
	WriteJSONError(w, status, code, msg, h.name)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// http.Transport's ResponseHeaderTimeout error is not a net.Error.
	return strings.Contains(err.Error(), "timeout awaiting response headers")
}

// WriteJSONError writes {"error": code, "message": msg, "proxy": proxy}.
func WriteJSONError(w http.ResponseWriter, status int, code, msg, proxy string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Proxy   string `json:"proxy"`
	}{code, msg, proxy})
}

// EndStreams ends every open streaming response cleanly (drain deadline).
func (h *Handler) EndStreams() { h.endStreams() }

// CloseIdle closes idle upstream connections (on drain).
func (h *Handler) CloseIdle() {
	h.def.tr.CloseIdleConnections()
	for _, rt := range h.routes {
		rt.up.tr.CloseIdleConnections()
	}
}
