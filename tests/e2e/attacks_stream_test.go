package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// A user whose access was withdrawn must not keep it through a stream
// opened before: the bearer check runs when a stream begins, and an MCP
// client's GET stream stays open for hours. The gateway ends the stream
// when its token is revoked (cleanly: the client reconnects, and its
// reconnection meets the bearer check).

// streamEnv is an OAuth gateway with a streaming backend behind
// stream.test (auth required) and alpha.test for the callback and the
// revocation endpoint, HTTP/3 on.
func streamEnv(t *testing.T) (*oauthEnv, *backends.SSE) {
	t.Helper()
	sse := backends.NewSSE(t)
	e := startOAuthWith(t, harness.Options{QUIC: true}, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables:       cliClient,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "stream", Hostnames: []string{"stream.test"}, Target: sse.URL},
	)
	return e, sse
}

// openAuthStream opens GET /sse at stream.test with token through c and
// reads the first event.
func openAuthStream(t *testing.T, c *http.Client, id, token string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://stream.test/sse?id="+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("opening the stream: status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if ev := within(t, streamWait, "first event", func() (sseEvent, error) { return readEvent(br) }, func() string { cancel(); return "" }); ev.Data != "event 1" {
		t.Fatalf("first event %+v", ev)
	}
	return resp, br
}

// wantStreamEnded waits up to limit after since for a clean end of the
// stream (as at a drain: the client resumes), and for the backend's stream
// to be closed.
func wantStreamEnded(t *testing.T, sse *backends.SSE, id string, br *bufio.Reader, since time.Time, limit time.Duration, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(br)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, io.EOF) {
			t.Errorf("%s: the stream ended with %v, want a clean end", what, err)
		}
		if d := time.Since(since); d > limit {
			t.Errorf("%s: the stream ended %v after, want within %v", what, d.Round(time.Millisecond), limit)
		} else {
			t.Logf("%s: the stream ended %v after", what, d.Round(time.Millisecond))
		}
	case <-time.After(limit + 3*time.Second):
		t.Fatalf("%s: the stream is still open %v after", what, time.Since(since).Round(time.Millisecond))
	}
	select {
	case <-sse.Gone(id):
	case <-time.After(streamWait):
		t.Errorf("%s: the backend's stream stayed open", what)
	}
}

// wantRefused: a new request with token through c is refused as
// invalid_token.
func wantRefused(t *testing.T, c *http.Client, token, what string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://stream.test/sse?id=refused", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("%s: reconnecting got %d %q, want 401 invalid_token", what, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestAttackStreamAfterRevocation: a token revoked (at another worker)
// while its stream is open ends the stream within a second, over
// HTTP/1.1 (where the stream left net/http), HTTP/2 and HTTP/3; a stream
// of another token stays open.
func TestAttackStreamAfterRevocation(t *testing.T) {
	t.Parallel()
	e, sse := streamEnv(t)
	clients := []struct {
		name string
		c    *http.Client
	}{
		{"h2", e.g.Client(harness.ClientConfig{})},
		{"http1", e.g.Client(harness.ClientConfig{HTTP1Only: true})},
		{"h3", e.g.HTTP3Client(t)},
	}
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			access, _ := e.tokens(t, "stream.test", "e2e-cli")
			other, _ := e.tokens(t, "stream.test", "e2e-cli")
			id, otherID := "revoked-"+cl.name, "kept-"+cl.name
			_, br := openAuthStream(t, cl.c, id, access)
			_, otherBr := openAuthStream(t, cl.c, otherID, other)
			r := e.postForm(t, "https://alpha.test/revoke", url.Values{"token": {access}, "client_id": {"e2e-cli"}}, "", "")
			revoked := time.Now()
			if r.status != http.StatusOK {
				t.Fatalf("revoke: %v", r)
			}
			wantStreamEnded(t, sse, id, br, revoked, time.Second, "a revoked token's stream")
			wantRefused(t, cl.c, access, "the revoked token")
			// The other stream goes on: its second event still comes.
			sse.Release(otherID)
			if ev := within(t, streamWait, "the other stream's next event", func() (sseEvent, error) { return readEvent(otherBr) }, func() string { return "" }); ev.Data != "event 2" {
				t.Errorf("the other stream: %+v", ev)
			}
		})
	}
}
