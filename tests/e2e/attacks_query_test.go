package e2e

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// lineRecorder is a backend that keeps every request line exactly as it
// arrived: a lenient backend may read a request-target with a space in it
// differently from the gateway (the part after the space as the path).
type lineRecorder struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string // guarded by mu
}

func newLineRecorder(t *testing.T) *lineRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &lineRecorder{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *lineRecorder) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		r.mu.Lock()
		r.lines = append(r.lines, strings.TrimRight(line, "\r\n"))
		r.mu.Unlock()
		length := 0
		for {
			h, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if h == "\r\n" || h == "\n" {
				break
			}
			if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Content-Length") {
				for _, ch := range strings.TrimSpace(v) {
					length = length*10 + int(ch-'0')
				}
			}
		}
		if _, err := br.Discard(length); err != nil {
			return
		}
		if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")); err != nil {
			return
		}
	}
}

func (r *lineRecorder) since(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines[n:]...)
}

func (r *lineRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

// TestAttackQueryRequestLine: a query holding a space or another byte a
// request-target may not carry (HTTP/2 and HTTP/3 clients can put them
// into :path; Go's URL parser keeps them) must not reach an HTTP/1.1
// backend as a request line with more than three parts: "GET
// /docs?x /mcp HTTP/1.1" is a request for /mcp to a lenient backend
// while the bearer check saw the public /docs.
func TestAttackQueryRequestLine(t *testing.T) {
	t.Parallel()
	rec := newLineRecorder(t)
	e := startOAuthWith(t, harness.Options{QUIC: true}, harness.GitHubOAuthConfig{
		CallbackHost: attackHost,
		Tables:       cliClient,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{attackHost}, Target: "http://" + rec.ln.Addr().String(),
		Auth: "required = true\npublic_paths = [\"/docs\"]"})
	h3 := e.g.HTTP3Client(t)
	clients := []struct {
		name string
		send func(*testing.T, rawAttempt) rawResult
	}{
		{"h2", func(t *testing.T, a rawAttempt) rawResult { return sendOpaque(t, e.api, a) }},
		{"h3", func(t *testing.T, a rawAttempt) rawResult { return sendOpaque(t, h3, a) }},
	}
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			for _, target := range []string{
				"/docs?x /mcp",
				"/docs?x%20/mcp HTTP/1.1",
				"/docs?a=\"<>\\^`{|}",
				"/docs?a=\u00e9",
			} {
				before := rec.count()
				res := cl.send(t, rawAttempt{method: http.MethodGet, target: target})
				lines := rec.since(before)
				for _, l := range lines {
					parts := strings.Split(l, " ")
					if len(parts) != 3 || parts[2] != "HTTP/1.1" || !strings.HasPrefix(parts[1], "/docs?") {
						t.Errorf("%q (status %d) reached the backend as the request line %q", target, res.status, l)
						continue
					}
					for _, c := range []byte(parts[1]) {
						if c <= ' ' || c >= 0x7f || strings.IndexByte("\"<>\\^`{|}", c) >= 0 {
							t.Errorf("%q reached the backend with byte %q in its request-target %q", target, c, parts[1])
							break
						}
					}
				}
				if len(lines) == 0 && res.status != http.StatusBadRequest {
					t.Errorf("%q: neither forwarded nor refused (status %d)", target, res.status)
				}
			}
		})
	}
}
