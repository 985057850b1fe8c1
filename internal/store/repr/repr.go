// Package repr is the stored representation the SQL backends share:
// times as unix milliseconds, lists as JSON, pending IDs hashed. One
// definition, so that the SQLite and PostgreSQL stores write the same
// values and an export from one imports into the other unchanged.
package repr

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// MS is t as unix milliseconds, 0 for the zero time. Milliseconds rather
// than nanoseconds: enough for expiry, no overflow for far-future dates,
// and a precision every SQL backend keeps.
func MS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMS is the inverse of MS, in UTC.
func FromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// ListJSON is a string list as a JSON array, "[]" for none.
func ListJSON(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(l) // []string always marshals
	return string(b)
}

// ParseList reads ListJSON's output; an empty list is nil.
func ParseList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, err
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}

// HashID hashes a pending ID: it is a bearer value (the state sent
// upstream), so only its hash is stored, like codes and tokens.
func HashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}
