package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/keys"
)

const (
	issA = "https://a.example.com"
	issB = "https://b.example.com"
	audA = "https://a.example.com/mcp"
	audB = "https://b.example.com/mcp"
)

var (
	// t0 is the verifiers' fixed time.
	t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// shared and foreign are key sets made once: RSA key generation is
	// the slow part of these tests.
	shared, foreign *keys.Set
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "mcpgate-token-test-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if shared, err = keys.Open(dir+"/shared", keys.Options{}); err != nil {
			panic(err)
		}
		if foreign, err = keys.Open(dir+"/foreign", keys.Options{}); err != nil {
			panic(err)
		}
		return m.Run()
	}())
}

func acceptAB(iss string) bool { return iss == issA || iss == issB }

func newVerifier(t testing.TB, ks KeySource, mod func(*VerifierOptions)) *Verifier {
	t.Helper()
	o := VerifierOptions{Keys: ks, AcceptIssuer: acceptAB, Leeway: 5 * time.Second, Now: func() time.Time { return t0 }}
	if mod != nil {
		mod(&o)
	}
	v, err := NewVerifier(o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// validClaims are the claims of a good token for audA at t0.
func validClaims() Claims {
	return Claims{
		Issuer:    issA,
		Subject:   "github|4711",
		Audience:  jwt.ClaimStrings{audA},
		ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour)),
		IssuedAt:  jwt.NewNumericDate(t0.Add(-time.Minute)),
		ID:        "jti-1",
		ClientID:  "client-1",
		Scope:     "mcp user",
		Login:     "alice",
		GrantID:   "grant-1",
	}
}

func issue(t testing.TB, ks SigningKeys, c Claims) string {
	t.Helper()
	s, err := NewIssuer(ks, time.Hour).Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forge signs arbitrary claims (any JSON value) with an arbitrary method,
// key and header, to make the tokens Issue refuses to make.
func forge(t testing.TB, m jwt.SigningMethod, key any, header map[string]any, claims any) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(p)
	sig, err := m.Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(sig)
}

