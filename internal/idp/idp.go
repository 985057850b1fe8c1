// Package idp defines how mcpgate logs its users in through an upstream
// identity provider: one Provider per connector (GitHub in idp/github, any
// OpenID Connect provider in idp/oidc), and the Identity they return.
//
// The authorization server sends the user's browser to AuthCodeURL with a
// random, single-use state and fresh Secrets (a PKCE verifier and a nonce,
// stored with the flow, never derived from state), receives code and state
// on its callback_url, checks that the browser is the one that started the
// flow, and calls Exchange with the same Secrets. Nothing a client sent to
// mcpgate (its resource, scope or PKCE parameters) is ever forwarded
// upstream.
package idp

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// Secrets are the per-login values the authorization server generates at
// random and keeps with the pending flow until the callback.
type Secrets struct {
	// Verifier is the PKCE code_verifier (RFC 7636, 43 to 128 characters):
	// AuthCodeURL sends its S256 challenge, Exchange the verifier, so a code
	// stolen on its way back is useless without the stored flow.
	Verifier string
	// Nonce is the OpenID Connect nonce: sent with the authorization
	// request and required in the id_token.
	Nonce string
}

// Challenge is the S256 code_challenge of the verifier.
func (s Secrets) Challenge() string {
	sum := sha256.Sum256([]byte(s.Verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Identity is who the upstream provider says logged in.
type Identity struct {
	// Subject is stable and provider-scoped: "github:12345",
	// "oidc:<issuer host[/path]>:<sub>". It never changes when the user
	// renames their account.
	Subject string
	// Login is the user name matched against allow lists and sent to
	// backends: the GitHub login (as GitHub spells it; GitHub logins are
	// case-insensitive), or for OIDC the stable sub claim, or the claim
	// configured as username_claim. Never a name the user may choose at an
	// OIDC provider (preferred_username) unless the operator configured it.
	Login string
	// Name is for display only (OIDC: name, else preferred_username).
	Name  string
	Email string
	// Orgs are GitHub organization logins (lower-case) or the OIDC groups
	// claim (as the provider spells them). Sorted, without duplicates.
	Orgs []string
	// Teams are GitHub teams as "org/team-slug" (lower-case). Sorted.
	Teams []string
}

// Provider is one upstream identity provider.
type Provider interface {
	// Name is "github" or "oidc".
	Name() string
	// AuthCodeURL is where the user's browser goes to log in. state is
	// mcpgate's own random, single-use value; redirectURI is callback_url;
	// the URL carries the S256 challenge of s.Verifier and (OIDC) s.Nonce.
	AuthCodeURL(state, redirectURI string, s Secrets) string
	// Exchange redeems the code the provider returned to redirectURI with
	// the Secrets given to AuthCodeURL for this login, and says who logged
	// in. Errors are *Error values whose text never contains a code, token,
	// verifier, nonce or secret.
	Exchange(ctx context.Context, code, redirectURI string, s Secrets) (*Identity, error)
}

// Error is a failed upstream login. Its text is safe to log: it carries the
// provider's error code and description, or an HTTP status, but never the
// authorization code, an access token or a client secret.
type Error struct {
	Provider    string // "github", "oidc"
	Op          string // "token exchange", "GET /user", "id_token", "discovery", "callback"...
	Code        string // OAuth error code from the provider ("bad_verification_code", "access_denied"), if any
	Description string // the provider's error_description or API message, sanitized
	Status      int    // HTTP status when the provider answered with an unexpected one
	Err         error  // the underlying cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Provider)
	b.WriteString(": ")
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// CallbackError returns the error an upstream provider reported when it
// redirected the browser back to callback_url (for example the user
// declined: error=access_denied), or nil when q carries no error. The
// authorization server calls it before Exchange.
func CallbackError(provider string, q url.Values) error {
	code := q.Get("error")
	if code == "" {
		return nil
	}
	return &Error{
		Provider:    provider,
		Op:          "callback",
		Code:        Sanitize(code),
		Description: Sanitize(q.Get("error_description")),
	}
}

// maxText bounds provider-supplied text copied into errors.
const maxText = 200

// Sanitize makes provider-supplied text fit for an error message and a log
// line: every occurrence of a secret is replaced by "[redacted]", control
// characters become spaces, and the result is at most 200 bytes.
func Sanitize(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxText {
		cut := maxText
		for cut > 0 && s[cut]&0xc0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
