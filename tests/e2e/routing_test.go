package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestRouting covers how a connection and a request find their proxy:
// by SNI (unknown names refused), by Host within a connection (421 for
// another proxy's name), wildcards, and path routes on segment boundaries.
func TestRouting(t *testing.T) {
	t.Parallel()
	alpha := backends.NewEcho(t, "alpha")
	beta := backends.NewEcho(t, "beta")
	api := backends.NewEcho(t, "alpha-api")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test", "*.alpha.test"}, Target: alpha.URL,
			Tables: "[[routes]]\npath = \"/api\"\ntarget = \"" + api.URL + "\""},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL},
	}})

	t.Run("unknown-sni", func(t *testing.T) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: g.TLSConfig("unknown.test", "h2")}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := d.DialContext(ctx, "tcp", g.HTTPSAddr)
		if err == nil {
			conn.Close()
			t.Fatal("handshake with SNI unknown.test succeeded, want a refusal")
		}
		if !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("handshake error %q, want a TLS unrecognized_name alert", err)
		}
	})

	for _, pc := range protoCases {
		t.Run(pc.name+"/misdirected", func(t *testing.T) {
			// Every connection is made with SNI alpha.test, whatever the URL.
			c := sniClient(g, "alpha.test", pc.cfg)

			resp, er := getEcho(t, c, "https://alpha.test/ok", nil)
			if er.Backend != "alpha" || resp.Proto != pc.proto {
				t.Fatalf("sanity: alpha.test on an alpha connection reached %q over %s", er.Backend, resp.Proto)
			}
			resp, body := get(t, c, "https://beta.test/steal", nil)
			if resp.StatusCode != http.StatusMisdirectedRequest {
				t.Errorf("Host beta.test on a connection with SNI alpha.test: status %d, body %.200q; want 421", resp.StatusCode, body)
			}
			if resp.Proto != pc.proto {
				t.Errorf("protocol %s, want %s", resp.Proto, pc.proto)
			}
			if beta.Requests() != 0 {
				t.Errorf("beta's backend saw %d requests through alpha's connection", beta.Requests())
			}
		})
	}

	c := g.HTTP2Client()
	t.Run("wildcard", func(t *testing.T) {
		_, er := getEcho(t, c, "https://api.alpha.test/w", nil)
		if er.Backend != "alpha" {
			t.Errorf("api.alpha.test reached %q, want alpha (via *.alpha.test)", er.Backend)
		}
	})

	t.Run("path-routes", func(t *testing.T) {
		for path, want := range map[string]string{
			"/api":       "alpha-api",
			"/api/":      "alpha-api",
			"/api/tools": "alpha-api",
			"/api?x=1":   "alpha-api",
			"/apix":      "alpha",
			"/ap":        "alpha",
			"/mcp":       "alpha",
			"/v1/api":    "alpha",
		} {
			_, er := getEcho(t, c, "https://alpha.test"+path, nil)
			if er.Backend != want {
				t.Errorf("%s reached %q, want %q", path, er.Backend, want)
			}
		}
	})
}

// TestHeaderPolicy checks what the backend sees and what the client gets:
// X-Forwarded-* from the real connection (client-supplied values dropped),
// no client-supplied X-MCPGate-User, the target's Host, configured request and response headers, and the path
// and query unchanged.
func TestHeaderPolicy(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL,
			Tables: "[headers]\nrequest = { \"X-Env\" = \"test\" }\nresponse = { \"X-Served-By\" = \"mcpgate\" }"},
	}})
	target, err := url.Parse(echo.URL)
	if err != nil {
		t.Fatal(err)
	}

	for _, pc := range protoCases {
		t.Run(pc.name, func(t *testing.T) {
			spoof := http.Header{
				"X-Forwarded-For":   {"6.6.6.6"},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Host":  {"evil.test"},
				"X-Env":             {"prod"},
				// The gateway owns this identity header; a client must not
				// be able to claim a user.
				backends.UserHeader: {"mallory"},
			}
			resp, er := getEcho(t, g.Client(pc.cfg), "https://alpha.test/some/path?q=1&r=two%20words", spoof)

			check := func(name string, got []string, want ...string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("backend saw %s %q, want %q", name, got, want)
				}
			}
			check("X-Forwarded-For", er.Header.Values("X-Forwarded-For"), "127.0.0.1")
			check("X-Forwarded-Proto", er.Header.Values("X-Forwarded-Proto"), "https")
			check("X-Forwarded-Host", er.Header.Values("X-Forwarded-Host"), "alpha.test")
			check("X-Env", er.Header.Values("X-Env"), "test")
			check(backends.UserHeader, er.Header.Values(backends.UserHeader))
			if er.Host != target.Host {
				t.Errorf("backend saw Host %q, want the target's %q", er.Host, target.Host)
			}
			if er.Path != "/some/path" || er.Query != "q=1&r=two%20words" {
				t.Errorf("backend saw path %q query %q, want /some/path and q=1&r=two%%20words", er.Path, er.Query)
			}
			if got := resp.Header.Values("X-Served-By"); !slices.Equal(got, []string{"mcpgate"}) {
				t.Errorf("response X-Served-By %q, want [mcpgate]", got)
			}
			if resp.Proto != pc.proto {
				t.Errorf("protocol %s, want %s", resp.Proto, pc.proto)
			}
		})
	}
}
