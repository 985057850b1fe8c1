// Package system tests the appliance as a system administrator gets it:
// the .deb and .rpm that `make package` builds, and their systemd units.
// The full boot-install-reload-upgrade-purge test is systemtest.sh
// (`make systemtest`).
//
// These tests build the packages themselves and need dpkg-deb, rpm and
// systemd-analyze, so they run only when asked: `make package-test`
// (MCPGATE_PACKAGE_TEST=1) installs the tools and runs them. After a
// packaging change, `make package-golden-update` (or `go test
// ./tests/system/ -run Golden -update` with MCPGATE_PACKAGE_TEST=1)
// rewrites testdata/*.golden; review the diff.
package system_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the packages built now")

// built is what `make package` produced, once per test binary.
var built struct {
	once     sync.Once
	dir      string
	deb, rpm string
	version  string
	err      error
}

// packages builds the deb and rpm into a temporary directory and returns
// their paths and version, or skips the test when packaging tests were not
// asked for.
func packages(t *testing.T) (deb, rpm, version string) {
	t.Helper()
	if os.Getenv("MCPGATE_PACKAGE_TEST") != "1" {
		t.Skip("packaging tests need dpkg-deb, rpm and systemd-analyze: run `make package-test` (sets MCPGATE_PACKAGE_TEST=1)")
	}
	for _, tool := range []string{"dpkg-deb", "rpm", "systemd-analyze", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: `make package-deps` installs the packaging tools", tool)
		}
	}
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "mcpgate-pkgtest-")
		if built.err != nil {
			return
		}
		cmd := exec.Command("make", "--no-print-directory", "package", "DIST="+built.dir)
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("make package: %v\n%s", err, out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(built.dir, "*.deb"))
		rpms, _ := filepath.Glob(filepath.Join(built.dir, "*.rpm"))
		if len(debs) != 1 || len(rpms) != 1 {
			built.err = fmt.Errorf("make package made %v and %v, want one .deb and one .rpm\n%s", debs, rpms, out)
			return
		}
		built.deb, built.rpm = debs[0], rpms[0]
		v, err := exec.Command("dpkg-deb", "--field", built.deb, "Version").Output()
		if err != nil {
			built.err = fmt.Errorf("dpkg-deb --field Version: %v", err)
			return
		}
		built.version = strings.TrimSpace(string(v))
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.deb, built.rpm, built.version
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the package (a packaging change? then regenerate with `make package-golden-update` and review the diff)\n%s",
			path, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	w, g := count(want), count(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if g[l] == 0 {
			fmt.Fprintf(&b, "- %s\n", l)
		} else {
			g[l]--
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if w[l] == 0 {
			fmt.Fprintf(&b, "+ %s\n", l)
		} else {
			w[l]--
		}
	}
	return b.String()
}

var (
	// drwxr-xr-x root/root         0 2026-11-26 17:33 ./etc/
	debContentLine = regexp.MustCompile(`^(\S+) (\S+)\s+\d+ \d{4}-\d\d-\d\d \d\d:\d\d (.*)$`)
	// "     487 bytes,    12 lines   *  postinst             #!/bin/sh"
	debMemberLine = regexp.MustCompile(`^\s+\d+ bytes,\s+\d+ lines\s+(\*?)\s+(\S+)\s*(.*)$`)
)

// TestGoldenDeb: the .deb's file list (modes, owners, paths) and control
// metadata (fields, maintainer scripts, conffiles), without sizes, dates
// and the version.
func TestGoldenDeb(t *testing.T) {
	deb, _, version := packages(t)

	var files strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		m := debContentLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("dpkg-deb --contents: unexpected line %q", l)
		}
		fmt.Fprintf(&files, "%s %s %s\n", m[1], m[2], m[3])
	}
	golden(t, "deb-contents.golden", files.String())

	var info strings.Builder
	for _, l := range strings.Split(strings.TrimRight(run(t, "dpkg-deb", "--info", deb), "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, " new Debian package"), strings.HasPrefix(l, " size "):
			continue
		case debMemberLine.MatchString(l):
			m := debMemberLine.FindStringSubmatch(l)
			exec := "  "
			if m[1] == "*" {
				exec = "* "
			}
			fmt.Fprintln(&info, strings.TrimSpace(fmt.Sprintf("member %s%s %s", exec, m[2], m[3])))
		case strings.HasPrefix(l, " Installed-Size: "):
			info.WriteString(" Installed-Size: {SIZE}\n")
		case strings.HasPrefix(l, " Architecture: "):
			info.WriteString(" Architecture: {ARCH}\n")
		default:
			info.WriteString(strings.ReplaceAll(l, version, "{VERSION}") + "\n")
		}
	}
	info.WriteString("conffiles:\n")
	info.WriteString(run(t, "dpkg-deb", "--info", deb, "conffiles"))
	golden(t, "deb-control.golden", info.String())

	// What the golden files do not pin: the version itself, and the name.
	if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(version) {
		t.Errorf("version %q is not a plain deb/rpm version", version)
	}
	if base := filepath.Base(deb); !strings.HasPrefix(base, "mcpgate_"+version+"_") {
		t.Errorf("deb named %s, want mcpgate_%s_<arch>.deb", base, version)
	}
}

