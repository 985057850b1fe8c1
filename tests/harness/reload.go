package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers for tests that reload or upgrade a running gateway: binaries with
// a chosen build id, a private copy of the binary that the test may replace
// on disk, the `reload`, `upgrade` and `status` commands, and config edits.

// buildIDVar is the link-time variable that names the build.
const buildIDVar = "github.com/mcpgate/mcpgate/internal/buildinfo.buildID"

// cmdTimeout bounds `mcpgate reload`, `upgrade` and `status`.
const cmdTimeout = 2 * time.Minute

var (
	variantMu  sync.Mutex
	variantDir string                       // guarded by variantMu; removed by Main
	variants   = map[string]*variantBuild{} // guarded by variantMu; by build id
)

type variantBuild struct {
	once sync.Once
	path string
	err  error
}

var validBuildID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// BuildVariant returns ./cmd/mcpgate built with the build id id (go build
// -ldflags "-X …/internal/buildinfo.buildID=id"), built once per test
// process and id and removed by Main. Its workers report id in their health
// JSON and in `mcpgate status`. It ignores $MCPGATE_BIN: the point is a
// binary whose id the test chose.
func BuildVariant(t testing.TB, id string) string {
	t.Helper()
	if !validBuildID.MatchString(id) {
		t.Fatalf("build id %q: want 1-64 of [A-Za-z0-9_-]", id)
	}
	variantMu.Lock()
	b := variants[id]
	if b == nil {
		b = &variantBuild{}
		variants[id] = b
	}
	variantMu.Unlock()
	b.once.Do(func() { b.path, b.err = buildVariant(id) })
	if b.err != nil {
		t.Fatalf("building mcpgate with build id %s: %v", id, b.err)
	}
	return b.path
}

func buildVariant(id string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	variantMu.Lock()
	if variantDir == "" {
		variantDir, err = os.MkdirTemp("", "mcpgate-e2e-variants-")
	}
	dir := variantDir
	variantMu.Unlock()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "mcpgate-"+id)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X "+buildIDVar+"="+id, "-o", out, "./cmd/mcpgate")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/mcpgate in %s: %v\n%s", root, err, msg)
	}
	return out, nil
}

func removeVariants() {
	variantMu.Lock()
	defer variantMu.Unlock()
	if variantDir != "" {
		os.RemoveAll(variantDir)
	}
}

// PrivateBinary installs a copy of the binary src as <temp dir>/mcpgate and
// returns its path. Start the gateway from it (Options.Binary) when the
// test replaces the binary on disk with InstallBinary.
func PrivateBinary(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "mcpgate")
	InstallBinary(t, src, dst)
	return dst
}

