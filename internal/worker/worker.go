// Package worker is `mcpgate worker <proxy>`: the process that serves one
// proxy. It receives connections from the supervisor, terminates TLS,
// serves HTTP/2 and HTTP/1.1, and proxies to the backend.
package worker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpgate/mcpgate/internal/buildinfo"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/proxy"
	"github.com/mcpgate/mcpgate/internal/tlscert"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// HealthPath answers without touching the backend.
const HealthPath = "/.well-known/mcpgate/health"

// Worker serves one proxy.
type Worker struct {
	spec    *Spec
	log     *slog.Logger
	hc      *handoff.Conn
	started time.Time

	tlsL, httpL *handoff.Listener
	https, http *http.Server
	proxy       *proxy.Handler
	policy      *policy.Table
	oauth       *oauth
	h3          *h3 // nil without HTTP/3

	serving   sync.WaitGroup // the Serve loops; done once every queued connection was accepted
	conns     atomic.Int64   // open client connections
	fresh     atomic.Int64   // connections that have not started a request yet
	newConns  sync.Map       // net.Conn → struct{}: the fresh ones
	drainOnce sync.Once
	drained   chan struct{}

	draining atomic.Bool
	h1mu     sync.Mutex
	h1       map[net.Conn]h1conn // guarded by h1mu; connections not known to be HTTP/2
}

type h1conn struct {
	state http.ConnState
	since time.Time
}

// trackH1 follows the HTTP/1 connections' states (HTTP/2 ones are dropped
// once their protocol is known).
func (w *Worker) trackH1(c net.Conn, st http.ConnState) {
	w.h1mu.Lock()
	defer w.h1mu.Unlock()
	if w.h1 == nil {
		w.h1 = map[net.Conn]h1conn{}
	}
	if tc, ok := c.(*tls.Conn); ok && st != http.StateNew && tc.ConnectionState().NegotiatedProtocol == "h2" {
		delete(w.h1, c)
		return
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(w.h1, c)
	default:
		w.h1[c] = h1conn{st, time.Now()}
	}
}

// h1MayCarryRequest reports whether some HTTP/1 connection may have a
// request on its way that Shutdown would drop: a new one, one idle for less
// than grace, or an active one — its response may have started before the
// drain without "Connection: close", and Shutdown closes the connection
// right after it, under a client that is already sending its next request.
func (w *Worker) h1MayCarryRequest(grace time.Duration) bool {
	w.h1mu.Lock()
	defer w.h1mu.Unlock()
	for _, h := range w.h1 {
		switch {
		case h.state == http.StateNew, h.state == http.StateActive:
			return true
		case h.state == http.StateIdle && time.Since(h.since) < grace:
			return true
		}
	}
	return false
}

// Run serves until the supervisor asks for a drain or goes away.
func Run(name string, log *slog.Logger) error {
	spec, err := ReadSpec()
	if err != nil {
		return err
	}
	if spec.Proxy.Name != name {
		return fmt.Errorf("worker: started for %q but spec is for %q", name, spec.Proxy.Name)
	}
	hf := os.NewFile(FdHandoff, "handoff")
	if hf == nil {
		return errors.New("worker: no hand-off descriptor")
	}
	hc, err := handoff.FromFile(hf)
	hf.Close()
	if err != nil {
		return err
	}
	w := &Worker{spec: spec, log: log, hc: hc, started: time.Now(), drained: make(chan struct{})}
	return w.run()
}

func (w *Worker) run() error {
	p := w.spec.Proxy
	cert, err := w.certificate()
	if err != nil {
		return fmt.Errorf("worker %s: certificate: %w", p.Name, err)
	}
	ph, err := proxy.New(p, w.log)
	if err != nil {
		return fmt.Errorf("worker %s: %w", p.Name, err)
	}
	w.proxy = ph
	w.policy = policy.New(w.spec.Gateway, w.spec.OAuth)
	if w.oauth, err = w.setupOAuth(); err != nil {
		return fmt.Errorf("worker %s: oauth: %w", p.Name, err)
	}
	defer w.oauth.close()
	stopPprof, err := w.servePprof()
	if err != nil {
		return fmt.Errorf("worker %s: %w", p.Name, err)
	}
	defer stopPprof()
	w.tlsL = handoff.NewListener(&net.UnixAddr{Name: "handoff-https", Net: "unixpacket"})
	w.httpL = handoff.NewListener(&net.UnixAddr{Name: "handoff-http", Net: "unixpacket"})

	chain := logging.Access(w.log, w.handler())
	tlsConf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if w.h3, err = w.startHTTP3(tlsConf, chain); err != nil {
		return fmt.Errorf("worker %s: %w", p.Name, err)
	}
	w.https = &http.Server{
		Handler:           w.h3.advertise(chain),
		ConnState:         w.countConns,
		ConnContext:       connContext,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
	}
	w.http = &http.Server{
		Handler:           logging.Access(w.log, http.HandlerFunc(w.redirect)),
		ConnState:         w.countConns,
		ConnContext:       connContext,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
	}
	w.serving.Add(2)
	go func() { defer w.serving.Done(); w.https.ServeTLS(w.tlsL, "", "") }()
	go func() { defer w.serving.Done(); w.http.Serve(w.httpL) }()

	// SIGTERM straight to a worker (e.g. systemd's stop when the supervisor
	// is gone) means the same as a drain request.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// SIGHUP goes to the whole process group from a terminal; the
	// supervisor decides about reloads.
	signal.Ignore(syscall.SIGHUP)

	ready, _ := json.Marshal(Ready{
		Protocol: wire.Protocol, PID: os.Getpid(), Proxy: p.Name, Version: buildinfo.Version(), BuildID: buildinfo.ID(),
		ConfigHash: p.Hash, Started: w.started,
	})
	if err := w.hc.Send(wire.KindReady, ready); err != nil {
		return fmt.Errorf("worker %s: reporting ready: %w", p.Name, err)
	}
	w.log.Info("worker serving", "build_id", buildinfo.ID(), "generation", w.spec.Generation)

	go w.receive()
	go w.reportStats()
	go func() {
		<-sigs
		w.drain()
	}()
	<-w.drained
	return nil
}