// flip changes one character in the middle of a base64url segment.
func flip(seg string) string {
	b := []byte(seg)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func sharedKey() (string, *rsa.PrivateKey) { return shared.Signer() }

func hdr(alg, typ, kid string) map[string]any {
	h := map[string]any{"alg": alg}
	if typ != "" {
		h["typ"] = typ
	}
	if kid != "" {
		h["kid"] = kid
	}
	return h
}

// claimsMap is validClaims as a map, minus the named claims, plus extra.
func claimsMap(t testing.TB, drop []string, extra map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(validClaims())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range drop {
		delete(m, k)
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func TestIssueRoundTrip(t *testing.T) {
	raw := issue(t, shared, validClaims())

	// The header and payload on the wire are what RFC 9068 asks for.
	parts := strings.Split(raw, ".")
	var h map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(hb, &h); err != nil {
		t.Fatal(err)
	}
	kid, _ := shared.Signer()
	if h["alg"] != "RS256" || h["typ"] != "at+jwt" || h["kid"] != kid || len(h) != 3 {
		t.Fatalf("header %v", h)
	}
	var p map[string]any
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(pb, &p); err != nil {
		t.Fatal(err)
	}
	if p["aud"] != audA { // a string, not a list
		t.Fatalf("aud on the wire: %#v", p["aud"])
	}
	if _, ok := p["nbf"]; ok {
		t.Fatal("nbf written although unset")
	}

	v := newVerifier(t, shared, nil)
	for i := range 2 { // the second call is answered by the cache
		c, err := v.Verify(raw, audA)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if want := validClaims(); !reflect.DeepEqual(c, want.principal(audA)) {
			t.Fatalf("call %d: principal %+v, want %+v", i, c, want.principal(audA))
		}
		if !c.HasScope("mcp") || !c.HasScope("user") || c.HasScope("admin") || c.HasScope("") || c.HasScope("mc") {
			t.Fatal("HasScope")
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
}

func TestIssueDefaultsAndRefusals(t *testing.T) {
	iss := NewIssuer(shared, 10*time.Minute)
	iss.now = func() time.Time { return t0 }
	c := validClaims()
	c.IssuedAt, c.ExpiresAt, c.ID = nil, nil, ""
	raw, err := iss.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := newVerifier(t, shared, nil).Verify(raw, audA)
	if err != nil {
		t.Fatal(err)
	}
	if !got.IssuedAt.Equal(t0) || !got.ExpiresAt.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("iat %v exp %v", got.IssuedAt, got.ExpiresAt)
	}
	if id, _ := base64.RawURLEncoding.DecodeString(got.TokenID); len(id) != 16 {
		t.Fatalf("jti %q is not 128 random bits", got.TokenID)
	}
	if a, b := NewID(), NewID(); a == b {
		t.Fatal("NewID repeats")
	}

	for _, tc := range []struct {
		name string
		mod  func(*Claims)
	}{
		{"no iss", func(c *Claims) { c.Issuer = "" }},
		{"no sub", func(c *Claims) { c.Subject = "" }},
		{"no client_id", func(c *Claims) { c.ClientID = "" }},
		{"no aud", func(c *Claims) { c.Audience = nil }},
		{"empty aud", func(c *Claims) { c.Audience = jwt.ClaimStrings{""} }},
		{"two auds", func(c *Claims) { c.Audience = jwt.ClaimStrings{audA, audB} }},
		{"exp before iat", func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(t0.Add(-time.Hour)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validClaims()
			tc.mod(&c)
			if raw, err := iss.Sign(c); err == nil {
				t.Fatalf("issued %d bytes", len(raw))
			}
		})
	}
}

func TestVerify(t *testing.T) {
	kid, priv := sharedKey()
	fkid, fpriv := foreign.Signer()
	pubPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := issue(t, shared, validClaims())
	with := func(mod func(*Claims)) string {
		c := validClaims()
		mod(&c)
		return issue(t, shared, c)
	}
	rs := func(header map[string]any, claims any) string {
		return forge(t, jwt.SigningMethodRS256, priv, header, claims)
	}
	parts := strings.Split(good, ".")
	tamper := func(mod func(map[string]any)) string {
		m := claimsMap(t, nil, nil)
		mod(m)
		p, _ := json.Marshal(m)
		return parts[0] + "." + b64(p) + "." + parts[2]
	}

	cases := []struct {
		name string
		raw  string
		aud  string
		want error // nil: valid
	}{
		{"valid", good, audA, nil},
		{"aud list containing the resource", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, nil, map[string]any{"aud": []string{audB, audA}})), audA, nil},
		{"typ uppercase", rs(hdr("RS256", "AT+JWT", kid), claimsMap(t, nil, nil)), audA, nil},
		{"typ application/at+jwt", rs(hdr("RS256", "application/at+jwt", kid), claimsMap(t, nil, nil)), audA, nil},
		{"expired within leeway", with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(t0.Add(-4 * time.Second)) }), audA, nil},
		{"issuer of another host", with(func(c *Claims) { c.Issuer = issB }), audA, nil},

		{"wrong aud", good, audB, ErrAudience},
		{"aud with trailing slash", good, audA + "/", ErrAudience},
		{"empty aud asked, empty aud in token", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, nil, map[string]any{"aud": []string{"", audB}})), "", ErrAudience},
		{"aud list without the resource", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, nil, map[string]any{"aud": []string{audB, "https://c.example.com/mcp"}})), audA, ErrAudience},
		{"expired", with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(t0.Add(-6 * time.Second)) }), audA, ErrExpired},
		{"nbf in the future", with(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(t0.Add(time.Minute)) }), audA, ErrNotYetValid},
		{"iat in the future", with(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(t0.Add(time.Minute)) }), audA, ErrNotYetValid},
		{"iss not accepted", with(func(c *Claims) { c.Issuer = "https://evil.example.com" }), audA, ErrIssuer},

		{"alg none", forge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, hdr("none", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"HS256 keyed with the public key PEM", forge(t, jwt.SigningMethodHS256, pubPEM, hdr("HS256", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"HS256 keyed with the modulus", forge(t, jwt.SigningMethodHS256, priv.N.Bytes(), hdr("HS256", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"ES256", forge(t, jwt.SigningMethodES256, ecKey, hdr("ES256", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"RS512 with the right key", forge(t, jwt.SigningMethodRS512, priv, hdr("RS512", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"PS256 with the right key", forge(t, jwt.SigningMethodPS256, priv, hdr("PS256", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"alg unknown", rs(hdr("XS256", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrAlgorithm},
		{"alg missing", rs(map[string]any{"typ": "at+jwt", "kid": kid}, claimsMap(t, nil, nil)), audA, ErrAlgorithm},

		{"typ JWT", rs(hdr("RS256", "JWT", kid), claimsMap(t, nil, nil)), audA, ErrType},
		{"typ missing", rs(hdr("RS256", "", kid), claimsMap(t, nil, nil)), audA, ErrType},
		{"crit header", rs(map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": kid, "crit": []string{"exp"}}, claimsMap(t, nil, nil)), audA, ErrMalformed},

		{"unknown kid", issue(t, foreign, validClaims()), audA, ErrUnknownKey},
		{"no kid", rs(hdr("RS256", "at+jwt", ""), claimsMap(t, nil, nil)), audA, ErrUnknownKey},
		{"our kid, foreign key", forge(t, jwt.SigningMethodRS256, fpriv, hdr("RS256", "at+jwt", kid), claimsMap(t, nil, nil)), audA, ErrSignature},
		{"foreign kid, our key", rs(hdr("RS256", "at+jwt", fkid), claimsMap(t, nil, nil)), audA, ErrUnknownKey},
		{"tampered scope", tamper(func(m map[string]any) { m["scope"] = "mcp user admin" }), audA, ErrSignature},
		{"tampered aud", tamper(func(m map[string]any) { m["aud"] = audB }), audB, ErrSignature},
		{"tampered header", b64([]byte(`{"alg":"RS256","kid":"`+kid+`","typ":"at+JWT"}`)) + "." + parts[1] + "." + parts[2], audA, ErrSignature},
		{"signature altered", parts[0] + "." + parts[1] + "." + flip(parts[2]), audA, ErrSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(with(func(c *Claims) { c.ID = "x" }), ".")[2], audA, ErrSignature},

		{"no exp", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"exp"}, nil)), audA, ErrMissingClaim},
		{"no iat", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"iat"}, nil)), audA, ErrMissingClaim},
		{"no jti", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"jti"}, nil)), audA, ErrMissingClaim},
		{"no sub", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"sub"}, nil)), audA, ErrMissingClaim},
		{"no client_id", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"client_id"}, nil)), audA, ErrMissingClaim},
		{"no iss", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"iss"}, nil)), audA, ErrMissingClaim},
		{"no aud", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, []string{"aud"}, nil)), audA, ErrMissingClaim},
		{"empty jti", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, nil, map[string]any{"jti": ""})), audA, ErrMissingClaim},

		{"empty", "", audA, ErrMalformed},
		{"one segment", "abc", audA, ErrMalformed},
		{"two segments", parts[0] + "." + parts[1], audA, ErrMalformed},
		{"four segments", good + ".x", audA, ErrMalformed},
		{"garbage segments", "a.b.c", audA, ErrMalformed},
		{"aud a number", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, nil, map[string]any{"aud": 7})), audA, ErrMalformed},
		{"exp a string", rs(hdr("RS256", "at+jwt", kid), claimsMap(t, nil, map[string]any{"exp": "soon"})), audA, ErrMalformed},
		{"padded base64", parts[0] + "==." + parts[1] + "." + parts[2], audA, ErrMalformed},
		{"too long", good + strings.Repeat("A", MaxSize), audA, ErrMalformed},
	}
	v := newVerifier(t, shared, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 2 { // again, from the cache if it was cached
				c, err := v.Verify(tc.raw, tc.aud)
				if tc.want == nil {
					if err != nil || c == nil {
						t.Fatalf("call %d: %v", i, err)
					}
					continue
				}
				if c != nil || !errors.Is(err, tc.want) {
					t.Fatalf("call %d: %v, want %v", i, err, tc.want)
				}
				for _, other := range []error{ErrMalformed, ErrAlgorithm, ErrType, ErrUnknownKey, ErrSignature, ErrExpired, ErrNotYetValid, ErrMissingClaim, ErrIssuer, ErrAudience, ErrRevoked} {
					if other != tc.want && errors.Is(err, other) {
						t.Fatalf("%v also matches %v", err, other)
					}
				}
				msg := err.Error()
				for _, p := range strings.Split(tc.raw, ".") {
					if len(p) > 16 && strings.Contains(msg, p) {
						t.Fatalf("error %q quotes the token", msg)
					}
				}
			}
		})
	}
}

