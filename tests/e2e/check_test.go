package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestCheck runs `mcpgate check`: a good directory gives exit 0 and one
// summary line per proxy; a bad one gives exit 1 and every error as
// file:line: key: message.
func TestCheck(t *testing.T) {
	t.Parallel()

	t.Run("good", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		harness.WriteConfig(t, dir, filepath.Join(dir, "state"), harness.NewPKI(t), harness.Options{Proxies: []harness.Proxy{
			{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: "http://127.0.0.1:3000"},
			{Name: "beta", Hostnames: []string{"beta.test", "*.beta.test"}, Target: "http://127.0.0.1:4000",
				Tables: "[[routes]]\npath = \"/api\"\ntarget = \"http://127.0.0.1:4001\""},
		}})
		res := harness.Run(t, 30*time.Second, "check", "--config-dir", dir)
		if res.ExitCode != 0 {
			t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
		}
		lines := nonEmptyLines(res.Stdout)
		if len(lines) != 2 {
			t.Errorf("stdout has %d lines, want one per proxy (2):\n%s", len(lines), res.Stdout)
		}
		for _, name := range []string{"alpha", "beta"} {
			n := 0
			for _, l := range lines {
				if strings.Contains(l, name) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d stdout lines mention %s, want 1:\n%s", n, name, res.Stdout)
			}
		}
	})

	t.Run("bad", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		write := func(name, content string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("mcpgate.toml", "[server]\nstate_dir = \"state\"\n")
		write("bad.toml", `hostnames = ["bad.test"]
target = "ftp://127.0.0.1:21"
bogus_key = 1

[tls]
self_signed = true
`)
		res := harness.Run(t, 30*time.Second, "check", "--config-dir", dir)
		out := res.Stdout + res.Stderr
		if res.ExitCode != 1 {
			t.Errorf("exit %d, want 1\noutput:\n%s", res.ExitCode, out)
		}
		// Both errors, at once, each located (the file may be given by its
		// base name or by its path).
		for _, want := range []string{`(^|/)bad\.toml:2: target: \S`, `(^|/)bad\.toml:3: bogus_key: \S`} {
			if !regexp.MustCompile(`(?m)` + want).MatchString(out) {
				t.Errorf("output lacks a line matching %s:\n%s", want, out)
			}
		}
	})
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
