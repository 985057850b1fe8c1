package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// idleResult is one start of an instance with N proxies, no traffic but
// one health request per proxy.
type idleResult struct {
	Proxies      int     `json:"proxies"`
	StartSeconds float64 `json:"start_seconds"` // from exec to every worker ready
	SupervisorKB int64   `json:"supervisor_kb"`
	WorkerKB     []int64 `json:"worker_kb"`
	WorkerMedKB  int64   `json:"worker_median_kb"`
	WorkerMaxKB  int64   `json:"worker_max_kb"`
	TotalKB      int64   `json:"total_kb"`
	// From smaps_rollup (RSS counts the shared binary once per worker).
	Workers       []memKB `json:"workers_smaps"`
	WorkerPSSMed  int64   `json:"worker_pss_median_kb"`
	WorkerUSSMed  int64   `json:"worker_uss_median_kb"`
	SupervisorPSS int64   `json:"supervisor_pss_kb"`
	TotalPSSKB    int64   `json:"total_pss_kb"`
}

// reloadResult is one reload under load.
type reloadResult struct {
	Proxies         int        `json:"proxies"`
	From            string     `json:"from_build"`
	To              string     `json:"to_build"`
	SighupToAllNew  float64    `json:"sighup_to_all_new_ms"`  // every proxy served by a ready worker on the new build, none by an old one
	OldGone         float64    `json:"sighup_to_old_gone_ms"` // and the old workers have drained and exited
	PollInterval    float64    `json:"status_poll_ms"`        // resolution of the figure above
	SupervisorSaid  string     `json:"supervisor_reload_duration"`
	Load            *mixedLoad `json:"load"`
	LoadSeconds     float64    `json:"load_seconds"`
	RequestsPerSec  float64    `json:"load_rps"`
	ReloadSucceeded bool       `json:"reload_ok"`
}

func (b *bench) newGateway(name string, n int) (*gateway, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("p%03d.bench.test", i+1)
	}
	root := filepath.Join(b.work, name)
	g := &gateway{name: name, dir: filepath.Join(root, "conf"), state: filepath.Join(root, "state"),
		bin: filepath.Join(root, "mcpgate"), port: port, hosts: hosts, logPath: filepath.Join(b.work, name+".log"),
		backend: b.backendURL(), certFile: b.pki.Cert, keyFile: b.pki.Key,
		quic: true} // the idle figure is with OAuth and QUIC on
	if err := g.writeConfig(); err != nil {
		return nil, err
	}
	if err := linkOrCopy(b.mcpgateBin[0], g.bin); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *gateway) target(i int) (target, error) {
	host := fmt.Sprintf("%s:%d", g.hosts[i], g.port)
	tok, err := g.mint(host)
	if err != nil {
		return target{}, err
	}
	return target{name: g.hosts[i], tls: true, host: host, dial: g.addr(), token: tok}, nil
}

