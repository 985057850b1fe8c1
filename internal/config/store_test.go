package config

import (
	"maps"
	"path/filepath"
	"strings"
	"testing"
)

var storeFiles = map[string]string{
	"auth.toml": authProxy + "[auth]\nrequired = false\n",
	"kek":       strings.Repeat("k", 44) + "\n",
	"db.pw":     "pw\n",
	"short":     "too short\n",
}

func TestStore(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	files := maps.Clone(storeFiles)
	files["mcpgate.toml"] = `[store]
url = "postgres://mcpgate@db.internal/mcpgate?sslmode=verify-full"
password_file = "db.pw"
max_connections = 4
key_encryption_key_file = "kek"
`
	writeFiles(t, dir, files)
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Store{
		URL:                  "postgres://mcpgate@db.internal/mcpgate?sslmode=verify-full",
		PasswordFile:         filepath.Join(dir, "db.pw"),
		MaxConnections:       4,
		KeyEncryptionKeyFile: filepath.Join(dir, "kek"),
	}
	if cfg.Store == nil || *cfg.Store != want {
		t.Fatalf("Store = %+v, want %+v", cfg.Store, want)
	}

	// Without [store]: nil, SQLite in state_dir.
	files["mcpgate.toml"] = "[server]\n"
	writeFiles(t, dir, files)
	if cfg, err = Load(dir); err != nil || cfg.Store != nil {
		t.Fatalf("without [store]: %+v, %v", cfg.Store, err)
	}

	// Credentials; max_connections defaults.
	creds := t.TempDir()
	writeFiles(t, creds, map[string]string{"mcpgate_db.password": "pw", "kek": strings.Repeat("x", 32)})
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	files["mcpgate.toml"] = `[store]
url = "postgresql://mcpgate@db.internal:5433/mcpgate"
password_credential = "mcpgate_db.password"
key_encryption_key_credential = "kek"
`
	writeFiles(t, dir, files)
	if cfg, err = Load(dir); err != nil {
		t.Fatal(err)
	}
	want = Store{URL: "postgresql://mcpgate@db.internal:5433/mcpgate", PasswordFile: filepath.Join(creds, "mcpgate_db.password"),
		MaxConnections: DefaultStoreMaxConnections, KeyEncryptionKeyFile: filepath.Join(creds, "kek")}
	if *cfg.Store != want {
		t.Fatalf("Store = %+v, want %+v", cfg.Store, want)
	}
}

func TestStoreErrors(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{
			name: "url missing, no key",
			toml: "[store]\nmax_connections = 0\n",
			want: `$DIR/mcpgate.toml:1: store: set key_encryption_key_file or key_encryption_key_credential: with PostgreSQL the signing keys are stored there, encrypted with a key derived from it; every node needs the same one
$DIR/mcpgate.toml:1: store.url: required in [store]: the PostgreSQL database every node shares, as in "postgres://mcpgate@db.internal/mcpgate?sslmode=verify-full" (omit [store] for SQLite in state_dir)
$DIR/mcpgate.toml:2: store.max_connections: 0 is out of range: 1 to 1000 connections per process`,
		},
		{
			name: "inline secrets",
			toml: `[store]
url = "postgres://mcpgate:hunter2@db/mcpgate"
password = "hunter2"
key_encryption_key = "0123456789abcdef0123456789abcdef"
`,
			want: `$DIR/mcpgate.toml:2: store.url: holds a password: secrets are never written inline; set password_file or password_credential
$DIR/mcpgate.toml:3: store.password: secrets are never written inline: put the password in a file and set password_file, or name a systemd credential with password_credential
$DIR/mcpgate.toml:4: store.key_encryption_key: secrets are never written inline: put at least 32 random bytes in a file and set key_encryption_key_file, or name a systemd credential with key_encryption_key_credential`,
		},
		{
			name: "bad url, short key, both password keys, unknown key",
			toml: `[store]
url = "mysql://db/mcpgate"
password_file = "db.pw"
password_credential = "db.password"
key_encryption_key_file = "short"
pool = 3
`,
			want: `$DIR/mcpgate.toml:2: store.url: scheme "mysql": want "postgres://"
$DIR/mcpgate.toml:4: store.password_credential: cannot be combined with password_file
$DIR/mcpgate.toml:5: store.key_encryption_key_file: holds 9 bytes, want at least 32 (for example: head -c 32 /dev/urandom | base64 > FILE)
$DIR/mcpgate.toml:6: store.pool: unknown key`,
		},
		{
			name: "no database, missing files, password in the query",
			toml: `[store]
url = "postgres://db.internal"
key_encryption_key_file = "nope"
`,
			want: `$DIR/mcpgate.toml:2: store.url: no database name: add it as the path, as in "postgres://mcpgate@db.internal/mcpgate"
$DIR/mcpgate.toml:3: store.key_encryption_key_file: $DIR/nope: no such file or directory`,
		},
		{
			name: "password as a query parameter",
			toml: `[store]
url = "postgres://db.internal/mcpgate?password=x"
key_encryption_key_file = "kek"
`,
			want: `$DIR/mcpgate.toml:2: store.url: holds a password: secrets are never written inline; set password_file or password_credential`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noEnv(t)
			dir := t.TempDir()
			files := maps.Clone(storeFiles)
			files["mcpgate.toml"] = tt.toml
			writeFiles(t, dir, files)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded, want errors")
			}
			if got, want := err.Error(), strings.ReplaceAll(tt.want, "$DIR", dir); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
