package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// refreshGrace is [oauth] refresh_reuse_grace in TestOAuthProtocol.
const refreshGrace = time.Second

// TestOAuthProtocol checks the authorization and resource servers with
// hand-made requests against one gateway with three protected proxies:
// metadata, challenges, CORS, token responses, and the attacks of the
// issue's negative-test list, each with its exact status and OAuth error.
// Each subtest stands alone (any one passes with -run on its own); they run
// one after another, not in parallel, because several switch whom
// fakegithub signs in.
func TestOAuthProtocol(t *testing.T) {
	t.Parallel()
	introspectSecret := "e2e-resource-server-secret-42"
	secretFile := filepath.Join(t.TempDir(), "rs.secret")
	if err := os.WriteFile(secretFile, []byte(introspectSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		AllowedUsers: []string{"alice", "bob"},
		MCPUsers:     []string{"alice", "bob"},
		OAuthKeys:    fmt.Sprintf("refresh_reuse_grace = %q", refreshGrace.String()),
		Tables: `[[oauth.clients]]
client_id = "e2e-cli"
name = "E2E CLI"
redirect_uris = ["http://127.0.0.1/callback"]

[[oauth.clients]]
client_id = "e2e-other"
redirect_uris = ["http://127.0.0.1/callback"]

[[oauth.clients]]
client_id = "e2e-rs"
name = "E2E resource server"
client_secret_file = "` + secretFile + `"
redirect_uris = ["https://rs.example.com/callback"]
introspect = true
`,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "beta", Hostnames: []string{"beta.test"}},
		// A third worker for the registration rate limit, which all
		// workers share.
		harness.Proxy{Name: "delta", Hostnames: []string{"delta.test"}},
	)

	t.Run("authorization-server-metadata", func(t *testing.T) { testASMetadata(t, e) })
	t.Run("protected-resource-metadata", func(t *testing.T) { testPRMetadata(t, e) })
	t.Run("challenge", func(t *testing.T) { testChallenge(t, e) })
	t.Run("cors-preflight", func(t *testing.T) { testPreflight(t, e) })
	t.Run("token-response", func(t *testing.T) { testTokenResponse(t, e) })
	t.Run("forged-tokens", func(t *testing.T) { testForgedTokens(t, e) })
	t.Run("code-reused", func(t *testing.T) { testCodeReused(t, e) })
	t.Run("code-other-client", func(t *testing.T) {
		res := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
		wantOAuthError(t, e.redeem(t, "alpha.test", "e2e-other", res, res.verifier), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("wrong-pkce-verifier", func(t *testing.T) {
		res := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
		wantOAuthError(t, e.redeem(t, "alpha.test", "e2e-cli", res, oauth2.GenerateVerifier()), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("authorize-errors", func(t *testing.T) { testAuthorizeErrors(t, e) })
	t.Run("registration", func(t *testing.T) { testRegistration(t, e) })
	t.Run("refresh-reused", func(t *testing.T) { testRefreshReused(t, e) })
	t.Run("refresh-race", func(t *testing.T) { testRefreshRace(t, e) })
	t.Run("resource-binding", func(t *testing.T) { testResourceBinding(t, e) })
	t.Run("forged-identity-headers", func(t *testing.T) { testForgedIdentity(t, e) })
	t.Run("revocation-across-workers", func(t *testing.T) { testRevocation(t, e) })
	t.Run("dynamic-client-consent-and-deletion", func(t *testing.T) { testDynamicClient(t, e) })
	t.Run("consent-csrf", func(t *testing.T) { testConsentCSRF(t, e) })
	t.Run("introspection", func(t *testing.T) { testIntrospection(t, e, introspectSecret) })
	t.Run("user-not-allowed", func(t *testing.T) { testUserNotAllowed(t, e) })
	t.Run("registration-rate-limit", func(t *testing.T) { testRegistrationRateLimit(t, e) })
	t.Run("no-credentials-in-logs", func(t *testing.T) { e.checkLogSecrets(t) })
}

// wantOAuthError checks a JSON OAuth error response.
func wantOAuthError(t *testing.T, r jsonResp, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Errorf("got %v; want HTTP %d with error %q", r, status, code)
	}
	if cc := r.header.Get("Cache-Control"); r.status >= 400 && !strings.Contains(cc, "no-store") {
		t.Errorf("error response Cache-Control %q, want no-store", cc)
	}
}

func strList(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func testASMetadata(t *testing.T, e *oauthEnv) {
	for _, c := range []struct{ host, issuer string }{
		{"alpha.test", "https://alpha.test"},
		{"alpha.test:8443", "https://alpha.test:8443"},
		{"alpha.test:443", "https://alpha.test"}, // the default port is not part of the issuer
		{"beta.test", "https://beta.test"},
	} {
		for _, wk := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
			r := e.getJSON(t, "https://"+c.host+wk)
			if r.status != http.StatusOK {
				t.Errorf("GET https://%s%s: %v", c.host, wk, r)
				continue
			}
			m := r.body
			iss := c.issuer
			for key, want := range map[string]string{
				"issuer":                 iss,
				"authorization_endpoint": iss + "/authorize",
				"token_endpoint":         iss + "/token",
				"registration_endpoint":  iss + "/register",
				"revocation_endpoint":    iss + "/revoke",
				"jwks_uri":               iss + "/jwks",
			} {
				if got, _ := m[key].(string); got != want {
					t.Errorf("%s%s: %s = %q, want %q", c.host, wk, key, got, want)
				}
			}
			for key, want := range map[string][]string{
				"code_challenge_methods_supported": {"S256"},
				"response_types_supported":         {"code"},
			} {
				if got := strList(m[key]); !slices.Equal(got, want) {
					t.Errorf("%s%s: %s = %v, want exactly %v", c.host, wk, key, got, want)
				}
			}
			for key, want := range map[string][]string{
				"grant_types_supported":                 {"authorization_code", "refresh_token"},
				"token_endpoint_auth_methods_supported": {"none"},
				"scopes_supported":                      {"mcp"},
			} {
				for _, w := range want {
					if !slices.Contains(strList(m[key]), w) {
						t.Errorf("%s%s: %s = %v, want it to contain %q", c.host, wk, key, m[key], w)
					}
				}
			}
			for _, key := range []string{"client_id_metadata_document_supported", "authorization_response_iss_parameter_supported"} {
				if m[key] != true {
					t.Errorf("%s%s: %s = %v, want true", c.host, wk, key, m[key])
				}
			}
			if wk == "/.well-known/openid-configuration" {
				for _, key := range []string{"subject_types_supported", "id_token_signing_alg_values_supported"} {
					if len(strList(m[key])) == 0 {
						t.Errorf("%s%s: %s missing (OpenID Connect Discovery requires it)", c.host, wk, key)
					}
				}
			}
		}
	}
}

func testPRMetadata(t *testing.T, e *oauthEnv) {
	for _, host := range []string{"alpha.test", "alpha.test:8443", "beta.test"} {
		r := e.getJSON(t, "https://"+host+"/.well-known/oauth-protected-resource/mcp")
		if r.status != http.StatusOK {
			t.Errorf("path-suffixed resource metadata of %s: %v", host, r)
			continue
		}
		if got, want := r.str("resource"), "https://"+host+"/mcp"; got != want {
			t.Errorf("%s: resource = %q, want exactly %q", host, got, want)
		}
		if got, want := strList(r.body["authorization_servers"]), []string{"https://" + host}; !slices.Equal(got, want) {
			t.Errorf("%s: authorization_servers = %v, want %v", host, got, want)
		}
		if got := strList(r.body["scopes_supported"]); !slices.Contains(got, "mcp") {
			t.Errorf("%s: scopes_supported = %v, want mcp", host, got)
		}
		if got := strList(r.body["bearer_methods_supported"]); !slices.Equal(got, []string{"header"}) {
			t.Errorf("%s: bearer_methods_supported = %v, want [header]", host, got)
		}
		root := e.getJSON(t, "https://"+host+"/.well-known/oauth-protected-resource")
		if root.status != http.StatusOK || !slices.Equal(strList(root.body["authorization_servers"]), []string{"https://" + host}) {
			t.Errorf("root resource metadata of %s: %v", host, root)
		}
	}
}

func testChallenge(t *testing.T, e *oauthEnv) {
	const meta = `resource_metadata="https://alpha.test/.well-known/oauth-protected-resource/mcp"`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://alpha.test/mcp", strings.NewReader(initializeBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://alpha.test")
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	www := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(www, "Bearer ") ||
		!strings.Contains(www, meta) || !strings.Contains(www, `scope="mcp"`) || strings.Contains(www, "error=") {
		t.Errorf("no token: status %d, WWW-Authenticate %q; want 401 Bearer with %s, scope=\"mcp\" and no error", resp.StatusCode, www, meta)
	}
	if exp := strings.ToLower(resp.Header.Get("Access-Control-Expose-Headers")); !strings.Contains(exp, "www-authenticate") || !strings.Contains(exp, "mcp-session-id") {
		t.Errorf("401 Access-Control-Expose-Headers %q, want WWW-Authenticate and Mcp-Session-Id exposed", exp)
	}

	st, www := e.mcpStatus(t, "alpha.test", "not-a-jwt", nil)
	if st != http.StatusUnauthorized || !strings.Contains(www, `error="invalid_token"`) || !strings.Contains(www, meta) || !strings.Contains(www, `scope="mcp"`) {
		t.Errorf("garbage token: status %d, WWW-Authenticate %q; want 401 with error=\"invalid_token\", %s and scope", st, www, meta)
	}

	// A browser on another origin (DNS rebinding, cross-site) is refused
	// before the token is even looked at.
	st, _ = e.mcpStatus(t, "alpha.test", "", http.Header{"Origin": {"https://evil.example"}})
	if st != http.StatusForbidden {
		t.Errorf("POST /mcp with Origin https://evil.example: status %d, want 403", st)
	}

	// Tokens are accepted from the Authorization header only.
	r := e.getJSON(t, "https://alpha.test/mcp?access_token=abc")
	if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" {
		t.Errorf("token in the query string: %v; want 400 invalid_request", r)
	}
}

func testPreflight(t *testing.T, e *oauthEnv) {
	for _, c := range []struct{ host, path, origin string }{
		{"alpha.test", "/token", "https://app.example.com"},
		{"alpha.test", "/register", "https://app.example.com"},
		{"alpha.test", "/.well-known/oauth-authorization-server", "https://app.example.com"},
		{"alpha.test", "/.well-known/oauth-protected-resource/mcp", "https://app.example.com"},
		{"beta.test", "/token", "http://localhost:6274"}, // the MCP Inspector's origin
		{"alpha.test", "/mcp", "https://alpha.test"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, "https://"+c.host+c.path, nil)
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type, mcp-protocol-version")
		resp, err := e.api.Do(req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
			t.Errorf("OPTIONS %s%s: status %d, want 204 without a token", c.host, c.path, resp.StatusCode)
			continue
		}
		if o := h.Get("Access-Control-Allow-Origin"); o != "*" && o != c.origin {
			t.Errorf("OPTIONS %s%s: Access-Control-Allow-Origin %q", c.host, c.path, o)
		}
		if m := h.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
			t.Errorf("OPTIONS %s%s: Access-Control-Allow-Methods %q lacks POST", c.host, c.path, m)
		}
		if ah := strings.ToLower(h.Get("Access-Control-Allow-Headers")); !strings.Contains(ah, "content-type") || !strings.Contains(ah, "mcp-protocol-version") {
			t.Errorf("OPTIONS %s%s: Access-Control-Allow-Headers %q", c.host, c.path, ah)
		}
	}
}

func testTokenResponse(t *testing.T, e *oauthEnv) {
	res := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
	r := e.redeem(t, "alpha.test", "e2e-cli", res, res.verifier)
	if r.status != http.StatusOK {
		t.Fatalf("token: %v", r)
	}
	if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("token response Cache-Control %q, want no-store", cc)
	}
	if r.str("token_type") != "Bearer" || r.str("access_token") == "" || r.str("refresh_token") == "" || r.str("scope") != "mcp" {
		t.Errorf("token response %s", r.raw)
	}
	if exp, _ := r.body["expires_in"].(float64); exp <= 0 || exp > 3600 {
		t.Errorf("expires_in = %v, want the 1h default", r.body["expires_in"])
	}
	h, c := jwtParts(t, r.str("access_token"))
	if h["typ"] != "at+jwt" || h["alg"] != "RS256" || h["kid"] == nil {
		t.Errorf("access token header %v, want typ at+jwt, alg RS256 and a kid", h)
	}
	for k, want := range map[string]any{
		"iss": "https://alpha.test", "aud": "https://alpha.test/mcp", "client_id": "e2e-cli",
		"scope": "mcp", "login": "alice", "sub": "github:101",
	} {
		if c[k] != want {
			t.Errorf("access token claim %s = %v, want %v", k, c[k], want)
		}
	}
	e.wantAccepted(t, "alpha.test", r.str("access_token"), "a fresh access token")

	// Without a resource parameter, the token is for the host the flow
	// started on, never for every proxy.
	res = e.code(t, authzRequest{host: "beta.test", clientID: "e2e-cli", resource: "-"})
	tr := e.postForm(t, "https://beta.test/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {res.Code}, "redirect_uri": {loopbackRedirect},
		"code_verifier": {res.verifier}, "client_id": {"e2e-cli"},
	}, "", "")
	if tr.status != http.StatusOK {
		t.Fatalf("token without resource: %v", tr)
	}
	if _, c := jwtParts(t, tr.str("access_token")); c["aud"] != "https://beta.test/mcp" {
		t.Errorf("token from a flow at beta.test without resource has aud %v, want https://beta.test/mcp", c["aud"])
	}
	e.wantAccepted(t, "beta.test", tr.str("access_token"), "beta token without resource")
	e.wantInvalidToken(t, "alpha.test", tr.str("access_token"), "beta token without resource")

	// An error from the token endpoint is not cacheable either.
	bad := e.postForm(t, "https://alpha.test/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {"no-such-code"}, "redirect_uri": {loopbackRedirect},
		"code_verifier": {oauth2.GenerateVerifier()}, "client_id": {"e2e-cli"},
	}, "", "")
	wantOAuthError(t, bad, http.StatusBadRequest, "invalid_grant")
}

