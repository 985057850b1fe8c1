// Package worker is `mcpgate worker <proxy>`: the process that serves one
// proxy. It receives connections from the supervisor, terminates TLS,
// serves HTTP/2 and HTTP/1.1, and proxies to the backend.
package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgate/mcpgate/internal/acme"
	"github.com/mcpgate/mcpgate/internal/buildinfo"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/metrics"
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
	h3          *h3           // nil without HTTP/3
	acme        *acme.Manager // nil unless the proxy sets [tls] acme = true
	acmeStop    sync.Once

	serving sync.WaitGroup // the Serve loops; done once every queued connection was accepted

	// The drain: connection tracking and the schedule. Embedded, so the
	// handlers' w.markUsed and w.draining are the drainer's.
	*drainer
}

// Run serves until the supervisor asks for a drain or goes away.
func Run(name string, log *slog.Logger) error {
	spec, gateway, err := ReadSpec()
	if err != nil {
		return err
	}
	if spec.Proxy.Name != name {
		return fmt.Errorf("worker: started for %q but spec is for %q", name, spec.Proxy.Name)
	}
	keepHeapProfile(spec.PprofDir)
	hf := os.NewFile(FdHandoff, "handoff")
	if hf == nil {
		return errors.New("worker: no hand-off descriptor")
	}
	hc, err := handoff.FromFile(hf)
	hf.Close()
	if err != nil {
		return err
	}
	w := &Worker{spec: spec, log: log, hc: hc, started: time.Now(), drainer: newDrainer(spec.Drain(), log)}
	// The table of every proxy, decoded at the policy's first question.
	w.policy = policy.NewLazy(func() []*config.Proxy {
		gw := decodeGateway(gateway, spec.Proxy, log)
		gateway = nil // decoded once: the bytes can go
		return gw
	}, spec.OAuth)
	return w.run()
}

