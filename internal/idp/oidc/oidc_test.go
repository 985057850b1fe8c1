package oidc

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/tests/fakeoidc"
)

const callback = "https://auth.example.com/oauth/callback"

var noFollow = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       5 * time.Second,
}

func newFake(t *testing.T) *fakeoidc.Server {
	op := fakeoidc.New(t)
	op.RegisterClient("mcpgate", "s3cr3t", callback)
	op.AddUser(fakeoidc.User{Sub: "u-1", PreferredUsername: "alice", Name: "Alice", Email: "alice@example.com",
		EmailVerified: true, Groups: []string{"ops", "dev", "ops"}})
	op.SetLoginAs("u-1")
	return op
}

func newProvider(t *testing.T, op *fakeoidc.Server) *Provider {
	t.Helper()
	p, err := New(context.Background(), Config{Issuer: op.URL, ClientID: "mcpgate", ClientSecret: "s3cr3t",
		Scopes: []string{"profile", "email"}, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sec are the per-login secrets of the tests (RFC 7636 appendix B's
// verifier).
var sec = idp.Secrets{Verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", Nonce: "nonce-1"}

// login follows AuthCodeURL on the fake and returns the code.
func login(t *testing.T, p *Provider, state string) string {
	t.Helper()
	resp, err := noFollow.Get(p.AuthCodeURL(state, callback, sec))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Query().Get("state") != state || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

func TestLogin(t *testing.T) {
	op := newFake(t)
	p := newProvider(t, op)
	if p.authMethod != "client_secret_basic" || fmt.Sprint(p.algs) != "[RS256]" {
		t.Fatalf("auth method %s algs %v", p.authMethod, p.algs)
	}
	id, err := p.Exchange(context.Background(), login(t, p, "state-1"), callback, sec)
	if err != nil {
		t.Fatal(err)
	}
	q := op.LastAuthorizeQuery()
	if q.Get("nonce") != sec.Nonce || q.Get("code_challenge") != sec.Challenge() || q.Get("code_challenge_method") != "S256" || q.Get("scope") != "openid profile email" || q.Has("resource") || q.Get("response_type") != "code" {
		t.Fatalf("authorize query %v", q)
	}
	host := strings.TrimPrefix(op.URL, "http://")
	// The lists match the stable sub, never the chosen preferred_username.
	want := idp.Identity{Subject: "oidc:" + host + ":u-1", Login: "u-1", Name: "Alice", Email: "alice@example.com", Orgs: []string{"dev", "ops"}}
	if fmt.Sprint(*id) != fmt.Sprint(want) {
		t.Fatalf("identity\n got %+v\nwant %+v", *id, want)
	}
}

func TestClientSecretPost(t *testing.T) {
	op := newFake(t)
	op.SetTokenAuthMethod("client_secret_post")
	p := newProvider(t, op)
	if p.authMethod != "client_secret_post" {
		t.Fatal(p.authMethod)
	}
	if _, err := p.Exchange(context.Background(), login(t, p, "s"), callback, sec); err != nil {
		t.Fatal(err)
	}
}

func TestKeyRotationAndES256(t *testing.T) {
	op := newFake(t)
	p := newProvider(t, op)
	p.keys.minRefetch = 0
	if _, err := p.Exchange(context.Background(), login(t, p, "s"), callback, sec); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exchange(context.Background(), login(t, p, "s2"), callback, sec); err != nil {
		t.Fatal(err)
	}
	if n := op.JWKSFetches(); n != 1 {
		t.Fatalf("JWKS fetched %d times, want 1 (cached)", n)
	}
	op.RotateKey("RS256")
	if _, err := p.Exchange(context.Background(), login(t, p, "s3"), callback, sec); err != nil {
		t.Fatal(err)
	}
	if n := op.JWKSFetches(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (refetch on unknown kid)", n)
	}

	// ES256 only when the provider advertises it.
	op2 := newFake(t)
	op2.RotateKey("ES256")
	p2 := newProvider(t, op2)
	if fmt.Sprint(p2.algs) != "[ES256]" {
		t.Fatalf("algs %v", p2.algs)
	}
	if _, err := p2.Exchange(context.Background(), login(t, p2, "s"), callback, sec); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	op := newFake(t)
	p := newProvider(t, op)
	if _, err := p.Exchange(context.Background(), login(t, p, "s"), callback, sec); err != nil {
		t.Fatal(err)
	}
	op.RotateKey("RS256")
	_, err := p.Exchange(context.Background(), login(t, p, "s"), callback, sec)
	if err == nil || !strings.Contains(err.Error(), "no RS256 key with kid") || op.JWKSFetches() != 1 {
		t.Fatalf("err %v, fetches %d", err, op.JWKSFetches())
	}
}

func TestIDTokenRejected(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*fakeoidc.Server)
		state string // the nonce Exchange expects; "" means the login's
		want  string
	}{
		{"bad signature", func(op *fakeoidc.Server) { op.SignWithUnpublishedKey(true) }, "", "signature is invalid"},
		{"wrong aud", func(op *fakeoidc.Server) { op.EditClaims(func(c map[string]any) { c["aud"] = "someone-else" }) }, "", "token has invalid audience"},
		{"wrong iss", func(op *fakeoidc.Server) {
			op.EditClaims(func(c map[string]any) { c["iss"] = "https://evil.example" })
		}, "", "token has invalid issuer"},
		{"expired", func(op *fakeoidc.Server) {
			op.EditClaims(func(c map[string]any) {
				c["exp"] = time.Now().Add(-2 * time.Minute).Unix()
				c["iat"] = time.Now().Add(-time.Hour).Unix()
			})
		}, "", "token is expired"},
		{"no exp", func(op *fakeoidc.Server) { op.EditClaims(func(c map[string]any) { delete(c, "exp") }) }, "", "token is missing required claim: exp claim is required"},
		{"no iat", func(op *fakeoidc.Server) { op.EditClaims(func(c map[string]any) { delete(c, "iat") }) }, "", "no iat claim"},
		{"iat in the future", func(op *fakeoidc.Server) {
			op.EditClaims(func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() })
		}, "", "token used before issued"},
		{"wrong nonce", nil, "another-nonce", "nonce does not match this login"},
		{"no nonce", func(op *fakeoidc.Server) { op.EditClaims(func(c map[string]any) { delete(c, "nonce") }) }, "", "nonce does not match"},
		{"azp mismatch", func(op *fakeoidc.Server) { op.EditClaims(func(c map[string]any) { c["azp"] = "other" }) }, "", "azp is not our client_id"},
		{"several aud without azp", func(op *fakeoidc.Server) {
			op.EditClaims(func(c map[string]any) { c["aud"] = []string{"mcpgate", "other"} })
		}, "", "several audiences and no azp claim"},
		{"no sub", func(op *fakeoidc.Server) { op.EditClaims(func(c map[string]any) { c["sub"] = "" }) }, "", "no sub claim"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			op := newFake(t)
			if c.setup != nil {
				c.setup(op)
			}
			p := newProvider(t, op)
			code := login(t, p, "the-state")
			secrets := sec
			if c.state != "" {
				secrets.Nonce = c.state
			}
			_, err := p.Exchange(context.Background(), code, callback, secrets)
			var e *idp.Error
			if !errors.As(err, &e) || e.Op != "id_token" || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), code) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error leaks: %v", err)
			}
		})
	}
}