// rsaPublic reads the JWKS entry kid.
func rsaPublic(t *testing.T, e *oauthEnv, kid string) *rsa.PublicKey {
	t.Helper()
	r := e.getJSON(t, "https://alpha.test/jwks")
	keys, _ := r.body["keys"].([]any)
	for _, k := range keys {
		m, _ := k.(map[string]any)
		if m["kid"] != kid {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(m["n"].(string))
		eb, err2 := base64.RawURLEncoding.DecodeString(m["e"].(string))
		if err1 != nil || err2 != nil {
			t.Fatalf("JWKS key %s: bad n or e", kid)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(eb).Int64())}
	}
	t.Fatalf("kid %q not in the JWKS %s", kid, r.raw)
	return nil
}

func testForgedTokens(t *testing.T, e *oauthEnv) {
	valid, _ := e.tokens(t, "alpha.test", "e2e-cli")
	e.wantAccepted(t, "alpha.test", valid, "the genuine token")
	parts := strings.Split(valid, ".")
	header, claims := jwtParts(t, valid)
	kid, _ := header["kid"].(string)
	key := signingKey(t, e.g.StateDir, kid)
	now := time.Now().Unix()
	with := func(changes map[string]any) map[string]any {
		c := cloneMap(claims)
		c["jti"] = rand.Text() // never the cached genuine token
		for k, v := range changes {
			c[k] = v
		}
		return c
	}

	// The forging works: the real key and the real claims are accepted.
	e.wantAccepted(t, "alpha.test", signRS256(t, key, header, with(nil)), "a token re-signed with the real key (sanity check of the forging)")

	forged := map[string]string{
		"alg none": b64json(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + parts[1] + ".",
		"alg none with the original signature": b64json(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) +
			"." + parts[1] + "." + parts[2],
		"expired":                   signRS256(t, key, header, with(map[string]any{"exp": now - 60, "iat": now - 120})),
		"issued in the future":      signRS256(t, key, header, with(map[string]any{"iat": now + 600, "exp": now + 1200})),
		"wrong iss":                 signRS256(t, key, header, with(map[string]any{"iss": "https://evil.test"})),
		"iss with a path":           signRS256(t, key, header, with(map[string]any{"iss": "https://alpha.test/evil"})),
		"audience of another proxy": signRS256(t, key, header, with(map[string]any{"aud": "https://beta.test/mcp"})),
		"unknown kid, real key":     signRS256(t, key, map[string]any{"typ": "at+jwt", "kid": "e2e-unknown-kid"}, with(nil)),
		"no kid":                    signRS256(t, key, map[string]any{"typ": "at+jwt"}, with(nil)),
		"typ JWT, not at+jwt":       signRS256(t, key, map[string]any{"typ": "JWT", "kid": kid}, with(nil)),
		"tampered payload": parts[0] + "." + b64json(t, with(map[string]any{"jti": claims["jti"], "login": "root", "scope": "mcp admin"})) +
			"." + parts[2],
		"tampered signature": parts[0] + "." + parts[1] + "." + flipLast(parts[2]),
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged["unknown kid, unknown key"] = signRS256(t, other, map[string]any{"typ": "at+jwt", "kid": "e2e-attacker"}, with(nil))
	forged["real kid, unknown key"] = signRS256(t, other, header, with(nil))

	// HS256 with the public key as the HMAC secret, in every encoding a
	// confused verifier might feed to HMAC.
	pub := rsaPublic(t, e, kid)
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(pub)
	for name, secret := range map[string][]byte{
		"PKIX PEM":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		"PKCS1 PEM": pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1}),
		"PKIX DER":  pkix,
		"PKCS1 DER": pkcs1,
	} {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(with(nil)))
		tok.Header["typ"] = "at+jwt"
		tok.Header["kid"] = kid
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		forged["HS256 keyed with the public key, "+name] = s
	}

	names := make([]string, 0, len(forged))
	for n := range forged {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		e.wantInvalidToken(t, "alpha.test", forged[n], n)
	}

	// A genuine token for proxy A is no good at proxy B.
	e.wantInvalidToken(t, "beta.test", valid, "alpha's token at beta")
	// And the genuine token still works: nothing above revoked it.
	e.wantAccepted(t, "alpha.test", valid, "the genuine token, again")
	_, _, ids := e.spies["alpha"].seen()
	for _, id := range ids {
		if u := id.Get("X-Mcpgate-User"); u != "alice" {
			t.Errorf("alpha's backend saw a request for %q: a forged token got through", u)
		}
	}
}

