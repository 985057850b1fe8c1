package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const acmeProxy = `hostnames = ["notes.example.com", "www.notes.example.com"]
target = "http://127.0.0.1:3000"
[tls]
acme = true
`

// TestLoadACME: [acme] with every key, and a proxy with acme = true.
func TestLoadACME(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	cert, _ := testCert()
	writeFiles(t, dir, withAuthOff(map[string]string{
		"mcpgate.toml": `[acme]
email = "ops@example.com"
directory_url = "https://ca.internal:14000/dir"
ca_root_file = "ca.pem"
challenges = ["http-01"]
eab_kid = "kid-1"
eab_hmac_file = "eab.key"
`,
		"ca.pem":     string(cert),
		"eab.key":    "c2VjcmV0LWhtYWMta2V5\n",
		"notes.toml": acmeProxy,
	}))
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &ACME{
		Email:        "ops@example.com",
		DirectoryURL: "https://ca.internal:14000/dir",
		CARootFile:   filepath.Join(dir, "ca.pem"),
		Challenges:   []string{"http-01"},
		EABKeyID:     "kid-1",
		EABHMACFile:  filepath.Join(dir, "eab.key"),
	}
	if !reflect.DeepEqual(cfg.ACME, want) {
		t.Errorf("ACME = %+v, want %+v", cfg.ACME, want)
	}
	p := cfg.Proxy("notes")
	if !p.TLS.ACME || p.TLS.CertFile != "" || p.TLS.SelfSigned {
		t.Errorf("TLS = %+v, want acme only", p.TLS)
	}
	if got := p.Summary(); !strings.Contains(got, "tls: acme") {
		t.Errorf("summary %q does not say tls: acme", got)
	}
	key, err := ReadEABKey(want.EABHMACFile)
	if err != nil || string(key) != "secret-hmac-key" {
		t.Errorf("ReadEABKey = %q, %v", key, err)
	}
}

// TestLoadACMEEABCredential: the HMAC key as a systemd credential.
func TestLoadACMEEABCredential(t *testing.T) {
	noEnv(t)
	dir, creds := t.TempDir(), t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	writeFiles(t, creds, map[string]string{"mcpgate_eab": "c2VjcmV0\n"})
	writeFiles(t, dir, withAuthOff(map[string]string{
		"mcpgate.toml": "[acme]\neab_kid = \"k\"\neab_hmac_credential = \"mcpgate_eab\"\n",
		"notes.toml":   acmeProxy,
	}))
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ACME.EABKeyID != "k" || cfg.ACME.EABHMACFile != filepath.Join(creds, "mcpgate_eab") {
		t.Errorf("ACME = %+v", cfg.ACME)
	}
}

