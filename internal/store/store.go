// Package store is mcpgate's OAuth state: registered clients, pending
// authorizations, authorization codes, refresh token families, consents and
// revocations. Every worker process opens the same store, so the embedded
// backend must be safe for several processes at once. Backends implement
// Store and pass the conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every backend returns for the same conditions.
var (
	ErrNotFound      = errors.New("store: not found")
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrAlreadyUsed is returned by ConsumeAuthCode for a code that was
	// redeemed before; the code is returned too, so the caller can revoke
	// what the first redemption issued.
	ErrAlreadyUsed = errors.New("store: already used")
	// ErrAlreadyRotated is returned by RotateRefreshToken when the token was
	// rotated before (by a concurrent request, or it is being reused).
	ErrAlreadyRotated = errors.New("store: already rotated")
)

// Client is a registered OAuth client (RFC 7591). Static clients from the
// configuration are not stored.
type Client struct {
	ID string
	// SecretHash is the hex SHA-256 of the client secret; "" for a public
	// client. Secrets are random and long, so a fast hash is enough.
	SecretHash              string
	SecretExpiresAt         time.Time // zero: never
	RedirectURIs            []string
	Name                    string
	GrantTypes              []string
	ResponseTypes           []string
	TokenEndpointAuthMethod string // "none", "client_secret_basic", "client_secret_post"
	Scope                   string // space-separated, as registered
	ApplicationType         string // "web" or "native"
	// Metadata is the complete registered metadata as JSON, echoed by the
	// RFC 7592 read endpoint.
	Metadata []byte
	// RegistrationTokenHash is the hex SHA-256 of the RFC 7592 registration
	// access token.
	RegistrationTokenHash string
	CreatedAt             time.Time
	UpdatedAt             time.Time
	// LastUsedAt is when the client was last seen at /authorize or /token
	// (updated at most about once an hour); unused clients are collected
	// by DeleteUnusedClients.
	LastUsedAt time.Time
}

// Pending is an authorization request in progress: stored when the user is
// sent to the upstream identity provider, taken once when they come back.
type Pending struct {
	ID                  string // random; the state sent upstream (hash it if you like, it is single-use)
	Host                string // the proxy hostname the flow started on
	ClientID            string
	RedirectURI         string
	State               string // the client's state, returned to it unchanged
	CodeChallenge       string
	CodeChallengeMethod string
	Scope               string // requested, space-separated
	Resource            string // canonical resource the token is for
	// ClientKey is the network the request came from (IPv4 address, IPv6
	// /64), for the per-address limit on live pending flows.
	ClientKey string
	// UpstreamVerifier is the PKCE code_verifier mcpgate sends to the
	// identity provider, and Nonce the OpenID Connect nonce: random, never
	// derived from ID, kept as-is because the exchange needs them.
	UpstreamVerifier string
	Nonce            string
	// BindHash is the hex SHA-256 of the bind cookie set on the callback
	// host when the flow was sent to the provider; "" until then. The
	// callback refuses a browser without the matching cookie.
	BindHash string
	// ProofHash is the hex SHA-256 of the one-time proof the callback gives
	// the browser that signed in; continuing the flow needs it together
	// with the flow cookie.
	ProofHash string
	// After the upstream login: who logged in. Empty until then.
	Subject string
	Login   string
	Granted string // granted scopes, space-separated
	// Orgs and Teams are the memberships the provider reported at the
	// login (GitHub organizations and "org/team", or OpenID Connect groups
	// in Orgs), kept with the grant so a refresh can re-check them against
	// the configuration of the day.
	Orgs      []string
	Teams     []string
	ExpiresAt time.Time
}

