package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// runCLI runs the command line args through run and returns what it wrote.
// Not parallel: run sets the package's stdout and stderr.
func runCLI(t *testing.T, args ...string) (code int, out, errOut string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// TestCLI pins the command line's behaviour: help on stdout when asked for,
// errors and usage on stderr with exit 2, no silently ignored arguments.
func TestCLI(t *testing.T) {
	t.Setenv("MCPGATE_CONFIG_DIR", "")
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		out     string // regexp stdout must match ("" must be empty)
		errOut  string // regexp stderr must match ("" must be empty)
		notOut  string // regexp stdout must not match
		sameAs  []string
		wantErr bool
	}{
		{name: "no arguments", args: nil, code: 2, errOut: `usage: mcpgate COMMAND`},
		{name: "--help", args: []string{"--help"}, code: 0, out: `(?s)commands:.*grants.*keys`, notOut: `(?m)^  (worker|docs) `},
		{name: "help", args: []string{"help"}, code: 0, out: `usage: mcpgate COMMAND`, notOut: `(?m)^  (worker|docs) `},
		{name: "--version", args: []string{"--version"}, code: 0, out: `^mcpgate \S+ \(build \S+\)\n$`},
		{name: "-V", args: []string{"-V"}, code: 0, out: `^mcpgate \S+ \(build \S+\)\n$`},
		{name: "version", args: []string{"version"}, code: 0, out: `^mcpgate \S+ \(build \S+\)\n$`},
		{name: "help check", args: []string{"help", "check"}, code: 0, out: `(?s)^usage: mcpgate check \[--config-dir DIR\].*--config-dir DIR`, sameAs: []string{"check", "--help"}},
		{name: "check -h", args: []string{"check", "-h"}, code: 0, out: `^usage: mcpgate check`},
		{name: "help grants revoke", args: []string{"help", "grants", "revoke"}, code: 0, out: `(?s)^usage: mcpgate grants revoke ID \| --user U.*--proxy PROXY`, sameAs: []string{"grants", "revoke", "--help"}},
		{name: "help grants", args: []string{"help", "grants"}, code: 0, out: `(?s)commands:\n  list .*\n  revoke `, sameAs: []string{"grants", "--help"}},
		{name: "help keys rotate", args: []string{"help", "keys", "rotate"}, code: 0, out: `within a second`},
		{name: "help unknown", args: []string{"help", "frobnicate"}, code: 2, errOut: `unknown command "frobnicate"`},
		{name: "help unknown sub", args: []string{"help", "grants", "frob"}, code: 2, errOut: `mcpgate grants: unknown command "frob"`},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, errOut: `unknown command "frobnicate"`},
		{name: "group without subcommand", args: []string{"keys"}, code: 2, errOut: `usage: mcpgate keys COMMAND`},
		{name: "check positional", args: []string{"check", "/etc/mcpgate"}, code: 2, errOut: `mcpgate check: unexpected argument "/etc/mcpgate"\nusage: mcpgate check`},
		{name: "status positional", args: []string{"status", "now"}, code: 2, errOut: `unexpected argument "now"`},
		{name: "reload positional", args: []string{"reload", "--timeout", "1s", "x"}, code: 2, errOut: `unexpected argument "x"`},
		{name: "upgrade positional", args: []string{"upgrade", "x"}, code: 2, errOut: `unexpected argument "x"`},
		{name: "serve positional", args: []string{"serve", "x"}, code: 2, errOut: `unexpected argument "x"`},
		{name: "version positional", args: []string{"version", "x"}, code: 2, errOut: `unexpected argument "x"`},
		{name: "bad flag", args: []string{"check", "--bogus"}, code: 2, errOut: `mcpgate check: flag provided but not defined: -bogus\nusage:`},
		{name: "keys list positional", args: []string{"keys", "list", "x"}, code: 2, errOut: `unexpected argument "x"`},
		{name: "grants revoke nothing", args: []string{"grants", "revoke", "--config-dir", "testdata/none"}, code: 1, errOut: `testdata/none`},
		{name: "clients show without id", args: []string{"clients", "show", "--config-dir", "."}, code: 2, errOut: `give a client ID`},
		{name: "completion bash", args: []string{"completion", "bash"}, code: 0, out: `complete -F _mcpgate mcpgate`, notOut: `worker|docs`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			match := func(what, got, re string) {
				t.Helper()
				if re == "" {
					if got != "" {
						t.Errorf("%s not empty:\n%s", what, got)
					}
					return
				}
				if !regexp.MustCompile(re).MatchString(got) {
					t.Errorf("%s does not match %s:\n%s", what, re, got)
				}
			}
			match("stdout", out, tc.out)
			match("stderr", errOut, tc.errOut)
			if tc.notOut != "" && regexp.MustCompile(tc.notOut).MatchString(out) {
				t.Errorf("stdout matches %s:\n%s", tc.notOut, out)
			}
			if tc.sameAs != nil {
				_, out2, _ := runCLI(t, tc.sameAs...)
				if out2 != out {
					t.Errorf("mcpgate %s prints\n%s\nbut mcpgate %s prints\n%s", strings.Join(tc.args, " "), out, strings.Join(tc.sameAs, " "), out2)
				}
			}
		})
	}
}