// TestLoadACMEDefaults: a proxy may use ACME without [acme]: Let's Encrypt,
// no email, both challenges (as Caddy does).
func TestLoadACMEDefaults(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeFiles(t, dir, withAuthOff(map[string]string{"notes.toml": acmeProxy}))
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &ACME{DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory", Challenges: []string{"tls-alpn-01", "http-01"}}
	if !reflect.DeepEqual(cfg.ACME, want) {
		t.Errorf("ACME = %+v, want %+v", cfg.ACME, want)
	}
}

// TestACMEHash: [acme] is part of the hash of proxies using it, and of no
// other, so editing it restarts only their workers.
func TestACMEHash(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeCert(t, dir)
	writeFiles(t, dir, withAuthOff(map[string]string{
		"a.toml": acmeProxy,
		"b.toml": "hostnames = [\"b.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\ncert_file = \"tls/notes.crt\"\nkey_file = \"tls/notes.key\"\n",
	}))
	hashes := func(global string) (acme, files string) {
		writeFiles(t, dir, map[string]string{"mcpgate.toml": global})
		cfg, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Proxy("a").Hash, cfg.Proxy("b").Hash
	}
	a1, b1 := hashes("[acme]\nemail = \"a@example.com\"\n")
	a2, b2 := hashes("[acme]\nemail = \"b@example.com\"\n")
	if a1 == a2 {
		t.Error("changing [acme] email kept the hash of the ACME proxy")
	}
	if b1 != b2 {
		t.Error("changing [acme] email changed the hash of a proxy with certificate files")
	}
}

func TestLoadACMEErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // $DIR stands for the directory
	}{
		{
			name: "bad [acme] values",
			files: map[string]string{
				"mcpgate.toml": `[acme]
email = "ops"
directory_url = "http://ca.example.com/dir"
ca_root_file = "missing.pem"
challenges = ["dns-01", "http-01", "http-01"]
eab_hmac = "inline"
colour = "red"
`,
			},
			want: `$DIR/mcpgate.toml:2: acme.email: "ops": not an email address (name@example.com)
$DIR/mcpgate.toml:3: acme.directory_url: http is only allowed for loopback hosts (localhost, 127.0.0.0/8, ::1); use https
$DIR/mcpgate.toml:4: acme.ca_root_file: $DIR/missing.pem: no such file or directory
$DIR/mcpgate.toml:5: acme.challenges[0]: "dns-01" is not a challenge mcpgate answers (tls-alpn-01, http-01; dns-01 is not supported)
$DIR/mcpgate.toml:5: acme.challenges[2]: "http-01" is listed more than once
$DIR/mcpgate.toml:6: acme.eab_hmac: secrets are never written inline: put the HMAC key in a file and set eab_hmac_file, or name a systemd credential with eab_hmac_credential
$DIR/mcpgate.toml:7: acme.colour: unknown key`,
		},
		{
			name: "more bad [acme] values",
			files: map[string]string{
				"mcpgate.toml": `[acme]
email = "mailto:ops@example.com"
directory_url = "http://127.0.0.1:14000/dir"
ca_root_file = "notpem.txt"
challenges = []
eab_kid = "kid"
`,
				"notpem.txt": "hello\n",
			},
			want: `$DIR/mcpgate.toml:2: acme.email: "mailto:ops@example.com": write the address without "mailto:"
$DIR/mcpgate.toml:3: acme.directory_url: an ACME directory is reached over https only
$DIR/mcpgate.toml:4: acme.ca_root_file: $DIR/notpem.txt holds no PEM certificate
$DIR/mcpgate.toml:5: acme.challenges: name at least one of tls-alpn-01, http-01 (omit the key for both)
$DIR/mcpgate.toml:6: acme.eab_kid: set eab_hmac_file or eab_hmac_credential too`,
		},
		{
			name: "bad EAB key file, and types",
			files: map[string]string{
				"mcpgate.toml": `[acme]
email = "ops@localhost"
directory_url = 42
eab_kid = "kid"
eab_hmac_file = "eab.key"
`,
				"eab.key": "not base64 !!\n",
			},
			want: `$DIR/mcpgate.toml:2: acme.email: "ops@localhost": domain "localhost" has no dot
$DIR/mcpgate.toml:3: acme.directory_url: expected a string, got integer
$DIR/mcpgate.toml:5: acme.eab_hmac_file: $DIR/eab.key does not hold a base64url HMAC key`,
		},
		{
			name: "EAB key without kid, and a credential outside systemd",
			files: map[string]string{
				"mcpgate.toml": "[acme]\neab_hmac_file = \"eab.key\"\n",
			},
			want: `$DIR/mcpgate.toml:1: acme: eab_kid is required with the HMAC key`,
		},
		{
			name: "EAB file and credential together",
			files: map[string]string{
				"mcpgate.toml": "[acme]\neab_kid = \"k\"\neab_hmac_file = \"eab.key\"\neab_hmac_credential = \"eab.key\"\n",
			},
			want: `$DIR/mcpgate.toml:4: acme.eab_hmac_credential: cannot be combined with eab_hmac_file`,
		},
		{
			name: "EAB credential outside systemd",
			files: map[string]string{
				"mcpgate.toml": "[acme]\neab_kid = \"k\"\neab_hmac_credential = \"eab.key\"\n",
			},
			want: `$DIR/mcpgate.toml:3: acme.eab_hmac_credential: $CREDENTIALS_DIRECTORY is not set: credentials exist only in a service started by systemd with LoadCredential=; elsewhere use client_secret_file`,
		},
		{
			name: "acme with other certificate sources and wildcards",
			files: map[string]string{
				"a.toml": "hostnames = [\"a.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nacme = true\ncert_file = \"tls/notes.crt\"\nkey_file = \"tls/notes.key\"\n",
				"b.toml": "hostnames = [\"b.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nacme = true\nself_signed = true\n",
				"c.toml": "hostnames = [\n  \"c.example.com\",\n  \"*.c.example.com\",\n]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nacme = true\n",
				"d.toml": "hostnames = [\"d.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nacme = \"yes\"\n",
			},
			want: `$DIR/a.toml:4: tls.acme: cannot be combined with cert_file and key_file
$DIR/b.toml:4: tls.acme: cannot be combined with self_signed
$DIR/c.toml:3: hostnames[1]: "*.c.example.com": a wildcard certificate needs the DNS-01 challenge, which mcpgate does not answer: use cert_file and key_file for this proxy
$DIR/d.toml:4: tls.acme: expected a boolean, got string`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noEnv(t)
			dir := t.TempDir()
			writeCert(t, dir)
			writeFiles(t, dir, withAuthOff(tt.files))
			_, err := Load(dir)
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T (%v), want ErrorList", err, err)
			}
			want := strings.ReplaceAll(tt.want, "$DIR", dir)
			if got := err.Error(); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
			if strings.Contains(err.Error(), "not base64 !!") || strings.Contains(err.Error(), "inline\"") {
				t.Error("an error shows a secret")
			}
		})
	}
}