// A token cached for one resource must not pass for another, and nothing
// rejected is cached.
func TestCacheKeepsPerCallChecks(t *testing.T) {
	now := t0
	var mu sync.Mutex
	v := newVerifier(t, shared, func(o *VerifierOptions) {
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	raw := issue(t, shared, validClaims())
	for i, step := range []struct {
		aud  string
		want error
	}{{audA, nil}, {audB, ErrAudience}, {audA, nil}, {audB, ErrAudience}} {
		if _, err := v.Verify(raw, step.aud); !errors.Is(err, step.want) {
			t.Fatalf("step %d (%s): %v, want %v", i, step.aud, err, step.want)
		}
	}
	if v.cache.len() != 1 {
		t.Fatalf("cache len %d", v.cache.len())
	}
	// A cached token expires like any other.
	mu.Lock()
	now = t0.Add(time.Hour + 5*time.Second)
	mu.Unlock()
	if _, err := v.Verify(raw, audA); !errors.Is(err, ErrExpired) {
		t.Fatalf("cached token after exp: %v", err)
	}
	// Failures are not cached.
	v2 := newVerifier(t, shared, nil)
	bad := []string{"a.b.c", good(t)[:50], issue(t, foreign, validClaims())}
	for _, b := range bad {
		v2.Verify(b, audA)
	}
	if n := v2.cache.len(); n != 0 {
		t.Fatalf("%d rejected tokens cached", n)
	}
}

func good(t testing.TB) string { return issue(t, shared, validClaims()) }

func TestIssuerAcceptanceIsPerCall(t *testing.T) {
	var allowB atomic.Bool
	allowB.Store(true)
	v := newVerifier(t, shared, func(o *VerifierOptions) {
		o.AcceptIssuer = func(iss string) bool { return iss == issA || (iss == issB && allowB.Load()) }
	})
	c := validClaims()
	c.Issuer = issB
	raw := issue(t, shared, c)
	if _, err := v.Verify(raw, audA); err != nil {
		t.Fatal(err)
	}
	allowB.Store(false) // host b removed by a reload
	if _, err := v.Verify(raw, audA); !errors.Is(err, ErrIssuer) {
		t.Fatalf("cached token of a removed issuer: %v", err)
	}
}

func TestRevokedHook(t *testing.T) {
	var mu sync.Mutex
	revokedJTI, revokedGID := map[string]bool{}, map[string]bool{}
	calls := 0
	v := newVerifier(t, shared, func(o *VerifierOptions) {
		o.Revoked = func(p *identity.Principal) bool {
			mu.Lock()
			defer mu.Unlock()
			calls++
			return revokedJTI[p.TokenID] || revokedGID[p.GrantID]
		}
	})
	c1 := validClaims()
	c2 := validClaims()
	c2.ID, c2.GrantID = "jti-2", "grant-2"
	t1, t2 := issue(t, shared, c1), issue(t, shared, c2)
	for _, raw := range []string{t1, t2, t1, t2} { // cached from the third call on
		if _, err := v.Verify(raw, audA); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	revokedJTI["jti-1"] = true
	revokedGID["grant-2"] = true
	mu.Unlock()
	for _, raw := range []string{t1, t2} {
		if _, err := v.Verify(raw, audA); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked cached token: %v", err)
		}
	}
	if calls != 6 {
		t.Fatalf("Revoked called %d times, want once per Verify (6)", calls)
	}
}

func sumOf(raw string) *[32]byte {
	s := sha256Sum(raw)
	return &s
}

// countingKeys counts Refresh calls and can learn keys later.
type countingKeys struct {
	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	pending map[string]*rsa.PublicKey // appear at the next Refresh
	refresh int
}

func (k *countingKeys) PublicKey(kid string) (*rsa.PublicKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.keys[kid]
	return p, ok
}

func (k *countingKeys) Refresh() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refresh++
	for kid, p := range k.pending {
		k.keys[kid] = p
	}
	return nil
}

func TestUnknownKidRefreshIsRateLimited(t *testing.T) {
	kid, priv := sharedKey()
	ks := &countingKeys{keys: map[string]*rsa.PublicKey{}, pending: map[string]*rsa.PublicKey{kid: &priv.PublicKey}}
	v := newVerifier(t, ks, nil)
	raw := good(t)
	// The first unknown kid refreshes, and the key appears.
	if _, err := v.Verify(raw, audA); err != nil {
		t.Fatal(err)
	}
	// Floods of unknown kids refresh at most once a second.
	unknown := issue(t, foreign, validClaims())
	for range 20 {
		if _, err := v.Verify(unknown, audA); !errors.Is(err, ErrUnknownKey) {
			t.Fatal(err)
		}
	}
	if ks.refresh != 1 {
		t.Fatalf("%d refreshes, want 1", ks.refresh)
	}
	v.lastRefr.Add(-int64(refreshInterval)) // a second later
	v.Verify(unknown, audA)
	if ks.refresh != 2 {
		t.Fatalf("%d refreshes after the interval, want 2", ks.refresh)
	}
}

// Rotation by another process: the verifier learns the new kid through a
// refresh; tokens of the old key keep working until it is retired, then
// fail even from the cache.
func TestRotation(t *testing.T) {
	state := t.TempDir()
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	opts := keys.Options{RotateAfter: 30 * 24 * time.Hour, RetainFor: 2 * time.Hour, Now: clock}
	a, err := keys.Open(state, opts) // this worker's set
	if err != nil {
		t.Fatal(err)
	}
	b, err := keys.Open(state, opts) // another worker
	if err != nil {
		t.Fatal(err)
	}
	long := func() Claims {
		c := validClaims()
		// Longer than RetainFor, against the rules, to show that key
		// deletion alone ends a token.
		c.ExpiresAt = jwt.NewNumericDate(t0.Add(48 * time.Hour))
		return c
	}
	v := newVerifier(t, a, func(o *VerifierOptions) { o.Now = clock })
	oldKid, _ := a.Signer()
	oldTok := issue(t, a, long())
	if _, err := v.Verify(oldTok, audA); err != nil {
		t.Fatal(err)
	}

	newKid, err := b.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	newTok := issue(t, b, long())
	if got := headerKid(t, newTok); got != newKid || got == oldKid {
		t.Fatalf("new token kid %s, want %s", got, newKid)
	}
	// a has not refreshed: the unknown kid makes it.
	if _, err := v.Verify(newTok, audA); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if got, _ := a.Signer(); got != newKid {
		t.Fatal("a does not sign with the new key after the refresh")
	}
	if got := issue(t, a, long()); headerKid(t, got) != newKid {
		t.Fatal("new tokens still use the old kid")
	}
	if _, err := v.Verify(oldTok, audA); err != nil {
		t.Fatalf("token of the old key after rotation: %v", err)
	}
	var set struct{ Keys []struct{ Kid string } }
	if err := json.Unmarshal(a.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0].Kid != newKid || set.Keys[1].Kid != oldKid {
		t.Fatalf("JWKS %+v", set)
	}

	// RetainFor later b retires the old key; a drops it at its refresh.
	mu.Lock()
	now = now.Add(2*time.Hour + time.Second)
	mu.Unlock()
	if err := b.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(oldTok, audA); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("cached token of a deleted key: %v", err)
	}
	if _, err := v.Verify(newTok, audA); err != nil {
		t.Fatal(err)
	}
}