// AuthCode is an authorization code, stored by the hash of its value.
type AuthCode struct {
	CodeHash      string // hex SHA-256 of the code
	GrantID       string // every token issued from this code carries it; reuse revokes the grant
	ClientID      string
	RedirectURI   string
	CodeChallenge string // S256 challenge
	Resource      string
	Scope         string
	Subject       string
	Login         string
	Host          string   // where the flow started: the issuer host
	Orgs          []string // memberships at the login, as in Pending
	Teams         []string
	// AuthTime is when the user logged in: the refresh family's lifetime
	// counts from it.
	AuthTime  time.Time
	ExpiresAt time.Time
	UsedAt    time.Time // zero until redeemed
}

// RefreshToken is one refresh token of a family (a grant). Rotation
// replaces it by a successor in the same family.
type RefreshToken struct {
	TokenHash string // hex SHA-256 of the token
	GrantID   string // the family
	ClientID  string
	Subject   string
	Login     string
	Scope     string
	Resource  string
	Host      string
	Orgs      []string // memberships at the login, as in Pending
	Teams     []string
	// AuthTime is the family's login time, carried through rotations; no
	// token of the family lives past AuthTime + refresh_token_ttl.
	AuthTime  time.Time
	CreatedAt time.Time
	ExpiresAt time.Time
	RotatedAt time.Time // zero while current
	// RotationNonce is set with RotatedAt: the server-side random value
	// the successor was derived from (with the token itself), so a retry
	// inside the grace window can compute the same successor again.
	RotationNonce string
}

// Grant is one refresh family as an operator sees it: who, which client,
// which resource, since when and last used when. It is read from the
// family's current (not yet rotated) refresh token.
type Grant struct {
	ID       string
	ClientID string
	Subject  string
	Login    string
	Scope    string
	Resource string
	Host     string    // the issuer host the login started on
	AuthTime time.Time // the login: the family's start
	// LastUsed is the current token's creation: the last refresh, or the
	// login when the family was never refreshed.
	LastUsed  time.Time
	ExpiresAt time.Time // the current token's expiry
}

// GrantFilter selects grants; an empty field matches everything.
type GrantFilter struct {
	// User matches the subject exactly or the login with ASCII case
	// folding (GitHub logins are case-insensitive; no Unicode folding, as
	// everywhere else).
	User     string
	ClientID string
}

// Consent remembers that a user approved a client for some scopes.
type Consent struct {
	Subject   string
	ClientID  string
	Scope     string // space-separated
	GrantedAt time.Time
}

// RevocationKind says what a revocation covers.
type RevocationKind string

// Kinds of revocation. Workers refuse access tokens whose jti, grant or
// client is revoked.
const (
	RevokeToken  RevocationKind = "token"  // one access token, by jti
	RevokeGrant  RevocationKind = "grant"  // every token of a grant (refresh family)
	RevokeClient RevocationKind = "client" // every token of a deleted client
)

// Revocation is one entry of the revocation log.
type Revocation struct {
	Seq   int64 // increasing; cursor for Revocations
	Kind  RevocationKind
	Value string
	// ExpiresAt: after this no token it covers can be valid any more, so
	// the entry may be dropped.
	ExpiresAt time.Time
	At        time.Time
}