// TestAlgorithmConfusion feeds verify hand-made tokens.
func TestAlgorithmConfusion(t *testing.T) {
	op := newFake(t)
	p := newProvider(t, op)
	good, err := op.Sign(map[string]any{"iss": op.URL, "aud": "mcpgate", "sub": "x", "iat": time.Now().Unix(),
		"exp": time.Now().Add(time.Hour).Unix(), "nonce": sec.Nonce})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.verify(context.Background(), good, sec.Nonce); err != nil {
		t.Fatalf("good token: %v", err)
	}
	parsed, _, _ := jwt.NewParser().ParseUnverified(good, jwt.MapClaims{})
	claims := parsed.Claims.(jwt.MapClaims)

	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	none.Header["kid"] = parsed.Header["kid"]
	rawNone, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	pub, _ := p.keys.get(context.Background(), parsed.Header["kid"].(string), "RS256")
	der, _ := x509.MarshalPKIXPublicKey(pub.(*rsa.PublicKey))
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	hs.Header["kid"] = parsed.Header["kid"]
	rawHS, _ := hs.SignedString(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))

	parts := strings.Split(good, ".")
	claims["sub"] = "admin"
	payload, _ := json.Marshal(claims)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	for name, c := range map[string]struct{ raw, want string }{
		"none":                      {rawNone, "token signature is invalid: signing method none is invalid"},
		"HS256 with the public key": {rawHS, "token signature is invalid: signing method HS256 is invalid"},
		"tampered":                  {tampered, "token signature is invalid: crypto/rsa: verification error"},
	} {
		if _, err := p.verify(context.Background(), c.raw, sec.Nonce); err == nil || err.Error() != c.want {
			t.Errorf("%s: %v, want %s", name, err, c.want)
		}
	}
}

