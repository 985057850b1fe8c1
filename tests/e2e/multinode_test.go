package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
	"github.com/mcpgate/mcpgate/tests/fakegithub"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// startNodes starts n gateways (different sockets and state dirs) on one
// fresh PostgreSQL database, with the same configuration: one fake GitHub,
// one OAuth app, one key-encryption key, the proxy alpha.test in front of
// one spied MCP server. It returns the server so a test can stop it.
func startNodes(t *testing.T, n int) (*pgtest.Server, []*oauthEnv) {
	t.Helper()
	srv := pgtest.Get(t)
	db := srv.NewDatabase(t)
	secrets := t.TempDir()
	pw, kek := filepath.Join(secrets, "db.password"), filepath.Join(secrets, "kek")
	if err := os.WriteFile(pw, []byte(pgtest.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kek, []byte("c2hhcmVkLWtleS1lbmNyeXB0aW9uLWtleS1vZi10aGUtbm9kZXM=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gh := fakegithub.New(t)
	for _, u := range oauthUsers {
		gh.AddUser(u)
	}
	gh.SetLoginAs("alice")
	oauth := harness.NewGitHubOAuth(t, gh, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		OAuthKeys:    `refresh_reuse_grace = "3s"`,
		Tables:       cliClient,
	})
	storeTOML := fmt.Sprintf("\n[store]\nurl = %q\npassword_file = %q\nkey_encryption_key_file = %q\nmax_connections = 4\n",
		srv.URL(db), pw, kek)
	spy := newBackendSpy(t, "alpha-backend")
	var nodes []*oauthEnv
	for range n {
		e := &oauthEnv{gh: gh, oauth: oauth, spies: map[string]*backendSpy{"alpha": spy}}
		e.g = harness.Start(t, harness.Options{
			Proxies:    []harness.Proxy{{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: spy.URL, Auth: "required = true"}},
			ServerTOML: oauth.TOML() + storeTOML,
		})
		e.api = e.g.HTTP2Client()
		e.api.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		nodes = append(nodes, e)
	}
	t.Cleanup(func() {
		for _, e := range nodes {
			e.checkLogSecrets(t)
			if strings.Contains(e.g.Logs(), pgtest.Password) {
				t.Error("the database password appears in a gateway log")
			}
		}
	})
	return srv, nodes
}

// TestMultiNode (issue 14 item 8): two mcpgate instances share one
// PostgreSQL: no sticky sessions, every step may land on either node, and a
// database outage costs logins and refreshes (503) but not a single bearer
// check.
func TestMultiNode(t *testing.T) {
	srv, nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const host, client = "alpha.test", "e2e-cli"

	// Log in through node A, redeem the code on node B: the pending flow,
	// the code and the signing keys are shared.
	res := a.code(t, authzRequest{host: host, clientID: client})
	tr := b.redeem(t, host, client, res, res.verifier)
	if tr.status != http.StatusOK {
		t.Fatalf("redeeming on B a code issued by A: %v", tr)
	}
	access, rt := tr.str("access_token"), tr.str("refresh_token")
	a.wantAccepted(t, host, access, "B's access token at A")
	b.wantAccepted(t, host, access, "B's access token at B")

	// Refresh on A, then on B.
	ra := a.refresh(t, host, client, rt)
	if ra.status != http.StatusOK {
		t.Fatalf("refresh on A: %v", ra)
	}
	rb := b.refresh(t, host, client, ra.str("refresh_token"))
	if rb.status != http.StatusOK {
		t.Fatalf("refresh on B of A's successor: %v", rb)
	}
	b.wantAccepted(t, host, ra.str("access_token"), "A's refreshed access token at B")
	a.wantAccepted(t, host, rb.str("access_token"), "B's refreshed access token at A")
	// A client retrying a refresh inside the grace window may land on the
	// other node; it gets the same successor.
	retry := a.refresh(t, host, client, ra.str("refresh_token"))
	if retry.status != http.StatusOK || retry.str("refresh_token") != rb.str("refresh_token") {
		t.Errorf("retry on A inside the grace of a refresh done on B: %v, want the same successor", retry)
	}

	// Revoke on B; A refuses within a second.
	latest := rb.str("access_token")
	r := b.postForm(t, "https://"+host+"/revoke", url.Values{"token": {latest}, "client_id": {client}}, "", "")
	revoked := time.Now()
	if r.status != http.StatusOK {
		t.Fatalf("revoke on B: %v", r)
	}
	a.waitRefused(t, host, latest, revoked, time.Second, "access token revoked on the other node")

	// A code redeemed on B and replayed on A: refused, and the grant of
	// the first redemption is revoked everywhere.
	res = a.code(t, authzRequest{host: host, clientID: client})
	first := b.redeem(t, host, client, res, res.verifier)
	if first.status != http.StatusOK {
		t.Fatalf("redeeming on B: %v", first)
	}
	replayed := time.Now()
	if again := a.redeem(t, host, client, res, res.verifier); again.status != http.StatusBadRequest || again.str("error") != "invalid_grant" {
		t.Errorf("replaying on A a code redeemed on B: %v, want invalid_grant", again)
	}
	b.waitRefused(t, host, first.str("access_token"), replayed, time.Second, "access token of a code replayed on the other node")

	// PostgreSQL stops for 5 s under load.
	access, rt = a.tokens(t, host, client)
	var checks, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, e := range nodes {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, _ := e.mcpStatus(t, host, access, nil)
				checks.Add(1)
				if st != http.StatusOK {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("HTTP %d", st))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	srv.Stop()
	down := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			srv.Start()
		}
	}()
	for i, e := range nodes {
		start := time.Now()
		r := e.refresh(t, host, client, rt)
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("node %d: refresh with the database down took %v", i, d)
		}
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.str("error") != "temporarily_unavailable" {
			t.Errorf("node %d: refresh with the database down: %v (Retry-After %q), want 503 temporarily_unavailable with Retry-After",
				i, r, r.header.Get("Retry-After"))
		}
	}
	if reg := b.postJSON(t, "https://"+host+"/register", map[string]any{"redirect_uris": []string{"http://127.0.0.1/callback"}}); reg.status != http.StatusServiceUnavailable || reg.header.Get("Retry-After") == "" {
		t.Errorf("registration with the database down: %v, want 503", reg)
	}
	time.Sleep(time.Until(down.Add(5 * time.Second)))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	up := time.Now()
	var after jsonResp
	for {
		after = a.refresh(t, host, client, rt)
		if after.status != http.StatusServiceUnavailable || time.Since(up) > 15*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after.status != http.StatusOK {
		t.Fatalf("refresh after the database came back: %v (nothing may be lost)", after)
	}
	t.Logf("token endpoint back %v after the restart", time.Since(up).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d bearer checks failed during the outage (first: %v)", n, checks.Load(), firstFailure.Load())
	} else {
		t.Logf("%d bearer checks during the outage, all passed", checks.Load())
	}
	b.wantAccepted(t, host, after.str("access_token"), "an access token issued after the outage, at the other node")
}
