package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestReloadBadConfig: a reload of a broken configuration exits 1 with
// every error as file:line: key: message, changes nothing (same workers,
// same config hashes, the broken edit of a served proxy not applied) and
// disturbs no request, while status reports the rejection. Fixing the
// files and reloading again then works.
func TestReloadBadConfig(t *testing.T) {
	t.Parallel()
	alphaEcho := backends.NewEcho(t, "alpha")
	betaEcho := backends.NewEcho(t, "beta")
	otherEcho := backends.NewEcho(t, "other")
	alpha := harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alphaEcho.URL}
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		alpha,
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: betaEcho.URL},
	}})
	before := g.Status(t)
	hashes := map[string]string{}
	pids := map[string]int{}
	for _, w := range before.Workers {
		hashes[w.Proxy], pids[w.Proxy] = w.ConfigHash, w.PID
	}
	if len(hashes) != 2 || hashes["alpha"] == "" || hashes["beta"] == "" {
		t.Fatalf("status before: %+v, want alpha and beta with config hashes", before.Workers)
	}

	// alpha's file now points elsewhere and has an error (lines: hostnames
	// 1, target 2, keys 3); a new proxy file has an error of its own.
	g.WriteProxy(t, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: otherEcho.URL, Keys: "bogus_key = 1"})
	g.WriteProxy(t, harness.Proxy{Name: "gamma", Hostnames: []string{"gamma.test"}, Target: "ftp://127.0.0.1:21"})

	// Requests on kept and on new connections, before, during and after
	// the rejected reload.
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok       int
		failures []string
	)
	for _, pc := range protoCases {
		for _, host := range []string{"alpha", "beta"} {
			for _, fresh := range []bool{false, true} {
				c := g.Client(harness.ClientConfig{HTTP1Only: pc.cfg.HTTP1Only, DisableKeepAlives: fresh})
				tg := loadTarget{host + ".test", host}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 2000; i++ { // bounded; stopped long before
						select {
						case <-stop:
							return
						default:
						}
						method := []string{"GET", "POST"}[i%2]
						err := loadRequest(c, pc, tg, method, fmt.Sprintf("/bad-config/%d", i))
						mu.Lock()
						if err != nil {
							failures = append(failures, fmt.Sprintf("%s %s %s fresh=%v: %v", pc.name, method, tg.host, fresh, err))
						} else {
							ok++
						}
						mu.Unlock()
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
		}
	}
	res := g.Reload(t)
	time.Sleep(200 * time.Millisecond) // traffic after the verdict too
	close(stop)
	wg.Wait()

	if res.ExitCode != 1 {
		t.Errorf("reload of a broken config: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	for _, want := range []string{`(^|/)alpha\.toml:3: bogus_key: \S`, `(^|/)gamma\.toml:2: target: \S`} {
		if !regexp.MustCompile(`(?m)` + want).MatchString(res.Stderr) {
			t.Errorf("reload stderr lacks a line matching %s:\n%s", want, res.Stderr)
		}
	}
	if strings.Contains(res.Stdout, "reload ok") {
		t.Errorf("reload stdout claims success: %q", res.Stdout)
	}
	mu.Lock()
	t.Logf("requests during the rejected reload: %d ok, %d failed", ok, len(failures))
	if len(failures) > 0 {
		t.Errorf("%d requests failed around a rejected reload:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	if ok < 16 {
		t.Errorf("only %d requests succeeded; the loops did not run", ok)
	}
	mu.Unlock()

	// Nothing changed: same workers, same config, the old alpha backend.
	after := g.Status(t)
	for _, w := range after.Workers {
		if w.PID != pids[w.Proxy] || w.ConfigHash != hashes[w.Proxy] || w.State != "ready" {
			t.Errorf("status after the rejected reload: %s pid %d hash %s state %s; want pid %d hash %s ready",
				w.Proxy, w.PID, w.ConfigHash, w.State, pids[w.Proxy], hashes[w.Proxy])
		}
	}
	if len(after.Workers) != 2 {
		t.Errorf("status after the rejected reload: %d workers, want 2: %+v", len(after.Workers), after.Workers)
	}
	lr := after.LastReload
	if lr == nil || lr.OK || len(lr.Errors) < 2 {
		t.Errorf("status last_reload = %+v, want not ok with the config errors", lr)
	} else if !slices.ContainsFunc(lr.Errors, func(e string) bool { return strings.Contains(e, "alpha.toml:3: bogus_key:") }) {
		t.Errorf("status last_reload errors %q lack alpha.toml:3: bogus_key", lr.Errors)
	}
	if h := health(t, g, "alpha.test"); h.PID != pids["alpha"] || h.ConfigHash != hashes["alpha"] {
		t.Errorf("health of alpha: pid %d hash %s, want the old %d %s", h.PID, h.ConfigHash, pids["alpha"], hashes["alpha"])
	}
	if _, er := getEcho(t, g.HTTP2Client(), "https://alpha.test/after", nil); er.Backend != "alpha" {
		t.Errorf("alpha.test reached backend %q after the rejected reload, want the old alpha", er.Backend)
	}
	if txt := g.StatusText(t); !strings.Contains(txt, "rejected") {
		t.Errorf("status text does not report the rejected reload:\n%s", txt)
	}

	// Fixed: the next reload applies alpha's new target.
	g.WriteProxy(t, harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: otherEcho.URL})
	g.RemoveProxy(t, "gamma")
	if res := g.Reload(t); res.ExitCode != 0 {
		t.Fatalf("reload of the fixed config: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if _, er := getEcho(t, g.HTTP2Client(), "https://alpha.test/fixed", nil); er.Backend != "other" {
		t.Errorf("after the fixed reload alpha.test reached backend %q, want other", er.Backend)
	}
	if h := health(t, g, "alpha.test"); h.ConfigHash == hashes["alpha"] {
		t.Errorf("alpha's config hash %s did not change with its target", h.ConfigHash)
	}
	if lr := g.Status(t).LastReload; lr == nil || !lr.OK || len(lr.Errors) != 0 {
		t.Errorf("status last_reload after the fixed reload = %+v, want ok", lr)
	}
}

// TestReloadAddRemoveProxy: a proxy file added and reloaded serves its
// hostname; removed and reloaded, its hostname is refused (TLS alert
// unrecognized_name) and its worker exits, while the others keep serving.
// `mcpgate status` (text) lists each proxy.
func TestReloadAddRemoveProxy(t *testing.T) {
	t.Parallel()
	alphaEcho := backends.NewEcho(t, "alpha")
	gammaEcho := backends.NewEcho(t, "gamma")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alphaEcho.URL},
	}})
	kept := g.HTTP2Client() // one connection to alpha kept across the reloads
	getEcho(t, kept, "https://alpha.test/before", nil)
	if refused := handshake(g, "gamma.test"); refused == nil {
		t.Fatal("gamma.test served before its proxy was added")
	}

	g.WriteProxy(t, harness.Proxy{Name: "gamma", Hostnames: []string{"gamma.test"}, Target: gammaEcho.URL})
	res := g.Reload(t)
	if res.ExitCode != 0 {
		t.Fatalf("reload adding gamma: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if m := reloadOK.FindStringSubmatch(res.Stdout); m == nil || m[1] != "2" {
		t.Errorf("reload adding gamma: stdout %q, want %q with 2 proxies", res.Stdout, reloadOK)
	}
	if h := health(t, g, "gamma.test"); h.Proxy != "gamma" {
		t.Errorf("gamma.test health names proxy %q", h.Proxy)
	}
	for _, pc := range protoCases {
		if _, er := getEcho(t, g.Client(pc.cfg), "https://gamma.test/added", nil); er.Backend != "gamma" {
			t.Errorf("%s: gamma.test reached backend %q", pc.name, er.Backend)
		}
	}
	gammaPID := health(t, g, "gamma.test").PID
	st := g.WaitStatus(t, 15*time.Second, "alpha and gamma ready", func(st harness.Status) bool {
		return len(st.Workers) == 2 && len(st.WorkersOf("gamma")) == 1 && st.WorkersOf("gamma")[0].State == "ready"
	})
	txt := g.StatusText(t)
	for _, w := range st.Workers {
		if !regexp.MustCompile(`(?m)^` + w.Proxy + `\s+` + fmt.Sprint(w.PID) + `\s+ready\s`).MatchString(txt) {
			t.Errorf("status text has no line for %s (pid %d, ready):\n%s", w.Proxy, w.PID, txt)
		}
	}
	t.Logf("status:\n%s", txt)

	g.RemoveProxy(t, "gamma")
	res = g.Reload(t)
	if res.ExitCode != 0 {
		t.Fatalf("reload removing gamma: exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if m := reloadOK.FindStringSubmatch(res.Stdout); m == nil || m[1] != "1" || !strings.Contains(res.Stdout, "removed: gamma") {
		t.Errorf("reload removing gamma: stdout %q, want %q with 1 proxy and \"removed: gamma\"", res.Stdout, reloadOK)
	}
	if err := handshake(g, "gamma.test"); err == nil {
		t.Errorf("gamma.test still accepted a TLS handshake after its proxy was removed")
	} else if !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("gamma.test after removal: %v, want a TLS unrecognized_name alert", err)
	}
	getEcho(t, kept, "https://alpha.test/after-kept", nil)
	getEcho(t, g.HTTP1Client(), "https://alpha.test/after-new", nil)
	deadline := time.Now().Add(15 * time.Second)
	for harness.ProcessAlive(gammaPID) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if harness.ProcessAlive(gammaPID) {
		t.Errorf("gamma's worker %d still running 15s after gamma was removed", gammaPID)
	}
	g.WaitStatus(t, 15*time.Second, "only alpha", func(st harness.Status) bool {
		return len(st.Workers) == 1 && st.Workers[0].Proxy == "alpha" && st.Workers[0].State == "ready"
	})
	if txt := g.StatusText(t); strings.Contains(txt, "gamma") || !strings.Contains(txt, "alpha") {
		t.Errorf("status text after removing gamma:\n%s", txt)
	}
}

