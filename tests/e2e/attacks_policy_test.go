package e2e

// Attacks on the host → proxy → resource → user-list decision (issue 10,
// items 2 and 3). Each test acts as the attacker would, against the real
// binary; internal/policy is the one place that decides.

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// A wildcard proxy listed first, with the global lists ("*"), must not lend
// its policy to an exact proxy with its own narrow lists: mallory signs in
// on the exact proxy's host and must get nothing there.
func TestAttackWildcardLendsPolicy(t *testing.T) {
	t.Parallel()
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "secret.corp.test",
		Tables: `
[[oauth.clients]]
client_id = "e2e-cli"
redirect_uris = ["http://127.0.0.1/callback"]
`,
	},
		// File order: 00wild sorts (and once matched) first.
		harness.Proxy{Name: "00wild", Hostnames: []string{"*.corp.test"}},
		harness.Proxy{Name: "secret", Hostnames: []string{"secret.corp.test"},
			Auth: "required = true\nallowed_users = [\"alice\"]\nmcp_users = [\"alice\"]"},
	)

	// mallory may use the wildcard proxy...
	res := e.authorize(t, authzRequest{host: "x.corp.test", clientID: "e2e-cli", login: "mallory"})
	if res.Result == nil || res.Code == "" {
		t.Fatalf("sanity: mallory could not sign in on the wildcard proxy: %v%s", res.err, describeSteps(res.steps))
	}
	mtr := e.redeem(t, "x.corp.test", "e2e-cli", res, res.verifier)
	if mtr.status != http.StatusOK {
		t.Fatalf("sanity: mallory's code on the wildcard proxy: %v", mtr)
	}
	e.wantAccepted(t, "x.corp.test", mtr.str("access_token"), "mallory's token on the wildcard proxy")

	// ...but not the exact one: the flow ends without a code.
	res = e.authorize(t, authzRequest{host: "secret.corp.test", clientID: "e2e-cli", login: "mallory"})
	if res.Result != nil && res.Code != "" {
		tr := e.redeem(t, "secret.corp.test", "e2e-cli", res, res.verifier)
		st := 0
		if tok := tr.str("access_token"); tok != "" {
			st, _ = e.mcpStatus(t, "secret.corp.test", tok, nil)
		}
		t.Fatalf("mallory got a code on secret.corp.test (token %v, MCP status %d)%s", tr.status, st, describeSteps(res.steps))
	}
	if s := findStep(res.steps, "/oauth/callback"); s == nil || s.Status != http.StatusForbidden {
		t.Errorf("mallory's callback on secret.corp.test: want a 403 page%s", describeSteps(res.steps))
	}
	// Her wildcard token is for another audience.
	e.wantInvalidToken(t, "secret.corp.test", mtr.str("access_token"), "mallory's wildcard token at the exact proxy")
	// Nor can she name the exact proxy as the resource from the wildcard host.
	res = e.authorize(t, authzRequest{host: "x.corp.test", clientID: "e2e-cli", login: "mallory", resource: "https://secret.corp.test/mcp"})
	if res.Result != nil && res.Code != "" {
		t.Fatalf("mallory got a code for https://secret.corp.test/mcp from the wildcard host%s", describeSteps(res.steps))
	}

	// alice, who is listed, still gets in.
	alice, _ := e.tokens(t, "secret.corp.test", "e2e-cli")
	e.wantAccepted(t, "secret.corp.test", alice, "alice's token")
	if n, _, _ := e.spies["secret"].seen(); n == 0 {
		t.Error("secret's backend saw no request from alice")
	}
	e.checkLogSecrets(t)
}

// A connection whose SNI is a wildcard proxy's name must not carry the Host
// of a more specific proxy: 421 over HTTP/1.1, HTTP/2 and HTTP/3, and
// neither backend sees the request.
func TestAttackWildcardConnectionForeignHost(t *testing.T) {
	t.Parallel()
	wild, secret := backends.NewEcho(t, "wild"), backends.NewEcho(t, "secret")
	g := harness.Start(t, harness.Options{QUIC: true, Proxies: []harness.Proxy{
		{Name: "00wild", Hostnames: []string{"*.corp.test"}, Target: wild.URL},
		{Name: "secret", Hostnames: []string{"secret.corp.test"}, Target: secret.URL},
	}})

	// Sanity: each name reaches its own backend.
	if _, er := getEcho(t, g.HTTP2Client(), "https://x.corp.test/a", nil); er.Backend != "wild" {
		t.Fatalf("x.corp.test reached %q, want wild", er.Backend)
	}
	if _, er := getEcho(t, g.HTTP2Client(), "https://secret.corp.test/a", nil); er.Backend != "secret" {
		t.Fatalf("secret.corp.test reached %q, want secret", er.Backend)
	}
	wildBefore, secretBefore := wild.Requests(), secret.Requests()

	for _, pc := range protoCases {
		t.Run(pc.name, func(t *testing.T) {
			c := sniClient(g, "x.corp.test", pc.cfg)
			for _, host := range []string{"secret.corp.test", "SECRET.corp.test.", "secret.corp.test:443"} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://x.corp.test/steal", nil)
				req.Host = host
				resp, err := c.Do(req)
				cancel()
				if err != nil {
					t.Fatalf("Host %q: %v", host, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusMisdirectedRequest || resp.Proto != pc.proto {
					t.Errorf("Host %q on a connection with SNI x.corp.test: %s %d, want %s 421", host, resp.Proto, resp.StatusCode, pc.proto)
				}
			}
		})
	}
	t.Run("h3", func(t *testing.T) {
		c := g.HTTP3Client(t)
		req, _ := http.NewRequest(http.MethodGet, "https://x.corp.test/steal", nil)
		req.Host = "secret.corp.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("HTTP/3: Host secret.corp.test with SNI x.corp.test: %d, want 421", resp.StatusCode)
		}
	})
	if n := wild.Requests() - wildBefore; n != 0 {
		t.Errorf("the wildcard backend served %d requests for secret.corp.test", n)
	}
	if n := secret.Requests() - secretBefore; n != 0 {
		t.Errorf("secret's backend served %d requests through the wildcard's connections", n)
	}
	if logs := g.Logs(); strings.Contains(logs, `"path":"/steal","proto"`) && !strings.Contains(logs, `"status":421`) {
		t.Error("the access log shows /steal without a 421")
	}
}
