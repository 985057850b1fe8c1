package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// The reload soak driven by h2load (nghttp2's load generator). Go's HTTP/2
// client retries a request the server refused with GOAWAY, which hides a
// drain that refuses requests; h2load counts it as an error, like many
// clients that are not Go. h2load comes from Debian's nghttp2-client
// (make integration-deps or make bench installs it); without it the test
// is skipped, except in CI.

// h2loadStats is h2load's summary of one or more runs.
type h2loadStats struct {
	runs, done, succeeded, failed, errored, timeout int
	status2xx, status4xx, status5xx                 int
	// gaveUp counts h2load's "Process Request Failure" reports: a client
	// that could not open a stream after GOAWAY gives up, counting as
	// failed and errored the requests it has left (Client::process_request_failure;
	// in timing mode one, or none when it had already given up). Not a
	// lost request.
	gaveUp int
}

var (
	h2loadRequests = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2loadStatus   = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	h2loadGaveUp   = regexp.MustCompile(`(?m)^Process Request Failure:`)
)

func (st *h2loadStats) add(out string) error {
	m := h2loadRequests.FindStringSubmatch(out)
	s := h2loadStatus.FindStringSubmatch(out)
	if m == nil || s == nil {
		return fmt.Errorf("no summary in h2load's output:\n%s", out)
	}
	n := func(v string) int { i, _ := strconv.Atoi(v); return i }
	st.runs++
	st.done += n(m[3])
	st.succeeded += n(m[4])
	st.failed += n(m[5])
	st.errored += n(m[6])
	st.timeout += n(m[7])
	st.status2xx += n(s[1])
	st.status4xx += n(s[3])
	st.status5xx += n(s[4])
	st.gaveUp += len(h2loadGaveUp.FindAllString(out, -1))
	return nil
}

func (st h2loadStats) String() string {
	return fmt.Sprintf("%d runs, %d requests done, %d succeeded, %d errored by h2load's count (requests it queued but did not send after GOAWAY, and its %d give-up reports), %d timeout; %d 2xx, %d 4xx, %d 5xx",
		st.runs, st.done, st.succeeded, st.errored, st.gaveUp, st.timeout, st.status2xx, st.status4xx, st.status5xx)
}

var drainedLine = regexp.MustCompile(`"msg":"drained".*"h2_streams_discarded":(\d+)`)

// discardedStreams sums what every drained worker reported.
func discardedStreams(t *testing.T, logs string) int {
	t.Helper()
	total, lines := 0, 0
	for _, m := range drainedLine.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
		lines++
	}
	if lines == 0 {
		t.Fatal("no worker reported its drain (\"drained\" with h2_streams_discarded) in the gateway log")
	}
	return total
}

func requireH2load(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("h2load")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("h2load not installed; CI must run make integration-deps (Debian package nghttp2-client)")
		}
		t.Skip("h2load not installed: the h2load reload soak needs Debian's nghttp2-client (sudo make integration-deps)")
	}
	return p
}

// TestReloadH2load reloads a gateway, swapping the binary on disk before
// each reload, while h2load sends HTTP/2 requests on a few connections
// with several streams in flight each, so every reload drains connections
// in the middle of requests. h2load does not reconnect after GOAWAY, so
// each reload gets its own h2load run, started before it.
//
// What must hold: no HTTP/2 stream the client sent is discarded by a
// draining worker (each worker logs the streams its final GOAWAY dropped,
// counted from the frames on the wire; the test sums them), no request
// fails at the HTTP level or times out. h2load's own "errored" count is
// reported, not asserted: after any GOAWAY it counts the requests it had
// queued but not sent (nghttp2 refuses to open them, as RFC 9113 says it
// must), and one per client that then gives up.
//
// It runs on an idle machine and, under MCPGATE_RELOAD_SOAK=long (make
// bench), longer and also beside goroutines that keep every CPU busy.
func TestReloadH2load(t *testing.T) {
	h2load := requireH2load(t)
	type run struct {
		name    string
		reloads int
		busy    bool
	}
	runs := []run{{"idle", 5, false}}
	if os.Getenv(soakEnv) == "long" {
		runs = []run{{"idle", 30, false}, {"busy", 30, true}}
	}
	ids := map[string]string{buildA: harness.BuildVariant(t, buildA), buildB: harness.BuildVariant(t, buildB)}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			bin := harness.PrivateBinary(t, harness.Binary(t))
			echo := backends.NewEcho(t, "alpha")
			g := harness.Start(t, harness.Options{Binary: bin, DrainTimeout: "2s", Proxies: []harness.Proxy{
				{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL},
			}})
			if r.busy {
				stop := burnCPUs(runtime.NumCPU())
				defer stop()
			}
			var st h2loadStats
			for i := 1; i <= r.reloads; i++ {
				want := buildA
				if i%2 == 0 {
					want = buildB
				}
				out := h2loadAcrossReload(t, g, h2load, func() {
					harness.InstallBinary(t, ids[want], g.Bin)
					if res := g.Reload(t); res.ExitCode != 0 {
						t.Fatalf("reload %d: exit %d\nstdout:\n%s\nstderr:\n%s", i, res.ExitCode, res.Stdout, res.Stderr)
					}
				})
				if err := st.add(out); err != nil {
					t.Fatal(err)
				}
				if st.timeout != 0 || st.failed != st.errored {
					t.Errorf("reload %d: h2load so far: %v\nthis run:\n%s", i, st, out)
					break
				}
			}
			g.WaitStatus(t, 20*time.Second, "drained", allReady(1))
			discarded := discardedStreams(t, g.Logs())
			t.Logf("h2load across %d binary-swapping reloads (%s): %v; streams discarded by the workers: %d", r.reloads, r.name, st, discarded)
			if discarded != 0 {
				t.Errorf("the draining workers discarded %d HTTP/2 streams h2load had sent before it saw GOAWAY", discarded)
			}
			if st.timeout != 0 || st.failed != st.errored || st.status2xx != st.succeeded || st.succeeded == 0 {
				t.Errorf("h2load: %v\ngateway log (tail):\n%s", st, tail(g.Logs(), 40))
			}
		})
	}
}

// h2loadAcrossReload runs h2load for two seconds (4 connections, 8 streams
// each) and calls reload in the middle, then returns h2load's output.
func h2loadAcrossReload(t *testing.T, g *harness.Gateway, h2load string, reload func()) string {
	t.Helper()
	_, port, err := net.SplitHostPort(g.HTTPSAddr)
	if err != nil {
		t.Fatal(err)
	}
	// Bounded twice: h2load's own -D, and the context if it hangs.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h2load, "--connect-to="+g.HTTPSAddr, "-c", "4", "-m", "8", "-t", "1", "-D", "2",
		"https://alpha.test:"+port+"/h2load")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	time.Sleep(700 * time.Millisecond)
	reload()
	if err := <-waited; err != nil {
		t.Fatalf("h2load: %v\n%s", err, out.String())
	}
	return out.String()
}

// burnCPUs keeps n goroutines spinning until stop is called: a machine
// whose CPUs are all busy, where the worker and h2load get descheduled in
// the middle of a drain.
func burnCPUs(n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			x := 0
			for {
				select {
				case <-done:
					return
				default:
				}
				for i := range 100000 {
					x += i
				}
			}
		})
	}
	return func() { close(done); wg.Wait() }
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
