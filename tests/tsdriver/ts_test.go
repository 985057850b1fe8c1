// Package tsdriver runs the official TypeScript MCP SDK client
// (@modelcontextprotocol/sdk, tests/ts) through mcpgate's whole OAuth flow:
// it starts a fake GitHub, a go-sdk MCP backend and the real gateway with
// OAuth on loopback, then `node --test` on the compiled tests in tests/ts.
// It is `make e2e`, which installs the npm packages and compiles the
// TypeScript first; without MCPGATE_TS_E2E=1 the test skips, so `go test
// ./tests/...` needs no Node.
package tsdriver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/fakegithub"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// EnableEnv must be set (to anything) for the test to run.
const EnableEnv = "MCPGATE_TS_E2E"

const (
	host  = "alpha.test"
	login = "octocat"
	// tokenTTL is the gateway's access_token_ttl: short, so the TypeScript
	// tests see tokens expire and the SDK refresh them.
	tokenTTL = 2 * time.Second
	// nodeTimeout bounds the whole node run.
	nodeTimeout = 2 * time.Minute
)

func TestMain(m *testing.M) { harness.Main(m) }

func TestTypeScriptSDK(t *testing.T) {
	if os.Getenv(EnableEnv) == "" {
		t.Skipf("set %s=1 (make e2e) to run the TypeScript SDK client end to end", EnableEnv)
	}
	tsDir, err := filepath.Abs("../ts")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"node_modules/@modelcontextprotocol/sdk/package.json", "dist/oauth.test.js"} {
		if _, err := os.Stat(filepath.Join(tsDir, p)); err != nil {
			t.Fatalf("%s: %v: run `make e2e` (npm ci and the TypeScript build in tests/ts)", p, err)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v (Node.js >= 20.18.1 is needed)", err)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	t.Logf("%s %s", node, strings.TrimSpace(string(out)))

	// The two runs wait for tokens to expire most of the time: in
	// parallel, each with its own gateway; each prints its output when done.
	var (
		mu    sync.Mutex
		total counts
	)
	t.Run("group", func(t *testing.T) {
		for _, proto := range []string{"http1", "h2"} {
			t.Run(proto, func(t *testing.T) {
				t.Parallel()
				c := runNode(t, node, tsDir, proto == "h2", &mu)
				mu.Lock()
				total.pass, total.fail, total.todo = total.pass+c.pass, total.fail+c.fail, total.todo+c.todo
				mu.Unlock()
			})
		}
	})
	if t.Failed() && total.fail == 0 {
		total.fail = 1 // the run itself failed (no summary, timeout, gateway error)
	}
	fmt.Printf("e2e: %d passed, %d failed, %d todo (TypeScript SDK client over HTTP/1.1 and HTTP/2, node --test)\n",
		total.pass, total.fail, total.todo)
}

// Two pre-registered confidential clients. Their secrets are shaped like
// the output of `openssl rand -base64 18`; the second one holds "+", which
// a strict reading of RFC 6749 2.3.1 decodes to a space in HTTP Basic
// credentials that the SDK does not form-encode.
var staticClients = []struct{ env, id, secret string }{
	{"MCPGATE_E2E_STATIC_CLIENT", "ts-e2e-desktop", "q8xJm2/Xv7Rkx0Lp4sTn9Wc="},
	{"MCPGATE_E2E_PLUS_CLIENT", "ts-e2e-plus", "q8+Jm2/Xv7Rk+0Lp4sTn9Wc="},
}

// runNode starts a fake GitHub, a go-sdk MCP backend and the gateway with
// OAuth in front of it, runs the compiled TypeScript tests against them
// (with undici allowed h2 or not) and returns node's pass and fail counts.
func runNode(t *testing.T, node, tsDir string, h2 bool, stdout *sync.Mutex) counts {
	gh := fakegithub.New(t)
	gh.AddUser(fakegithub.User{Login: login, Name: "The Octocat"})
	gh.SetLoginAs(login)
	var clients strings.Builder
	var clientEnv []string
	for _, c := range staticClients {
		secretFile := filepath.Join(t.TempDir(), c.id+".secret")
		if err := os.WriteFile(secretFile, []byte(c.secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&clients, "[[oauth.clients]]\nclient_id = %q\nname = %q\nclient_secret_file = %q\nredirect_uris = [\"http://127.0.0.1/callback\"]\n\n",
			c.id, "TypeScript SDK e2e "+c.id, secretFile)
		clientEnv = append(clientEnv, c.env+"_ID="+c.id, c.env+"_SECRET="+c.secret)
	}
	oauth := harness.NewGitHubOAuth(t, gh, harness.GitHubOAuthConfig{
		CallbackHost: host,
		OAuthKeys:    fmt.Sprintf("access_token_ttl = %q", tokenTTL.String()),
		Tables:       clients.String(),
	})
	backend := backends.NewMCP(t, "ts-backend")
	g := harness.Start(t, harness.Options{
		Proxies: []harness.Proxy{{
			Name:      "alpha",
			Hostnames: []string{host},
			Target:    backend.URL,
			Auth:      `scopes = ["mcp"]`,
		}},
		ServerTOML: oauth.TOML(),
	})

	tap := filepath.Join(t.TempDir(), "results.tap")
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test",
		"--test-reporter=spec", "--test-reporter-destination=stdout",
		"--test-reporter=tap", "--test-reporter-destination="+tap,
		"dist/")
	cmd.Dir = tsDir
	h2env := "0"
	if h2 {
		h2env = "1"
	}
	cmd.Env = append(os.Environ(),
		"MCPGATE_E2E_URL=https://"+host+"/mcp",
		"MCPGATE_E2E_GATEWAY="+g.HTTPSAddr,
		"MCPGATE_E2E_CA="+g.PKI.CAFile,
		"MCPGATE_E2E_LOGIN="+login,
		"MCPGATE_E2E_TOKEN_TTL="+strconv.Itoa(int(tokenTTL/time.Second)),
		"MCPGATE_E2E_H2="+h2env,
		"NO_COLOR=1",
	)
	cmd.Env = append(cmd.Env, clientEnv...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	// If this process dies, node goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start).Round(100 * time.Millisecond)
	proto := "HTTP/1.1"
	if h2 {
		proto = "HTTP/2"
	}
	stdout.Lock()
	fmt.Printf("==== node --test over %s\n%s", proto, output.Bytes())
	stdout.Unlock()

	c, ok := summary(tap)
	switch {
	case !ok:
		t.Errorf("node --test wrote no summary to %s", tap)
	case c.pass+c.fail == 0:
		t.Errorf("node --test ran no test")
	}
	if ctx.Err() != nil {
		t.Errorf("node --test did not finish within %v", nodeTimeout)
	} else if runErr != nil {
		t.Errorf("node --test: %v", runErr)
	}
	if t.Failed() {
		t.Logf("gateway log follows at cleanup; TAP results in %s", tap)
	}
	t.Logf("node --test: %d passed, %d failed, %d todo in %v", c.pass, c.fail, c.todo, elapsed)
	return c
}

// counts are node's test results.
type counts struct{ pass, fail, todo int }

var tapCount = regexp.MustCompile(`^# (pass|fail|todo) (\d+)$`)

// summary reads the "# pass N", "# fail N" and "# todo N" lines node's TAP
// reporter ends with; a todo test that fails counts only as todo.
func summary(path string) (c counts, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return c, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		m := tapCount.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		switch m[1] {
		case "pass":
			c.pass, ok = n, true
		case "fail":
			c.fail = n
		case "todo":
			c.todo = n
		}
	}
	return c, ok
}
