// Package idp defines how mcpgate logs its users in through an upstream
// identity provider: one Provider per connector (GitHub in idp/github, any
// OpenID Connect provider in idp/oidc), and the Identity they return.
//
// The authorization server sends the user's browser to AuthCodeURL with a
// random, single-use state, receives code and state on its callback_url,
// and calls Exchange with both. Nothing a client sent to mcpgate (its
// resource, scope or PKCE parameters) is ever forwarded upstream.
package idp

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/mcpgate/mcpgate/internal/identity"
)

// Identity is who the upstream provider says logged in: the one User type
// of package identity, named here for the connectors' signatures.
type Identity = identity.User

// Provider is one upstream identity provider.
type Provider interface {
	// Name is "github" or "oidc".
	Name() string
	// AuthCodeURL is where the user's browser goes to log in. state is
	// mcpgate's own random, single-use value; redirectURI is callback_url.
	AuthCodeURL(state, redirectURI string) string
	// Exchange redeems the code the provider returned to redirectURI
	// together with state (the same value given to AuthCodeURL; the OIDC
	// connector derives its nonce from it) and says who logged in. Errors
	// are *Error values whose text never contains a code, token or secret.
	Exchange(ctx context.Context, code, state, redirectURI string) (*Identity, error)
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