// flipLast changes the last base64url character of s.
func flipLast(s string) string {
	if s == "" {
		return "A"
	}
	c := byte('A')
	if s[len(s)-1] == 'A' {
		c = 'B'
	}
	return s[:len(s)-1] + string(c)
}

func testCodeReused(t *testing.T, e *oauthEnv) {
	res := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
	first := e.redeem(t, "alpha.test", "e2e-cli", res, res.verifier)
	if first.status != http.StatusOK {
		t.Fatalf("first redemption: %v", first)
	}
	access, refresh := first.str("access_token"), first.str("refresh_token")
	e.wantAccepted(t, "alpha.test", access, "the first redemption's access token")

	second := e.redeem(t, "alpha.test", "e2e-cli", res, res.verifier)
	reused := time.Now()
	wantOAuthError(t, second, http.StatusBadRequest, "invalid_grant")

	// Reuse revokes what the first redemption issued, in every worker.
	e.waitRefused(t, "alpha.test", access, reused, time.Second, "access token of a reused code")
	wantOAuthError(t, e.refresh(t, "alpha.test", "e2e-cli", refresh), http.StatusBadRequest, "invalid_grant")
}

// authorizeRaw sends an authorization request without following the
// redirect.
func (e *oauthEnv) authorizeRaw(t *testing.T, host string, q url.Values) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/authorize?"+q.Encode(), nil)
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp, string(b)
}

