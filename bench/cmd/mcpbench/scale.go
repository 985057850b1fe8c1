package main

import (
	"fmt"
	"syscall"
	"time"
)

// scaleResult is the many-proxies row (issue 15): one instance with
// ScaleProxies generated proxy files, HTTP/3 on, started, measured idle,
// then reloaded as a whole onto the other build.
type scaleResult struct {
	idleResult
	QUIC bool `json:"quic"`
	// SIGHUP → every proxy served by a ready worker of the new build, and
	// → the old generation drained and gone.
	ReloadAllNewMs  float64 `json:"reload_all_new_ms"`
	ReloadOldGoneMs float64 `json:"reload_old_gone_ms"`
	ReloadOK        bool    `json:"reload_ok"`
	SupervisorSaid  string  `json:"supervisor_reload_duration"`
	// The supervisor after the reload: what it keeps per proxy.
	SupervisorAfterKB int64 `json:"supervisor_rss_after_reload_kb"`
	// IdleCPUPercent is the CPU of the whole instance (supervisor and
	// workers) over scaleIdleWindow with no traffic, in % of one core:
	// what N proxies cost while nobody uses them.
	IdleCPUPercent float64 `json:"idle_cpu_percent"`
}

// scaleIdleWindow is how long the idle CPU of the many-proxies row is
// measured (the CPU figures move in 10 ms steps per process).
const scaleIdleWindow = 10 * time.Second

// scale runs the many-proxies row once: the config generator is
// newGateway (one proxy file per generated host name).
func (b *bench) scale() error {
	n := b.p.ScaleProxies
	g, err := b.newGateway(fmt.Sprintf("mcpgate-scale-%d", n), n)
	if err != nil {
		return err
	}
	defer func() {
		if g.proc != nil { // set by the start in idleOnce
			g.proc.stop(syscall.SIGTERM, 30*time.Second)
		}
	}()
	// Same measurement as the idle row (exec to all ready, one health
	// request per proxy, memory 2 s later), with a longer deadline.
	r, err := b.idleOnce(g)
	s := scaleResult{idleResult: r, QUIC: g.quic}
	if err != nil {
		return err
	}
	logf("scale %d proxies (HTTP/3 %v): serve → all ready in %.2f s; total PSS %.1f MiB (RSS %.1f MiB); supervisor RSS %.1f MiB PSS %.1f MiB; worker median PSS %.2f MiB USS %.2f MiB RSS %.1f MiB",
		n, g.quic, r.StartSeconds, mib(r.TotalPSSKB), mib(r.TotalKB), mib(r.SupervisorKB), mib(r.SupervisorPSS), mib(r.WorkerPSSMed), mib(r.WorkerUSSMed), mib(r.WorkerMedKB))

	// What the idle instance costs: timers, polls, the runtimes' own
	// wake-ups.
	meter := cpuMeter(g.proc.pid(), 0)
	time.Sleep(scaleIdleWindow)
	cpu, window := meter()
	s.IdleCPUPercent = 100 * cpu / window.Seconds()
	logf("scale %d proxies idle: %.1f %% of a core for the supervisor and all workers (%.2f s of CPU in %.1f s)", n, s.IdleCPUPercent, cpu, window.Seconds())

	// A reload of all of them onto the other build (no load: the reload
	// row under load is the 10-proxy one).
	if err := g.install(b.mcpgateBin[1]); err != nil {
		return err
	}
	sent := time.Now()
	if err := syscall.Kill(g.proc.pid(), syscall.SIGHUP); err != nil {
		return err
	}
	deadline := sent.Add(time.Duration(60+n/5) * time.Second)
	for time.Now().Before(deadline) && s.ReloadOldGoneMs == 0 {
		st, err := g.status()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if s.ReloadAllNewMs == 0 && st.serving(n, b.buildIDs[1]) {
			s.ReloadAllNewMs = float64(time.Since(sent).Microseconds()) / 1e3
			if st.LastReload != nil {
				s.SupervisorSaid, s.ReloadOK = st.LastReload.Duration, st.LastReload.OK
			}
		}
		if s.ReloadAllNewMs != 0 && st.allReady(n, b.buildIDs[1]) {
			s.ReloadOldGoneMs = float64(time.Since(sent).Microseconds()) / 1e3
			s.SupervisorAfterKB, _ = rssKB(st.PID)
		}
	}
	b.res.Scale = append(b.res.Scale, s)
	if s.ReloadOldGoneMs == 0 {
		return fmt.Errorf("scale: reload of %d proxies not done after %v; log: %s", n, time.Since(sent).Round(time.Second), tail(g.logPath, 5))
	}
	logf("scale %d proxies: SIGHUP → all %d on the new build in %.0f ms, old generation gone in %.0f ms (supervisor: %s, ok %v); supervisor RSS after %.1f MiB",
		n, n, s.ReloadAllNewMs, s.ReloadOldGoneMs, s.SupervisorSaid, s.ReloadOK, mib(s.SupervisorAfterKB))
	return nil
}
