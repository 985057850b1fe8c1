// Package harness runs the real mcpgate binary for end-to-end tests: it
// builds the binary once per test process, writes a configuration directory
// with a throw-away PKI, starts `mcpgate serve` the way systemd does (socket
// activation with fds 3 and 4), waits for every proxy to answer its health
// endpoint, hands out clients that reach the gateway without DNS, and on
// cleanup stops it and checks that no worker process is left behind.
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BinEnv names an environment variable that points at a prebuilt mcpgate
// binary; when set, Binary uses it instead of building one.
const BinEnv = "MCPGATE_BIN"

// buildTimeout bounds `go build`; a cold build cache needs a while.
const buildTimeout = 5 * time.Minute

var (
	buildOnce sync.Once
	buildDir  string // temp dir holding the built binary; removed by Main
	buildPath string
	buildErr  error
)

// Binary returns the path of the mcpgate binary under test: $MCPGATE_BIN
// when set, otherwise ./cmd/mcpgate built once per test process into a
// temp dir (packages using it should call Main from TestMain to remove it).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("%s=%q: %v", BinEnv, p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("%s: %v", BinEnv, err)
		}
		return abs
	}
	buildOnce.Do(build)
	if buildErr != nil {
		t.Fatalf("building mcpgate: %v", buildErr)
	}
	return buildPath
}

func build() {
	root, err := ModuleRoot()
	if err != nil {
		buildErr = err
		return
	}
	buildDir, err = os.MkdirTemp("", "mcpgate-e2e-bin-")
	if err != nil {
		buildErr = err
		return
	}
	out := filepath.Join(buildDir, "mcpgate")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/mcpgate")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build ./cmd/mcpgate in %s: %v\n%s", root, err, msg)
		return
	}
	buildPath = out
}

// ModuleRoot returns the directory of the main module's go.mod, as reported
// by `go env GOMOD` from the current directory.
func ModuleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// Main runs the tests and then removes the binary built by Binary and runs
// after (such as stopping a test PostgreSQL). Call it from TestMain:
// os.Exit skips deferred calls and t.Cleanup cannot span tests.
func Main(m *testing.M, after ...func()) {
	code := m.Run()
	for _, f := range after {
		f()
	}
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	removeVariants()
	removePebble()
	os.Exit(code)
}

// Result is the outcome of one Run.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs the mcpgate binary with args (bounded by timeout) and returns its
// output and exit code. It fails the test if the binary cannot be started or
// does not finish in time.
func Run(t testing.TB, timeout time.Duration, args ...string) Result {
	t.Helper()
	return RunBinary(t, Binary(t), timeout, args...)
}

// RunBinary is Run with the given mcpgate binary.
func RunBinary(t testing.TB, bin string, timeout time.Duration, args ...string) Result {
	t.Helper()
	res, err := Exec(bin, timeout, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Exec runs bin with args (bounded by timeout) like RunBinary, but reports
// a failure to start or to finish in time as an error instead of failing
// the test, so it may be called from any goroutine.
func Exec(bin string, timeout time.Duration, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("mcpgate %s: did not finish within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, res.Stdout, res.Stderr)
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	case err != nil:
		return res, fmt.Errorf("mcpgate %s: %v", strings.Join(args, " "), err)
	}
	return res, nil
}

// cleanEnv is the test process environment without variables that would
// change how mcpgate starts (socket activation, config location).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "MCPGATE_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
