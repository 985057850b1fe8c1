package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// adminGrant and adminClient are the parts of the admin commands' --json
// output the tests read.
type adminGrant struct {
	ID       string    `json:"grant_id"`
	User     string    `json:"user"`
	ClientID string    `json:"client_id"`
	Proxy    string    `json:"proxy"`
	Resource string    `json:"resource"`
	Since    time.Time `json:"since"`
	LastUsed time.Time `json:"last_used"`
}

type adminClient struct {
	ID     string `json:"client_id"`
	Kind   string `json:"kind"`
	Grants int    `json:"grants"`
}

type adminKey struct {
	Kid     string     `json:"kid"`
	State   string     `json:"state"`
	Retires *time.Time `json:"retires"`
}

// admin runs an admin command of the real binary against e's gateway and
// fails the test unless it exits 0; with --json it decodes stdout into v.
func admin(t *testing.T, e *oauthEnv, v any, args ...string) string {
	t.Helper()
	res := harness.Run(t, 30*time.Second, append(args, "--config-dir", e.g.Dir)...)
	if res.ExitCode != 0 {
		t.Fatalf("mcpgate %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.ExitCode, res.Stdout, res.Stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(res.Stdout), v); err != nil {
			t.Fatalf("mcpgate %s: stdout is not the JSON expected: %v\n%s", strings.Join(args, " "), err, res.Stdout)
		}
	}
	return res.Stdout
}

func adminEnvFor(t *testing.T) *oauthEnv {
	return startOAuth(t, harness.GitHubOAuthConfig{
		CallbackHost: "alpha.test",
		Tables:       cliClient,
	},
		harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}},
		harness.Proxy{Name: "beta", Hostnames: []string{"beta.test"}},
	)
}

// TestAdminGrants: a login shows up in `grants list` (user, client,
// proxy, since, last used); `grants revoke ID` and `grants revoke --user U
// --proxy P` kill the refresh tokens at once and get the access tokens
// refused by the worker within a second, leaving other grants alone.
func TestAdminGrants(t *testing.T) {
	t.Parallel()
	e := adminEnvFor(t)
	before := time.Now().Add(-time.Second)
	aliceAT, aliceRT := e.tokens(t, "alpha.test", "e2e-cli")
	bobRes := e.code(t, authzRequest{host: "beta.test", clientID: "e2e-cli", login: "bob"})
	bob := e.redeem(t, "beta.test", "e2e-cli", bobRes, bobRes.verifier)
	if bob.status != http.StatusOK {
		t.Fatalf("bob's tokens: %v", bob)
	}
	bobAT, bobRT := bob.str("access_token"), bob.str("refresh_token")
	otherAT, _ := e.tokens(t, "beta.test", "e2e-cli") // alice on beta: stays

	var all []adminGrant
	admin(t, e, &all, "grants", "list", "--json")
	if len(all) != 3 {
		t.Fatalf("grants list: %d grants, want 3: %+v", len(all), all)
	}
	var alice []adminGrant
	admin(t, e, &alice, "grants", "list", "--user", "ALICE", "--proxy", "alpha", "--json")
	if len(alice) != 1 {
		t.Fatalf("grants list --user ALICE --proxy alpha: %+v, want one grant", alice)
	}
	g := alice[0]
	if g.User != "alice" || g.ClientID != "e2e-cli" || g.Proxy != "alpha" || g.Resource != "https://alpha.test/mcp" ||
		g.Since.Before(before) || g.LastUsed.Before(g.Since) || g.ID == "" {
		t.Errorf("alice's grant: %+v", g)
	}
	table := admin(t, e, nil, "grants", "list", "--client", "e2e-cli")
	if !regexp.MustCompile(`(?m)^GRANT +USER +CLIENT +PROXY +SCOPE +SINCE +LAST USED +EXPIRES\n`).MatchString(table) ||
		!regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(g.ID)+` +alice +e2e-cli +alpha +mcp `).MatchString(table) {
		t.Errorf("grants list table:\n%s", table)
	}
	// No token or token hash appears in the output.
	for _, secret := range []string{aliceAT, aliceRT, bobAT, bobRT} {
		if strings.Contains(table, secret) {
			t.Error("grants list prints a token")
		}
	}

	// Revoke by id.
	at := time.Now()
	out := admin(t, e, nil, "grants", "revoke", g.ID)
	if !strings.Contains(out, "revoked grant "+g.ID+" (alice, client e2e-cli, alpha)") {
		t.Errorf("grants revoke output:\n%s", out)
	}
	wantOAuthError(t, e.refresh(t, "alpha.test", "e2e-cli", aliceRT), http.StatusBadRequest, "invalid_grant")
	e.waitRefused(t, "alpha.test", aliceAT, at, time.Second, "access token of a grant revoked by the CLI")

	// Revoke by user and proxy: bob's grant on beta, not alice's.
	var revoked struct {
		Revoked []adminGrant `json:"revoked"`
	}
	at = time.Now()
	admin(t, e, &revoked, "grants", "revoke", "--user", "bob", "--proxy", "beta", "--json")
	if len(revoked.Revoked) != 1 || revoked.Revoked[0].User != "bob" {
		t.Fatalf("grants revoke --user bob --proxy beta: %+v", revoked)
	}
	wantOAuthError(t, e.refresh(t, "beta.test", "e2e-cli", bobRT), http.StatusBadRequest, "invalid_grant")
	e.waitRefused(t, "beta.test", bobAT, at, time.Second, "access token of a user's grant revoked by the CLI")
	e.wantAccepted(t, "beta.test", otherAT, "another user's grant on the same proxy")

	admin(t, e, &all, "grants", "list", "--json")
	if len(all) != 1 || all[0].User != "alice" || all[0].Proxy != "beta" {
		t.Errorf("grants left: %+v, want alice's on beta", all)
	}
	// Bad arguments are errors, not ignored.
	for _, args := range [][]string{{"grants", "revoke"}, {"grants", "revoke", "a", "b"}, {"grants", "revoke", "a", "--user", "bob"}, {"grants", "list", "--proxy", "nope"}} {
		if res := harness.Run(t, 30*time.Second, append(args, "--config-dir", e.g.Dir)...); res.ExitCode == 0 {
			t.Errorf("mcpgate %s: exit 0\n%s", strings.Join(args, " "), res.Stdout)
		}
	}
	e.checkLogSecrets(t)
}

