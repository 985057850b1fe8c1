// Package token issues and verifies mcpgate's access tokens: RFC 9068 JWTs
// (header typ "at+jwt"), signed RS256 with the active key of a keys.Set.
//
// The Verifier pins the algorithm, requires the RFC 9068 claims, checks the
// audience against the resource of the proxy asking, and keeps verified
// tokens in a bounded cache until they expire, so the per-request cost is a
// hash and a map lookup rather than an RSA verification. Issuer acceptance,
// audience, expiry, key presence and revocation are still checked on every
// call, cached or not.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/identity"
)

// Claims are the claims of an access token: RFC 9068 section 2.2 plus
// mcpgate's login and gid.
type Claims struct {
	Issuer string `json:"iss"`
	// Subject is the stable user id at the identity provider.
	Subject string `json:"sub"`
	// Audience is the canonical resource URI the token is for. Issued
	// tokens carry exactly one, serialized as a single string; verified
	// tokens may carry a list.
	Audience  jwt.ClaimStrings `json:"aud"`
	ExpiresAt *jwt.NumericDate `json:"exp"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	ID        string           `json:"jti"`
	ClientID  string           `json:"client_id"`
	// Scope is space-separated.
	Scope string `json:"scope,omitempty"`
	// Login is the user name at the upstream identity provider.
	Login string `json:"login,omitempty"`
	// GrantID names the grant (authorization code and refresh token
	// family) the token was issued from; revoking the grant revokes every
	// access token carrying it.
	GrantID string `json:"gid,omitempty"`
}

var _ jwt.Claims = (*Claims)(nil)

// MarshalJSON writes a single audience as a string, as RFC 9068 tokens
// usually carry it, without touching jwt.MarshalSingleStringAsArray, a
// process-wide setting.
func (c Claims) MarshalJSON() ([]byte, error) {
	type plain Claims
	var aud any
	switch len(c.Audience) {
	case 0:
	case 1:
		aud = c.Audience[0]
	default:
		aud = []string(c.Audience)
	}
	return json.Marshal(struct {
		plain
		Audience any `json:"aud,omitempty"` // shadows plain.Audience
	}{plain(c), aud})
}

// claimsOf is the JWT form of p: the one place mapping principal fields to
// claim names.
func claimsOf(p *identity.Principal) Claims {
	c := Claims{
		Issuer: p.Issuer, Subject: p.Subject, ID: p.TokenID, ClientID: p.ClientID,
		Scope: p.Scope(), Login: p.Login, GrantID: p.GrantID,
	}
	if p.Audience != "" {
		c.Audience = jwt.ClaimStrings{p.Audience}
	}
	if !p.IssuedAt.IsZero() {
		c.IssuedAt = jwt.NewNumericDate(p.IssuedAt)
	}
	if !p.ExpiresAt.IsZero() {
		c.ExpiresAt = jwt.NewNumericDate(p.ExpiresAt)
	}
	return c
}

// principal is what verified claims say. aud is the audience the token
// was accepted for (one of its audiences); "" takes the first.
func (c *Claims) principal(aud string) *identity.Principal {
	p := &identity.Principal{
		Issuer: c.Issuer, Subject: c.Subject, Login: c.Login, ClientID: c.ClientID,
		Scopes: strings.Fields(c.Scope), GrantID: c.GrantID, TokenID: c.ID, Audience: aud,
	}
	if aud == "" && len(c.Audience) > 0 {
		p.Audience = c.Audience[0]
	}
	if c.IssuedAt != nil {
		p.IssuedAt = c.IssuedAt.UTC()
	}
	if c.ExpiresAt != nil {
		p.ExpiresAt = c.ExpiresAt.UTC()
	}
	return p
}

// HasScope reports whether the space-separated Scope contains s.
func (c *Claims) HasScope(s string) bool {
	if s == "" {
		return false
	}
	rest := c.Scope
	for rest != "" {
		var f string
		f, rest, _ = strings.Cut(rest, " ")
		if f == s {
			return true
		}
	}
	return false
}

// HasAudience reports whether aud is one of the token's audiences.
func (c *Claims) HasAudience(aud string) bool {
	for _, a := range c.Audience {
		if a == aud {
			return true
		}
	}
	return false
}

// GetExpirationTime implements jwt.Claims.
func (c *Claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }

// GetIssuedAt implements jwt.Claims.
func (c *Claims) GetIssuedAt() (*jwt.NumericDate, error) { return c.IssuedAt, nil }

// GetNotBefore implements jwt.Claims.
func (c *Claims) GetNotBefore() (*jwt.NumericDate, error) { return c.NotBefore, nil }

// GetIssuer implements jwt.Claims.
func (c *Claims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *Claims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *Claims) GetAudience() (jwt.ClaimStrings, error) { return c.Audience, nil }

// NewID returns a random 128-bit identifier, base64url without padding: a
// jti, or a grant id.
func NewID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
