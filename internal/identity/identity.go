// Package identity holds the two facts about a person that cross
// mcpgate's layers, each as one type: the User an identity provider signed
// in (idp returns it, the authorization server and policy judge it), and
// the Principal an access token stands for (the authorization server
// issues it, token signs and verifies it, the bearer check returns it, the
// proxy tells the backend about it). Adding a claim means adding a field
// here and its JWT name in package token, nowhere else.
package identity

import (
	"strings"
	"time"
)

// User is who the upstream identity provider says signed in.
type User struct {
	// Subject is stable and provider-scoped: "github:12345",
	// "oidc:<issuer host[/path]>:<sub>". It never changes when the user
	// renames their account.
	Subject string
	// Login is the name the user lists hold and backends are told: the
	// GitHub login (GitHub logins are case-insensitive), or for OpenID
	// Connect the stable sub claim, or the claim configured as
	// username_claim. Never a name the user may choose at an OpenID Connect
	// provider (preferred_username) unless the operator configured it.
	Login string
	// Name is for display only (OIDC: name, else preferred_username).
	Name  string
	Email string
	// Orgs are GitHub organization logins or OpenID Connect groups;
	// Teams are GitHub "org/team-slug". Sorted, without duplicates.
	Orgs, Teams []string
}

// Principal is what an access token says: who, through which client,
// allowed what, on which resource, until when. A Principal returned by
// the verifier is shared with its cache and must not be modified.
type Principal struct {
	Issuer   string
	Subject  string // User.Subject
	Login    string // User.Login
	ClientID string
	Scopes   []string
	// Audience is the one canonical resource URI the token is for.
	Audience string
	// GrantID names the grant (code and refresh family) the token came
	// from; revoking the grant revokes the token.
	GrantID   string
	TokenID   string // jti
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Scope is the space-separated scope list, as OAuth writes it.
func (p *Principal) Scope() string { return strings.Join(p.Scopes, " ") }

// HasScope reports whether the principal holds scope s.
func (p *Principal) HasScope(s string) bool {
	for _, x := range p.Scopes {
		if x == s {
			return true
		}
	}
	return false
}
