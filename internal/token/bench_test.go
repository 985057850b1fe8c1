package token

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/identity"
)

// benchClaims are shaped like real ones: a DCR client id, three scopes.
func benchClaims() Claims {
	now := time.Now()
	return Claims{
		Issuer:    "https://mcp.example.com",
		Subject:   "github|12345678",
		Audience:  jwt.ClaimStrings{"https://mcp.example.com/mcp"},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		ClientID:  "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b",
		Scope:     "mcp user admin",
		Login:     "alice",
		GrantID:   NewID(),
	}
}

// benchVerifier has issuer and revocation hooks as cheap as the real ones
// should be: map lookups.
func benchVerifier(b *testing.B, cacheSize int) *Verifier {
	issuers := map[string]bool{"https://mcp.example.com": true}
	revoked := map[string]bool{"some-grant": true}
	v, err := NewVerifier(VerifierOptions{
		Keys:         shared,
		AcceptIssuer: func(iss string) bool { return issuers[iss] },
		Revoked:      func(p *identity.Principal) bool { return revoked[p.GrantID] || revoked[p.TokenID] },
		Leeway:       2 * time.Second,
		CacheSize:    cacheSize,
	})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func BenchmarkVerifyCacheHit(b *testing.B) {
	v := benchVerifier(b, 0)
	raw := issue(b, shared, benchClaims())
	b.SetBytes(int64(len(raw)))
	if _, err := v.Verify(raw, "https://mcp.example.com/mcp"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(raw, "https://mcp.example.com/mcp"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCacheHitParallel(b *testing.B) {
	v := benchVerifier(b, 0)
	toks := make([]string, 64)
	for i := range toks {
		toks[i] = issue(b, shared, benchClaims())
	}
	// Signing the tokens above is setup, not the measured work.
	b.ResetTimer()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := v.Verify(toks[i%len(toks)], "https://mcp.example.com/mcp"); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkVerifyCacheMiss(b *testing.B) {
	v := benchVerifier(b, -1) // no cache: every call is a full RS256 verification
	raw := issue(b, shared, benchClaims())
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(raw, "https://mcp.example.com/mcp"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	iss := NewIssuer(shared, time.Hour)
	c := benchClaims()
	c.IssuedAt, c.ExpiresAt = nil, nil
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}
