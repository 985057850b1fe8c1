// Command mcpbench runs mcpgate's benchmark (issue 7) and writes the
// results: bench/results/<date>.md, .json and .png.
//
// Every server (the Go backend, mcpgate's supervisor and workers, nginx,
// Caddy, the Go baseline proxy) runs pinned to core 0; this process, which
// is also the Go load generator, runs on core 1 (bench/run.sh starts it
// with taskset), and so do wrk and h2load. Servers are on loopback only,
// every load is bounded in time and size, and every process started here is
// stopped at the end, or by bench/run.sh's trap if this process dies.
//
// Usage (bench/run.sh does all of this): mcpbench -mode full|quick
// -bin DIR (backend, goproxy, h1floor, mcpgate-a, mcpgate-b) -out bench/results.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// params are the sizes of one mode.
type params struct {
	Mode          string   `json:"mode"`
	Runs          int      `json:"runs"`
	ThroughputSec int      `json:"throughput_seconds"`
	WrkConns      int      `json:"wrk_connections"`
	H2Clients     int      `json:"h2load_clients"`
	H2Streams     int      `json:"h2load_streams_per_client"`
	Rate          int      `json:"latency_rate_rps"`
	LatencySec    float64  `json:"latency_seconds"`
	LatencyWarm   float64  `json:"latency_warmup_seconds"`
	LatencyH2     bool     `json:"latency_h2"`
	NewConnSec    float64  `json:"newconn_seconds"`
	NewConnConc   int      `json:"newconn_concurrency"`
	SSEStreams    int      `json:"sse_streams"`        // HTTP/1.1: one TLS connection each
	SSEH2Conns    int      `json:"sse_h2_connections"` // HTTP/2: connections ×
	SSEH2Streams  int      `json:"sse_h2_streams_per_connection"`
	SSEConc       int      `json:"sse_open_concurrency"`
	SSERuns       int      `json:"sse_runs"`
	ProxyCounts   []int    `json:"idle_proxy_counts"`
	IdleRuns      int      `json:"idle_runs"`       // for counts up to 10
	IdleRunsLarge int      `json:"idle_runs_large"` // for larger counts
	ReloadRuns    int      `json:"reload_runs"`
	ReloadProxies int      `json:"reload_proxies"`
	ReloadWorkers int      `json:"reload_load_goroutines"`
	ScaleProxies  int      `json:"scale_proxies"` // the many-proxies row (0: skipped)
	ProfileSec    int      `json:"profile_seconds"`
	ProfileProtos []string `json:"profile_protocols"`
	H2Warm        int      `json:"h2load_warmup_seconds"`
	GoSec         float64  `json:"h3_rps_seconds"` // HTTP/3 vs HTTP/2, Go client
	GoWarm        float64  `json:"h3_rps_warmup_seconds"`
	GoConns       int      `json:"h3_rps_connections"`
	GoConc        int      `json:"h3_rps_concurrency"`
	FirstByteN    int      `json:"h3_first_byte_samples"`
	MicroCount    int      `json:"micro_count"`
	MicroTime     string   `json:"micro_benchtime"`
	MicroPkgs     []string
	MicroFilter   string
}

