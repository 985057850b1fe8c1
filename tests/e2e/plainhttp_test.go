package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestPlainHTTP checks the http listener: known hosts are redirected to
// https with path and query kept (308, so POST stays POST); unknown hosts
// get 404. The backend is never reached.
func TestPlainHTTP(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL},
	}})
	c := g.PlainClient()

	t.Run("redirect", func(t *testing.T) {
		resp, body := get(t, c, "http://alpha.test/some/path?q=1&r=two%20words", nil)
		if resp.StatusCode != http.StatusPermanentRedirect {
			t.Fatalf("status %d, body %.200q; want 308", resp.StatusCode, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
		}
		if loc.Scheme != "https" || loc.Hostname() != "alpha.test" || loc.EscapedPath() != "/some/path" || loc.RawQuery != "q=1&r=two%20words" {
			t.Errorf("Location %q, want https://alpha.test/some/path?q=1&r=two%%20words", loc)
		}
	})

	t.Run("unknown-host", func(t *testing.T) {
		resp, body := get(t, c, "http://nobody.test/x", nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d, body %.200q; want 404", resp.StatusCode, body)
		}
		if len(body) > 1024 {
			t.Errorf("404 body is %d bytes, want a short text", len(body))
		}
	})

	if n := echo.Requests(); n != 0 {
		t.Errorf("backend saw %d requests from the plain http listener", n)
	}
}
