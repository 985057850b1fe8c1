package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/metrics"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/proxy"
	"github.com/mcpgate/mcpgate/internal/token"
)

type fakeVerifier map[string]*identity.Principal

func (f fakeVerifier) Verify(raw, audience string) (*identity.Principal, error) {
	ti, ok := f[raw+"|"+audience]
	if !ok {
		return nil, errors.New("invalid")
	}
	return ti, nil
}

func newGuard(auth config.Auth) *Guard {
	p := &config.Proxy{Name: "notes", Hostnames: []string{"notes.test"}, Auth: auth}
	other := &config.Proxy{Name: "other", Hostnames: []string{"other.test"}, Auth: auth}
	v := fakeVerifier{
		"good|https://notes.test/mcp":      &identity.Principal{Login: "alice", ClientID: "c1", Scopes: []string{"mcp", "user"}},
		"noscope|https://notes.test/mcp":   &identity.Principal{Login: "bob", ClientID: "c1", Scopes: []string{"user"}},
		"otherhost|https://other.test/mcp": &identity.Principal{Login: "alice", ClientID: "c1", Scopes: []string{"mcp"}},
	}
	return New(p, policy.New([]*config.Proxy{p, other}, nil), v, []string{"https://app.example.com"})
}

func TestGuard(t *testing.T) {
	auth := config.Auth{Required: true, Scopes: []string{"mcp"}, ResourcePath: "/mcp", PublicPaths: []string{"/docs"}}
	const meta = `resource_metadata="https://notes.test/.well-known/oauth-protected-resource/mcp"`
	tests := []struct {
		name       string
		method     string
		path       string
		header     map[string]string
		wantStatus int
		wantAuthn  string // substring of WWW-Authenticate, "" for none expected
		wantUser   string // X-Mcpgate-User reaching the backend
	}{
		{"no token", "POST", "/mcp", nil, 401, `Bearer ` + meta + `, scope="mcp"`, ""},
		{"valid", "POST", "/mcp", map[string]string{"Authorization": "Bearer good"}, 200, "", "alice"},
		{"scheme case", "POST", "/mcp", map[string]string{"Authorization": "bearer good"}, 200, "", "alice"},
		{"invalid token", "POST", "/mcp", map[string]string{"Authorization": "Bearer nope"}, 401, `error="invalid_token"`, ""},
		{"wrong audience", "POST", "/mcp", map[string]string{"Authorization": "Bearer otherhost"}, 401, `error="invalid_token"`, ""},
		{"insufficient scope", "POST", "/mcp", map[string]string{"Authorization": "Bearer noscope"}, 403, `error="insufficient_scope"`, ""},
		{"token in query", "POST", "/mcp?access_token=good", nil, 400, `error="invalid_request"`, ""},
		{"basic auth", "POST", "/mcp", map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}, 401, meta, ""},
		{"malformed bearer", "POST", "/mcp", map[string]string{"Authorization": "Bearer a b"}, 400, `error="invalid_request"`, ""},
		{"public path", "GET", "/docs/x", nil, 200, "", ""},
		{"not public", "GET", "/docsx", nil, 401, meta, ""},
		{"preflight needs no token", "OPTIONS", "/mcp", map[string]string{"Origin": "https://notes.test", "Access-Control-Request-Method": "POST"}, 204, "", ""},
		{"foreign origin", "POST", "/mcp", map[string]string{"Authorization": "Bearer good", "Origin": "https://evil.test"}, 403, "", ""},
		{"own origin", "POST", "/mcp", map[string]string{"Authorization": "Bearer good", "Origin": "https://notes.test"}, 200, "", "alice"},
		{"allowed origin", "POST", "/mcp", map[string]string{"Authorization": "Bearer good", "Origin": "https://app.example.com"}, 200, "", "alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuard(auth)
			var gotUser, gotAuthz string
			reached := false
			h := g.Wrap(proxyCapture(&reached, &gotUser, &gotAuthz))
			req := httptest.NewRequest(tt.method, "https://notes.test"+tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			wa := rec.Header().Get("WWW-Authenticate")
			if tt.wantAuthn != "" && !strings.Contains(wa, tt.wantAuthn) {
				t.Errorf("WWW-Authenticate = %q, want it to contain %q", wa, tt.wantAuthn)
			}
			if tt.wantStatus == 401 || tt.wantStatus == 403 && tt.wantAuthn != "" {
				if rec.Header().Get("Access-Control-Expose-Headers") == "" {
					t.Error("challenge without Access-Control-Expose-Headers")
				}
			}
			if gotUser != tt.wantUser {
				t.Errorf("backend saw user %q, want %q", gotUser, tt.wantUser)
			}
			if reached && gotAuthz != "" {
				t.Errorf("Authorization reached the backend: %q", gotAuthz)
			}
		})
	}
}

// proxyCapture records what a backend behind the proxy would be given.
func proxyCapture(reached *bool, user, authz *string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*reached = true
		*authz = r.Header.Get("Authorization")
		if who, ok := proxy.IdentityFrom(r.Context()); ok {
			*user = who.Login
		}
	})
}

func TestMetadata(t *testing.T) {
	g := newGuard(config.Auth{Required: true, Scopes: []string{"mcp"}, ResourcePath: "/mcp"})
	h := g.Wrap(http.NotFoundHandler())
	for path, wantResource := range map[string]string{
		"/.well-known/oauth-protected-resource/mcp": "https://notes.test:8443/mcp",
		"/.well-known/oauth-protected-resource":     "https://notes.test:8443",
	} {
		req := httptest.NewRequest("GET", "https://notes.test:8443"+path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m Metadata
		if err := json.NewDecoder(rec.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		if rec.Code != 200 || m.Resource != wantResource || len(m.AuthorizationServers) != 1 || m.AuthorizationServers[0] != "https://notes.test:8443" {
			t.Errorf("%s: %d %+v", path, rec.Code, m)
		}
		if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no CORS", path)
		}
	}
}

func TestNotRequiredPassesThrough(t *testing.T) {
	g := newGuard(config.Auth{Required: false})
	reached := false
	var user, authz string
	h := g.Wrap(proxyCapture(&reached, &user, &authz))
	req := httptest.NewRequest("GET", "https://notes.test/mcp", nil)
	req.Header.Set("Authorization", "Bearer backend-own")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if !reached || authz != "Bearer backend-own" {
		t.Fatalf("reached=%v authz=%q", reached, authz)
	}
}

// TestRejectionsCounted: refusals show in mcpgate_bearer_rejected_total by
// reason.
func TestRejectionsCounted(t *testing.T) {
	before := metrics.Default.Snapshot().BearerRejected["missing"]
	if got := rejectReason(fmt.Errorf("wrapped: %w", token.ErrAudience)); got != metrics.BearerAudience {
		t.Errorf("audience error → %v", got)
	}
	if got := rejectReason(errors.New("x")); got != metrics.BearerInvalid {
		t.Errorf("other error → %v", got)
	}
	metrics.Default.BearerRejected(metrics.BearerMissing)
	if after := metrics.Default.Snapshot().BearerRejected["missing"]; after != before+1 {
		t.Errorf("missing: %d → %d", before, after)
	}
}