// TestParseArgsInterleaved: flags may follow a positional argument, and
// "--" ends the flags.
func TestParseArgsInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  string
		json bool
	}{
		{[]string{"ID", "--json"}, "ID", true},
		{[]string{"--json", "ID"}, "ID", true},
		{[]string{"--", "--json"}, "--json", false},
		{[]string{"a", "b"}, "a b", false},
	} {
		c, path, _, _ := lookup([]string{"grants", "revoke"})
		fs := newFlagSet(c, path)
		j := fs.Bool("json", false, "")
		pos, ok, _ := parseArgs(fs, tc.args)
		if !ok || strings.Join(pos, " ") != tc.pos || *j != tc.json {
			t.Errorf("parseArgs(%q) = %q, ok %v, json %v; want %q, json %v", tc.args, pos, ok, *j, tc.pos, tc.json)
		}
	}
}

// TestCompletionBashSyntax: the script parses, and completes a
// subcommand's flags.
func TestCompletionBashSyntax(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := filepath.Join(t.TempDir(), "mcpgate")
	if err := os.WriteFile(script, []byte(bashCompletion()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ line, want string }{
		{"mcpgate gra", "grants"},
		{"mcpgate grants ", "list revoke --help"},
		{"mcpgate grants list --u", "--user"},
		{"mcpgate keys rotate --j", "--json"},
		{"mcpgate help cl", "clients"},
		{"mcpgate check --c", "--config-dir"},
	} {
		words := strings.Fields(tc.line)
		if strings.HasSuffix(tc.line, " ") {
			words = append(words, "")
		}
		prog := `source "$1"; COMP_WORDS=(` + quoteWords(words) + `); COMP_CWORD=` + strconv.Itoa(len(words)-1) +
			`; _mcpgate; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "--norc", "-c", prog, "bash", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("completing %q: %q, want %q", tc.line, got, tc.want)
		}
	}
}

func quoteWords(ws []string) string {
	var q []string
	for _, w := range ws {
		q = append(q, "'"+w+"'")
	}
	return strings.Join(q, " ")
}

// TestCheckCredentialsFromShell: without $CREDENTIALS_DIRECTORY, check
// finds a credential where the shipped unit loads it, reports an
// encrypted one as unverifiable rather than wrong, and a missing one as
// an error saying where it looked.
func TestCheckCredentialsFromShell(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	t.Setenv("STATE_DIRECTORY", "")
	stores, enc := t.TempDir(), t.TempDir()
	saved, savedEnc := credstores, encryptedCredstores
	credstores, encryptedCredstores = []string{stores}, []string{enc}
	t.Cleanup(func() { credstores, encryptedCredstores = saved, savedEnc })

	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	config := func(cred string) string {
		dir := t.TempDir()
		write(filepath.Join(dir, "mcpgate.toml"), `[oauth]
callback_url = "https://auth.example.com/oauth/callback"
allowed_users = ["*"]
[idp.github]
client_id = "Iv1.0123"
client_secret_credential = "`+cred+`"
`)
		write(filepath.Join(dir, "auth.toml"), "hostnames = [\"auth.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nself_signed = true\n")
		write(filepath.Join(dir, "credentials", "github.secret"), "s3cret\n")
		return dir
	}
	write(filepath.Join(stores, "plain.secret"), "s3cret\n")
	write(filepath.Join(enc, "sealed.secret"), "Whatever systemd-creds wrote")

	for _, tc := range []struct {
		cred   string
		code   int
		errOut string
	}{
		{"mcpgate_github.secret", 0, `^$`},
		{"plain.secret", 0, `warning: credential "plain.secret": found .*plain.secret; the service gets it only if its unit loads it: a drop-in .* with LoadCredential=plain.secret`},
		{"sealed.secret", 0, `warning: credential "sealed.secret": .*sealed.secret is encrypted: cannot verify here`},
		{"github.secret", 1, `idp.github.client_secret_credential: credential "github.secret": not found: looked for .*; the shipped unit passes .*/credentials/FILE as mcpgate_FILE`},
		{"mcpgate_nope", 1, `credential "mcpgate_nope": not found: looked for .*/credentials/nope, `},
	} {
		t.Run(tc.cred, func(t *testing.T) {
			code, out, errOut := runCLI(t, "check", "--config-dir", config(tc.cred))
			if code != tc.code || !regexp.MustCompile(tc.errOut).MatchString(errOut) {
				t.Errorf("exit %d, want %d; stderr must match %s\nstdout:\n%s\nstderr:\n%s", code, tc.code, tc.errOut, out, errOut)
			}
		})
	}
}

// TestCheckTLSWarnings: a certificate that misses a hostname, and a key
// the service user cannot read, are warnings (exit 0).
func TestCheckTLSWarnings(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	pki := harness.NewPKI(t)
	cert, key := pki.Leaf(t, "notes", "notes.example.com")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.toml"), []byte(`hostnames = ["notes.example.com", "*.notes.example.com", "other.example.com"]
target = "http://127.0.0.1:3000"
[tls]
cert_file = "`+cert+`"
key_file = "`+key+`"
[auth]
required = false
`), 0o644); err != nil {
		t.Fatal(err)
	}
	savedDir, savedUser := unitConfigDir, serviceUser
	unitConfigDir, serviceUser = dir, "nobody"
	t.Cleanup(func() { unitConfigDir, serviceUser = savedDir, savedUser })
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runCLI(t, "check", "--config-dir", dir)
	if code != 0 || !strings.HasPrefix(out, "notes: ") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		`warning: \S+notes.toml: tls.cert_file: \S+ does not cover hostname "\*.notes.example.com"`,
		`warning: \S+notes.toml: tls.cert_file: \S+ does not cover hostname "other.example.com"`,
	} {
		if !regexp.MustCompile(want).MatchString(errOut) {
			t.Errorf("stderr lacks %s:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, `hostname "notes.example.com"`) {
		t.Errorf("warned about a covered hostname:\n%s", errOut)
	}
	// The PKI lives under /tmp, which the unit hides (PrivateTmp=yes);
	// elsewhere the key's mode is what the warning is about.
	keyWarn := `tls.key_file: \S+ is hidden from the service by PrivateTmp=yes`
	if !strings.HasPrefix(key, "/tmp/") {
		keyWarn = `tls.key_file: user nobody cannot read \S+: no read permission`
	}
	if !regexp.MustCompile(keyWarn).MatchString(errOut) {
		t.Errorf("stderr lacks %s:\n%s", keyWarn, errOut)
	}

	// Outside the unit's directory the sandbox does not apply, the
	// service user's rights do: the key's directory (a t.TempDir, 0700
	// root) is closed to nobody.
	unitConfigDir = "/nonexistent"
	_, _, errOut = runCLI(t, "check", "--config-dir", dir)
	if want := `tls.key_file: user nobody cannot read \S+: no search permission on `; !regexp.MustCompile(want).MatchString(errOut) && os.Geteuid() == 0 {
		t.Errorf("stderr lacks %s:\n%s", want, errOut)
	}
	if strings.Contains(errOut, "PrivateTmp") {
		t.Errorf("sandbox warning outside the unit's configuration directory:\n%s", errOut)
	}

	// Without the service user: a note, and no readability warning.
	serviceUser = "no-such-user-mcpgate-test"
	_, _, errOut = runCLI(t, "check", "--config-dir", dir)
	if !strings.Contains(errOut, "warning: user no-such-user-mcpgate-test does not exist here: not checking that it can read the TLS files") ||
		strings.Contains(errOut, "cannot read") {
		t.Errorf("without the service user:\n%s", errOut)
	}
}

// TestServiceUserPermissions: the mode-bit check used for the key file.
func TestServiceUserPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir, err := os.MkdirTemp("", "perm") // not t.TempDir: its parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	f := filepath.Join(dir, "k")
	os.WriteFile(f, []byte("x"), 0o640)
	a := &account{uid: 4242, gids: []uint32{4343}}
	if a.canRead(f) == nil {
		t.Error("a stranger can read a 0640 root:root file")
	}
	os.Chown(f, 0, 4343)
	if err := a.canRead(f); err != nil {
		t.Errorf("a group member cannot read a 0640 file of its group: %v", err)
	}
	os.Chmod(dir, 0o700)
	if a.canRead(f) == nil {
		t.Error("reads through a 0700 directory of another user")
	}
}

// TestDocs: one man page per visible command, and mcpgate.toml(5) from
// the shipped file with every setting it documents.
func TestDocs(t *testing.T) {
	out := t.TempDir()
	if code, _, errOut := runCLI(t, "docs", "--out", out, "--toml", "../../etc/mcpgate.toml"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	read := func(name string) string {
		t.Helper()
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, c := range commands {
		if c.hidden() {
			continue
		}
		page := read("mcpgate-" + c.name + ".8.gz")
		if !strings.Contains(page, ".SH NAME\nmcpgate\\-"+c.name+` \-`) {
			t.Errorf("mcpgate-%s.8 has no NAME line:\n%s", c.name, page)
		}
	}
	if g := read("mcpgate-grants.8.gz"); !strings.Contains(g, ".SS grants revoke") || !strings.Contains(g, `\fB\-\-user\fR`) {
		t.Errorf("mcpgate-grants.8 lacks the revoke subcommand or its --user flag:\n%s", g)
	}
	if _, err := os.Stat(filepath.Join(out, "mcpgate-worker.8.gz")); err == nil {
		t.Error("the internal worker command has a man page")
	}
	toml := read("mcpgate.toml.5.gz")
	src, err := os.ReadFile("../../etc/mcpgate.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Every setting of the shipped file appears in the page.
	for _, m := range regexp.MustCompile(`(?m)`+tomlKey().String()).FindAllString(string(src), -1) {
		key := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(m, "#"), "="))
		if !strings.Contains(toml, strings.ReplaceAll(key, "-", `\-`)) {
			t.Errorf("mcpgate.toml(5) lacks %s", key)
		}
	}
	for _, sec := range []string{`.SH "[server]"`, `.SH "[oauth]"`, `.SH "[[oauth.clients]]"`, `.SH "[idp.github]"`} {
		if !strings.Contains(toml, sec) {
			t.Errorf("mcpgate.toml(5) lacks section %s", sec)
		}
	}
}
