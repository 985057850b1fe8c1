package token

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/keys"
)

// Type is the JWT typ header of access tokens (RFC 9068 section 2.1).
const Type = "at+jwt"

// SigningKeys gives the key to sign with; *keys.Set implements it.
type SigningKeys interface {
	Signer() (kid string, key *rsa.PrivateKey)
}

var _ SigningKeys = (*keys.Set)(nil)

// Issuer signs access tokens. It is safe for concurrent use.
type Issuer struct {
	keys SigningKeys
	ttl  time.Duration
	now  func() time.Time
}

// NewIssuer returns an Issuer signing with the active key of ks; tokens
// without an expiry get ttl.
func NewIssuer(ks SigningKeys, ttl time.Duration) *Issuer {
	return &Issuer{keys: ks, ttl: ttl, now: time.Now}
}

// Issue signs p as an RFC 9068 access token. Issuer, Subject, ClientID and
// Audience are required. Missing values are filled in: IssuedAt with the
// current time, ExpiresAt with IssuedAt plus the Issuer's ttl, TokenID with
// NewID(); a caller that needs them (expires_in, revocation lists) sets
// them itself.
func (i *Issuer) Issue(p *identity.Principal) (string, error) {
	return i.Sign(claimsOf(p))
}

// Sign signs claims as they are, after the checks and defaults of Issue.
// Issue is the way in for the authorization server; Sign lets tests make
// tokens Issue never would.
func (i *Issuer) Sign(c Claims) (string, error) {
	switch {
	case c.Issuer == "":
		return "", errors.New("token: issue: no issuer")
	case c.Subject == "":
		return "", errors.New("token: issue: no subject")
	case c.ClientID == "":
		return "", errors.New("token: issue: no client_id")
	case len(c.Audience) != 1 || c.Audience[0] == "":
		// One canonical resource, never a list of every proxy.
		return "", fmt.Errorf("token: issue: %d audiences, want exactly one", len(c.Audience))
	}
	if c.IssuedAt == nil {
		c.IssuedAt = jwt.NewNumericDate(i.now())
	}
	if c.ExpiresAt == nil {
		if i.ttl <= 0 {
			return "", errors.New("token: issue: no expiry and no ttl")
		}
		c.ExpiresAt = jwt.NewNumericDate(c.IssuedAt.Add(i.ttl))
	}
	if !c.ExpiresAt.After(c.IssuedAt.Time) {
		return "", errors.New("token: issue: expiry not after issued-at")
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	kid, key := i.keys.Signer()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, &c)
	t.Header["typ"] = Type
	t.Header["kid"] = kid
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("token: issue: %w", err)
	}
	return s, nil
}