func testAuthorizeErrors(t *testing.T, e *oauthEnv) {
	verifier := oauth2.GenerateVerifier()
	base := func() url.Values {
		return url.Values{
			"response_type": {"code"}, "client_id": {"e2e-cli"}, "redirect_uri": {loopbackRedirect},
			"state": {"st-123"}, "scope": {"mcp"}, "resource": {"https://alpha.test/mcp"},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
		}
	}
	before := e.gh.AuthorizeRequests()

	// Errors about the request itself go back to the verified redirect URI.
	for _, c := range []struct {
		name   string
		change func(url.Values)
		code   string
	}{
		{"missing PKCE", func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, "invalid_request"},
		{"PKCE plain", func(q url.Values) { q.Set("code_challenge", verifier); q.Set("code_challenge_method", "plain") }, "invalid_request"},
		{"challenge without method", func(q url.Values) { q.Del("code_challenge_method") }, "invalid_request"},
		{"response_type token", func(q url.Values) { q.Set("response_type", "token") }, "unsupported_response_type"},
		{"unknown resource", func(q url.Values) { q.Set("resource", "https://unknown.test/mcp") }, "invalid_target"},
	} {
		q := base()
		c.change(q)
		resp, body := e.authorizeRaw(t, "alpha.test", q)
		loc, err := resp.Location()
		if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), loopbackRedirect+"?") {
			t.Errorf("%s: status %d, Location %q (%.200s); want 302 to the client's redirect URI", c.name, resp.StatusCode, resp.Header.Get("Location"), body)
			continue
		}
		lq := loc.Query()
		if lq.Get("error") != c.code || lq.Get("state") != "st-123" || lq.Get("iss") != "https://alpha.test" || lq.Has("code") {
			t.Errorf("%s: redirected with %v; want error=%s, state=st-123, iss=https://alpha.test and no code", c.name, lq, c.code)
		}
	}

	// Errors that make the redirect URI untrustworthy are shown, never
	// redirected.
	for _, c := range []struct {
		name   string
		change func(url.Values)
	}{
		{"redirect URI of another host", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/callback") }},
		{"redirect URI with another path", func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:45678/other") }},
		{"redirect URI with a suffix", func(q url.Values) { q.Set("redirect_uri", loopbackRedirect+"/../../evil") }},
		{"redirect URI https instead of http", func(q url.Values) { q.Set("redirect_uri", "https://127.0.0.1:45678/callback") }},
		{"unknown client", func(q url.Values) { q.Set("client_id", "no-such-client") }},
	} {
		q := base()
		c.change(q)
		resp, body := e.authorizeRaw(t, "alpha.test", q)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s: status %d, Location %q, Content-Type %q; want a 400 error page and no redirect", c.name, resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Content-Type"))
		}
		if strings.Contains(body, "evil.example") {
			t.Errorf("%s: the error page links to the unregistered redirect URI", c.name)
		}
	}
	if n := e.gh.AuthorizeRequests() - before; n != 0 {
		t.Errorf("%d invalid authorization requests were sent on to GitHub", n)
	}
}

