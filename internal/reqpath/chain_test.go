package reqpath_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/proxy"
	"github.com/mcpgate/mcpgate/internal/reqpath"
	"github.com/mcpgate/mcpgate/internal/resource"
)

type fakeVerifier struct{}

func (fakeVerifier) Verify(raw, _ string) (*identity.Principal, error) {
	if raw != "good" {
		return nil, errors.New("bad token")
	}
	return &identity.Principal{Login: "alice", Scopes: []string{"mcp"}}, nil
}

// chainLog records one request's passage: what the guard let through and
// what each backend received.
type chainLog struct {
	mu      sync.Mutex
	decided []string    // guarded by mu; r.URL.Path behind the guard
	escaped []string    // guarded by mu; r.URL.EscapedPath() behind the guard
	backend [][2]string // guarded by mu; {backend name, request-target path}
	anon    []bool      // guarded by mu; the backend saw no identity
}

func (l *chainLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.decided, l.escaped, l.backend, l.anon = nil, nil, nil, nil
}

func recordingBackend(t *testing.T, name string, l *chainLog) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _, _ := strings.Cut(r.RequestURI, "?")
		l.mu.Lock()
		l.backend = append(l.backend, [2]string{name, p})
		l.anon = append(l.anon, r.Header.Get("X-Mcpgate-User") == "")
		l.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

func upstream(t *testing.T, raw string) config.Upstream {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return config.Upstream{Raw: raw, Scheme: u.Scheme, Host: u.Host, Path: u.Path}
}

// nastyPath builds a request-target from pieces that have fooled path
// checks before, mostly starting inside the public /docs.
func nastyPath(rng *rand.Rand) string {
	starts := []string{"/docs", "/docs", "/docs/", "/docs/a", "//docs", "/", "", "/api", "/mcp"}
	pieces := []string{
		"/", "/", "//", "/..", "/..", "/.", "/%2e%2e", "/%2E%2E", "/.%2e", "/%2e.", "/%2e",
		"%2f..", "%2F", "/..%2f", "%5c..", `\..`, "/..;", "/..%3b", ";", "%25", "/%252e%252e",
		"%41", "~", "%7e", "%", "/docs", "/mcp", "/mcp", "/api", "/a", "é", "%20", "%00",
		"?q=/docs", "#",
	}
	b := []byte(starts[rng.IntN(len(starts))])
	for range 1 + rng.IntN(6) {
		b = append(b, pieces[rng.IntN(len(pieces))]...)
	}
	return string(b)
}

// TestGuardAndProxyAgree sends thousands of generated request lines
// through an HTTP/1.1 server running the worker's order (reqpath, then
// resource.Guard, then proxy.Handler) and checks, for each, that the
// backend received exactly the path the guard decided on (joined to the
// target's base path), that the route was picked on that path, and that
// nothing reached a backend without a token unless the path is under the
// public /docs, however leniently the backend reads it.
func TestGuardAndProxyAgree(t *testing.T) {
	var l chainLog
	def := recordingBackend(t, "default", &l)
	api := recordingBackend(t, "api", &l)
	p := &config.Proxy{
		Name:      "alpha",
		Hostnames: []string{"alpha.test"},
		Target:    upstream(t, def.URL),
		Routes:    []config.Route{{Path: "/api", Target: upstream(t, api.URL+"/base")}},
		Timeouts:  config.Timeouts{Connect: 2 * time.Second, ResponseHeader: 5 * time.Second},
		Auth:      config.Auth{Required: true, Scopes: []string{"mcp"}, ResourcePath: "/mcp", PublicPaths: []string{"/docs"}},
	}
	ph, err := proxy.New(p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	behind := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.decided = append(l.decided, r.URL.Path)
		l.escaped = append(l.escaped, r.URL.EscapedPath())
		l.mu.Unlock()
		ph.ServeHTTP(w, r)
	})
	guarded := resource.New(p, policy.New([]*config.Proxy{p}, nil), fakeVerifier{}, nil).Wrap(behind)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := reqpath.Request(r); err != nil {
			proxy.WriteJSONError(w, http.StatusBadRequest, "invalid_path", err.Error(), p.Name)
			return
		}
		guarded.ServeHTTP(w, r)
	}))
	defer front.Close()

	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	send := func(target, token string) (int, error) {
		if conn == nil {
			c, err := net.DialTimeout("tcp", front.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				return 0, err
			}
			conn, br = c, bufio.NewReader(c)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		authz := ""
		if token != "" {
			authz = "Authorization: Bearer " + token + "\r\n"
		}
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: alpha.test\r\n%s\r\n", target, authz); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			conn.Close()
			conn = nil
		}
		return resp.StatusCode, nil
	}

	rng := rand.New(rand.NewPCG(10, 4))
	reached, refused := 0, 0
	for i := range 3000 {
		target := nastyPath(rng)
		token := ""
		if i%2 == 1 {
			token = "good"
		}
		l.reset()
		status, err := send(target, token)
		if err != nil {
			t.Fatalf("%q: %v", target, err)
		}
		l.mu.Lock()
		decided, escaped, backend, anon := l.decided, l.escaped, l.backend, l.anon
		l.mu.Unlock()
		if len(backend) == 0 {
			if status == http.StatusBadRequest {
				refused++
			}
			continue
		}
		reached++
		if len(backend) != 1 || len(decided) != 1 {
			t.Fatalf("%q: %d guard passes, %d backend requests", target, len(decided), len(backend))
		}
		name, got := backend[0][0], backend[0][1]
		want, wantName := escaped[0], "default"
		if proxy.MatchPrefix(decided[0], "/api") {
			want, wantName = "/base"+escaped[0], "api"
		}
		if name != wantName || got != want {
			t.Errorf("%q: guard decided %q (escaped %q); backend %s received %q, want %s %q", target, decided[0], escaped[0], name, got, wantName, want)
		}
		if d, err := url.PathUnescape(strings.TrimPrefix(got, "/base")); err != nil || (name == "default" && d != decided[0]) {
			t.Errorf("%q: backend path %q decodes to %q, %v; guard decided %q", target, got, d, err, decided[0])
		}
		lenient := path.Clean("/" + strings.ReplaceAll(mustUnescape(got), `\`, "/"))
		// A valid token on a public path is dropped too, so "anonymous" is
		// what the backend saw, whatever the client sent.
		if anon[0] && (!proxy.MatchPrefix(decided[0], "/docs") || !proxy.MatchPrefix(lenient, "/docs")) {
			t.Errorf("%q: reached %s as %q anonymously (guard decided %q, lenient reading %q)", target, name, got, decided[0], lenient)
		}
		if !anon[0] && token == "" {
			t.Errorf("%q: reached %s as %q with an identity but no token", target, name, got)
		}
	}
	// The generator must exercise both outcomes, or the test proves nothing.
	if reached < 300 || refused < 300 {
		t.Errorf("of 3000 generated paths %d reached a backend and %d were refused; the generator needs adjusting", reached, refused)
	}
	t.Logf("3000 paths: %d reached a backend, %d refused with 400", reached, refused)
}

func mustUnescape(s string) string {
	d, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return d
}
