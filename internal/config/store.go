package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// [store]: where the OAuth state lives (issue 14). Absent: SQLite in
// state_dir, shared by the workers of one node. With url: PostgreSQL,
// shared by every node, and the signing keys move into it, encrypted with
// a key derived from key_encryption_key_file (or _credential).

// storeTable is [store].
type storeTable struct {
	URL                        *string `toml:"url"`
	PasswordFile               *string `toml:"password_file"`
	PasswordCredential         *string `toml:"password_credential"`
	Password                   any     `toml:"password"` // always an error
	MaxConnections             *int64  `toml:"max_connections"`
	KeyEncryptionKeyFile       *string `toml:"key_encryption_key_file"`
	KeyEncryptionKeyCredential *string `toml:"key_encryption_key_credential"`
	KeyEncryptionKey           any     `toml:"key_encryption_key"` // always an error
}

// Store is the shared OAuth store; nil in Config means SQLite in state_dir.
// It holds paths to secrets, never the secrets.
type Store struct {
	URL                  string `json:"url"`                     // postgres://, without a password
	PasswordFile         string `json:"password_file,omitempty"` // absolute; "" for none
	MaxConnections       int    `json:"max_connections"`
	KeyEncryptionKeyFile string `json:"key_encryption_key_file"` // absolute
}

// Store defaults and bounds.
const (
	DefaultStoreMaxConnections = 8
	MaxStoreMaxConnections     = 1000
	// MinKeyEncryptionKey is the least secret a key-encryption key file
	// holds, in bytes: 256 bits for the HKDF that derives the AES key.
	MinKeyEncryptionKey = 32
)

// store converts [store]; nil when the table is absent.
func (l *loader) store(f *file, t *storeTable) *Store {
	if t == nil {
		return nil
	}
	p := keyPath{}.key("store")
	s := &Store{MaxConnections: DefaultStoreMaxConnections}
	if t.URL == nil {
		f.errorf(p.key("url"), `required in [store]: the PostgreSQL database every node shares, as in "postgres://mcpgate@db.internal/mcpgate?sslmode=verify-full" (omit [store] for SQLite in state_dir)`)
	} else {
		s.URL = f.storeURL(p.key("url"), *t.URL)
	}
	if t.Password != nil {
		f.errorf(p.key("password"), "secrets are never written inline: put the password in a file and set password_file, or name a systemd credential with password_credential")
	}
	s.PasswordFile = l.secretPath(f, p, "password", t.PasswordFile, t.PasswordCredential, false)
	if t.MaxConnections != nil {
		if n := *t.MaxConnections; n < 1 || n > MaxStoreMaxConnections {
			f.errorf(p.key("max_connections"), "%d is out of range: 1 to %d connections per process", n, MaxStoreMaxConnections)
		} else {
			s.MaxConnections = int(n)
		}
	}
	if t.KeyEncryptionKey != nil {
		f.errorf(p.key("key_encryption_key"), "secrets are never written inline: put at least 32 random bytes in a file and set key_encryption_key_file, or name a systemd credential with key_encryption_key_credential")
	}
	s.KeyEncryptionKeyFile = l.secretPath(f, p, "key_encryption_key", t.KeyEncryptionKeyFile, t.KeyEncryptionKeyCredential, t.KeyEncryptionKey == nil)
	if s.KeyEncryptionKeyFile != "" && !f.isBad(p.key("key_encryption_key_file")) && !f.isBad(p.key("key_encryption_key_credential")) {
		if b, err := ReadKeyEncryptionKey(s.KeyEncryptionKeyFile); err == nil && len(b) < MinKeyEncryptionKey {
			k := "key_encryption_key_file"
			if t.KeyEncryptionKeyCredential != nil {
				k = "key_encryption_key_credential"
			}
			f.errorf(p.key(k), "holds %d bytes, want at least %d (for example: head -c 32 /dev/urandom | base64 > FILE)", len(b), MinKeyEncryptionKey)
		}
	}
	return s
}

// storeURL checks a PostgreSQL URL: the scheme, a host, a database, and no
// password (the file is world-readable configuration).
func (f *file) storeURL(p keyPath, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		f.errorf(p, "not a URL: %v", err.(*url.Error).Err)
		return ""
	}
	switch {
	case u.Scheme != "postgres" && u.Scheme != "postgresql":
		f.errorf(p, `scheme %q: want "postgres://"`, u.Scheme)
	case u.User != nil && func() bool { _, ok := u.User.Password(); return ok }():
		f.errorf(p, "holds a password: secrets are never written inline; set password_file or password_credential")
	case u.Host == "" && u.Query().Get("host") == "":
		f.errorf(p, "no host")
	case strings.Trim(u.Path, "/") == "":
		f.errorf(p, `no database name: add it as the path, as in "postgres://mcpgate@db.internal/mcpgate"`)
	case u.Query().Has("password"):
		f.errorf(p, "holds a password: secrets are never written inline; set password_file or password_credential")
	default:
		return raw
	}
	return ""
}

// secretPath resolves <name>_file or <name>_credential below p to an
// absolute path, checked but not read (the value may differ by node).
func (l *loader) secretPath(f *file, p keyPath, name string, file, cred *string, required bool) string {
	fp, cp := p.key(name+"_file"), p.key(name+"_credential")
	switch {
	case file != nil && cred != nil:
		f.errorf(cp, "cannot be combined with %s_file", name)
	case file != nil:
		if *file == "" {
			f.errorf(fp, "must not be empty")
			return ""
		}
		path := l.path(*file)
		if err := checkSecretFile(path); err != nil {
			f.errorf(fp, "%v", err)
		}
		return path
	case cred != nil:
		return f.credential(cp, *cred)
	case required:
		f.errorf(p, "set %s_file or %s_credential: with PostgreSQL the signing keys are stored there, encrypted with a key derived from it; every node needs the same one", name, name)
	}
	return ""
}

// ReadKeyEncryptionKey reads a key-encryption key file: its bytes without
// surrounding whitespace (a base64 or hex text is as good as raw bytes,
// the key is derived from it with HKDF).
func ReadKeyEncryptionKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

// ReadStorePassword reads the database password file ("" for none).
func ReadStorePassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("store password: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