func paramsFor(mode string) params {
	full := params{
		Mode: "full", Runs: 5, ThroughputSec: 4, WrkConns: 50, H2Clients: 10, H2Streams: 10,
		Rate: 1000, LatencySec: 3, LatencyWarm: 1, LatencyH2: true,
		NewConnSec: 4, NewConnConc: 8,
		SSEStreams: 5000, SSEH2Conns: 100, SSEH2Streams: 50, SSEConc: 32, SSERuns: 3,
		ProxyCounts: []int{1, 10, 100}, IdleRuns: 3, IdleRunsLarge: 1,
		ReloadRuns: 3, ReloadProxies: 10, ReloadWorkers: 8, ScaleProxies: 500,
		ProfileSec: 6, ProfileProtos: []string{"h1", "h2"}, H2Warm: 1,
		GoSec: 3, GoWarm: 1, GoConns: 4, GoConc: 64, FirstByteN: 300,
		MicroCount: 3, MicroTime: "1s",
		MicroPkgs:   []string{"./internal/...", "./bench/..."},
		MicroFilter: ".",
	}
	switch mode {
	case "quick":
	case "dev": // a smoke test of the bench itself: tiny loads
		return params{
			Mode: "dev", Runs: 1, ThroughputSec: 1, WrkConns: 10, H2Clients: 2, H2Streams: 5,
			Rate: 200, LatencySec: 1, LatencyWarm: 0.2, LatencyH2: true,
			NewConnSec: 1, NewConnConc: 2,
			SSEStreams: 100, SSEH2Conns: 4, SSEH2Streams: 25, SSEConc: 8, SSERuns: 1,
			ProxyCounts: []int{1, 3}, IdleRuns: 1, IdleRunsLarge: 1,
			ReloadRuns: 2, ReloadProxies: 3, ReloadWorkers: 2, ScaleProxies: 20,
			ProfileSec: 1, ProfileProtos: []string{"h1", "h2"}, H2Warm: 0,
			GoSec: 1, GoWarm: 0.2, GoConns: 2, GoConc: 16, FirstByteN: 20,
			MicroCount: 1, MicroTime: "100ms",
			MicroPkgs:   []string{"./internal/token", "./bench/handoff"},
			MicroFilter: "VerifyCache(Hit|Miss)$|Handoff",
		}
	default:
		return full
	}
	return params{
		Mode: "quick", Runs: 1, ThroughputSec: 2, WrkConns: 50, H2Clients: 10, H2Streams: 10,
		Rate: 1000, LatencySec: 3, LatencyWarm: 0.5, LatencyH2: false,
		NewConnSec: 2, NewConnConc: 8,
		SSEStreams: 1000, SSEH2Conns: 20, SSEH2Streams: 50, SSEConc: 32, SSERuns: 1,
		ProxyCounts: []int{1, 10}, IdleRuns: 1, IdleRunsLarge: 0,
		ReloadRuns: 1, ReloadProxies: 10, ReloadWorkers: 8,
		ProfileSec: 3, ProfileProtos: []string{"h1"}, H2Warm: 1,
		GoSec: 2, GoWarm: 0.5, GoConns: 4, GoConc: 64, FirstByteN: 150,
		MicroCount: 1, MicroTime: "300ms",
		MicroPkgs:   []string{"./internal/token", "./bench/handoff"},
		MicroFilter: "VerifyCache(Hit|Miss)$|Handoff",
	}
}

type bench struct {
	p      params
	repo   string // module root
	work   string // temporary directory: configs, logs, state
	binDir string
	outDir string
	stamp  string // results file name stem: <date> or <date>-quick
	reg    *registry
	pki    *pki
	res    *results

	backend                     *proc
	backendPort, backendTLSPort int
	token                       string
	mainGW                      *gateway
	mcpgateBin                  [2]string // two builds of mcpgate with different build ids
	buildIDs                    [2]string
	started                     time.Time
}

