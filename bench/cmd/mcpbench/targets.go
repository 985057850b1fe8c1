package main

import (
	"fmt"
	"math"
	"strings"
)

// Issue 15's targets: ratios against contenders measured in the same run.

// Metric keys of the server CPU figures (µs of the contender's server
// processes, user + system, per response or per connection).
const (
	mCPUh1   = "h1_cpu_us_per_response"
	mCPUh2   = "h2_cpu_us_per_response"
	mCPUConn = "newconn_cpu_us_per_connection"
	// mcpgate's supervisor alone (accept, peek, hand-off), part of mCPUConn.
	mCPUConnSup = "newconn_supervisor_cpu_us_per_connection"
)

// cpuCols are the columns of the server CPU table.
var cpuCols = []string{"direct", "mcpgate", noLogCol, "nginx", "caddy", "go-proxy", h1FloorCol}

var cpuColNames = map[string]string{"direct": "direct", "direct-tls": "direct (TLS)", "mcpgate": "mcpgate", noLogCol: "mcpgate, access log off",
	"nginx": "nginx", "caddy": "Caddy", "go-proxy": "go-proxy", h1FloorCol: "h1-floor"}

// evaluate15 fills Targets15.
func (r *results) evaluate15() {
	r.Targets15 = nil
	addT := func(name, measured string, pass *bool) {
		r.Targets15 = append(r.Targets15, targetResult{Target: name, Measured: measured, Pass: pass})
	}
	us := func(v float64) string { return fmtNum(v, 1) + " µs" }
	refs := func(key string, digits int, cols ...string) string {
		var parts []string
		for _, c := range cols {
			if v := r.med(key, c); !math.IsNaN(v) {
				parts = append(parts, fmt.Sprintf("%s %s µs", cpuColNames[c], fmtNum(v, digits)))
			}
		}
		if len(parts) == 0 {
			return ""
		}
		return "; " + strings.Join(parts, ", ")
	}
	for _, k := range []struct {
		key, label string
		max        float64
	}{{mCPUh1, "HTTP/1.1 keep-alive (wrk)", 1.2}, {mCPUh2, "HTTP/2 (h2load)", 1.6}} {
		m, n := r.med(k.key, "mcpgate"), r.med(k.key, "nginx")
		var pass *bool
		measured := "not measured"
		if !math.IsNaN(m) && !math.IsNaN(n) && n > 0 {
			pass = boolp(m/n <= k.max)
			measured = fmt.Sprintf("**×%s** (mcpgate %s, nginx %s per response%s)", ratio(m, n), us(m), us(n), refs(k.key, 1, "caddy", "go-proxy", h1FloorCol, "direct"))
		}
		addT(fmt.Sprintf("server CPU per small response, %s, mcpgate / nginx ≤ %.1f×", k.label, k.max), measured, pass)
	}
	for _, proto := range []string{"h1", "h2"} {
		key := func(p string) string { return "lat_" + proto + "_" + p + "_us" }
		m50, d50 := r.med(key("p50"), "mcpgate"), r.med(key("p50"), "direct")
		m99, d99 := r.med(key("p99"), "mcpgate"), r.med(key("p99"), "direct")
		if math.IsNaN(m50) || math.IsNaN(d50) || math.IsNaN(m99) || math.IsNaN(d99) {
			continue
		}
		a50, a99 := m50-d50, m99-d99
		measured := fmt.Sprintf("**p50 %+.0f µs, p99 %+.0f µs** (mcpgate %.0f / %.0f µs − direct %.0f / %.0f µs)", a50, a99, m50, m99, d50, d99)
		if n50, n99 := r.med(key("p50"), "nginx"), r.med(key("p99"), "nginx"); !math.IsNaN(n50) && !math.IsNaN(n99) {
			measured += fmt.Sprintf("; nginx adds p50 %+.0f µs, p99 %+.0f µs", n50-d50, n99-d99)
		}
		addT(fmt.Sprintf("added latency over direct, %s at %d req/s: p50 ≤ 80 µs, p99 ≤ 250 µs", map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2"}[proto], r.b.p.Rate),
			measured, boolp(a50 <= 80 && a99 <= 250))
	}
	{
		m, n := r.med(mCPUConn, "mcpgate"), r.med(mCPUConn, "nginx")
		var pass *bool
		measured := "not measured"
		if !math.IsNaN(m) && !math.IsNaN(n) && n > 0 {
			pass = boolp(m/n <= 1.05)
			sup := ""
			if s := r.med(mCPUConnSup, "mcpgate"); !math.IsNaN(s) {
				sup = ", " + fmtNum(s, 0) + " µs of it the supervisor's"
			}
			measured = fmt.Sprintf("**×%s** (mcpgate %s%s, nginx %s per connection%s)", ratio(m, n), fmtNum(m, 0)+" µs", sup, fmtNum(n, 0)+" µs", refs(mCPUConn, 0, "caddy", "go-proxy", "direct-tls"))
		}
		addT("server CPU per new TLS connection (full handshake + 1 request), mcpgate / nginx ≤ 1.05×", measured, pass)
	}
	{
		n := 0
		for _, c := range r.idleCounts() {
			if c <= 10 {
				n = c
			}
		}
		var pass *bool
		measured := "not measured"
		if n > 0 {
			pss := r.idleMedian(n, func(i idleResult) float64 { return mib(i.WorkerPSSMed) })
			uss := r.idleMedian(n, func(i idleResult) float64 { return mib(i.WorkerUSSMed) })
			rss := r.idleMedian(n, func(i idleResult) float64 { return mib(i.WorkerMedKB) })
			pass = boolp(pss <= 3 && uss <= 2)
			measured = fmt.Sprintf("**PSS %.2f MiB, USS %.2f MiB** (RSS %.1f MiB; %d proxies, median worker)", pss, uss, rss, n)
		}
		addT("idle worker (OAuth, QUIC on): PSS ≤ 3 MiB, USS ≤ 2 MiB", measured, pass)
	}
	for _, k := range []struct{ pss, rss, label string }{
		{mSSEh1PSS, mSSEh1RSS, fmt.Sprintf("%s streams over HTTP/1.1 (one TLS connection each)", fmtNum(float64(r.b.p.SSEStreams), 0))},
		{mSSEh2PSS, mSSEh2RSS, fmt.Sprintf("%s streams over HTTP/2 (%d TLS connections × %d)", fmtNum(float64(r.b.p.SSEH2Conns*r.b.p.SSEH2Streams), 0), r.b.p.SSEH2Conns, r.b.p.SSEH2Streams)},
	} {
		m := r.med(k.pss, "mcpgate")
		var pass *bool
		measured := "not measured"
		if !math.IsNaN(m) {
			pass = boolp(m <= 32)
			measured = fmt.Sprintf("**mcpgate PSS %s KiB** (RSS %s KiB)", fmtNum(m, 1), fmtNum(r.med(k.rss, "mcpgate"), 1))
			if n := r.med(k.pss, "nginx"); !math.IsNaN(n) {
				measured += fmt.Sprintf("; nginx PSS %s KiB (RSS %s KiB), ×%s", fmtNum(n, 1), fmtNum(r.med(k.rss, "nginx"), 1), ratio(m, n))
			}
			if c := r.med(k.pss, "caddy"); !math.IsNaN(c) {
				measured += fmt.Sprintf("; Caddy PSS %s KiB", fmtNum(c, 1))
			}
		}
		addT("memory per open SSE stream, "+k.label+": PSS growth ≤ 32 KiB", measured, pass)
	}
	if len(r.Scale) > 0 {
		sc := r.Scale[len(r.Scale)-1]
		reload := "not done"
		if sc.ReloadAllNewMs != 0 {
			reload = fmt.Sprintf("%.1f s to all new, %.1f s to the old generation gone", sc.ReloadAllNewMs/1e3, sc.ReloadOldGoneMs/1e3)
		}
		addT(fmt.Sprintf("%d proxies (HTTP/3 on): serve → all ready ≤ 5 s; total PSS ≤ 1.5 GiB", sc.Proxies),
			fmt.Sprintf("**%.2f s; %.0f MiB** (supervisor RSS %.1f MiB; reload of all: %s)", sc.StartSeconds, mib(sc.TotalPSSKB), mib(sc.SupervisorKB), reload),
			boolp(sc.StartSeconds <= 5 && mib(sc.TotalPSSKB) <= 1536))
	} else {
		addT("500 proxies (HTTP/3 on): serve → all ready ≤ 5 s; total PSS ≤ 1.5 GiB", "not measured in this run (`make bench` or `make bench-scale`)", nil)
	}
	{
		on, off := r.med(mCPUh1, "mcpgate"), r.med(mCPUh1, noLogCol)
		measured := "not measured"
		if !math.IsNaN(on) && !math.IsNaN(off) {
			measured = fmt.Sprintf("mcpgate HTTP/1.1 CPU per response with the access log %s, with `[server] access_log = false` %s: the log costs **%+.1f µs** (%+.0f%%); nginx's access log was on (combined format, to a file) in every nginx row",
				us(on), us(off), on-off, 100*(on-off)/off)
		}
		addT("access log cost (no target: reported beside the CPU rows, which keep it on)", measured, nil)
	}
}

// cpuMarkdown is the table of server CPU per response and per connection,
// every contender (empty when not measured).
func (r *results) cpuMarkdown() string {
	var rows []metricRow
	for _, row := range []metricRow{
		{mCPUh1, "per response, HTTP/1.1 keep-alive (wrk)", "µs", false, 1},
		{mCPUh2, "per response, HTTP/2 (h2load)", "µs", false, 1},
		{mCPUConn, "per new TLS connection, handshake + 1 request", "µs", false, 0},
	} {
		if _, ok := r.Metrics[row.key]; ok {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("\n## Server CPU\n\n")
	w("User + system CPU time from `/proc/PID/stat` of every process of the contender (mcpgate: the supervisor and its workers; nginx: master and worker; Caddy, go-proxy, the backend for *direct*: one process), over the measured window, divided by the responses (or connections) completed in it. ")
	w("The backend's CPU is not counted for the proxies. wrk: the first %v of each run (its connections' handshakes) is left out, responses in the window = requests/s × window; h2load: the window starts after its warm-up. ", min(wrkCPUSkip, secs(float64(r.b.p.ThroughputSec))/4))
	w("USER_HZ is %d, so each process's figure moves in 10 ms steps. Every proxy writes an access log; *mcpgate, access log off* is the same instance with `[server] access_log = false`.\n\n", clkTck)
	w("| server CPU (µs) |")
	for _, c := range cpuCols {
		w(" %s |", cpuColNames[c])
	}
	w(" mcpgate/nginx | mcpgate/Caddy | mcpgate/go-proxy |\n|---|")
	for range cpuCols {
		w("--:|")
	}
	w("--:|--:|--:|\n")
	for _, row := range rows {
		w("| %s |", row.label)
		for _, c := range cpuCols {
			if c == "direct" && row.key == mCPUConn {
				c = "direct-tls"
			}
			w(" %s |", r.cell(row.key, c, row.digits))
		}
		m := r.med(row.key, "mcpgate")
		w(" %s | %s | %s |\n", ratio(m, r.med(row.key, "nginx")), ratio(m, r.med(row.key, "caddy")), ratio(m, r.med(row.key, "go-proxy")))
	}
	w("\n*direct* is the backend alone: plain HTTP/1.1 and h2c for the response rows, its TLS listener for the connection row.\n")
	if f, n := r.med(mCPUh1, h1FloorCol), r.med(mCPUh1, "nginx"); !math.IsNaN(f) && !math.IsNaN(n) {
		w("\n*h1-floor* is an experiment, not a contender (`bench/cmd/h1floor`, HTTP/1.1 only): Go's TLS and net/http's request and response parsers, but neither net/http's server nor http.Transport (one goroutine per connection, no per-request context or background read, one write per response), and none of mcpgate's own work (no bearer check, access log or header policy). It spends ×%s nginx's CPU per HTTP/1.1 response: what a worker serving HTTP/1.1 itself could approach ([bench/README.md](../README.md#what-a-server-of-our-own-would-save-issue-15-2026-12-08)).\n", ratio(f, n))
	}
	return b.String()
}