func TestTokenEndpointError(t *testing.T) {
	op := newFake(t)
	p := newProvider(t, op)
	code := login(t, p, "s")
	_, err := p.Exchange(context.Background(), code, "https://auth.example.com/other", sec)
	var e *idp.Error
	if !errors.As(err, &e) || e.Code != "invalid_grant" || e.Status != 400 || strings.Contains(err.Error(), code) {
		t.Fatalf("%v", err)
	}
	if _, err := p.Exchange(context.Background(), code, callback, idp.Secrets{}); err == nil || !strings.Contains(err.Error(), "no nonce or PKCE verifier") {
		t.Fatalf("no secrets: %v", err)
	}
	bad, _ := New(context.Background(), Config{Issuer: op.URL, ClientID: "mcpgate", ClientSecret: "wrong"}, nil)
	_, err = bad.Exchange(context.Background(), login(t, p, "s"), callback, sec)
	if err == nil || err.Error() != "oidc: token exchange: HTTP 401: invalid_client: client authentication failed" {
		t.Fatalf("%v", err)
	}
}

func TestDiscoveryRejected(t *testing.T) {
	cases := []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"issuer mismatch", func(d map[string]any) { d["issuer"] = "https://evil.example" },
			`oidc: discovery: issuer "https://evil.example" in ISSUER/.well-known/openid-configuration does not equal the configured issuer "ISSUER"`},
		{"no usable alg", func(d map[string]any) { d["id_token_signing_alg_values_supported"] = []string{"HS256", "none"} },
			`oidc: discovery: id_token_signing_alg_values_supported ["HS256" "none"] has none of ["RS256" "ES256"]`},
		{"auth method", func(d map[string]any) { d["token_endpoint_auth_methods_supported"] = []string{"private_key_jwt"} },
			`oidc: discovery: token_endpoint_auth_methods_supported ["private_key_jwt"] has neither client_secret_basic nor client_secret_post`},
		{"insecure token endpoint", func(d map[string]any) { d["token_endpoint"] = "http://idp.example/token" },
			`oidc: discovery: token_endpoint "http://idp.example/token": must be https (http only to a loopback address)`},
		{"no code flow", func(d map[string]any) { d["response_types_supported"] = []string{"id_token"} },
			`oidc: discovery: the provider does not support response_type code`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			op := newFake(t)
			op.EditDiscovery(c.edit)
			_, err := New(context.Background(), Config{Issuer: op.URL, ClientID: "mcpgate", ClientSecret: "s3cr3t"}, nil)
			want := strings.ReplaceAll(c.want, "ISSUER", op.URL)
			if err == nil || err.Error() != want {
				t.Fatalf("got  %v\nwant %s", err, want)
			}
		})
	}
	if _, err := New(context.Background(), Config{Issuer: "http://idp.example", ClientID: "x"}, nil); err == nil ||
		err.Error() != `oidc: issuer "http://idp.example": must be https (http only to a loopback address)` {
		t.Fatalf("%v", err)
	}
}

