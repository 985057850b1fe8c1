package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestUpstreamErrors: an unreachable target gives 502 with a JSON body
// naming the proxy; a target slower than timeouts.response_header gives 504
// soon after that timeout.
func TestUpstreamErrors(t *testing.T) {
	t.Parallel()
	slow := backends.NewSlow(t, 20*time.Second)
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "deadend", Hostnames: []string{"deadend.test"}, Target: backends.ClosedURL(t)},
		{Name: "sloth", Hostnames: []string{"sloth.test"}, Target: slow.URL,
			Tables: "[timeouts]\nresponse_header = \"1s\""},
	}})
	c := g.HTTP2Client()

	t.Run("502", func(t *testing.T) {
		resp, body := get(t, c, "https://deadend.test/mcp", nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, body %.300q; want 502", resp.StatusCode, body)
		}
		if !json.Valid(body) {
			t.Errorf("502 body is not JSON: %.300q", body)
		}
		if !strings.Contains(string(body), "deadend") {
			t.Errorf("502 body does not name the proxy deadend: %.300q", body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "json") {
			t.Errorf("502 Content-Type %q, want JSON", ct)
		}
	})

	t.Run("504", func(t *testing.T) {
		start := time.Now()
		resp, body := get(t, c, "https://sloth.test/mcp", nil)
		took := time.Since(start)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("status %d after %v, body %.300q; want 504", resp.StatusCode, took, body)
		}
		if took < 900*time.Millisecond || took > 5*time.Second {
			t.Errorf("504 after %v, want about the 1s response_header timeout", took)
		}
	})
}
