package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds on the gateway's lifecycle.
const (
	readyTimeout = 20 * time.Second // start until every proxy is healthy
	stopTimeout  = 15 * time.Second // SIGTERM until the supervisor exits
	orphanWait   = 5 * time.Second  // supervisor exit until its workers are gone
	maxLogDump   = 64 << 10         // tail of the gateway log shown on failure
)

// LogEnv names an environment variable; when set, the gateway log is shown
// after every test, not only failed ones.
const LogEnv = "MCPGATE_E2E_LOG"

// HealthPath is the gateway's own per-proxy health endpoint.
const HealthPath = "/.well-known/mcpgate/health"

// Gateway is one running `mcpgate serve` instance.
type Gateway struct {
	Dir       string // config dir
	Bin       string // the binary the supervisor was started from
	StateDir  string
	LogFile   string // supervisor and worker stdout+stderr
	HTTPSAddr string // the listener passed as fd 3 ("https")
	HTTPAddr  string // the listener passed as fd 4 ("http")
	QUICAddr  string // the UDP socket passed as fd 5 ("quic"), with Options.QUIC
	PKI       *PKI
	Proxies   []Proxy

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd.Wait returns
	err  error         // cmd.Wait's result, valid after done

	healthClient *http.Client // new connection per request

	mu         sync.Mutex
	transports []*http.Transport // guarded by mu; idle conns closed at stop
	killed     bool              // guarded by mu; the test killed the supervisor on purpose
}