func headerKid(t testing.TB, raw string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(raw, &Claims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

func TestNewVerifierOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    VerifierOptions
		ok   bool
	}{
		{"ok", VerifierOptions{Keys: shared, AcceptIssuer: acceptAB}, true},
		{"max leeway", VerifierOptions{Keys: shared, AcceptIssuer: acceptAB, Leeway: MaxLeeway}, true},
		{"no keys", VerifierOptions{AcceptIssuer: acceptAB}, false},
		{"no issuer func", VerifierOptions{Keys: shared}, false},
		{"leeway too long", VerifierOptions{Keys: shared, AcceptIssuer: acceptAB, Leeway: 30 * time.Second}, false},
		{"negative leeway", VerifierOptions{Keys: shared, AcceptIssuer: acceptAB, Leeway: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewVerifier(tc.o); (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCacheBoundAndEviction(t *testing.T) {
	now := t0
	live := func() *entry { return &entry{claims: &Claims{}, expires: now.Add(time.Hour)} }

	// The bound holds overall.
	c := newCache(64)
	for i := range 1000 {
		c.put(sumOf(fmt.Sprint(i)), live(), now)
	}
	if n := c.len(); n > 64 || n < 48 {
		t.Fatalf("cache holds %d entries, bound 64", n)
	}

	// Per shard (64/16 = 4 entries): expired entries are evicted before
	// live ones.
	c = newCache(64)
	key := func(i int) *[32]byte { return &[32]byte{0, byte(i)} } // all in shard 0
	for i := range 2 {
		c.put(key(i), &entry{claims: &Claims{}, expires: now.Add(time.Minute)}, now)
	}
	for i := 2; i < 4; i++ {
		c.put(key(i), live(), now)
	}
	now = now.Add(2 * time.Minute)
	for i := 4; i < 6; i++ {
		c.put(key(i), live(), now)
	}
	for i := range 6 {
		if got, want := c.get(key(i)) != nil, i >= 2; got != want {
			t.Fatalf("entry %d cached: %v, want %v", i, got, want)
		}
	}
	// With only live entries, a new one evicts one of them.
	c.put(key(6), live(), now)
	if n := c.len(); n != 4 || c.get(key(6)) == nil {
		t.Fatalf("full shard: %d entries, new one present: %v", n, c.get(key(6)) != nil)
	}
	// An entry already expired is not stored.
	c.put(key(7), &entry{claims: &Claims{}, expires: now}, now)
	if c.get(key(7)) != nil {
		t.Fatal("expired entry stored")
	}
}

func TestConcurrentVerify(t *testing.T) {
	v := newVerifier(t, shared, func(o *VerifierOptions) { o.CacheSize = 32 })
	var toks []string
	for i := range 8 {
		c := validClaims()
		c.ID = fmt.Sprint("jti-", i)
		toks = append(toks, issue(t, shared, c))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				raw := toks[(g+i)%len(toks)]
				aud := audA
				if i%5 == 0 {
					aud = audB
				}
				c, err := v.Verify(raw, aud)
				if aud == audA && err != nil || aud == audB && !errors.Is(err, ErrAudience) {
					t.Error(err)
					return
				}
				if c != nil && c.Audience != audA {
					t.Error("claims mixed up")
				}
			}
		})
	}
	wg.Wait()
}
