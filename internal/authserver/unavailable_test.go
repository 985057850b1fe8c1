package authserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store/postgres"
	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgServer is tokenServer on a fresh PostgreSQL database; again with the
// same url is another node.
func pgServer(t *testing.T, url string) (*Server, *clock) {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return tokenServerOn(t, st)
}

// TestRefreshAcrossNodes (issue 14 item 1): concurrent refreshes of one
// token on two nodes (two pools on one PostgreSQL) inside the grace get
// the one successor; after the grace, reuse on either node revokes the
// family for both.
func TestRefreshAcrossNodes(t *testing.T) {
	url := pgtest.URL(t)
	s1, clk := pgServer(t, url)
	s2, _ := pgServer(t, url)
	s2.now, s2.o.Now = clk.now, clk.now
	testRefreshRetry(t, s1, s2, clk)
}

// TestStoreUnavailable (issue 14 item 6): with PostgreSQL down, /token,
// /register and /authorize answer 503 with Retry-After, quickly, never 500
// or a hang; once it is back the same server works again and nothing was
// lost.
func TestStoreUnavailable(t *testing.T) {
	srv := pgtest.Get(t)
	s, clk := pgServer(t, pgtest.URL(t))
	s.o.OAuth.DynamicRegistration = true
	s.static["cli"].RedirectURIs = []string{"http://127.0.0.1/cb"}
	rt := family(t, s, "alice", "mcp", clk.now(), nil, nil)

	srv.Stop()
	up := false
	defer func() {
		if !up {
			srv.Start()
		}
	}()
	check := func(what string, do func() *httptest.ResponseRecorder) {
		t.Helper()
		start := time.Now()
		w := do()
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("%s took %v", what, d)
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s: HTTP %d, Retry-After %q; want 503 with Retry-After\n%s", what, w.Code, w.Header().Get("Retry-After"), w.Body)
		}
	}
	form := func(f url.Values) *http.Request {
		r := httptest.NewRequest("POST", "https://notes.test/token", strings.NewReader(f.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = "192.0.2.1:1234"
		return r
	}
	check("refresh", func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.token(w, form(refreshForm(rt)))
		return w
	})
	check("code redemption", func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.token(w, form(url.Values{"grant_type": {"authorization_code"}, "code": {"c"}, "code_verifier": {strings.Repeat("v", 43)}, "client_id": {"cli"}}))
		return w
	})
	check("revocation of a refresh token", func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.revoke(w, form(url.Values{"token": {rt}, "client_id": {"cli"}}))
		return w
	})
	check("registration", func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "https://notes.test/register", strings.NewReader(`{"redirect_uris":["http://127.0.0.1/cb"]}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		s.register(w, r)
		return w
	})
	check("authorize (registered client)", func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "https://notes.test/authorize?client_id=dyn-1&response_type=code", nil)
		w := httptest.NewRecorder()
		s.authorize(w, r)
		return w
	})
	check("authorize (static client)", func() *httptest.ResponseRecorder {
		q := url.Values{"client_id": {"cli"}, "redirect_uri": {"http://127.0.0.1/cb"}, "response_type": {"code"},
			"code_challenge": {s256("verifier-verifier-verifier-verifier-verifier")}, "code_challenge_method": {"S256"}}
		r := httptest.NewRequest("GET", "https://notes.test/authorize?"+q.Encode(), nil)
		r.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		s.authorize(w, r)
		return w
	})

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	up = true
	var status int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if status, _ = post(t, s.token, refreshForm(rt), "", ""); status != http.StatusServiceUnavailable {
			break
		}
	}
	if status != http.StatusOK {
		t.Fatalf("refresh after the restart: HTTP %d, want 200 (the refresh token survived)", status)
	}
}