func (b *bench) idleAndReload(want func(string) bool) error {
	for _, n := range b.p.ProxyCounts {
		runs := b.p.IdleRuns
		if n > 10 {
			runs = b.p.IdleRunsLarge
		}
		doReload := want("reload") && n == b.p.ReloadProxies
		if !want("idle") {
			runs = 0
		}
		if doReload {
			runs = max(runs, 1)
		}
		for run := range runs {
			g, err := b.newGateway(fmt.Sprintf("mcpgate-%d-%d", n, run+1), n)
			if err != nil {
				return err
			}
			r, err := b.idleOnce(g)
			if err != nil {
				if g.proc != nil {
					g.proc.stop(syscall.SIGTERM, 10*time.Second)
				}
				return err
			}
			if want("idle") {
				b.res.Idle = append(b.res.Idle, r)
				logf("idle %3d proxies: up in %.1fs; supervisor RSS %.1f MiB, worker median RSS %.1f MiB (max %.1f) PSS %.2f MiB USS %.2f MiB; total RSS %.1f MiB, PSS %.1f MiB",
					n, r.StartSeconds, mib(r.SupervisorKB), mib(r.WorkerMedKB), mib(r.WorkerMaxKB), mib(r.WorkerPSSMed), mib(r.WorkerUSSMed), mib(r.TotalKB), mib(r.TotalPSSKB))
			}
			if doReload && run == runs-1 {
				err = b.reloads(g)
			}
			g.proc.stop(syscall.SIGTERM, 10*time.Second)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

func (b *bench) idleOnce(g *gateway) (idleResult, error) {
	t0 := time.Now()
	if err := g.start(b.reg); err != nil {
		return idleResult{}, err
	}
	st, err := g.waitReady(time.Duration(30+len(g.hosts)) * time.Second)
	if err != nil {
		return idleResult{}, err
	}
	r := idleResult{Proxies: len(g.hosts), StartSeconds: time.Since(t0).Seconds()}
	// One health request per proxy: every worker has done a TLS handshake
	// and served something, as a real idle worker has.
	for i := range g.hosts {
		t, err := g.target(i)
		if err != nil {
			return r, err
		}
		tr := b.transport(t, false)
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, t.baseURL()+"/.well-known/mcpgate/health", nil)
		err = do(c, req)
		tr.CloseIdleConnections()
		if err != nil {
			return r, fmt.Errorf("health of %s: %w", t.host, err)
		}
	}
	time.Sleep(2 * time.Second)
	if err := r.measure(st); err != nil {
		return r, err
	}
	return r, nil
}

// measure fills in the memory of the supervisor and every worker of st.
func (r *idleResult) measure(st *gwStatus) error {
	sup, err := smapsKB(st.PID)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	r.SupervisorKB, r.SupervisorPSS = sup.RSS, sup.PSS
	r.TotalKB, r.TotalPSSKB = sup.RSS, sup.PSS
	var pss, uss []int64
	for _, w := range st.Workers {
		m, err := smapsKB(w.PID)
		if err != nil {
			return fmt.Errorf("worker %s: %w", w.Proxy, err)
		}
		r.Workers = append(r.Workers, m)
		r.WorkerKB = append(r.WorkerKB, m.RSS)
		pss, uss = append(pss, m.PSS), append(uss, m.USS)
		r.TotalKB += m.RSS
		r.TotalPSSKB += m.PSS
	}
	if len(r.WorkerKB) == 0 {
		return fmt.Errorf("no workers")
	}
	s := slices.Clone(r.WorkerKB)
	slices.Sort(s)
	r.WorkerMedKB, r.WorkerMaxKB = s[len(s)/2], s[len(s)-1]
	slices.Sort(pss)
	slices.Sort(uss)
	r.WorkerPSSMed, r.WorkerUSSMed = pss[len(pss)/2], uss[len(uss)/2]
	return nil
}

// reloads: with a mixed load on the first proxy, replace the binary on
// disk with the other build, send SIGHUP to the supervisor, and poll
// `mcpgate status --json` until every proxy has exactly one worker, ready,
// on the new build id. The load goes on for two more seconds; then every
// failed request is counted.
func (b *bench) reloads(g *gateway) error {
	t, err := g.target(0)
	if err != nil {
		return err
	}
	cur := 0
	for run := range b.p.ReloadRuns {
		next := 1 - cur
		if err := g.install(b.mcpgateBin[next]); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		loadDone := make(chan *mixedLoad, 1)
		t0 := time.Now()
		go func() { loadDone <- b.runMixed(ctx, t, b.p.ReloadWorkers, 2*time.Millisecond) }()
		time.Sleep(time.Second)

		r := reloadResult{Proxies: len(g.hosts), From: b.buildIDs[cur], To: b.buildIDs[next]}
		sent := time.Now()
		if err := syscall.Kill(g.proc.pid(), syscall.SIGHUP); err != nil {
			cancel()
			<-loadDone
			return err
		}
		var polls int
		deadline := sent.Add(60 * time.Second)
		for time.Now().Before(deadline) && r.OldGone == 0 {
			st, err := g.status()
			polls++
			if err != nil {
				continue
			}
			if r.SighupToAllNew == 0 && st.serving(len(g.hosts), b.buildIDs[next]) {
				r.SighupToAllNew = float64(time.Since(sent).Microseconds()) / 1e3
				if st.LastReload != nil {
					r.SupervisorSaid = st.LastReload.Duration
					r.ReloadSucceeded = st.LastReload.OK
				}
			}
			if r.SighupToAllNew != 0 && st.allReady(len(g.hosts), b.buildIDs[next]) {
				r.OldGone = float64(time.Since(sent).Microseconds()) / 1e3
			}
		}
		r.PollInterval = float64(time.Since(sent).Microseconds()) / 1e3 / float64(polls)
		time.Sleep(2 * time.Second)
		cancel()
		r.Load = <-loadDone
		r.LoadSeconds = time.Since(t0).Seconds()
		r.RequestsPerSec = float64(r.Load.Requests) / r.LoadSeconds
		b.res.Reload = append(b.res.Reload, r)
		if r.SighupToAllNew == 0 {
			return fmt.Errorf("reload %d: workers not all on build %s after 60 s; log: %s", run+1, b.buildIDs[next], tail(g.logPath, 5))
		}
		logf("reload %d (%d proxies, %s → %s): SIGHUP → all workers new in %.0f ms, old ones gone in %.0f ms (status polled every %.0f ms; supervisor: %s); load %d requests (%.0f/s), %d failed %v",
			run+1, r.Proxies, r.From, r.To, r.SighupToAllNew, r.OldGone, r.PollInterval, r.SupervisorSaid, r.Load.Requests, r.RequestsPerSec, r.Load.Failed, r.Load.Errors)
		cur = next
		time.Sleep(time.Second) // old workers finish draining
	}
	return nil
}
