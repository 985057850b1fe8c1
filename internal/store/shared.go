package store

import (
	"context"
	"errors"
	"time"
)

// What a store shared by several nodes adds (issue 14). These are separate
// interfaces, not Store methods, so that a backend says what it can do and
// callers type-assert: the SQLite store shares its keys through state_dir
// files, not through KeyStore.

// ErrUnavailable wraps every error a backend returns because it cannot
// reach its database (connection refused or lost, pool exhausted past the
// deadline). Callers answer 503 with Retry-After, not 500: the request
// may succeed in a moment and nothing was changed.
var ErrUnavailable = errors.New("store: unavailable")

// SealedKey is one signing key as a shared store keeps it: the private key
// encrypted by internal/keys; the store never sees it in the clear.
type SealedKey struct {
	Kid     string
	Created time.Time // millisecond precision
	Sealed  []byte
}

// KeyStore keeps the signing keys of every node.
type KeyStore interface {
	// SigningKeys returns every stored key, in no particular order.
	SigningKeys(ctx context.Context) ([]SealedKey, error)
	// UpdateSigningKeys calls f with the stored keys under a lock that
	// excludes every other UpdateSigningKeys on the same data (every node),
	// then adds what f returns in add and deletes the kids in del, in one
	// transaction. If f fails nothing changes.
	UpdateSigningKeys(ctx context.Context, f func(current []SealedKey) (add []SealedKey, del []string, err error)) error
}

// Record is one item of an export: exactly one field is set. Pending
// authorizations and rate-limit windows are not exported: they live for
// minutes and are stored by hashes of values nobody could re-derive.
type Record struct {
	Client     *Client       `json:"client,omitempty"`
	Code       *AuthCode     `json:"code,omitempty"`
	Token      *RefreshToken `json:"refresh_token,omitempty"`
	Consent    *Consent      `json:"consent,omitempty"`
	Revocation *Revocation   `json:"revocation,omitempty"`
}

// Porter moves the durable OAuth state between backends (mcpgate store
// export | mcpgate store import).
type Porter interface {
	// Export calls emit for every client, unexpired code and refresh
	// token, consent and unexpired revocation.
	Export(ctx context.Context, emit func(*Record) error) error
	// Import stores one record as it was exported; an item whose key
	// exists is left as it is (import is idempotent). Revocations get a
	// new Seq.
	Import(ctx context.Context, r *Record) error
}