// TestGoldenRPM: `rpm -qip` and `rpm -qlp` (with modes, owners and config
// flags), the dependencies and scriptlets, without sizes, dates, host and
// version.
func TestGoldenRPM(t *testing.T) {
	_, rpm, version := packages(t)

	var info strings.Builder
	for _, l := range strings.Split(strings.TrimRight(run(t, "rpm", "-qip", rpm), "\n"), "\n") {
		key, _, _ := strings.Cut(l, ":")
		switch strings.TrimSpace(key) {
		case "Size":
			l = "Size        : {SIZE}"
		case "Build Date":
			l = "Build Date  : {DATE}"
		case "Build Host":
			l = "Build Host  : {HOST}"
		case "Architecture":
			l = "Architecture: {ARCH}"
		}
		info.WriteString(strings.ReplaceAll(l, version, "{VERSION}") + "\n")
	}
	info.WriteString("requires:\n")
	info.WriteString(run(t, "rpm", "-qp", "--requires", rpm))
	info.WriteString("provides:\n")
	info.WriteString(strings.ReplaceAll(run(t, "rpm", "-qp", "--provides", rpm), version, "{VERSION}"))
	info.WriteString("scriptlets:\n")
	for _, l := range strings.Split(run(t, "rpm", "-qp", "--scripts", rpm), "\n") {
		if strings.Contains(l, "scriptlet (using ") {
			info.WriteString(l + "\n")
		}
	}
	golden(t, "rpm-info.golden", info.String())

	list := run(t, "rpm", "-qlp", rpm)
	detail := run(t, "rpm", "-qp", "--queryformat",
		`[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]`, rpm)
	var paths []string
	for _, l := range strings.Split(strings.TrimSpace(detail), "\n") {
		f := strings.Fields(l)
		paths = append(paths, f[len(f)-1])
	}
	if got := strings.Join(paths, "\n") + "\n"; got != list {
		t.Errorf("rpm -qlp lists\n%s\nbut the detailed query\n%s", list, got)
	}
	golden(t, "rpm-files.golden", detail)

	if !strings.HasPrefix(filepath.Base(rpm), "mcpgate_"+version+"_") {
		t.Errorf("rpm named %s, want mcpgate_%s_<arch>.rpm", filepath.Base(rpm), version)
	}
}

// TestUnits: the units as packaged, in a root made of the host's systemd
// units plus the unpacked .deb: `systemd-analyze verify` says nothing
// (including the man: link, looked up in the package's man page), and
// `systemd-analyze security` rates mcpgate.service 2.0 or lower.
func TestUnits(t *testing.T) {
	deb, _, _ := packages(t)
	root := t.TempDir()
	units := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(units, 0o755); err != nil {
		t.Fatal(err)
	}
	// sysinit.target, sockets.target, ...: the dependencies of our units.
	host := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(host, "sysinit.target")); err != nil {
		host = "/lib/systemd/system"
	}
	run(t, "cp", "-a", host+"/.", units)
	run(t, "dpkg-deb", "--extract", deb, root)

	names := []string{"mcpgate.service", "mcpgate.socket", "mcpgate-http.socket", "mcpgate-quic.socket"}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root}, names...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"), "SYSTEMD_PAGER=", "PAGER=cat")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", strings.Join(names, " "), err, out)
	} else {
		t.Logf("systemd-analyze verify %s: clean", strings.Join(names, " "))
	}

	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root, "--no-pager", "mcpgate.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for mcpgate\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security mcpgate.service: %v, no exposure level in\n%s", err, out)
	}
	exposure, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security mcpgate.service: exposure %s", m[1])
	fmt.Printf("mcpgate.service exposure (systemd-analyze security --offline): %s\n", m[1])
	if exposure > 2.0 {
		t.Errorf("mcpgate.service exposure %.1f > 2.0:\n%s", exposure, out)
	}
}