// receive takes connections and control messages from the supervisor.
func (w *Worker) receive() {
	for {
		m, err := w.hc.Recv()
		if err != nil {
			if handoff.IsClosed(err) {
				// The supervisor is gone: exit rather than linger as an
				// orphan nobody routes to.
				w.log.Warn("supervisor went away; exiting")
				w.exitNow()
				return
			}
			w.log.Error("hand-off socket", "err", err)
			w.exitNow()
			return
		}
		switch m.Kind {
		case wire.KindTLS, wire.KindHTTP:
			if m.File == nil {
				continue
			}
			c, err := handoff.ParseConn(m.File, m.Payload)
			if err != nil {
				w.log.Warn("bad hand-off", "err", err)
				continue
			}
			l := w.tlsL
			if m.Kind == wire.KindHTTP {
				l = w.httpL
			}
			// In order, before any later drain message closes the
			// listener: a connection sent before the drain is served.
			if err := l.Deliver(c, 10*time.Second); err != nil {
				w.log.Warn("connection dropped", "err", err)
			}
		case wire.KindDrain:
			go w.drain()
		default:
			if m.File != nil {
				m.File.Close()
			}
		}
	}
}

func (w *Worker) exitNow() {
	w.https.Close()
	w.http.Close()
	os.Exit(1)
}

// streamEndGrace is how long handlers get to finish the responses whose
// streams were ended at the drain deadline.
const streamEndGrace = 2 * time.Second

// drain stops taking connections, lets requests finish, ends open streams
// cleanly at the drain deadline and closes whatever is left after that.
func (w *Worker) drain() {
	w.drainOnce.Do(func() {
		start := time.Now()
		w.log.Info("draining", "timeout", w.spec.DrainTimeout.String(), "connections", w.conns.Load())
		w.tlsL.Close()
		w.httpL.Close()
		// Queued connections are accepted before Serve returns, so
		// Shutdown below waits for them too.
		w.serving.Wait()
		// A connection handed over just before the drain may not have sent
		// its first request yet; HTTP/2's GOAWAY would refuse that request
		// (last stream 0), and not every client retries. Let fresh
		// connections start their first request first, briefly.
		w.awaitFresh(min(time.Second, w.spec.DrainTimeout/4))
		// HTTP/1: answer every further request with Connection: close, and
		// call Shutdown (which closes idle connections at once and drops
		// requests it reads afterwards) only when no keep-alive connection
		// may have a request on its way.
		w.draining.Store(true)
		grace := min(time.Second, w.spec.DrainTimeout/4)
		for end := time.Now().Add(w.spec.DrainTimeout / 2); w.h1MayCarryRequest(grace) && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
		// At the drain deadline open streams (SSE over any protocol) end
		// cleanly, so clients reconnect with Last-Event-ID; the servers get
		// a short grace to finish those responses, then are closed.
		endStreams := time.AfterFunc(w.spec.DrainTimeout, func() {
			w.log.Info("drain deadline reached; ending open streams", "connections", w.conns.Load())
			w.proxy.EndStreams()
		})
		defer endStreams.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), w.spec.DrainTimeout+streamEndGrace)
		defer cancel()
		h3done := make(chan struct{})
		go func() {
			defer close(h3done)
			w.h3.shutdown(ctx)
		}()
		// Shutdown sends HTTP/2 GOAWAY and closes idle connections, but
		// waits forever on streams that never go idle: bounded by ctx.
		if shutdownAll(ctx, w.https, w.http) != nil {
			w.https.Close()
			w.http.Close()
		}
		<-h3done
		w.proxy.CloseIdle()
		w.log.Info("drained", "took", time.Since(start).Round(time.Millisecond).String())
		close(w.drained)
	})
}

