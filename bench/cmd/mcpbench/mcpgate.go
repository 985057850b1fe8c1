package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/token"
)

// gateway is one mcpgate instance: a config dir, a state dir, one https
// address, and the supervisor process once started.
type gateway struct {
	name     string
	dir      string // config dir
	state    string // state_dir
	bin      string // the binary the supervisor runs (a private copy that reload tests replace)
	port     int
	hosts    []string // one proxy per entry, hostnames = [host]
	proc     *proc
	logPath  string
	backend  string // http://127.0.0.1:P
	certFile string
	keyFile  string
	quic     bool // HTTP/3 on the UDP port of the same number as the https port
	// noAccessLog writes `[server] access_log = false` (the access
	// log's own cost, issue 15).
	noAccessLog bool
	// pprof writes `[server] pprof_dir`: only the instance the profile
	// phase reads (goprof.go). It turns the workers' allocation sampling
	// on, which an operator's worker does not pay (worker.keepHeapProfile),
	// so the idle and many-proxies rows leave it off.
	pprof bool
}

func (g *gateway) addr() string { return fmt.Sprintf("127.0.0.1:%d", g.port) }

// writeConfig writes mcpgate.toml (OAuth on, GitHub as the identity
// provider at an unused loopback address: no login happens during the
// bench, tokens are minted with the gateway's own keys) and one proxy file
// per host, each requiring a bearer token (the default [auth]).
func (g *gateway) writeConfig() error {
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(g.state, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(g.dir, "github-secret"), []byte("unused\n"), 0o600); err != nil {
		return err
	}
	quic := "[]"
	if g.quic {
		quic = fmt.Sprintf("[%q]", g.addr())
	}
	pprof := ""
	if g.pprof {
		pprof = fmt.Sprintf("pprof_dir = %q\n", g.pprofDir())
	}
	global := fmt.Sprintf(`[server]
https = [%q]
http = []
quic = %s
state_dir = %q
%sdrain_timeout = "5s"
access_log = %v

[oauth]
callback_url = "https://%s:%d/oauth/callback"
allowed_users = ["*"]
mcp_users = ["*"]

[idp.github]
client_id = "bench"
client_secret_file = "github-secret"
authorize_url = "http://127.0.0.1:9/login/oauth/authorize"
token_url = "http://127.0.0.1:9/login/oauth/access_token"
api_url = "http://127.0.0.1:9/api"
`, g.addr(), quic, g.state, pprof, !g.noAccessLog, g.hosts[0], g.port)
	if err := os.WriteFile(filepath.Join(g.dir, "mcpgate.toml"), []byte(global), 0o644); err != nil {
		return err
	}
	for i, h := range g.hosts {
		p := fmt.Sprintf("hostnames = [%q]\ntarget = %q\n\n[tls]\ncert_file = %q\nkey_file = %q\n",
			h, g.backend, g.certFile, g.keyFile)
		if err := os.WriteFile(filepath.Join(g.dir, proxyName(i)+".toml"), []byte(p), 0o644); err != nil {
			return err
		}
	}
	// The signing keys exist before any worker starts, so tokens can be
	// minted at once and a hundred workers do not race to create them.
	_, err := keys.Open(g.state, keys.Options{})
	return err
}

func proxyName(i int) string { return fmt.Sprintf("p%03d", i+1) }

func (g *gateway) start(reg *registry) error {
	p, err := reg.start("mcpgate-"+g.name, g.logPath, nil, g.bin, "serve", "--config-dir", g.dir)
	if err != nil {
		return err
	}
	g.proc = p
	return nil
}

// mint returns an access token for the proxy at host (as the client sends
// it in Host, port included): iss https://host, aud https://host/mcp,
// scope mcp, valid for two hours.
func (g *gateway) mint(host string) (string, error) {
	ks, err := keys.Open(g.state, keys.Options{})
	if err != nil {
		return "", err
	}
	return token.NewIssuer(ks, 2*time.Hour).Issue(&identity.Principal{
		Issuer:   "https://" + host,
		Subject:  "bench|1",
		Audience: "https://" + host + "/mcp",
		ClientID: "mcpgate-bench",
		Scopes:   []string{"mcp"},
		Login:    "bench",
	})
}

// gwStatus is the part of `mcpgate status --json` the bench reads.
type gwStatus struct {
	PID     int    `json:"pid"`
	BuildID string `json:"build_id"`
	Workers []struct {
		Proxy   string `json:"proxy"`
		PID     int    `json:"pid"`
		State   string `json:"state"`
		BuildID string `json:"build_id"`
	} `json:"workers"`
	LastReload *struct {
		OK       bool   `json:"ok"`
		BuildID  string `json:"build_id"`
		Trigger  string `json:"trigger"`
		Duration string `json:"duration"`
	} `json:"last_reload"`
}

func (g *gateway) status() (*gwStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, g.bin, "status", "--json", "--config-dir", g.dir).Output()
	if err != nil {
		return nil, fmt.Errorf("mcpgate status: %w", err)
	}
	var s gwStatus
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("mcpgate status: %w: %s", err, out)
	}
	return &s, nil
}

// allReady reports whether the status shows exactly one ready worker per
// proxy, all on build (any build if empty).
func (s *gwStatus) allReady(n int, build string) bool {
	if len(s.Workers) != n {
		return false
	}
	for _, w := range s.Workers {
		if w.State != "ready" || (build != "" && w.BuildID != build) {
			return false
		}
	}
	return true
}

// serving reports whether every proxy has a ready worker on build and no
// worker of another build is still ready (taking connections); draining
// old workers may remain.
func (s *gwStatus) serving(n int, build string) bool {
	proxies := map[string]bool{}
	for _, w := range s.Workers {
		if w.State != "ready" {
			continue
		}
		if w.BuildID != build {
			return false
		}
		proxies[w.Proxy] = true
	}
	return len(proxies) == n
}

// waitReady polls the status until every proxy has a ready worker.
func (g *gateway) waitReady(timeout time.Duration) (*gwStatus, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if g.proc.exited() {
			return nil, fmt.Errorf("mcpgate %s exited (%v); log: %s", g.name, g.proc.err, tail(g.logPath, 5))
		}
		s, err := g.status()
		if err == nil && s.allReady(len(g.hosts), "") {
			return s, nil
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("mcpgate %s: workers not ready after %v (%v); log: %s", g.name, timeout, last, tail(g.logPath, 5))
}

// install replaces the gateway's binary with src the way a package manager
// does (link under a temporary name, rename over), so the running
// processes keep their file and the next exec gets src.
func (g *gateway) install(src string) error {
	tmp := g.bin + ".new"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, g.bin)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