func testRegistration(t *testing.T, e *oauthEnv) {
	for _, uri := range []string{
		"javascript:alert(document.cookie)",
		"JavaScript:alert(1)",
		"data:text/html,<script>alert(1)</script>",
		"http://evil.example/callback", // http only on loopback
		"https://app.example.com/cb#fragment",
	} {
		r := e.postJSON(t, "https://beta.test/register", map[string]any{
			"redirect_uris": []string{uri}, "client_name": "evil", "token_endpoint_auth_method": "none",
		})
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_redirect_uri")
	}
	r := e.postJSON(t, "https://beta.test/register", map[string]any{
		"redirect_uris": []string{"http://127.0.0.1:5555/cb", "cursor://anysphere.cursor-retrieval/oauth/callback"},
		"client_name":   "Cursor-like", "token_endpoint_auth_method": "none",
		"grant_types": []string{"authorization_code", "refresh_token"},
		"resource":    "https://beta.test/mcp", // unknown fields are ignored
	})
	if r.status != http.StatusCreated || r.str("client_id") == "" {
		t.Fatalf("valid registration: %v", r)
	}
	if got := strList(r.body["redirect_uris"]); len(got) != 2 || r.str("client_secret") != "" {
		t.Errorf("registration response %s: want both redirect URIs echoed and no secret for a public client", r.raw)
	}
}

func testRefreshReused(t *testing.T, e *oauthEnv) {
	a1, r1 := e.tokens(t, "alpha.test", "e2e-cli")
	rot := e.refresh(t, "alpha.test", "e2e-cli", r1)
	rotated := time.Now()
	if rot.status != http.StatusOK || rot.str("refresh_token") == "" || rot.str("refresh_token") == r1 {
		t.Fatalf("refresh: %v; want a new (rotated) refresh token", rot)
	}
	if cc := rot.header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("refresh response Cache-Control %q, want no-store", cc)
	}
	a2, r2 := rot.str("access_token"), rot.str("refresh_token")
	e.wantAccepted(t, "alpha.test", a2, "the refreshed access token")

	// A client racing its own refreshes may reuse the old token within
	// the grace window.
	race := e.refresh(t, "alpha.test", "e2e-cli", r1)
	if d := time.Since(rotated); d < refreshGrace-200*time.Millisecond && race.status != http.StatusOK {
		t.Errorf("reuse %v after rotation, within the %v grace window: %v; want new tokens", d.Round(time.Millisecond), refreshGrace, race)
	}

	// Later reuse is theft: invalid_grant, and the whole family dies.
	time.Sleep(time.Until(rotated.Add(refreshGrace + 300*time.Millisecond)))
	late := e.refresh(t, "alpha.test", "e2e-cli", r1)
	reused := time.Now()
	wantOAuthError(t, late, http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, e.refresh(t, "alpha.test", "e2e-cli", r2), http.StatusBadRequest, "invalid_grant")
	if rt := race.str("refresh_token"); rt != "" {
		wantOAuthError(t, e.refresh(t, "alpha.test", "e2e-cli", rt), http.StatusBadRequest, "invalid_grant")
	}
	e.waitRefused(t, "alpha.test", a2, reused, time.Second, "newest access token of a revoked family")
	e.wantInvalidToken(t, "alpha.test", a1, "first access token of a revoked family")
	if at := race.str("access_token"); at != "" {
		e.wantInvalidToken(t, "alpha.test", at, "grace-window access token of a revoked family")
	}
}

// headerTransport adds headers to every request.
type headerTransport struct {
	base http.RoundTripper
	hdr  http.Header
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.hdr {
		r.Header[k] = v
	}
	return h.base.RoundTrip(r)
}

func testForgedIdentity(t *testing.T, e *oauthEnv) {
	forged := http.Header{
		"X-Mcpgate-User":      {"root"},
		"X-MCPGate-Scopes":    {"admin mcp"},
		"X-Mcpgate-Client-Id": {"trusted-client"},
		"X-Mcpgate-Anything":  {"x"},
	}
	// Without a token the forged identity gets nowhere.
	if st, _ := e.mcpStatus(t, "alpha.test", "", forged); st != http.StatusUnauthorized {
		t.Errorf("forged X-MCPGate-User without a token: status %d, want 401", st)
	}

	access, _ := e.tokens(t, "alpha.test", "e2e-cli")
	hdr := forged.Clone()
	hdr.Set("Authorization", "Bearer "+access)
	hc := &http.Client{Transport: headerTransport{base: e.g.HTTP2Client().Transport, hdr: hdr}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n0, _, _ := e.spies["alpha"].seen()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-forger", Version: "test"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: "https://alpha.test/mcp", HTTPClient: hc, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		t.Fatalf("connecting with a valid token and forged identity headers: %v", err)
	}
	defer session.Close()
	if got := callText(ctx, t, session, "whoami", nil); got != "alice" {
		t.Errorf("whoami with a forged X-MCPGate-User: %q, want the real login alice", got)
	}
	n, authz, ids := e.spies["alpha"].seen()
	if n == n0 {
		t.Fatal("the backend saw no request")
	}
	if len(authz) > 0 {
		t.Errorf("the backend received %d Authorization headers", len(authz))
	}
	for _, id := range ids[n0:] {
		want := http.Header{"X-Mcpgate-User": {"alice"}, "X-Mcpgate-Scopes": {"mcp"}, "X-Mcpgate-Client-Id": {"e2e-cli"}}
		if fmt.Sprint(id) != fmt.Sprint(want) {
			t.Errorf("backend identity headers %v, want exactly %v", id, want)
			break
		}
	}
}