func shutdownAll(ctx context.Context, srvs ...*http.Server) error {
	errs := make(chan error, len(srvs))
	for _, srv := range srvs {
		go func() { errs <- srv.Shutdown(ctx) }()
	}
	var first error
	for range srvs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// countConns tracks open connections, and those that have not reached a
// handler yet ("fresh"; HTTP/2 leaves StateNew at the preface, before its
// first request, so the state alone does not tell).
func (w *Worker) countConns(c net.Conn, st http.ConnState) {
	w.trackH1(c, st)
	switch st {
	case http.StateNew:
		w.conns.Add(1)
		w.fresh.Add(1)
		w.newConns.Store(c, struct{}{})
	case http.StateClosed, http.StateHijacked:
		w.conns.Add(-1)
		w.markUsed(c)
	}
}

type connKey struct{}

// connContext makes the connection known to handlers, for markUsed.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// markUsed records that a connection has started a request.
func (w *Worker) markUsed(c any) {
	if c == nil {
		return
	}
	if _, was := w.newConns.LoadAndDelete(c); was {
		w.fresh.Add(-1)
	}
}

func (w *Worker) awaitFresh(max time.Duration) {
	deadline := time.Now().Add(max)
	for w.fresh.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// reportStats tells the supervisor the open connection count when it
// changes, for `mcpgate status`.
func (w *Worker) reportStats() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case <-t.C:
		case <-w.drained:
			return
		}
		n := w.conns.Load()
		if n == last {
			continue
		}
		last = n
		b, _ := json.Marshal(Stats{Protocol: wire.Protocol, Connections: n})
		if err := w.hc.Send(wire.KindStats, b); err != nil {
			return
		}
	}
}

// certificate loads the configured key pair or the self-signed one.
func (w *Worker) certificate() (tls.Certificate, error) {
	t := w.spec.Proxy.TLS
	if t.SelfSigned {
		return tlscert.SelfSigned(w.spec.StateDir, w.spec.Proxy.Name, w.spec.Proxy.Hostnames)
	}
	return tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
}

// handler is the HTTPS request chain: host check, health, the OAuth
// endpoints, then the bearer check in front of the proxy.
func (w *Worker) handler() http.Handler {
	protected := w.oauth.guard.Wrap(w.proxy)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.markUsed(r.Context().Value(connKey{}))
		if w.draining.Load() && r.ProtoMajor == 1 {
			rw.Header().Set("Connection", "close")
		}
		if !w.ownsHost(r.Host) {
			// Coalesced HTTP/2 connections and domain fronting carry a Host
			// this worker does not serve.
			proxy.WriteJSONError(rw, http.StatusMisdirectedRequest, "misdirected_request",
				"this connection does not serve the requested host", w.spec.Proxy.Name)
			return
		}
		if r.URL.Path == HealthPath {
			w.health(rw, r)
			return
		}
		if w.oauth.server != nil && w.oauth.server.Handle(rw, r) {
			return
		}
		protected.ServeHTTP(rw, r)
	})
}

// ownsHost: this worker serves a Host only when policy names its proxy as
// the host's most specific owner. A wildcard proxy's connection carrying an
// exact proxy's Host (coalescing, fronting) is misdirected, never served
// under the wildcard's policy.
func (w *Worker) ownsHost(hostport string) bool {
	p := w.policy.Owner(hostport)
	return p != nil && p.Name == w.spec.Proxy.Name
}

func stripPort(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

func (w *Worker) health(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET, HEAD")
		http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(rw).Encode(map[string]any{
		"status":      "ok",
		"proxy":       w.spec.Proxy.Name,
		"version":     buildinfo.Version(),
		"build_id":    buildinfo.ID(),
		"pid":         os.Getpid(),
		"config_hash": w.spec.Proxy.Hash,
		"started":     w.started.UTC().Format(time.RFC3339),
		"generation":  w.spec.Generation,
	})
}

// redirect answers the plain-HTTP listener: 308 to the same URL on HTTPS.
func (w *Worker) redirect(rw http.ResponseWriter, r *http.Request) {
	w.markUsed(r.Context().Value(connKey{}))
	if w.draining.Load() {
		rw.Header().Set("Connection", "close")
	}
	host := stripPort(r.Host)
	if !w.ownsHost(r.Host) {
		http.Error(rw, "no proxy is set up for this host", http.StatusNotFound)
		return
	}
	if port := w.spec.HTTPSPort; port != 0 && port != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(port))
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	target := "https://" + host + r.URL.RequestURI()
	rw.Header().Set("Location", target)
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(http.StatusPermanentRedirect)
	io.WriteString(rw, "use HTTPS: "+target+"\n")
}
