package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/proxy"
	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// pathRecorder is a backend that records the request line's path of every
// request and whether the gateway vouched for a user.
type pathRecorder struct {
	*httptest.Server

	mu   sync.Mutex
	seen []recordedPath // guarded by mu
}

type recordedPath struct {
	uri  string // the request-target as received, query cut off
	user string // X-MCPGate-User: set only after a valid token
	auth bool   // an Authorization header reached the backend
}

func newPathRecorder(t *testing.T) *pathRecorder {
	t.Helper()
	p := &pathRecorder{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uri, _, _ := strings.Cut(r.RequestURI, "?")
		p.mu.Lock()
		p.seen = append(p.seen, recordedPath{uri: uri, user: r.Header.Get(backends.UserHeader), auth: r.Header.Get("Authorization") != ""})
		p.mu.Unlock()
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"uri\":%q}\n", uri)
	}))
	t.Cleanup(func() {
		p.CloseClientConnections()
		p.Close()
	})
	return p
}

// since returns the requests recorded after the first n.
func (p *pathRecorder) since(n int) []recordedPath {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]recordedPath(nil), p.seen[n:]...)
}

func (p *pathRecorder) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen)
}

// generousPath is the path as the most lenient backend reads it: every
// escape decoded (%2F too), "\" taken for "/", dot segments resolved,
// slashes merged. A request that reaches the backend without a token must
// be inside the public path even read this way.
func generousPath(uri string) string {
	p, err := url.PathUnescape(uri)
	if err != nil {
		p = uri
	}
	p = strings.ReplaceAll(p, `\`, "/")
	return path.Clean("/" + p)
}

// rawAttempt is one request as an attacker writes it.
type rawAttempt struct {
	method, target string
	token          string
}

type rawResult struct {
	status int
	www    string
	body   string
	proto  string
}

const attackHost = "alpha.test"

// sendHTTP1 writes the request line by hand over TLS, so no client library
// cleans the path first.
func sendHTTP1(t *testing.T, g *harness.Gateway, a rawAttempt) rawResult {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: g.TLSConfig(attackHost, "http/1.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", g.HTTPSAddr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\n", a.method, a.target, attackHost)
	if a.token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", a.token)
	}
	if a.method == http.MethodPost {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(initializeBody), initializeBody)
	} else {
		b.WriteString("\r\n")
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %q over HTTP/1.1: reading response: %v", a.method, a.target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return rawResult{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body), resp.Proto}
}

// sendOpaque sends the request through c with the path in URL.Opaque, which
// the HTTP/2 and HTTP/3 transports put into :path unchanged.
func sendOpaque(t *testing.T, c *http.Client, a rawAttempt) rawResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if a.method == http.MethodPost {
		body = strings.NewReader(initializeBody)
	}
	req, err := http.NewRequestWithContext(ctx, a.method, "https://"+attackHost+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "//" + attackHost + a.target
	req.Header.Set("Accept", "application/json, text/event-stream")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %q: %v", a.method, a.target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return rawResult{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b), resp.Proto}
}

// TestAttackPathWalksOutOfPublicPath (issue 10, item 4): with public_paths
// = ["/docs"], no spelling of a path outside /docs (dot segments, encoded
// dots and slashes, backslashes, doubled slashes) reaches the backend
// without a token, over HTTP/1.1, HTTP/2 or HTTP/3; what reaches the
// backend is the normalized path the bearer check decided on.
func TestAttackPathWalksOutOfPublicPath(t *testing.T) {
	t.Parallel()
	rec := newPathRecorder(t)
	e := startOAuthWith(t, harness.Options{QUIC: true}, harness.GitHubOAuthConfig{
		CallbackHost: attackHost,
		Tables:       cliClient,
	}, harness.Proxy{Name: "alpha", Hostnames: []string{attackHost}, Target: rec.URL,
		Auth: "required = true\npublic_paths = [\"/docs\"]"})
	access, _ := e.tokens(t, attackHost, "e2e-cli")
	h3 := e.g.HTTP3Client(t)

	const (
		challenge = http.StatusUnauthorized // resolved to a path outside /docs
		refused   = http.StatusBadRequest   // no agreed spelling
	)
	attacks := []struct {
		target string
		want   int
	}{
		{"/docs/../mcp", challenge},
		{"/docs/%2e%2e/mcp", challenge},
		{"/docs/%2E%2E/mcp", challenge},
		{"/docs/.%2e/mcp", challenge},
		{"/docs/%2e./mcp", challenge},
		{"/docs//../mcp", challenge},
		{"/docs/./../mcp", challenge},
		{"/docs/../../../mcp", challenge},
		{"//mcp", challenge},
		{"/docs%2f..%2fmcp", refused},
		{"/docs%2F..%2Fmcp", refused},
		{"/docs/..%2fmcp", refused},
		{"/docs/%2e%2e%2fmcp", refused},
		{`/docs/..\mcp`, refused},
		{"/docs/%5c../mcp", refused},
		{"/docs/..%5cmcp", refused},
		{"/docs/..;/mcp", refused},
		{"/docs/..%3b/mcp", refused},
		{"/docs/%00/../mcp", refused},
		{"/docs/.../mcp", refused},
		{"/docs/..%20/mcp", refused},
	}
	clients := []struct {
		name string
		send func(*testing.T, rawAttempt) rawResult
	}{
		{"http1", func(t *testing.T, a rawAttempt) rawResult { return sendHTTP1(t, e.g, a) }},
		{"h2", func(t *testing.T, a rawAttempt) rawResult { return sendOpaque(t, e.api, a) }},
		{"h3", func(t *testing.T, a rawAttempt) rawResult { return sendOpaque(t, h3, a) }},
	}
	protos := map[string]string{"http1": "HTTP/1.1", "h2": "HTTP/2.0", "h3": "HTTP/3.0"}

	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			for _, at := range attacks {
				for _, m := range []string{http.MethodGet, http.MethodPost} {
					before := rec.count()
					res := cl.send(t, rawAttempt{method: m, target: at.target})
					if res.proto != protos[cl.name] {
						t.Errorf("%s %q answered over %s, want %s", m, at.target, res.proto, protos[cl.name])
					}
					switch {
					case res.status != at.want:
						t.Errorf("%s %q without a token: status %d, body %.200q; want %d", m, at.target, res.status, res.body, at.want)
					case res.status == challenge && !strings.HasPrefix(res.www, "Bearer "):
						t.Errorf("%s %q: 401 without a Bearer challenge (WWW-Authenticate %q)", m, at.target, res.www)
					case res.status == refused && !strings.Contains(res.body, `"error":"invalid_path"`):
						t.Errorf("%s %q: 400 body %.200q, want the gateway's invalid_path error", m, at.target, res.body)
					}
					for _, s := range rec.since(before) {
						if s.user == "" && !proxy.MatchPrefix(generousPath(s.uri), "/docs") {
							t.Errorf("%s %q without a token reached the backend as %q, outside /docs", m, at.target, s.uri)
						}
					}
				}
			}
		})
	}

	t.Run("public-path-normalized", func(t *testing.T) {
		for _, cl := range clients {
			for _, tc := range []struct{ target, want string }{
				{"/docs/a//b", "/docs/a/b"},
				{"/docs/./a/%7euser/", "/docs/a/~user/"},
				{"/docs/x/../a%2d%41", "/docs/a-A"},
				{"/docs/a%20b%c3%a9", "/docs/a%20b%C3%A9"},
			} {
				before := rec.count()
				res := cl.send(t, rawAttempt{method: http.MethodGet, target: tc.target})
				got := rec.since(before)
				if res.status != http.StatusOK || len(got) != 1 {
					t.Errorf("%s: GET %q without a token: status %d, body %.200q, %d backend requests; want 200 from the backend", cl.name, tc.target, res.status, res.body, len(got))
					continue
				}
				if got[0].uri != tc.want || got[0].user != "" || got[0].auth {
					t.Errorf("%s: GET %q reached the backend as %q (user %q, Authorization %v); want %q, anonymous", cl.name, tc.target, got[0].uri, got[0].user, got[0].auth, tc.want)
				}
			}
		}
	})

	t.Run("token-still-works", func(t *testing.T) {
		for _, cl := range clients {
			for _, tc := range []struct{ target, want string }{
				{"/mcp", "/mcp"},
				// With a token the resolved path is served: the backend
				// receives it, not the spelling.
				{"/docs/%2e%2e/mcp", "/mcp"},
				{"//mcp", "/mcp"},
			} {
				before := rec.count()
				res := cl.send(t, rawAttempt{method: http.MethodPost, target: tc.target, token: access})
				got := rec.since(before)
				if res.status != http.StatusOK || len(got) != 1 {
					t.Errorf("%s: POST %q with a valid token: status %d, body %.200q, %d backend requests; want 200 from the backend", cl.name, tc.target, res.status, res.body, len(got))
					continue
				}
				if got[0].uri != tc.want || got[0].user != "alice" || got[0].auth {
					t.Errorf("%s: POST %q reached the backend as %q (user %q, Authorization %v); want %q as alice, no token", cl.name, tc.target, got[0].uri, got[0].user, got[0].auth, tc.want)
				}
			}
		}
	})

	t.Run("no-secrets-logged", func(t *testing.T) { e.checkLogSecrets(t) })
}