// Start writes a config dir for o and runs `mcpgate serve --config-dir DIR`
// under socket activation: the test opens the loopback listeners itself and
// passes them as fds 3 (https) and 4 (http) with LISTEN_FDS=2,
// LISTEN_FDNAMES=https:http and LISTEN_PID set to the gateway's own pid. It
// returns once every proxy answers its health endpoint. Cleanup stops the
// gateway and fails the test if it or any worker outlives the stop.
func Start(t testing.TB, o Options) *Gateway {
	t.Helper()
	bin := o.Binary
	if bin == "" {
		bin = Binary(t)
	}
	root := t.TempDir()
	g := &Gateway{
		Dir:      filepath.Join(root, "conf"),
		StateDir: filepath.Join(root, "state"),
		LogFile:  filepath.Join(root, "gateway.log"),
		PKI:      NewPKI(t),
		Proxies:  o.Proxies,
		Bin:      bin,
		t:        t,
		done:     make(chan struct{}),
	}
	if err := os.MkdirAll(g.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	WriteConfig(t, g.Dir, g.StateDir, g.PKI, o)

	httpsLn, httpLn := net.Listener(o.HTTPSListener), net.Listener(o.HTTPListener)
	var err error
	if o.HTTPSListener == nil {
		if httpsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	if o.HTTPListener == nil {
		if httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	g.HTTPSAddr, g.HTTPAddr = httpsLn.Addr().String(), httpLn.Addr().String()
	httpsFile, err := httpsLn.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	httpFile, err := httpLn.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	// The child gets its own copies; ours would only keep the sockets open.
	defer httpsLn.Close()
	defer httpLn.Close()
	defer httpsFile.Close()
	defer httpFile.Close()

	// A file, not a pipe: workers inherit the descriptor, and a pipe would
	// make cmd.Wait wait for them too.
	logf, err := os.OpenFile(g.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()

	// systemd sets LISTEN_PID to the service's pid, which is unknown before
	// exec; sh's $$ is that pid because exec keeps it.
	g.cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`,
		bin, "serve", "--config-dir", g.Dir)
	g.cmd.Env = append(cleanEnv(), "LISTEN_FDS=2", "LISTEN_FDNAMES=https:http")
	g.cmd.ExtraFiles = []*os.File{httpsFile, httpFile} // fds 3, 4
	if o.QUIC {
		// The same port number as https, as with systemd's udp 443 beside
		// tcp 443, when it is free.
		pc, err := net.ListenPacket("udp", g.HTTPSAddr)
		if err != nil {
			pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		}
		if err != nil {
			t.Fatal(err)
		}
		g.QUICAddr = pc.LocalAddr().String()
		quicFile, err := pc.(*net.UDPConn).File()
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer quicFile.Close()
		g.cmd.ExtraFiles = append(g.cmd.ExtraFiles, quicFile) // fd 5
		g.cmd.Env = append(cleanEnv(), "LISTEN_FDS=3", "LISTEN_FDNAMES=https:http:quic")
	}
	g.cmd.Env = append(g.cmd.Env, o.Env...)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	// If the test binary dies without cleanup (panic on -timeout), the
	// kernel stops the gateway instead of leaving it running.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("starting mcpgate: %v", err)
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(g.stop)

	g.healthClient = g.Client(ClientConfig{DisableKeepAlives: true})
	g.WaitReady(t)
	return g
}

// PID is the supervisor's pid.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// Exited reports whether the supervisor has exited.
func (g *Gateway) Exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// Logs returns what the gateway has written so far.
func (g *Gateway) Logs() string {
	b, err := os.ReadFile(g.LogFile)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", g.LogFile, err)
	}
	return string(b)
}

// WaitReady polls every proxy's health endpoint until it answers 200, for up
// to 20s, failing the test if the gateway exits or the time runs out.
func (g *Gateway) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for _, p := range g.Proxies {
		if p.ACME {
			continue // no certificate before the CA issues one
		}
		host := p.HealthHost()
		var last string
		for {
			if g.Exited() {
				t.Fatalf("mcpgate exited before %s was healthy: %v (log follows at cleanup)", p.Name, g.err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			h, status, err := g.Health(ctx, host)
			cancel()
			if err == nil && status == http.StatusOK && h.Status == "ok" {
				break
			}
			last = fmt.Sprintf("status %d, %+v, err %v", status, h, err)
			if time.Now().After(deadline) {
				t.Fatalf("proxy %s (%s) not healthy within %v; last: %s (log follows at cleanup)", p.Name, host, readyTimeout, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Health is the JSON of the health endpoint.
type Health struct {
	Status     string `json:"status"`
	Proxy      string `json:"proxy"`
	Version    string `json:"version"`
	BuildID    string `json:"build_id"`
	PID        int    `json:"pid"`
	ConfigHash string `json:"config_hash"`
	Generation uint64 `json:"generation"`
}

// Health fetches https://host/.well-known/mcpgate/health over a new
// connection (so a killed worker's stale connection is never reused). A
// non-200 answer is not an error; its status is returned.
func (g *Gateway) Health(ctx context.Context, host string) (Health, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+HealthPath, nil)
	if err != nil {
		return Health{}, 0, err
	}
	resp, err := g.healthClient.Do(req)
	if err != nil {
		return Health{}, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Health{}, resp.StatusCode, err
	}
	var h Health
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &h); err != nil {
			return h, resp.StatusCode, fmt.Errorf("health JSON %q: %w", body, err)
		}
	}
	return h, resp.StatusCode, nil
}

// WorkerPID returns the pid the worker serving host reports in its health.
func (g *Gateway) WorkerPID(t testing.TB, host string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, status, err := g.Health(ctx, host)
	if err != nil || status != http.StatusOK || h.PID <= 0 {
		t.Fatalf("health of %s: status %d, %+v, err %v", host, status, h, err)
	}
	return h.PID
}

// ClientConfig selects a client flavour.
type ClientConfig struct {
	HTTP1Only         bool // offer only http/1.1 in ALPN
	DisableKeepAlives bool // a new connection (and handshake) per request
	Plain             bool // plain http to the http listener instead of TLS
}

// Client returns an *http.Client that sends every request, whatever its
// URL's host, to the gateway's https (or, with Plain, http) listener, so
// URLs like https://alpha.test/mcp work without DNS. TLS clients trust only
// the test CA and use the URL's host as SNI; by default they offer h2 and
// http/1.1. The plain client does not follow redirects. There is no overall
// timeout (streams are long-lived): bound requests with contexts.
func (g *Gateway) Client(cfg ClientConfig) *http.Client {
	addr := g.HTTPSAddr
	if cfg.Plain {
		addr = g.HTTPAddr
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: 5 * time.Second}
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       &tls.Config{RootCAs: g.PKI.Pool},
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 15 * time.Second,
		DisableKeepAlives:     cfg.DisableKeepAlives,
		ForceAttemptHTTP2:     !cfg.HTTP1Only,
		Proxy:                 nil, // never an HTTP proxy from the environment
	}
	if cfg.HTTP1Only {
		var p http.Protocols
		p.SetHTTP1(true)
		tr.Protocols = &p
	}
	g.track(tr)
	c := &http.Client{Transport: tr}
	if cfg.Plain {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// HTTP2Client offers h2 and http/1.1; against a conforming gateway every
// response is HTTP/2.0.
func (g *Gateway) HTTP2Client() *http.Client { return g.Client(ClientConfig{}) }

// HTTP1Client offers only http/1.1.
func (g *Gateway) HTTP1Client() *http.Client { return g.Client(ClientConfig{HTTP1Only: true}) }

// PlainClient talks plain http to the http listener and returns redirects
// instead of following them.
func (g *Gateway) PlainClient() *http.Client { return g.Client(ClientConfig{Plain: true}) }

// TLSConfig is a client config trusting the test CA with the given SNI and
// ALPN protocols.
func (g *Gateway) TLSConfig(serverName string, nextProtos ...string) *tls.Config {
	return &tls.Config{RootCAs: g.PKI.Pool, ServerName: serverName, NextProtos: nextProtos}
}

// Track registers a transport whose idle connections are closed when the
// gateway stops, so shutdown does not wait for them.
func (g *Gateway) Track(tr *http.Transport) { g.track(tr) }

func (g *Gateway) track(tr *http.Transport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.transports = append(g.transports, tr)
}

// stop is the cleanup: SIGTERM, a bounded wait, SIGKILL as last resort, then
// a check that no process of this instance survives.
func (g *Gateway) stop() {
	t := g.t
	g.mu.Lock()
	for _, tr := range g.transports {
		tr.CloseIdleConnections()
	}
	killed := g.killed
	g.mu.Unlock()

	// Remember the instance's processes before the supervisor goes: once it
	// is gone its workers are reparented and only argv/env identify them.
	members := g.members()

	switch {
	case killed:
	case g.Exited():
		t.Errorf("mcpgate exited before the end of the test: %v", g.err)
	default:
		sent := time.Now()
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
			if g.err != nil && !isSignal(g.err, syscall.SIGTERM) {
				t.Errorf("mcpgate after SIGTERM: %v", g.err)
			}
			if d := time.Since(sent); d > 3*time.Second {
				t.Logf("mcpgate took %v to exit after SIGTERM", d.Round(time.Millisecond))
			}
		case <-time.After(stopTimeout):
			t.Errorf("mcpgate did not exit within %v of SIGTERM; killing it", stopTimeout)
			_ = g.cmd.Process.Kill()
			select {
			case <-g.done:
			case <-time.After(5 * time.Second):
				t.Errorf("mcpgate did not exit after SIGKILL")
			}
		}
	}

	// Workers must not outlive the supervisor; give them a moment to notice.
	var left []procInfo
	deadline := time.Now().Add(orphanWait)
	for {
		left = left[:0]
		candidates := append(append([]procInfo(nil), members...), g.scan()...)
		for _, p := range candidates {
			if p.alive() {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		var desc []string
		for _, p := range dedup(left) {
			desc = append(desc, fmt.Sprintf("pid %d %q", p.pid, p.cmdline))
			_ = syscall.Kill(p.pid, syscall.SIGKILL) // ours: started by this gateway
		}
		t.Errorf("processes of this gateway still running %v after it exited: %s", orphanWait, strings.Join(desc, "; "))
	}

	if t.Failed() || os.Getenv(LogEnv) != "" {
		logs := g.Logs()
		if len(logs) > maxLogDump {
			logs = "...\n" + logs[len(logs)-maxLogDump:]
		}
		t.Logf("mcpgate log (%s):\n%s", g.LogFile, logs)
	}
}

// KillSupervisor SIGKILLs the supervisor and waits (bounded) until it has
// exited. Its workers get no signal: cleanup then checks that they noticed
// and exited by themselves.
func (g *Gateway) KillSupervisor(t testing.TB) {
	t.Helper()
	g.mu.Lock()
	g.killed = true
	g.mu.Unlock()
	if err := g.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill supervisor: %v", err)
	}
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("supervisor %d still running 5s after SIGKILL", g.PID())
	}
}

// Workers returns the live processes of this gateway other than the
// supervisor: its descendants and anything naming its config dir.
func (g *Gateway) Workers() []int {
	var pids []int
	for _, p := range g.members() {
		if p.pid != g.PID() && p.alive() {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

func isSignal(err error, sig syscall.Signal) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