// TestAdminClients: a dynamic client is listed with its grant, shown, and
// deleted (its tokens die); a static client is listed as coming from the
// configuration and cannot be deleted.
func TestAdminClients(t *testing.T) {
	t.Parallel()
	e := adminEnvFor(t)
	reg := e.postJSON(t, "https://alpha.test/register", map[string]any{
		"redirect_uris": []string{"http://127.0.0.1/callback"}, "client_name": "Admin Test",
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
	})
	if reg.status != http.StatusCreated {
		t.Fatalf("registration: %v", reg)
	}
	id := reg.str("client_id")
	at, rt := e.tokens(t, "alpha.test", id)

	var list []adminClient
	admin(t, e, &list, "clients", "list", "--json")
	kinds := map[string]adminClient{}
	for _, c := range list {
		kinds[c.ID] = c
	}
	if c := kinds[id]; c.Kind != "dynamic" || c.Grants != 1 {
		t.Errorf("dynamic client in the list: %+v", c)
	}
	if c := kinds["e2e-cli"]; c.Kind != "static" {
		t.Errorf("static client in the list: %+v", c)
	}
	show := admin(t, e, nil, "clients", "show", id)
	for _, want := range []string{"kind:", "dynamic", "Admin Test", "http://127.0.0.1/callback", "no (public client)", "grants:"} {
		if !strings.Contains(show, want) {
			t.Errorf("clients show lacks %q:\n%s", want, show)
		}
	}
	if strings.Contains(show, reg.str("registration_access_token")) {
		t.Error("clients show prints the registration access token")
	}
	static := admin(t, e, nil, "clients", "show", "e2e-cli")
	if !strings.Contains(static, "static: change or remove it in the configuration") {
		t.Errorf("clients show of a static client:\n%s", static)
	}
	res := harness.Run(t, 30*time.Second, "clients", "delete", "e2e-cli", "--config-dir", e.g.Dir)
	if res.ExitCode != 1 || !strings.Contains(res.Stderr, `client "e2e-cli" is static: it comes from the configuration`) {
		t.Errorf("clients delete of a static client: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}

	since := time.Now()
	out := admin(t, e, nil, "clients", "delete", id)
	if !strings.Contains(out, "deleted dynamic client "+id) {
		t.Errorf("clients delete output:\n%s", out)
	}
	// The client is unknown now: its refresh token is refused as such.
	wantOAuthError(t, e.refresh(t, "alpha.test", id, rt), http.StatusUnauthorized, "invalid_client")
	e.waitRefused(t, "alpha.test", at, since, time.Second, "access token of a client deleted by the CLI")
	if res := harness.Run(t, 30*time.Second, "clients", "show", id, "--config-dir", e.g.Dir); res.ExitCode != 1 {
		t.Errorf("clients show of a deleted client: exit %d\n%s", res.ExitCode, res.Stdout)
	}
	e.checkLogSecrets(t)
}

// TestAdminKeys: `keys rotate` makes a new key active: the JWKS lists
// both, new tokens carry the new kid within a second, and tokens signed
// with the old key still verify.
func TestAdminKeys(t *testing.T) {
	t.Parallel()
	e := adminEnvFor(t)
	oldAT, _ := e.tokens(t, "alpha.test", "e2e-cli")
	hdr, _ := jwtParts(t, oldAT)
	oldKid, _ := hdr["kid"].(string)

	var keys []adminKey
	admin(t, e, &keys, "keys", "list", "--json")
	if len(keys) != 1 || keys[0].Kid != oldKid || keys[0].State != "active" || keys[0].Retires != nil {
		t.Fatalf("keys list: %+v, want the one active key %s", keys, oldKid)
	}
	var rot struct {
		Active, Previous string
		Keys             []adminKey
	}
	admin(t, e, &rot, "keys", "rotate", "--json")
	if rot.Previous != oldKid || rot.Active == "" || rot.Active == oldKid {
		t.Fatalf("keys rotate: %+v", rot)
	}
	rotated := time.Now()

	// The JWKS every worker serves lists both keys within a second
	// (workers look at the key directory at most every 200 ms).
	for _, host := range []string{"alpha.test", "beta.test"} {
		var kids []string
		for {
			j := e.getJSON(t, "https://"+host+"/jwks")
			var set struct {
				Keys []struct {
					Kid string `json:"kid"`
				} `json:"keys"`
			}
			json.Unmarshal(j.raw, &set)
			kids = kids[:0]
			for _, k := range set.Keys {
				kids = append(kids, k.Kid)
			}
			if slices.Equal(kids, []string{rot.Active, oldKid}) || time.Since(rotated) > time.Second {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !slices.Equal(kids, []string{rot.Active, oldKid}) {
			t.Errorf("JWKS at %s a second after the rotation: kids %v, want [%s %s]", host, kids, rot.Active, oldKid)
		}
	}
	newAT, _ := e.tokens(t, "beta.test", "e2e-cli")
	hdr, _ = jwtParts(t, newAT)
	if hdr["kid"] != rot.Active {
		t.Errorf("a token issued %v after the rotation has kid %v, want %s", time.Since(rotated).Round(time.Millisecond), hdr["kid"], rot.Active)
	}
	e.wantAccepted(t, "beta.test", newAT, "token signed with the new key")
	e.wantAccepted(t, "alpha.test", oldAT, "token signed with the previous key")

	admin(t, e, &keys, "keys", "list", "--json")
	if len(keys) != 2 || keys[0].State != "active" || keys[1].State != "retiring" || keys[1].Retires == nil ||
		!keys[1].Retires.After(time.Now().Add(time.Hour)) {
		t.Errorf("keys list after rotation: %+v", keys)
	}
	table := admin(t, e, nil, "keys", "list")
	if !regexp.MustCompile(`(?m)^KID +CREATED +STATE +LEAVES JWKS\n` + regexp.QuoteMeta(rot.Active) + ` .* active +-\n` + regexp.QuoteMeta(oldKid) + ` .* retiring +\d{4}-`).MatchString(table) {
		t.Errorf("keys list table:\n%s", table)
	}
}

// TestCLIBinary: the papercuts of the command line, through the real
// binary: --version, help on stdout, extra arguments refused, the worker
// command hidden, bash completion, and check resolving a credential the
// way the shipped unit passes it.
func TestCLIBinary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"-V"}, 0, `^mcpgate \S+ \(build \S+\)\n$`, `^$`},
		{[]string{"help", "keys", "rotate"}, 0, `^usage: mcpgate keys rotate`, `^$`},
		{[]string{"keys", "rotate", "--help"}, 0, `^usage: mcpgate keys rotate`, `^$`},
		{[]string{"--help"}, 0, `grants`, `^$`},
		{[]string{"status", "extra"}, 2, `^$`, `unexpected argument "extra"`},
		{[]string{"completion", "bash"}, 0, `complete -F _mcpgate mcpgate`, `^$`},
	} {
		res := harness.Run(t, 30*time.Second, tc.args...)
		if res.ExitCode != tc.code || !regexp.MustCompile(tc.stdout).MatchString(res.Stdout) || !regexp.MustCompile(tc.stderr).MatchString(res.Stderr) {
			t.Errorf("mcpgate %s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), res.ExitCode, tc.code, res.Stdout, res.Stderr)
		}
		if tc.args[0] == "--help" && regexp.MustCompile(`(?m)^  worker `).MatchString(res.Stdout) {
			t.Errorf("mcpgate --help shows the internal worker command:\n%s", res.Stdout)
		}
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "credentials"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"mcpgate.toml": `[server]
state_dir = "state"
[oauth]
callback_url = "https://auth.test/oauth/callback"
allowed_users = ["*"]
[idp.github]
client_id = "Iv1.0123"
client_secret_credential = "mcpgate_github.secret"
`,
		"auth.toml":                 "hostnames = [\"auth.test\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nself_signed = true\n",
		"credentials/github.secret": "s3cret\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		t.Skip("CREDENTIALS_DIRECTORY is set: this test is about a shell without it")
	}
	res := harness.Run(t, 30*time.Second, "check", "--config-dir", dir)
	if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "auth: ") {
		t.Errorf("check with the unit's credential from a shell: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

// TestAdminPermissionDenied: a user without rights on state_dir is told
// whom to run as, not shown a bare SQLite error.
func TestAdminPermissionDenied(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	// Everything the other user needs is in a directory it may enter;
	// t.TempDir's parent is 0700.
	top, err := os.MkdirTemp("", "mcpgate-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	state := filepath.Join(top, "state")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{top, 0o755}, {filepath.Join(top, "conf"), 0o755}, {state, 0o700}, {filepath.Join(state, "keys"), 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d.path, d.mode)
	}
	if err := os.WriteFile(filepath.Join(top, "conf", "mcpgate.toml"), []byte("[server]\nstate_dir = \""+state+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "oauth.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(top, "mcpgate")
	harness.InstallBinary(t, harness.Binary(t), bin)
	for _, args := range [][]string{{"grants", "list"}, {"clients", "delete", "x"}, {"keys", "rotate"}} {
		var out []byte
		var err error
		// Should InstallBinary have had to copy, a parallel test's fork may
		// hold the copy's write descriptor for a moment (until its child's
		// exec closes it): ETXTBSY, golang/go#22315.
		for try := 0; try < 50; try++ {
			cmd := exec.Command(bin, append(args, "--config-dir", filepath.Join(top, "conf"))...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err = cmd.CombinedOutput()
			if !errors.Is(err, syscall.ETXTBSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		want := regexp.MustCompile(`^mcpgate: run as root: cannot open ` + regexp.QuoteMeta(state) + `/(oauth\.db|keys): permission denied\n$`)
		if err == nil || !want.MatchString(string(out)) {
			t.Errorf("mcpgate %s as nobody: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