// handshake does a TLS handshake with SNI host and returns its error.
func handshake(g *harness.Gateway, host string) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: g.TLSConfig(host, "h2", "http/1.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", g.HTTPSAddr)
	if err == nil {
		conn.Close()
	}
	return err
}

// TestReloadBackToBack: two reloads requested back to back, the config
// changed between them, are both applied; the final state is the last
// config. Once with two concurrent `mcpgate reload` commands (both must
// succeed), once with two SIGHUPs.
func TestReloadBackToBack(t *testing.T) {
	t.Parallel()
	echo := map[string]*backends.Echo{}
	for _, n := range []string{"alpha", "gamma1", "gamma2", "delta", "epsilon"} {
		echo[n] = backends.NewEcho(t, n)
	}
	proxy := func(name, backend string) harness.Proxy {
		return harness.Proxy{Name: name, Hostnames: []string{name + ".test"}, Target: echo[backend].URL}
	}
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{proxy("alpha", "alpha")}})

	// servesFrom polls until host reaches backend (bounded).
	servesFrom := func(t *testing.T, host, backend string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		var last string
		for time.Now().Before(deadline) {
			err := loadRequest(g.Client(harness.ClientConfig{DisableKeepAlives: true}), protoCases[0],
				loadTarget{host, backend}, "GET", "/back-to-back")
			if err == nil {
				return
			}
			last = err.Error()
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("%s does not reach backend %s within 15s: %s", host, backend, last)
	}
	refused := func(t *testing.T, host string) {
		t.Helper()
		if err := handshake(g, host); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("%s: handshake error %v, want unrecognized_name", host, err)
		}
	}
	proxiesAre := func(names ...string) func(harness.Status) bool {
		return func(st harness.Status) bool {
			var got []string
			for _, w := range st.Workers {
				if w.State != "ready" {
					return false
				}
				got = append(got, w.Proxy)
			}
			slices.Sort(got)
			return slices.Equal(got, names)
		}
	}

	t.Run("commands", func(t *testing.T) {
		g.WriteProxy(t, proxy("gamma", "gamma1"))
		type outcome struct {
			res harness.Result
			err error
		}
		first := make(chan outcome, 1)
		go func() {
			res, err := harness.Exec(g.Bin, 2*time.Minute, "reload", "--config-dir", g.Dir)
			first <- outcome{res, err}
		}()
		// Without waiting for the first: change gamma, add delta, reload.
		g.WriteProxy(t, proxy("gamma", "gamma2"))
		g.WriteProxy(t, proxy("delta", "delta"))
		second := g.Reload(t)
		o := <-first
		if o.err != nil {
			t.Fatalf("reload 1: %v", o.err)
		}
		for i, res := range []harness.Result{o.res, second} {
			if res.ExitCode != 0 {
				t.Errorf("reload %d: exit %d\nstdout:\n%s\nstderr:\n%s", i+1, res.ExitCode, res.Stdout, res.Stderr)
			} else {
				t.Logf("reload %d: %s", i+1, strings.TrimSpace(res.Stdout))
			}
		}
		servesFrom(t, "gamma.test", "gamma2")
		servesFrom(t, "delta.test", "delta")
		servesFrom(t, "alpha.test", "alpha")
		g.WaitStatus(t, 15*time.Second, "alpha, delta and gamma ready", proxiesAre("alpha", "delta", "gamma"))
	})

	t.Run("SIGHUP", func(t *testing.T) {
		sent := time.Now()
		g.WriteProxy(t, proxy("epsilon", "epsilon"))
		g.Signal(t, syscall.SIGHUP)
		g.WriteProxy(t, proxy("gamma", "gamma1"))
		g.RemoveProxy(t, "delta")
		g.Signal(t, syscall.SIGHUP)
		st := g.WaitStatus(t, 30*time.Second, "the last config applied", func(st harness.Status) bool {
			lr := st.LastReload
			return lr != nil && lr.OK && strings.Contains(lr.Trigger, "SIGHUP") && !lr.At.Before(sent.Add(-time.Second)) &&
				proxiesAre("alpha", "epsilon", "gamma")(st)
		})
		t.Logf("last reload: %+v", *st.LastReload)
		servesFrom(t, "gamma.test", "gamma1")
		servesFrom(t, "epsilon.test", "epsilon")
		servesFrom(t, "alpha.test", "alpha")
		refused(t, "delta.test")
	})
}