// Store is the storage behind the authorization server. All methods are
// safe for concurrent use, also from several processes on one store.
type Store interface {
	CreateClient(ctx context.Context, c *Client) error // ErrAlreadyExists
	GetClient(ctx context.Context, id string) (*Client, error)
	UpdateClient(ctx context.Context, c *Client) error // ErrNotFound
	// DeleteClient removes the client, its consents, codes and refresh
	// tokens, and records a RevokeClient revocation expiring at revokeUntil.
	DeleteClient(ctx context.Context, id string, revokeUntil time.Time) error
	// TouchClient sets the client's LastUsedAt to now; ErrNotFound if
	// there is no such client.
	TouchClient(ctx context.Context, id string, now time.Time) error
	// ListClients returns every stored client, sorted by ID.
	ListClients(ctx context.Context) ([]*Client, error)
	// DeleteUnusedClients deletes, as DeleteClient does, every client whose
	// LastUsedAt is before unusedSince, and returns how many it deleted.
	DeleteUnusedClients(ctx context.Context, unusedSince, revokeUntil time.Time) (int, error)

	PutPending(ctx context.Context, p *Pending) error
	// UpdatePending replaces a pending authorization (after login).
	UpdatePending(ctx context.Context, p *Pending) error
	// TakePending returns and deletes it: single use. Expired → ErrNotFound.
	TakePending(ctx context.Context, id string) (*Pending, error)
	// GetPending reads without deleting. Expired → ErrNotFound.
	GetPending(ctx context.Context, id string) (*Pending, error)
	// BindPending records bindHash as the flow's BindHash only if none is
	// recorded yet, atomically: a second binding → ErrAlreadyUsed and
	// nothing changes. Unknown or expired → ErrNotFound.
	BindPending(ctx context.Context, id, bindHash string) error
	// CountPending counts the pending authorizations with this ClientKey
	// that have not expired at now.
	CountPending(ctx context.Context, clientKey string, now time.Time) (int, error)

	CreateAuthCode(ctx context.Context, c *AuthCode) error
	// ConsumeAuthCode marks the code used and returns it. A code used
	// before → the code and ErrAlreadyUsed; expired or unknown → ErrNotFound.
	ConsumeAuthCode(ctx context.Context, codeHash string, now time.Time) (*AuthCode, error)

	CreateRefreshToken(ctx context.Context, t *RefreshToken) error
	// GetRefreshToken returns the token, rotated or not; expired or
	// revoked → ErrNotFound.
	GetRefreshToken(ctx context.Context, tokenHash string) (*RefreshToken, error)
	// RotateRefreshToken atomically marks old rotated (at now, with nonce
	// as its RotationNonce) and stores next, only if old is not rotated
	// yet; otherwise ErrAlreadyRotated and nothing changes. Unknown old →
	// ErrNotFound.
	RotateRefreshToken(ctx context.Context, oldHash, nonce string, next *RefreshToken, now time.Time) error
	// RevokeGrant deletes every refresh token and code of the grant and
	// records a RevokeGrant revocation expiring at revokeUntil.
	RevokeGrant(ctx context.Context, grantID string, revokeUntil time.Time) error
	// ListGrants returns the live grants (families with an unexpired
	// current refresh token at now) that f selects, oldest login first,
	// ties by ID.
	ListGrants(ctx context.Context, f GrantFilter, now time.Time) ([]Grant, error)
	// RevokeClientGrants revokes, as RevokeGrant does, every grant of the
	// client (its refresh tokens and codes) and deletes its consents, in
	// one step; a stored registration stays. It returns the revoked grant
	// IDs, sorted. For clients that are not stored (metadata documents),
	// whose ID must not be blocked as DeleteClient would.
	RevokeClientGrants(ctx context.Context, clientID string, revokeUntil time.Time) ([]string, error)
	// DeleteRefreshToken removes one token (RFC 7009 revocation of a
	// refresh token revokes its grant instead; this is for cleanup).
	DeleteRefreshToken(ctx context.Context, tokenHash string) error

	// RevokeAccessToken records a RevokeToken revocation for jti.
	RevokeAccessToken(ctx context.Context, jti string, expiresAt time.Time) error
	// Revocations returns entries with Seq > after, oldest first, at most
	// limit, skipping expired ones.
	Revocations(ctx context.Context, after int64, limit int) ([]Revocation, error)

	PutConsent(ctx context.Context, c *Consent) error
	GetConsent(ctx context.Context, subject, clientID string) (*Consent, error)

	// CountEvent counts one event for key in a fixed window that opens at
	// the key's first event and lasts window, and returns the count
	// including this event. It is atomic across processes sharing the
	// store, so every worker draws on one budget.
	CountEvent(ctx context.Context, key string, window time.Duration, now time.Time) (int64, error)

	// Cleanup deletes everything expired before now.
	Cleanup(ctx context.Context, now time.Time) error
	Close() error
}
