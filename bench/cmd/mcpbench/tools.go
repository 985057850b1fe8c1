package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// throughputResult is one wrk or h2load run.
type throughputResult struct {
	Tool     string  `json:"tool"`
	RPS      float64 `json:"rps"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"` // socket errors, non-2xx, failed streams
	Protocol string  `json:"protocol,omitempty"`
	P50ms    float64 `json:"closed_loop_p50_ms,omitempty"` // wrk --latency, closed loop: not the latency figure
	P99ms    float64 `json:"closed_loop_p99_ms,omitempty"`
	Command  string  `json:"command"`
	// The contender's server processes (not the backend), user + system,
	// over the measured window, per completed response (RPS × window).
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	CPUWindowSeconds float64 `json:"cpu_window_seconds"`
	CPUPerRespUs     float64 `json:"server_cpu_us_per_response"`
}

// wrkCPUSkip: the first part of a wrk run, while its connections are made
// (TLS handshakes), is left out of the CPU per response.
const wrkCPUSkip = 500 * time.Millisecond

// setCPU records the server CPU of a run: cpu seconds over a window of
// the tool's measured period, divided by the responses completed in it at
// the run's average rate.
func (r *throughputResult) setCPU(cpu float64, window time.Duration) {
	r.ServerCPUSeconds, r.CPUWindowSeconds = cpu, window.Seconds()
	if n := r.RPS * window.Seconds(); n > 0 {
		r.CPUPerRespUs = cpu * 1e6 / n
	}
}

func runTool(timeout time.Duration, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"-c", loadCore}, args...)
	cmd := exec.CommandContext(ctx, "taskset", full...)
	out, err := cmd.CombinedOutput()
	return string(out), "taskset " + strings.Join(full, " "), err
}

var (
	reWrkRPS   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reWrkTotal = regexp.MustCompile(`(\d+) requests in`)
	reWrkSock  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reWrkNon2  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reWrkPct   = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)

	reH2Fin   = regexp.MustCompile(`finished in [0-9.]+\w+, ([0-9.]+) req/s`)
	reH2Req   = regexp.MustCompile(`requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2Proto = regexp.MustCompile(`Application protocol: (\S+)`)
	reH2Codes = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// wrk: HTTP/1.1 keep-alive, one thread on the load core.
func (b *bench) wrk(url, tok string, conns int, dur time.Duration) (throughputResult, error) {
	args := []string{"wrk", "-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(dur.Seconds())), "--latency", "--timeout", "10s"}
	if tok != "" {
		args = append(args, "-H", "Authorization: Bearer "+tok)
	}
	args = append(args, url)
	out, cmdline, err := runTool(dur+30*time.Second, args...)
	r := throughputResult{Tool: "wrk", Protocol: "http/1.1", Command: redact(cmdline, tok)}
	if err != nil {
		return r, fmt.Errorf("%s: %v\n%s", r.Command, err, out)
	}
	m := reWrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output not understood:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reWrkTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reWrkSock.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	if m := reWrkNon2.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	for _, m := range reWrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if m[1] == "50" {
			r.P50ms = v
		} else {
			r.P99ms = v
		}
	}
	return r, nil
}

// h2load: HTTP/2 (h2 over TLS, or h2c prior knowledge for http://), one
// thread on the load core, clients × streams in flight.
func (b *bench) h2load(url, tok string, clients, streams int, warm, dur time.Duration) (throughputResult, error) {
	args := []string{"h2load", "-t1", fmt.Sprintf("-c%d", clients), fmt.Sprintf("-m%d", streams),
		fmt.Sprintf("-D%d", int(dur.Seconds())), fmt.Sprintf("--warm-up-time=%d", int(warm.Seconds()))}
	if tok != "" {
		args = append(args, "-H", "authorization: Bearer "+tok)
	}
	args = append(args, url)
	out, cmdline, err := runTool(warm+dur+30*time.Second, args...)
	r := throughputResult{Tool: "h2load", Command: redact(cmdline, tok)}
	if err != nil {
		return r, fmt.Errorf("%s: %v\n%s", r.Command, err, out)
	}
	m := reH2Fin.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load output not understood:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reH2Req.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[3], 10, 64)
		for _, s := range m[4:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	if m := reH2Codes.FindStringSubmatch(out); m != nil {
		for _, s := range m[2:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	if m := reH2Proto.FindStringSubmatch(out); m != nil {
		r.Protocol = m[1]
	}
	return r, nil
}

func redact(s, tok string) string {
	if tok == "" {
		return s
	}
	return strings.ReplaceAll(s, tok, "$TOKEN")
}

func toolVersion(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