func TestClaimsMapping(t *testing.T) {
	p := &Provider{cfg: Config{GroupsClaim: "roles", UsernameClaim: "sub"}, subjectKey: "kc.example/realms/a"}
	for _, c := range []struct {
		claims jwt.MapClaims
		want   string
	}{
		{jwt.MapClaims{"sub": "s1", "email": "a@x", "email_verified": true, "roles": "admin"}, "{oidc:kc.example/realms/a:s1 s1  a@x [admin] []}"},
		{jwt.MapClaims{"sub": "s1", "email": "a@x", "email_verified": "true", "preferred_username": "al"}, "{oidc:kc.example/realms/a:s1 s1 al a@x [] []}"},
		{jwt.MapClaims{"sub": "s1", "email": "a@x", "email_verified": false}, "{oidc:kc.example/realms/a:s1 s1   [] []}"},
		{jwt.MapClaims{"sub": "s1", "email": "a@x", "name": "A", "roles": []any{"b", 3, "a"}}, "{oidc:kc.example/realms/a:s1 s1 A a@x [a b] []}"},
	} {
		id, err := p.identity(c.claims)
		if err != nil || fmt.Sprint(*id) != c.want {
			t.Errorf("%v: %v %v, want %s", c.claims, id, err, c.want)
		}
	}
	if _, err := p.identity(jwt.MapClaims{"sub": "s", "roles": 3.0}); err == nil {
		t.Error("numeric groups claim accepted")
	}
}

func TestPKCE(t *testing.T) {
	op := newFake(t)
	p := newProvider(t, op)
	code := login(t, p, "s")
	other := sec
	other.Verifier = strings.Repeat("v", 43)
	_, err := p.Exchange(context.Background(), code, callback, other)
	var e *idp.Error
	if !errors.As(err, &e) || e.Code != "invalid_grant" || strings.Contains(err.Error(), other.Verifier) {
		t.Fatalf("wrong verifier: %v", err)
	}
	// A provider that lists methods without S256 gets no PKCE (it would
	// refuse the request); one that lists none gets it anyway.
	for _, c := range []struct {
		methods any
		want    bool
	}{{[]string{"plain"}, false}, {nil, true}, {[]string{"S256", "plain"}, true}} {
		op := newFake(t)
		op.EditDiscovery(func(doc map[string]any) {
			if c.methods == nil {
				delete(doc, "code_challenge_methods_supported")
			} else {
				doc["code_challenge_methods_supported"] = c.methods
			}
		})
		p := newProvider(t, op)
		code := login(t, p, "s")
		if got := op.LastAuthorizeQuery().Has("code_challenge"); got != c.want {
			t.Errorf("methods %v: code_challenge sent %v, want %v", c.methods, got, c.want)
		}
		if _, err := p.Exchange(context.Background(), code, callback, sec); err != nil {
			t.Errorf("methods %v: %v", c.methods, err)
		}
	}
}

func TestUsernameClaim(t *testing.T) {
	for _, c := range []struct {
		claim, want, err string
		user             fakeoidc.User
	}{
		{"", "u-9", "", fakeoidc.User{Sub: "u-9", PreferredUsername: "alice"}},
		{"email", "a@example.com", "", fakeoidc.User{Sub: "u-9", Email: "a@example.com", EmailVerified: true}},
		{"email", "", "no email with email_verified true", fakeoidc.User{Sub: "u-9", Email: "a@example.com"}},
		{"upn", "", `username_claim "upn" is missing`, fakeoidc.User{Sub: "u-9"}},
	} {
		op := newFake(t)
		op.AddUser(c.user)
		op.SetLoginAs(c.user.Sub)
		p, err := New(context.Background(), Config{Issuer: op.URL, ClientID: "mcpgate", ClientSecret: "s3cr3t", UsernameClaim: c.claim}, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := p.Exchange(context.Background(), login(t, p, "s"), callback, sec)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("claim %q: %v, want %q", c.claim, err, c.err)
		case c.err == "" && (err != nil || id.Login != c.want):
			t.Errorf("claim %q: %+v %v, want login %q", c.claim, id, err, c.want)
		}
	}
}