func (w *Worker) run() error {
	p := w.spec.Proxy
	var err error
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
	}
	if p.TLS.ACME {
		if w.acme, err = w.newACME(); err != nil {
			return fmt.Errorf("worker %s: %w", p.Name, err)
		}
		defer w.stopACME()
		tlsConf.GetCertificate = w.acme.GetCertificate
		// TLS-ALPN-01 validations arrive like any handshake.
		tlsConf.NextProtos = append(tlsConf.NextProtos, acmeTLS1)
	} else {
		cert, err := w.certificate()
		if err != nil {
			return fmt.Errorf("worker %s: certificate: %w", p.Name, err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	}
	ph, err := proxy.New(p, w.log)
	if err != nil {
		return fmt.Errorf("worker %s: %w", p.Name, err)
	}
	w.proxy = ph
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

	chain := logging.Access(w.accessLog(), w.handler())
	if w.h3, err = w.startHTTP3(tlsConf, chain); err != nil {
		return fmt.Errorf("worker %s: %w", p.Name, err)
	}
	w.https = &http.Server{
		Handler:           w.h3.advertise(chain),
		ConnState:         w.connState,
		ConnContext:       connContext,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
	}
	if err := w.serveHTTP2(w.https); err != nil {
		return fmt.Errorf("worker %s: http2: %w", p.Name, err)
	}
	w.http = &http.Server{
		Handler:           logging.Access(w.accessLog(), http.HandlerFunc(w.redirect)),
		ConnState:         w.connState,
		ConnContext:       connContext,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
	}
	w.steps = w.drainSteps()
	w.serving.Add(2)
	// TLS is set up by serveHTTP2 (ALPN h2) on w.https.TLSConfig; the
	// handshakes happen before net/http gets a connection (handshake.go).
	hl := newHandshakeListener(w.tlsL, w.https.TLSConfig, w.https.ReadHeaderTimeout, w.log)
	go func() { defer w.serving.Done(); w.https.Serve(hl) }()
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
	if w.acme != nil {
		// Only now: the CA's validation must find this worker routed to
		// (or, during a reload, its predecessor, which answers from the
		// shared storage).
		w.acme.Start()
	}

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
		case wire.KindRenew:
			go w.renewCert(string(m.Payload))
		case wire.KindRevoked:
			if w.oauth != nil && w.oauth.relay != nil {
				w.oauth.relay.wake()
			}
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
	logging.Flush(w.log)
	os.Exit(1)
}

// drainSteps are this worker's parts of the drainer's schedule.
func (w *Worker) drainSteps() drainSteps {
	return drainSteps{
		stopAccepting: func() {
			// The successor takes over obtaining and renewing: free the
			// locks now.
			w.stopACME()
			w.tlsL.Close()
			w.httpL.Close()
			// Queued connections are accepted before Serve returns, so
			// Shutdown waits for them too.
			w.serving.Wait()
		},
		shutdown: func(ctx context.Context) {
			h3done := make(chan struct{})
			go func() {
				defer close(h3done)
				w.h3.shutdown(ctx)
			}()
			// Shutdown sends HTTP/2 GOAWAY and closes idle connections,
			// but waits forever on streams that never go idle: bounded by
			// ctx.
			if shutdownAll(ctx, w.https, w.http) != nil {
				w.https.Close()
				w.http.Close()
			}
			// Streams that left net/http (HTTP/1.1 event streams) write
			// their final chunk after EndStreams: not cut by the exit.
			w.proxy.WaitStreams(ctx)
			<-h3done
		},
		endStreams: w.proxy.EndStreams,
		finish: func() {
			w.proxy.CloseIdle()
			w.sendFinalStats()
		},
	}
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

func (w *Worker) statsMessage() []byte {
	b, _ := json.Marshal(Stats{Protocol: wire.Protocol, Connections: w.conns.Load(), Certificates: w.certStatus(),
		Metrics: metrics.Default.Snapshot()})
	return b
}

// sendFinalStats sends the counters once every request has finished, so
// the supervisor's totals include the drain's last second.
func (w *Worker) sendFinalStats() {
	w.hc.Send(wire.KindStats, w.statsMessage())
}

// reportStats tells the supervisor the open connection count, the state of
// ACME certificates and the metrics counters when they change, for
// `mcpgate status` and /metrics.
func (w *Worker) reportStats() {
	// An idle worker sleeps: the counters signal a change (every open and
	// close of a connection moves one), and a report goes at most once a
	// second, the first after a quiet spell at once. Every 30 s the
	// message is built anyway, for whatever the counters do not show.
	heartbeat := time.NewTicker(30 * time.Second)
	defer heartbeat.Stop()
	pace := time.NewTimer(0)
	<-pace.C
	var last []byte
	var lastFP uint64
	var lastSent time.Time
	for {
		forced := false
		select {
		case <-metrics.Default.Changed():
			if wait := time.Second - time.Since(lastSent); wait > 0 {
				pace.Reset(wait)
				select {
				case <-pace.C:
				case <-w.drained:
					return
				}
			}
		case <-heartbeat.C:
			forced = last != nil && time.Since(lastSent) >= 30*time.Second
		case <-w.certsChanged():
			forced = true
		case <-w.drained:
			return
		}
		metrics.Default.Settle()
		fp := metrics.Default.Fingerprint()*31 + uint64(w.conns.Load())
		if !forced && last != nil && fp == lastFP {
			continue
		}
		lastFP, lastSent = fp, time.Now()
		b := w.statsMessage()
		if bytes.Equal(b, last) {
			continue
		}
		last = b
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
		if !w.cleanPath(rw, r) {
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
	h := map[string]any{
		"status": "ok",
		"proxy":  w.spec.Proxy.Name,
	}
	if w.healthDetails(r) {
		h["version"] = buildinfo.Version()
		h["build_id"] = buildinfo.ID()
		h["pid"] = os.Getpid()
		h["config_hash"] = w.spec.Proxy.Hash
		h["started"] = w.started.UTC().Format(time.RFC3339)
		h["generation"] = w.spec.Generation
	}
	json.NewEncoder(rw).Encode(h)
}

// healthDetails reports whether r may see the worker's version, build and
// process: the exact version tells an attacker which advisories apply, so
// by default only clients on this machine (the address after the PROXY
// header, so a load balancer on loopback does not count as local).
func (w *Worker) healthDetails(r *http.Request) bool {
	if w.spec.HealthDetails == config.HealthDetailsAll {
		return true
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// accessLog is the access log's logger, nil when it is turned off.
func (w *Worker) accessLog() *slog.Logger {
	if w.spec.AccessLogOff {
		return nil
	}
	return logging.Deferred(w.log)
}

// redirect answers the plain-HTTP listener: ACME HTTP-01 challenges, and
// otherwise 308 to the same URL on HTTPS.
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
	// HTTP-01 validations, before the redirect (the CA would follow it
	// to a host that has no certificate yet).
	if w.acme != nil && w.acme.HandleHTTPChallenge(rw, r) {
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