func testRevocation(t *testing.T, e *oauthEnv) {
	// Each proxy is its own worker process: the token is for beta and is
	// revoked at alpha.
	t.Run("access-token", func(t *testing.T) {
		access, refresh := e.tokens(t, "beta.test", "e2e-cli")
		e.wantAccepted(t, "beta.test", access, "beta's access token")
		r := e.postForm(t, "https://alpha.test/revoke", url.Values{"token": {access}, "client_id": {"e2e-cli"}}, "", "")
		revoked := time.Now()
		if r.status != http.StatusOK {
			t.Fatalf("revoke: %v", r)
		}
		e.waitRefused(t, "beta.test", access, revoked, time.Second, "access token revoked at another worker")
		// Revoking the access token leaves the refresh token alone.
		if rr := e.refresh(t, "beta.test", "e2e-cli", refresh); rr.status != http.StatusOK {
			t.Errorf("refresh after revoking only the access token: %v", rr)
		}
	})
	t.Run("refresh-token-family", func(t *testing.T) {
		access, refresh := e.tokens(t, "beta.test", "e2e-cli")
		e.wantAccepted(t, "beta.test", access, "beta's access token")
		r := e.postForm(t, "https://alpha.test/revoke", url.Values{"token": {refresh}, "client_id": {"e2e-cli"}}, "", "")
		revoked := time.Now()
		if r.status != http.StatusOK {
			t.Fatalf("revoke: %v", r)
		}
		e.waitRefused(t, "beta.test", access, revoked, time.Second, "access token of a family revoked at another worker")
		wantOAuthError(t, e.refresh(t, "beta.test", "e2e-cli", refresh), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("other-client-cannot-revoke", func(t *testing.T) {
		access, _ := e.tokens(t, "beta.test", "e2e-cli")
		r := e.postForm(t, "https://alpha.test/revoke", url.Values{"token": {access}, "client_id": {"e2e-other"}}, "", "")
		if r.status != http.StatusOK {
			t.Errorf("revoke by another client: %v; want 200 (RFC 7009) without effect", r)
		}
		time.Sleep(600 * time.Millisecond) // two revocation polls
		e.wantAccepted(t, "beta.test", access, "a token another client tried to revoke")
	})
}

func testUserNotAllowed(t *testing.T, e *oauthEnv) {
	issued := e.gh.TokensIssued()
	res := e.authorize(t, authzRequest{host: "alpha.test", clientID: "e2e-cli", login: "mallory"})
	if res.err == nil {
		t.Fatalf("mallory, who is not in allowed_users, got a code: %+v", res.Result)
	}
	if e.gh.TokensIssued() != issued+1 {
		t.Errorf("fakegithub issued %d tokens, want 1: mallory did sign in at GitHub", e.gh.TokensIssued()-issued)
	}
	cb := findStep(res.steps, harness.CallbackPath)
	if cb == nil || cb.Status != http.StatusForbidden || !strings.Contains(cb.Body, "Access denied") || !strings.Contains(cb.Body, "mallory") {
		t.Errorf("callback for a user not allowed: want a 403 \"Access denied\" page naming mallory; flow:%s", describeSteps(res.steps))
	}
	for _, s := range res.steps {
		if loc := s.Header.Get("Location"); strings.Contains(loc, "code=") && !strings.Contains(loc, "/login/oauth/") && !strings.Contains(loc, "/oauth/callback") {
			t.Errorf("a code was issued for mallory: %s", loc)
		}
	}
}

func testRegistrationRateLimit(t *testing.T, e *oauthEnv) {
	// 10 per client address and minute, shared by every worker: earlier
	// subtests registered from this address too, so the limit may come
	// sooner, but never later.
	const limit = 10
	meta := map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "token_endpoint_auth_method": "none"}
	for i := range limit + 1 {
		r := e.postJSON(t, "https://delta.test/register", meta)
		if r.status == http.StatusCreated {
			continue
		}
		if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
			t.Errorf("registration %d: %v (Retry-After %q); want 201, or 429 with Retry-After", i+1, r, r.header.Get("Retry-After"))
		}
		return
	}
	t.Errorf("%d registrations within a minute all succeeded", limit+1)
}

func testDynamicClient(t *testing.T, e *oauthEnv) {
	reg := e.postJSON(t, "https://beta.test/register", map[string]any{
		// Registered with a port, used with another: VS Code does that.
		"redirect_uris": []string{"http://127.0.0.1:33418/callback"}, "client_name": "Dynamic <b>App</b>",
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
	})
	if reg.status != http.StatusCreated {
		t.Fatalf("registration: %v", reg)
	}
	id, manage, regToken := reg.str("client_id"), reg.str("registration_client_uri"), reg.str("registration_access_token")
	if manage != "https://beta.test/register/"+id || regToken == "" {
		t.Fatalf("registration_client_uri %q, registration_access_token set: %v", manage, regToken != "")
	}

	// Denying consent sends access_denied (with iss) to the client.
	res := e.authorize(t, authzRequest{host: "alpha.test", clientID: id, deny: true})
	if res.err == nil || !strings.Contains(res.err.Error(), "denied") {
		t.Errorf("denied consent: flow ended with %v, want access_denied", res.err)
	}
	if last := res.steps[len(res.steps)-1]; !strings.Contains(last.Header.Get("Location"), "iss=https%3A%2F%2Falpha.test") {
		t.Errorf("access_denied redirect %q lacks iss", last.Header.Get("Location"))
	}

	// Approving: the consent page names the client (escaped) and where
	// the code goes.
	res = e.code(t, authzRequest{host: "alpha.test", clientID: id})
	consent := findStep(res.steps, "/oauth/continue")
	if consent == nil || !strings.Contains(consent.Body, `name="decision"`) {
		t.Fatalf("no consent page for a dynamically registered client; flow:%s", describeSteps(res.steps))
	}
	for _, want := range []string{"Dynamic &lt;b&gt;App&lt;/b&gt;", "127.0.0.1:45678", "alice"} {
		if !strings.Contains(consent.Body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	// The decision is remembered for this user and client.
	res = e.code(t, authzRequest{host: "alpha.test", clientID: id})
	if s := findStep(res.steps, "/oauth/continue"); s == nil || s.Status != http.StatusFound {
		t.Errorf("consent asked again after approval; flow:%s", describeSteps(res.steps))
	}
	tr := e.redeem(t, "alpha.test", id, res, res.verifier)
	if tr.status != http.StatusOK {
		t.Fatalf("token: %v", tr)
	}
	access := tr.str("access_token")

	// The upstream state is single-use: replaying the callback (GitHub's
	// code and state) after the flow ended is refused.
	if cb := findStep(res.steps, harness.CallbackPath); cb == nil {
		t.Errorf("no callback in the flow:%s", describeSteps(res.steps))
	} else {
		r := e.getJSON(t, cb.URL)
		if r.status != http.StatusBadRequest || r.header.Get("Location") != "" {
			t.Errorf("replayed callback %s: status %d, Location %q; want 400 and no redirect", cb.URL, r.status, r.header.Get("Location"))
		}
	}
	e.wantAccepted(t, "alpha.test", access, "the dynamic client's token")

	// RFC 7592: deleting the client (at beta's worker) kills its tokens
	// everywhere.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, manage, nil)
	req.Header.Set("Authorization", "Bearer "+regToken)
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deleted := time.Now()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE %s: status %d, want 204", manage, resp.StatusCode)
	}
	e.waitRefused(t, "alpha.test", access, deleted, time.Second, "access token of a deleted client")
	wantOAuthError(t, e.refresh(t, "alpha.test", id, tr.str("refresh_token")), http.StatusUnauthorized, "invalid_client")
}

func testIntrospection(t *testing.T, e *oauthEnv, secret string) {
	access, refresh := e.tokens(t, "beta.test", "e2e-cli")
	introspect := func(tok, user, pass string) jsonResp {
		return e.postForm(t, "https://alpha.test/introspect", url.Values{"token": {tok}}, user, pass)
	}
	r := introspect(access, "e2e-rs", secret)
	if r.status != http.StatusOK || r.body["active"] != true || r.str("username") != "alice" || r.str("client_id") != "e2e-cli" || r.str("aud") != "https://beta.test/mcp" {
		t.Errorf("introspecting a live access token: %v", r)
	}
	wantOAuthError(t, introspect(access, "e2e-rs", "wrong"), http.StatusUnauthorized, "invalid_client")
	wantOAuthError(t, e.postForm(t, "https://alpha.test/introspect", url.Values{"token": {access}, "client_id": {"e2e-cli"}}, "", ""),
		http.StatusUnauthorized, "invalid_client")

	rv := e.postForm(t, "https://alpha.test/revoke", url.Values{"token": {refresh}, "client_id": {"e2e-cli"}}, "", "")
	if rv.status != http.StatusOK {
		t.Fatalf("revoke: %v", rv)
	}
	revoked := time.Now()
	for {
		r = introspect(access, "e2e-rs", secret)
		if r.body["active"] == false || time.Since(revoked) > 2*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.status != http.StatusOK || r.body["active"] != false || len(r.body) != 1 {
		t.Errorf("introspecting a revoked token %v after revocation: %v; want exactly {\"active\": false}", time.Since(revoked).Round(time.Millisecond), r)
	}
}

func testRefreshRace(t *testing.T, e *oauthEnv) {
	// Parallel tool calls (or two egress addresses) make a client refresh
	// the same token several times at once, even at two hosts (two
	// worker processes writing the store): within the grace window every
	// one of them must get tokens.
	_, rt := e.tokens(t, "alpha.test", "e2e-cli")
	const n = 6
	type result struct {
		r   jsonResp
		err error
	}
	results := make(chan result, n)
	start := make(chan struct{})
	for i := range n {
		host := "alpha.test"
		if i%2 == 1 {
			host = "beta.test"
		}
		go func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"e2e-cli"}}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+"/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := e.api.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			var r jsonResp
			r.status, r.header = resp.StatusCode, resp.Header
			r.raw, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			err = json.Unmarshal(r.raw, &r.body)
			results <- result{r, err}
		}()
	}
	close(start)
	began := time.Now()
	var access []string
	for range n {
		res := <-results
		switch {
		case res.err != nil:
			t.Errorf("concurrent refresh: %v", res.err)
		case res.r.status != http.StatusOK:
			t.Errorf("concurrent refresh %v after the first: %v; want new tokens within the %v grace window", time.Since(began).Round(time.Millisecond), res.r, refreshGrace)
		default:
			access = append(access, res.r.str("access_token"))
		}
	}
	for _, a := range access {
		e.wantAccepted(t, "alpha.test", a, "an access token from a concurrent refresh")
	}
}

