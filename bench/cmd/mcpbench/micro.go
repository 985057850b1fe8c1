package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// microResult is one Go benchmark line.
type microResult struct {
	Pkg      string  `json:"pkg"`
	Name     string  `json:"name"`
	NsOp     float64 `json:"ns_op"`
	BOp      float64 `json:"b_op"`
	AllocsOp float64 `json:"allocs_op"`
}

var reBench = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(.*)$`)

// goCmd runs the go command in the module root, pinned to the server core
// (the micro-benchmarks measure server code), with a time limit.
func (b *bench) goCmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", serverCore, "go"}, args...)...)
	cmd.Dir = b.repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, lastLines(string(out), 20))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// micro runs the Go micro-benchmarks (the former `make bench`), then CPU
// and allocation profiles of the hot-path benchmarks.
func (b *bench) micro() error {
	pkgs := b.benchPackages()
	b.res.MicroPkgs = pkgs
	args := append([]string{"test", "-run", "^$", "-bench", b.p.MicroFilter, "-benchmem",
		"-count", strconv.Itoa(b.p.MicroCount), "-benchtime", b.p.MicroTime}, pkgs...)
	out, benchErr := b.goCmd(10*time.Minute, args...)
	raw := filepath.Join(b.work, "micro.txt")
	os.WriteFile(raw, []byte(out), 0o644)
	b.res.MicroRaw = out
	// A package that does not build fails its part only: keep the rest.
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/mcpgate/mcpgate/")
			continue
		}
		m := reBench.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r := microResult{Pkg: pkg, Name: m[1]}
		r.NsOp, _ = strconv.ParseFloat(m[2], 64)
		f := strings.Fields(m[3])
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseFloat(f[i-1], 64)
			switch f[i] {
			case "B/op":
				r.BOp = v
			case "allocs/op":
				r.AllocsOp = v
			}
		}
		b.res.Micro = append(b.res.Micro, r)
	}
	logf("micro-benchmarks: %d results", len(b.res.Micro))
	if benchErr != nil {
		b.res.Failures = append(b.res.Failures, "micro: "+strings.ReplaceAll(lastLines(benchErr.Error(), 5), "\n", " / "))
		logf("micro-benchmarks: %v", benchErr)
	}

	// Profiles of the per-request and per-connection hot paths.
	type prof struct{ name, pkg, bench string }
	profs := []prof{
		{"token-verify-hit", "./internal/token", "BenchmarkVerifyCacheHit$"},
		{"handoff", "./bench/handoff", "BenchmarkHandoff$"},
	}
	if b.p.Mode == "full" {
		profs = append(profs, prof{"token-verify-miss", "./internal/token", "BenchmarkVerifyCacheMiss$"},
			prof{"peek-clienthello", "./internal/peek", "BenchmarkClientHello$"})
	}
	for _, p := range profs {
		cpu := filepath.Join(b.outDir, b.stamp+"-"+p.name+".cpu.prof")
		mem := filepath.Join(b.outDir, b.stamp+"-"+p.name+".mem.prof")
		testBin := filepath.Join(b.work, p.name+".test")
		if _, err := b.goCmd(5*time.Minute, "test", "-run", "^$", "-bench", p.bench, "-benchtime", b.p.MicroTime,
			"-o", testBin, "-cpuprofile", cpu, "-memprofile", mem, p.pkg); err != nil {
			b.res.Failures = append(b.res.Failures, "profile "+p.name+": "+strings.ReplaceAll(lastLines(err.Error(), 3), "\n", " / "))
			continue
		}
		pr := profile{Name: p.name, Source: "go test -bench '" + p.bench + "' " + p.pkg, CPUFile: filepath.Base(cpu), MemFile: filepath.Base(mem)}
		var err error
		if pr.CPUTop, err = b.pprofTop(testBin, cpu, ""); err != nil {
			return err
		}
		if pr.AllocTop, err = b.pprofTop(testBin, mem, "-sample_index=alloc_space"); err != nil {
			return err
		}
		b.res.Profiles = append(b.res.Profiles, pr)
	}
	return nil
}

// benchPackages lists the packages matching MicroPkgs that have benchmarks,
// so that go test builds only those.
func (b *bench) benchPackages() []string {
	var out []string
	for _, pat := range b.p.MicroPkgs {
		root := strings.TrimSuffix(strings.TrimPrefix(pat, "./"), "/...")
		if !strings.HasSuffix(pat, "/...") {
			out = append(out, pat)
			continue
		}
		filepath.WalkDir(filepath.Join(b.repo, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil || !strings.Contains(string(src), "\nfunc Benchmark") {
				return nil
			}
			rel, _ := filepath.Rel(b.repo, filepath.Dir(path))
			if pkg := "./" + rel; !slices.Contains(out, pkg) {
				out = append(out, pkg)
			}
			return nil
		})
	}
	return out
}

type profile struct {
	Name     string   `json:"name"`
	Source   string   `json:"source"`
	CPUFile  string   `json:"cpu_file,omitempty"`
	MemFile  string   `json:"mem_file,omitempty"`
	CPUTop   []string `json:"cpu_top5"`
	GoTop    []string `json:"go_top5,omitempty"`  // user-space functions only, self time (perf)
	PkgTop   []string `json:"pkg_top5,omitempty"` // mcpgate's own functions, inclusive time (perf)
	AllocTop []string `json:"alloc_top5,omitempty"`
	Note     string   `json:"note,omitempty"`
}

// pprofTop returns the five heaviest functions by flat value, as lines
// "flat% cum% function".
func (b *bench) pprofTop(bin, prof, extra string) ([]string, error) {
	args := []string{"tool", "pprof", "-top", "-nodecount=5"}
	if extra != "" {
		args = append(args, extra)
	}
	args = append(args, bin, prof)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.repo
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof %s: %v", prof, err)
	}
	return parsePprofTop(string(out)), nil
}

// parsePprofTop keeps the table rows of `pprof -top`:
// "flat flat% sum% cum cum% name".
func parsePprofTop(out string) []string {
	var rows []string
	inTable := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 5 && f[0] == "flat" {
			inTable = true
			continue
		}
		if inTable && len(f) >= 6 {
			rows = append(rows, fmt.Sprintf("%s flat, %s cum: %s", f[1], f[4], strings.Join(f[5:], " ")))
		}
	}
	return rows
}

// profileWorker samples the mcpgate worker and supervisor with perf
// (cpu-clock, the only event this VM offers, with call graphs through Go's
// frame pointers) while wrk, then h2load, load it. mcpgate has no pprof
// endpoint, so there is no allocation profile of the running worker; the
// share of runtime.mallocgc and of the garbage collector in this profile
// stands in for it.
func (b *bench) profileWorker(c *contender) error {
	if err := b.goProfileWorker(c); err != nil {
		logf("Go profile of the worker: %v", err)
	}
	if _, err := exec.LookPath("perf"); err != nil {
		b.res.Profiles = append(b.res.Profiles, profile{Name: "worker", Note: "perf not installed: no profile of the running worker"})
		return nil
	}
	pids := tree(c.rssPID())
	var ps []string
	for _, p := range pids {
		ps = append(ps, strconv.Itoa(p))
	}
	dur := time.Duration(b.p.ProfileSec) * time.Second
	for _, proto := range b.p.ProfileProtos {
		data := filepath.Join(b.work, "perf-"+proto+".data")
		ctx, cancel := context.WithTimeout(context.Background(), dur+time.Minute)
		rec := exec.CommandContext(ctx, "perf", "record", "-e", "cpu-clock", "-F", "997", "-g",
			"-p", strings.Join(ps, ","), "-o", data, "--", "sleep", strconv.Itoa(b.p.ProfileSec))
		recOut, _ := os.Create(filepath.Join(b.work, "perf-"+proto+".log"))
		rec.Stdout, rec.Stderr = recOut, recOut
		if err := rec.Start(); err != nil {
			cancel()
			recOut.Close()
			return err
		}
		time.Sleep(200 * time.Millisecond)
		var err error
		if proto == "h1" {
			_, err = b.wrk(c.url+"/small", c.t.token, b.p.WrkConns, dur)
		} else {
			_, err = b.h2load(c.url+"/small", c.t.token, b.p.H2Clients, b.p.H2Streams, 0, dur)
		}
		werr := rec.Wait()
		cancel()
		recOut.Close()
		if err != nil {
			return err
		}
		if werr != nil {
			b.res.Profiles = append(b.res.Profiles, profile{Name: "worker-" + proto, Note: "perf record failed: " + werr.Error()})
			continue
		}
		self, err := perfReport(data, false)
		if err != nil {
			return err
		}
		children, err := perfReport(data, true)
		if err != nil {
			return err
		}
		txt := filepath.Join(b.outDir, b.stamp+"-worker-"+proto+".perf.txt")
		os.WriteFile(txt, []byte("# perf report --no-children (self time), mcpgate supervisor + worker under "+proto+" load\n"+self+
			perfTextSep+children), 0o644)
		pr := workerProfile(proto, filepath.Base(txt), self, children)
		b.res.Profiles = append(b.res.Profiles, pr)
		logf("worker profile (%s): %s", proto, strings.Join(pr.CPUTop, "; "))
	}
	return nil
}

// workerProfile summarises the perf reports of the worker: top five
// symbols by self time (all, then user space only), top five of mcpgate's
// own functions by inclusive time, kernel and allocation shares.
func workerProfile(proto, file, self, children string) profile {
	pr := profile{Name: "worker-" + proto, Source: "perf record -e cpu-clock -g on the supervisor and worker under the " + proto + " throughput load",
		CPUFile: file, CPUTop: perfTop(self, 5, false), GoTop: perfTop(self, 5, true)}
	for line := range strings.Lines(children) {
		m := rePerfRow.FindStringSubmatch(line)
		if m == nil || !strings.HasPrefix(m[4], "github.com/mcpgate/mcpgate/") {
			continue
		}
		pr.PkgTop = append(pr.PkgTop, m[1]+"% "+strings.TrimPrefix(m[4], "github.com/mcpgate/mcpgate/"))
		if len(pr.PkgTop) == 5 {
			break
		}
	}
	pr.Note = fmt.Sprintf("kernel (syscalls, TCP, scheduling) %.0f%% of samples (rows ≥ 0.3%%); write(2) inclusive %s (responses, upstream requests and the access log); ", perfKernelShare(self), perfShare(children, "syscall.write")) +
		"allocation (Go profile: worker-go); runtime.mallocgc inclusive " + perfShare(children, "runtime.mallocgc") +
		", garbage collector (runtime.gcBgMarkWorker inclusive) " + perfShare(children, "runtime.gcBgMarkWorker") +
		", GC assists charged to allocating goroutines (runtime.gcAssistAlloc inclusive) " + perfShare(children, "runtime.gcAssistAlloc")
	return pr
}

// perfTextSep separates the self-time and inclusive reports in the saved
// *-worker-*.perf.txt files.
const perfTextSep = "\n\n# perf report --children (inclusive time)\n"

func perfReport(data string, children bool) (string, error) {
	mode := "--no-children"
	if children {
		mode = "--children"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", mode, "-g", "none",
		"--sort", "symbol", "--percent-limit", "0.3", "--no-demangle").Output()
	if err != nil {
		return "", fmt.Errorf("perf report: %v", err)
	}
	return string(out), nil
}

// rePerfRow is a row of `perf report --stdio`: one or two percentages,
// [.] (user space) or [k] (kernel), the symbol, maybe IPC columns.
var rePerfRow = regexp.MustCompile(`^\s+([0-9.]+)%\s+(?:([0-9.]+)%\s+)?\[([.k])\]\s+(\S+(?: \S+)*)`)

// perfTop returns the first n rows of a perf report as "pct% symbol",
// user-space symbols only if userOnly.
func perfTop(report string, n int, userOnly bool) []string {
	var rows []string
	for line := range strings.Lines(report) {
		m := rePerfRow.FindStringSubmatch(line)
		if m == nil || (userOnly && m[3] != ".") {
			continue
		}
		sym := m[4]
		if m[3] == "k" {
			sym += " (kernel)"
		}
		rows = append(rows, m[1]+"% "+sym)
		if len(rows) == n {
			break
		}
	}
	return rows
}

func perfShare(report, sym string) string {
	for line := range strings.Lines(report) {
		if m := rePerfRow.FindStringSubmatch(line); m != nil && m[4] == sym {
			return m[1] + "%"
		}
	}
	return "< 0.3%"
}

// perfKernelShare sums the kernel rows of a self-time report.
func perfKernelShare(report string) float64 {
	var sum float64
	for line := range strings.Lines(report) {
		if m := rePerfRow.FindStringSubmatch(line); m != nil && m[3] == "k" {
			v, _ := strconv.ParseFloat(m[1], 64)
			sum += v
		}
	}
	return sum
}