func main() {
	mode := flag.String("mode", "full", "full or quick")
	binDir := flag.String("bin", "", "directory with backend, goproxy, h1floor, mcpgate-a and mcpgate-b")
	outDir := flag.String("out", "bench/results", "results directory")
	work := flag.String("work", "", "working directory (default: a new temporary directory)")
	only := flag.String("only", "", "comma-separated phases to run (development): throughput,latency,newconn,h3,profile,sse,idle,reload,scale,micro")
	stamp := flag.String("stamp", "", "results file name stem (default: the date, plus -quick in quick mode)")
	sseStreams := flag.Int("sse", 0, "override the number of SSE streams (development)")
	render := flag.String("render", "", "only rewrite the .md, .png and .json of this results JSON file (after a change of the report)")
	reloads := flag.Int("reloads", 0, "override the number of reloads (development)")
	proxyCounts := flag.String("proxies", "", "override the proxy counts of the idle figure, e.g. 1,10,100 (development)")
	scaleProxies := flag.Int("scale", 0, "proxies of the many-proxies row (default: 500 in full mode, none in quick mode; bench/run.sh scale runs it alone)")
	flag.Parse()

	if *render != "" {
		if err := rerender(*render); err != nil {
			fatal(err)
		}
		return
	}
	raiseNofile()
	b := &bench{p: paramsFor(*mode), binDir: *binDir, outDir: *outDir, started: time.Now()}
	if *sseStreams > 0 {
		b.p.SSEStreams = *sseStreams
	}
	if *reloads > 0 {
		b.p.ReloadRuns = *reloads
	}
	if *scaleProxies > 0 {
		b.p.ScaleProxies = *scaleProxies
	}
	if *proxyCounts != "" {
		b.p.ProxyCounts = nil
		for _, f := range strings.Split(*proxyCounts, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				fatal(fmt.Errorf("-proxies: %q", f))
			}
			b.p.ProxyCounts = append(b.p.ProxyCounts, n)
		}
	}
	var err error
	if b.repo, err = os.Getwd(); err != nil {
		fatal(err)
	}
	if b.binDir == "" {
		fatal(fmt.Errorf("-bin is required"))
	}
	b.binDir, _ = filepath.Abs(b.binDir)
	b.outDir, _ = filepath.Abs(b.outDir)
	b.stamp = *stamp
	if b.stamp == "" {
		b.stamp = time.Now().Format("2006-01-02")
		if b.p.Mode == "quick" {
			b.stamp += "-quick"
		}
	}
	if err := os.MkdirAll(b.outDir, 0o755); err != nil {
		fatal(err)
	}
	b.buildIDs = [2]string{"bench-a", "bench-b"}
	b.mcpgateBin = [2]string{filepath.Join(b.binDir, "mcpgate-a"), filepath.Join(b.binDir, "mcpgate-b")}
	if *work == "" {
		if b.work, err = os.MkdirTemp("", "mcpbench-"); err != nil {
			fatal(err)
		}
	} else {
		b.work = *work
		if err := os.MkdirAll(b.work, 0o755); err != nil {
			fatal(err)
		}
	}
	b.reg = &registry{file: os.Getenv("MCPBENCH_PIDFILE")}
	b.res = newResults(b)

	// Stop everything on SIGINT/SIGTERM (bench/run.sh's trap sends TERM).
	// A vanished stdout (tee interrupted) must not kill us before the
	// servers are stopped.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		logf("signal %v: stopping every server", s)
		b.reg.stopAll()
		os.Exit(130)
	}()

	phases := map[string]bool{}
	for _, ph := range strings.Split(*only, ",") {
		if ph != "" {
			phases[ph] = true
		}
	}
	want := func(ph string) bool { return len(phases) == 0 || phases[ph] }

	runErr := b.run(want)
	b.reg.stopAll()
	if runErr != nil {
		b.res.Failures = append(b.res.Failures, runErr.Error())
		logf("ERROR: %v", runErr)
	}
	b.res.Elapsed = time.Since(b.started).Round(time.Second).String()
	if err := b.res.write(); err != nil {
		logf("writing results: %v", err)
		os.Exit(1)
	}
	switch {
	case *work != "":
		// The caller's directory (bench/run.sh removes it).
	case runErr == nil:
		os.RemoveAll(b.work)
	default:
		logf("work directory kept: %s", b.work)
	}
	if runErr != nil {
		os.Exit(1)
	}
}