func testResourceBinding(t *testing.T, e *oauthEnv) {
	// RFC 8707 resource values name the same resource however they are
	// spelled (claude.ai sends the origin with a slash).
	for _, res := range []string{"https://alpha.test/", "https://alpha.test", "https://ALPHA.test/mcp", "https://alpha.test:443/mcp", "https://alpha.test/mcp/"} {
		ar := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli", resource: res})
		tr := e.postForm(t, "https://alpha.test/token", url.Values{
			"grant_type": {"authorization_code"}, "code": {ar.Code}, "redirect_uri": {loopbackRedirect},
			"code_verifier": {ar.verifier}, "client_id": {"e2e-cli"},
		}, "", "")
		if tr.status != http.StatusOK {
			t.Errorf("resource %q: token %v", res, tr)
			continue
		}
		if _, c := jwtParts(t, tr.str("access_token")); c["aud"] != "https://alpha.test/mcp" {
			t.Errorf("resource %q: aud %v, want https://alpha.test/mcp", res, c["aud"])
		}
	}

	// A code and a refresh token stay bound to their resource and scope.
	ar := e.code(t, authzRequest{host: "alpha.test", clientID: "e2e-cli"})
	tr := e.postForm(t, "https://alpha.test/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {ar.Code}, "redirect_uri": {loopbackRedirect},
		"code_verifier": {ar.verifier}, "client_id": {"e2e-cli"}, "resource": {"https://beta.test/mcp"},
	}, "", "")
	wantOAuthError(t, tr, http.StatusBadRequest, "invalid_target")

	_, rt := e.tokens(t, "alpha.test", "e2e-cli")
	wantOAuthError(t, e.postForm(t, "https://alpha.test/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"e2e-cli"}, "resource": {"https://beta.test/mcp"},
	}, "", ""), http.StatusBadRequest, "invalid_target")
	wantOAuthError(t, e.postForm(t, "https://alpha.test/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"e2e-cli"}, "scope": {"mcp admin"},
	}, "", ""), http.StatusBadRequest, "invalid_scope")
	wantOAuthError(t, e.refresh(t, "alpha.test", "e2e-other", rt), http.StatusBadRequest, "invalid_grant")
	// None of these used up the refresh token.
	if r := e.refresh(t, "alpha.test", "e2e-cli", rt); r.status != http.StatusOK {
		t.Errorf("refresh after the refused attempts: %v", r)
	}
}