// InstallBinary replaces dst with the binary src the way a package manager
// does: the new file is made under a temporary name in dst's directory and
// renamed over dst. A process running dst keeps its old file; whoever
// executes dst afterwards gets src. The temporary file is a hard link when
// possible, so no file that will be executed is ever open for writing
// (which would make exec fail with ETXTBSY).
func InstallBinary(t testing.TB, src, dst string) {
	t.Helper()
	tmp := dst + ".new"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		if err := copyExecutable(src, tmp); err != nil {
			t.Fatalf("installing %s as %s: %v", src, dst, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatalf("installing %s as %s: %v", src, dst, err)
	}
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Status is the JSON of `mcpgate status --json`.
type Status struct {
	PID        int            `json:"pid"`
	Version    string         `json:"version"`
	BuildID    string         `json:"build_id"`
	Started    time.Time      `json:"started"`
	ConfigDir  string         `json:"config_dir"`
	Activated  bool           `json:"socket_activated"`
	Listeners  string         `json:"listeners"`
	Workers    []WorkerStatus `json:"workers"`
	LastReload *ReloadResult  `json:"last_reload"`
}

// WorkerStatus is one worker in Status.
type WorkerStatus struct {
	Proxy       string    `json:"proxy"`
	PID         int       `json:"pid"`
	State       string    `json:"state"` // starting, ready, draining, restarting
	Version     string    `json:"version"`
	BuildID     string    `json:"build_id"`
	ConfigHash  string    `json:"config_hash"`
	Started     time.Time `json:"started"`
	Connections int64     `json:"connections"`
	// Certificates: a worker's ACME certificates.
	Certificates []CertStatus `json:"certificates,omitempty"`
}

// CertStatus is one ACME certificate in a worker's status.
type CertStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Issuer   string    `json:"issuer,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	RenewAt  time.Time `json:"renew_at,omitzero"`
	Error    string    `json:"error,omitempty"`
	ErrorAt  time.Time `json:"error_at,omitzero"`
	NextTry  time.Time `json:"next_try,omitzero"`
}

// ReloadResult is the verdict of the last reload in Status.
type ReloadResult struct {
	OK       bool      `json:"ok"`
	Errors   []string  `json:"errors"`
	Failed   []string  `json:"failed"`
	Started  []string  `json:"started"`
	Removed  []string  `json:"removed"`
	BuildID  string    `json:"build_id"`
	Trigger  string    `json:"trigger"`
	At       time.Time `json:"at"`
	Duration string    `json:"duration"`
}

// WorkersOf returns the workers of proxy in s.
func (s Status) WorkersOf(proxy string) []WorkerStatus {
	var out []WorkerStatus
	for _, w := range s.Workers {
		if w.Proxy == proxy {
			out = append(out, w)
		}
	}
	return out
}

// Reload runs `mcpgate reload --config-dir DIR` with the gateway's binary
// (as it is on disk now) and returns its output and exit code.
func (g *Gateway) Reload(t testing.TB) Result {
	t.Helper()
	return RunBinary(t, g.Bin, cmdTimeout, "reload", "--config-dir", g.Dir)
}

// Upgrade runs `mcpgate upgrade --config-dir DIR`.
func (g *Gateway) Upgrade(t testing.TB) Result {
	t.Helper()
	return RunBinary(t, g.Bin, cmdTimeout, "upgrade", "--config-dir", g.Dir)
}

// StatusText runs `mcpgate status` and returns its output; a non-zero exit
// fails the test.
func (g *Gateway) StatusText(t testing.TB) string {
	t.Helper()
	res := RunBinary(t, g.Bin, cmdTimeout, "status", "--config-dir", g.Dir)
	if res.ExitCode != 0 {
		t.Fatalf("mcpgate status: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// Status runs `mcpgate status --json` and decodes it; a non-zero exit or
// bad JSON fails the test.
func (g *Gateway) Status(t testing.TB) Status {
	t.Helper()
	st, err := g.TryStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TryStatus is Status returning what went wrong instead of failing the
// test.
func (g *Gateway) TryStatus() (Status, error) {
	res, err := Exec(g.Bin, cmdTimeout, "status", "--json", "--config-dir", g.Dir)
	if err != nil {
		return Status{}, err
	}
	if res.ExitCode != 0 {
		return Status{}, fmt.Errorf("mcpgate status --json: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	var st Status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		return Status{}, fmt.Errorf("mcpgate status --json: %v\n%s", err, res.Stdout)
	}
	return st, nil
}

// WaitStatus polls `mcpgate status --json` until cond holds, for up to
// timeout, and returns that status; otherwise it fails the test with the
// last status seen.
func (g *Gateway) WaitStatus(t testing.TB, timeout time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := g.Status(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", "  ")
			t.Fatalf("status: not %s within %v; last status:\n%s", what, timeout, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitHealth polls host's health endpoint (a new connection each time)
// until cond holds, for up to timeout, and returns that answer; otherwise it
// fails the test with the last answer seen.
func (g *Gateway) WaitHealth(t testing.TB, host string, timeout time.Duration, what string, cond func(h Health, status int, err error) bool) Health {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, status, err := g.Health(ctx, host)
		cancel()
		if cond(h, status, err) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("health of %s: not %s within %v; last: status %d, %+v, err %v", host, what, timeout, status, h, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// HealthOK reports a 200 health answer; for WaitHealth.
func HealthOK(h Health, status int, err error) bool {
	return err == nil && status == http.StatusOK && h.Status == "ok"
}

// Signal sends sig to the supervisor.
func (g *Gateway) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to the supervisor: %v", sig, err)
	}
}

// WriteProxy writes (or atomically replaces) the proxy file of p in the
// gateway's config dir, with a certificate from its PKI. It does not
// reload, nor change g.Proxies.
func (g *Gateway) WriteProxy(t testing.TB, p Proxy) {
	t.Helper()
	WriteProxyFile(t, g.Dir, g.PKI, p)
}

// WriteConfigFile replaces <config dir>/name with content, atomically.
func (g *Gateway) WriteConfigFile(t testing.TB, name, content string) {
	t.Helper()
	writeFile(t, filepath.Join(g.Dir, name), content)
}

// RemoveProxy deletes the proxy file of name. It does not reload, nor
// change g.Proxies.
func (g *Gateway) RemoveProxy(t testing.TB, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(g.Dir, name+".toml")); err != nil {
		t.Fatal(err)
	}
}