func (b *bench) run(want func(string) bool) error {
	logf("mcpbench %s mode: %d run(s) per figure; work dir %s", b.p.Mode, b.p.Runs, b.work)
	logf("GOMAXPROCS of the load generator: %d (affinity: %s)", runtime.GOMAXPROCS(0), cpusOf(os.Getpid()))
	b.res.Machine = machine()
	b.res.Machine["mcpgate"] = toolVersion(b.mcpgateBin[0], "version") + " (reload figure: also build " + b.buildIDs[1] + ")"
	var err error
	if b.pki, err = newPKI(filepath.Join(b.work, "pki")); err != nil {
		return err
	}
	if err := b.startBackend(); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	cs, err := b.contenders()
	if err != nil {
		return err
	}
	gp, err := b.goproxyContender()
	if err != nil {
		return err
	}
	nl, err := b.noLogContender()
	if err != nil {
		return err
	}
	fl, err := b.h1floorContender()
	if err != nil {
		return err
	}
	extra := []*contender{gp, nl, fl}
	b.res.Machine["open files limit"] = fmt.Sprint(nofileLimit)
	if need := 2*max(b.p.SSEStreams, b.p.SSEH2Conns*b.p.SSEH2Streams) + 200; uint64(need) > nofileLimit {
		logf("warning: open-files limit %d < %d: the SSE figure may fail to open every stream", nofileLimit, need)
	}
	needServers := want("throughput") || want("latency") || want("newconn") || want(h3PhaseName) || want("profile") || want("sse")
	if needServers {
		for _, c := range append(cs[1:], extra...) {
			if err := c.start(); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		b.recordPinning(append(cs, extra...))
		b.phase("throughput+latency+newconn+h3", func() error { return b.loadPhases(cs, gp, nl, fl, want) })
		if want("profile") {
			b.phase("profile", func() error { return b.profileWorker(cs[1]) })
		}
		if want("sse") {
			b.phase("sse", func() error { return b.ssePhase(cs) })
		}
		for _, c := range append(cs[1:], extra...) {
			c.stop()
		}
	}
	if want("idle") || want("reload") {
		b.phase("idle+reload", func() error { return b.idleAndReload(want) })
	}
	if want("scale") && b.p.ScaleProxies > 0 {
		b.phase("scale", b.scale)
	}
	if want("micro") {
		b.phase("micro", b.micro)
	}
	return nil
}

// phase runs f, logging its duration; an error is recorded and the bench
// goes on with the next phase.
func (b *bench) phase(name string, f func() error) {
	t0 := time.Now()
	logf("== %s", name)
	if err := f(); err != nil {
		logf("phase %s failed: %v", name, err)
		b.res.Failures = append(b.res.Failures, fmt.Sprintf("%s: %v", name, err))
	}
	d := time.Since(t0).Round(time.Second)
	b.res.Phases = append(b.res.Phases, phaseTime{Name: name, Seconds: d.Seconds(), Load: loadavg()})
	logf("== %s done in %v (load average %s)", name, d, loadavg())
}

func (b *bench) recordPinning(cs []*contender) {
	roots := map[string]int{}
	for _, c := range cs {
		roots[c.name] = c.rssPID()
	}
	b.res.Pinning = pinning(roots)
	logf("pinning (servers: taskset -c %s; load generators: taskset -c %s):", serverCore, loadCore)
	for _, l := range b.res.Pinning {
		logf("  %s", l)
	}
}

// loadPhases: requests/s (h1, h2), latency at a fixed rate, new TLS
// connections/s, mcpgate over HTTP/3 versus HTTP/2 (h3.go); runs are
// interleaved (run 1 of every contender, then run 2, …) and the contender
// order rotates, so slow drifts of a shared machine spread over all of
// them.
func (b *bench) loadPhases(cs []*contender, gp, nl, fl *contender, want func(string) bool) error {
	tp := time.Duration(b.p.ThroughputSec) * time.Second
	// Throughput (and the server CPU per response): the Go baseline proxy
	// too, and over HTTP/1.1 mcpgate without its access log and the
	// h1-floor experiment.
	h2cs := append(slices.Clone(cs), gp)
	h1cs := append(slices.Clone(h2cs), nl, fl)
	if want("throughput") {
		logf("warm-up: 1 s of wrk per contender")
		for _, c := range h1cs {
			if _, err := b.wrk(c.url+"/small", c.t.token, b.p.WrkConns, time.Second); err != nil {
				return err
			}
		}
	}
	ncs := append([]*contender{{name: "direct-tls", t: b.directTLSTarget(), rssPID: cs[0].rssPID}}, cs[1:]...)
	ncs = append(ncs, gp)
	ncs[0].t.token = b.token
	for run := range b.p.Runs {
		order := rotate(cs, run)
		if want("throughput") {
			for _, c := range rotate(h1cs, run) {
				// wrk has no warm-up: the CPU window starts once its
				// connections are up (their handshakes left out).
				skip := min(wrkCPUSkip, tp/4)
				meter := cpuMeter(c.rssPID(), skip)
				r, err := b.wrk(c.url+"/small", c.t.token, b.p.WrkConns, tp)
				cpu, _ := meter()
				if err != nil {
					return err
				}
				r.setCPU(cpu, tp-skip)
				b.res.add("h1_rps", c.name, r.RPS, r)
				b.res.add(mCPUh1, c.name, r.CPUPerRespUs, nil)
				logf("run %d h1  %-13s %9.0f req/s  server CPU %6.1f µs/response  errors %d", run+1, c.name, r.RPS, r.CPUPerRespUs, r.Errors)
			}
			for _, c := range rotate(h2cs, run) {
				warm := time.Duration(b.p.H2Warm) * time.Second
				meter := cpuMeter(c.rssPID(), warm)
				r, err := b.h2load(c.url+"/small", c.t.token, b.p.H2Clients, b.p.H2Streams, warm, tp)
				cpu, _ := meter()
				if err != nil {
					return err
				}
				r.setCPU(cpu, tp)
				b.res.add("h2_rps", c.name, r.RPS, r)
				b.res.add(mCPUh2, c.name, r.CPUPerRespUs, nil)
				logf("run %d h2  %-13s %9.0f req/s  server CPU %6.1f µs/response  errors %d (%s)", run+1, c.name, r.RPS, r.CPUPerRespUs, r.Errors, r.Protocol)
			}
		}
		if want("latency") {
			protos := []bool{false}
			if b.p.LatencyH2 {
				protos = append(protos, true)
			}
			for _, h2 := range protos {
				key := map[bool]string{false: "h1", true: "h2"}[h2]
				for _, c := range order {
					r := b.fixedRate(c.t, h2, b.p.Rate, secs(b.p.LatencyWarm), secs(b.p.LatencySec))
					b.res.add("lat_"+key+"_p50_us", c.name, r.P50us, r)
					b.res.add("lat_"+key+"_p99_us", c.name, r.P99us, nil)
					logf("run %d lat %s %-8s p50 %7.0f µs  p99 %7.0f µs  (%d sent, %d errors, %d dropped)", run+1, key, c.name, r.P50us, r.P99us, r.Sent, r.Errors, r.Dropped)
				}
			}
		}
		if want("newconn") {
			for _, c := range rotate(ncs, run) {
				r := b.newConns(c.t, c.rssPID(), b.p.NewConnConc, secs(b.p.NewConnSec))
				b.res.add("newconn_per_s", c.name, r.PerSecond, r)
				b.res.add("newconn_handshake_us", c.name, r.HandshakeUs, nil)
				b.res.add(mCPUConn, c.name, r.CPUPerConnUs, nil)
				split := ""
				if c.name == "mcpgate" {
					b.res.add(mCPUConnSup, c.name, r.RootCPUPerConnUs, nil)
					split = fmt.Sprintf(" (supervisor %.0f)", r.RootCPUPerConnUs)
				}
				logf("run %d new TLS connections %-10s %7.0f /s  server CPU %6.0f µs/connection%s  (handshake p50 %5.0f µs, %d errors %s)", run+1, c.name, r.PerSecond, r.CPUPerConnUs, split, r.HandshakeUs, r.Errors, r.FirstErr)
			}
		}
		if want(h3PhaseName) {
			b.h3Run(run, cs[1])
		}
	}
	return nil
}

func rotate[T any](s []T, k int) []T {
	k %= len(s)
	return append(append([]T(nil), s[k:]...), s[:k]...)
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// nofileLimit is the open-files limit of mcpbench after raiseNofile, which
// every server it starts inherits (nginx's worker_connections follow it).
var nofileLimit uint64 = 1024

// raiseNofile sets RLIMIT_NOFILE's soft limit to the hard limit: the SSE
// figure holds thousands of connections on each side. Setting it
// explicitly also makes Go pass the raised limit on to the servers it
// starts (it restores the original soft limit for children otherwise).
func raiseNofile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		logf("raising the open-files limit to %d: %v", rl.Max, err)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	nofileLimit = rl.Cur
}

func cpusOf(pid int) string {
	s, _ := statusField(pid, "Cpus_allowed_list")
	return s
}

func logf(format string, args ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mcpbench:", err)
	os.Exit(1)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