var (
	formFlow  = regexp.MustCompile(`name="flow" value="([^"]+)"`)
	formCSRF  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	formProof = regexp.MustCompile(`name="proof" value="([^"]+)"`)
)

// browser is a user agent with its own cookie jar that follows redirects
// until the client's redirect URI on app.example.com.
func (e *oauthEnv) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Transport: e.g.BrowserTransport(),
		Jar:       jar,
		Timeout:   15 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Hostname() == "app.example.com" || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// readPage runs do and reads the page it returned.
func readPage(t *testing.T, do func() (*http.Response, error)) (*http.Response, string) {
	t.Helper()
	resp, err := do()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func testConsentCSRF(t *testing.T, e *oauthEnv) {
	const redirect = "https://app.example.com/oauth/callback"
	// A web application, as Cursor registers itself.
	reg := e.postJSON(t, "https://alpha.test/register", map[string]any{
		"redirect_uris": []string{redirect}, "client_name": "Web App", "application_type": "web",
		"token_endpoint_auth_method": "none",
	})
	if reg.status != http.StatusCreated {
		t.Fatalf("registering a web application: %v", reg)
	}
	verifier := oauth2.GenerateVerifier()
	q := url.Values{
		"response_type": {"code"}, "client_id": {reg.str("client_id")}, "redirect_uri": {redirect},
		"state": {"csrf-state"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
	}
	e.gh.SetLoginAs("bob")
	defer e.gh.SetLoginAs("alice")
	victim := e.browser()
	resp, page := readPage(t, func() (*http.Response, error) { return victim.Get("https://alpha.test/authorize?" + q.Encode()) })
	fm, cm, pm := formFlow.FindStringSubmatch(page), formCSRF.FindStringSubmatch(page), formProof.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || fm == nil || cm == nil || pm == nil {
		t.Fatalf("want the consent page, got %d at %s: %.300s", resp.StatusCode, resp.Request.URL, page)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("consent page X-Frame-Options %q, want DENY", resp.Header.Get("X-Frame-Options"))
	}
	if !strings.Contains(page, "app.example.com") {
		t.Errorf("consent page does not name the redirect host app.example.com")
	}
	decide := func(c *http.Client, flow, csrf string) (*http.Response, string) {
		form := url.Values{"flow": {flow}, "proof": {pm[1]}, "csrf": {csrf}, "decision": {"approve"}}
		return readPage(t, func() (*http.Response, error) { return c.PostForm("https://alpha.test/oauth/consent", form) })
	}
	// A forged form post: wrong CSRF value from the victim's browser, or
	// the right values from another browser (no cookies).
	if resp, _ := decide(victim, fm[1], "forged"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("consent with a wrong CSRF token: status %d, want 403", resp.StatusCode)
	}
	if resp, _ := decide(e.browser(), fm[1], cm[1]); resp.StatusCode != http.StatusForbidden {
		t.Errorf("consent from another browser: status %d, want 403", resp.StatusCode)
	}
	resp, page = decide(victim, fm[1], cm[1])
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), redirect+"?") {
		t.Fatalf("genuine consent: status %d, Location %q: %.300s", resp.StatusCode, resp.Header.Get("Location"), page)
	}
	if lq := loc.Query(); lq.Get("code") == "" || lq.Get("state") != "csrf-state" || lq.Get("iss") != "https://alpha.test" {
		t.Errorf("authorization response %v, want code, state and iss", lq)
	}
}
