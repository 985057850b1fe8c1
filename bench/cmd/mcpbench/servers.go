package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// contender is one server the same load is pointed at.
type contender struct {
	name   string
	t      target
	url    string // base URL for wrk and h2load
	start  func() error
	stop   func()
	rssPID func() int // root of the process tree whose VmRSS is the contender's memory
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url (through t's dialer) until it answers 200.
func (b *bench) waitHTTP(t target, path string, timeout time.Duration) error {
	tr := b.transport(t, false)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, t.baseURL()+path, nil)
		if t.token != "" {
			req.Header.Set("Authorization", "Bearer "+t.token)
		}
		if last = do(c, req); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s%s not answering after %v: %v", t.baseURL(), path, timeout, last)
}

func (b *bench) startBackend() error {
	var err error
	if b.backendPort, err = freePort(); err != nil {
		return err
	}
	if b.backendTLSPort, err = freePort(); err != nil {
		return err
	}
	return b.runBackend()
}

// runBackend starts the backend on the ports chosen by startBackend; the
// SSE figure restarts it so that its memory is measured from a fresh
// process too.
func (b *bench) runBackend() error {
	p, err := b.reg.start("backend", filepath.Join(b.work, "backend.log"), nil,
		filepath.Join(b.binDir, "backend"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", b.backendPort),
		"-tls-listen", fmt.Sprintf("127.0.0.1:%d", b.backendTLSPort),
		"-cert", b.pki.Cert, "-key", b.pki.Key)
	if err != nil {
		return err
	}
	b.backend = p
	if err := b.waitHTTP(b.directTarget(), "/small", 10*time.Second); err != nil {
		return err
	}
	return b.waitHTTP(b.directTLSTarget(), "/small", 10*time.Second)
}

func (b *bench) directTarget() target {
	a := fmt.Sprintf("127.0.0.1:%d", b.backendPort)
	return target{name: "direct", host: a, dial: a, token: b.token, direct: true}
}

func (b *bench) directTLSTarget() target {
	return target{name: "direct-tls", tls: true, host: fmt.Sprintf("localhost:%d", b.backendTLSPort),
		dial: fmt.Sprintf("127.0.0.1:%d", b.backendTLSPort), token: b.token}
}

func tlsTarget(name string, port int, tok string) target {
	return target{name: name, tls: true, host: fmt.Sprintf("localhost:%d", port), dial: fmt.Sprintf("127.0.0.1:%d", port), token: tok}
}

// contenders builds the contenders (not started, except direct, which is
// the backend already running).
func (b *bench) contenders() ([]*contender, error) {
	var cs []*contender
	// direct: the backend itself, plain HTTP/1.1 and h2c.
	d := b.directTarget()
	cs = append(cs, &contender{name: "direct", t: d, url: "http://" + d.host,
		start: b.runBackend, stop: func() { b.backend.stop(syscall.SIGTERM, 5*time.Second) },
		rssPID: func() int { return b.backend.pid() }})

	// mcpgate: TLS, bearer check, proxy.
	mc, gw, err := b.gatewayContender("mcpgate", "main", false)
	if err != nil {
		return nil, err
	}
	tok := mc.t.token
	b.token = tok
	b.mainGW = gw
	cs[0].t.token = tok // the same request bytes for every contender
	cs = append(cs, mc)

	// nginx
	np, err := freePort()
	if err != nil {
		return nil, err
	}
	nt := tlsTarget("nginx", np, tok)
	var nproc *proc
	ndir := filepath.Join(b.work, "nginx")
	for _, sub := range []string{"", "tmp"} {
		if err := os.MkdirAll(filepath.Join(ndir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	conf := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(ndir, np, b.backendPort, b.pki, nofileLimit)), 0o644); err != nil {
		return nil, err
	}
	cs = append(cs, &contender{name: "nginx", t: nt, url: nt.baseURL(),
		start: func() error {
			p, err := b.reg.start("nginx", filepath.Join(ndir, "stderr.log"), nil, "nginx", "-p", ndir, "-c", conf)
			if err != nil {
				return err
			}
			nproc = p
			return b.waitHTTP(nt, "/small", 10*time.Second)
		},
		stop:   func() { nproc.stop(syscall.SIGQUIT, 5*time.Second) },
		rssPID: func() int { return nproc.pid() }})

	// Caddy
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	ct := tlsTarget("caddy", cp, tok)
	var cproc *proc
	cdir := filepath.Join(b.work, "caddy")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return nil, err
	}
	cfile := filepath.Join(cdir, "Caddyfile")
	if err := os.WriteFile(cfile, []byte(caddyfile(cdir, cp, b.backendPort, b.pki)), 0o644); err != nil {
		return nil, err
	}
	cenv := []string{"HOME=" + cdir, "XDG_DATA_HOME=" + filepath.Join(cdir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(cdir, "config")}
	cs = append(cs, &contender{name: "caddy", t: ct, url: ct.baseURL(),
		start: func() error {
			p, err := b.reg.start("caddy", filepath.Join(cdir, "stderr.log"), cenv, "caddy", "run", "--config", cfile, "--adapter", "caddyfile")
			if err != nil {
				return err
			}
			cproc = p
			return b.waitHTTP(ct, "/small", 15*time.Second)
		},
		stop:   func() { cproc.stop(syscall.SIGTERM, 5*time.Second) },
		rssPID: func() int { return cproc.pid() }})
	return cs, nil
}

// gatewayContender is an mcpgate instance with one proxy for localhost:
// TLS, the bearer check (its own keys, its own token), HTTP/3 on (the h3
// figure, h3.go), the access log on unless noLog.
func (b *bench) gatewayContender(name, gwName string, noLog bool) (*contender, *gateway, error) {
	mp, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	root := filepath.Join(b.work, "mcpgate-"+gwName)
	gw := &gateway{name: gwName, dir: filepath.Join(root, "conf"), state: filepath.Join(root, "state"),
		bin: filepath.Join(root, "mcpgate"), port: mp, hosts: []string{"localhost"},
		logPath: filepath.Join(b.work, "mcpgate-"+gwName+".log"), backend: b.backendURL(), certFile: b.pki.Cert, keyFile: b.pki.Key,
		quic: true, noAccessLog: noLog, pprof: true}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, nil, err
	}
	if err := linkOrCopy(b.mcpgateBin[0], gw.bin); err != nil {
		return nil, nil, err
	}
	if err := gw.writeConfig(); err != nil {
		return nil, nil, err
	}
	tok, err := gw.mint(fmt.Sprintf("localhost:%d", mp))
	if err != nil {
		return nil, nil, err
	}
	mt := tlsTarget(name, mp, tok)
	return &contender{name: name, t: mt, url: mt.baseURL(),
		start: func() error {
			if err := gw.start(b.reg); err != nil {
				return err
			}
			if _, err := gw.waitReady(30 * time.Second); err != nil {
				return err
			}
			return b.waitHTTP(mt, "/small", 10*time.Second)
		},
		stop:   func() { gw.proc.stop(syscall.SIGTERM, 8*time.Second) },
		rssPID: func() int { return gw.proc.pid() }}, gw, nil
}

// noLogContender is mcpgate with `[server] access_log = false`, otherwise
// as the main instance: the access log's own cost (issue 15).
func (b *bench) noLogContender() (*contender, error) {
	c, _, err := b.gatewayContender(noLogCol, "nolog", true)
	return c, err
}

// noLogCol is the contender name of mcpgate without its access log.
const noLogCol = "mcpgate-nolog"

// goproxyContender is the hand-off baseline: a Go TLS reverse proxy
// listening itself.
func (b *bench) goproxyContender() (*contender, error) {
	gp, err := freePort()
	if err != nil {
		return nil, err
	}
	gt := tlsTarget("go-proxy", gp, b.token)
	var gproc *proc
	return &contender{name: "go-proxy", t: gt, url: gt.baseURL(),
		start: func() error {
			p, err := b.reg.start("goproxy", filepath.Join(b.work, "goproxy.stderr.log"), nil, filepath.Join(b.binDir, "goproxy"),
				"-listen", gt.dial, "-cert", b.pki.Cert, "-key", b.pki.Key, "-target", b.backendURL(),
				"-log", filepath.Join(b.work, "goproxy-access.log"))
			if err != nil {
				return err
			}
			gproc = p
			return b.waitHTTP(gt, "/small", 10*time.Second)
		},
		stop:   func() { gproc.stop(syscall.SIGTERM, 5*time.Second) },
		rssPID: func() int { return gproc.pid() }}, nil
}

// h1floorContender is an experiment, in the HTTP/1.1 CPU row only: a Go
// TLS proxy without net/http's server (bench/cmd/h1floor), the floor of
// what a worker serving HTTP/1.1 itself could spend per request.
func (b *bench) h1floorContender() (*contender, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ft := tlsTarget(h1FloorCol, port, b.token)
	var fproc *proc
	return &contender{name: h1FloorCol, t: ft, url: ft.baseURL(),
		start: func() error {
			p, err := b.reg.start("h1floor", filepath.Join(b.work, "h1floor.stderr.log"), nil, filepath.Join(b.binDir, "h1floor"),
				"-listen", ft.dial, "-cert", b.pki.Cert, "-key", b.pki.Key, "-target", fmt.Sprintf("127.0.0.1:%d", b.backendPort))
			if err != nil {
				return err
			}
			fproc = p
			return b.waitHTTP(ft, "/small", 10*time.Second)
		},
		stop:   func() { fproc.stop(syscall.SIGTERM, 5*time.Second) },
		rssPID: func() int { return fproc.pid() }}, nil
}

// h1FloorCol is the contender name of bench/cmd/h1floor.
const h1FloorCol = "h1-floor"

func (b *bench) backendURL() string { return fmt.Sprintf("http://127.0.0.1:%d", b.backendPort) }

// nginxConf: one worker (one core), access log on (mcpgate logs every
// request too), upstream keep-alive, HTTP/2, no request limits per
// connection that the Go servers do not have either, no buffering for SSE.
func nginxConf(dir string, port, backend int, p *pki, nofile uint64) string {
	// The SSE figure holds thousands of client connections and as many
	// upstream ones in the one worker: as many as the open-files limit
	// mcpbench raised to its hard limit (inherited by nginx) allows.
	conns := max(1024, int64(nofile)-64)
	tmp := filepath.Join(dir, "tmp")
	return fmt.Sprintf(`# written by mcpbench
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile %[7]d;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections %[8]d; }
http {
  access_log %[1]s/access.log combined;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  upstream backend {
    server 127.0.0.1:%[4]d;
    keepalive 256;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:%[3]d ssl http2;
    server_name localhost;
    ssl_certificate %[5]s;
    ssl_certificate_key %[6]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }
    location /sse {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`, dir, tmp, port, backend, p.Cert, p.Key, nofile, conns)
}

// caddyfile: TLS with the same certificate, HTTP/1.1 and HTTP/2 (no
// HTTP/3), an access log to a file, reverse_proxy with as many idle
// upstream connections as mcpgate and nginx keep.
func caddyfile(dir string, port, backend int, p *pki) string {
	return fmt.Sprintf(`# written by mcpbench
{
	admin off
	auto_https off
	servers {
		protocols h1 h2
	}
}
https://localhost:%[2]d {
	bind 127.0.0.1
	tls %[4]s %[5]s
	log {
		output file %[1]s/access.log
	}
	reverse_proxy 127.0.0.1:%[3]d {
		transport http {
			keepalive_idle_conns 512
			keepalive_idle_conns_per_host 256
		}
	}
}
`, dir, port, backend, p.Cert, p.Key)
}

func linkOrCopy(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// pinning describes the CPU affinity of every process in the trees.
func pinning(roots map[string]int) []string {
	var out []string
	for name, root := range roots {
		for _, pid := range tree(root) {
			cpus, err := statusField(pid, "Cpus_allowed_list")
			if err != nil {
				continue
			}
			out = append(out, fmt.Sprintf("%-9s pid %-7d cpus %-4s %s", name, pid, cpus, comm(pid)))
		}
	}
	if cpus, err := statusField(os.Getpid(), "Cpus_allowed_list"); err == nil {
		out = append(out, fmt.Sprintf("%-9s pid %-7d cpus %-4s %s", "mcpbench", os.Getpid(), cpus, "load generator (Go), orchestration; wrk and h2load are started with taskset -c "+loadCore))
	}
	return out
}
