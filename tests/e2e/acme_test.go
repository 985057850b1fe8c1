package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// The ACME tests run the gateway against Pebble (Let's Encrypt's test CA)
// with its random validation delays and nonce rejections on, and
// pebble-challtestsrv as the DNS server that points every test hostname at
// 127.0.0.1. Pebble's validation connects to the gateway's own http and
// https listeners, so each challenge crosses the supervisor's routing
// (Host, SNI) to the worker that owns the name. Each test has its own
// Pebble, since Pebble's validation ports are the gateway's.

// acmeTiming: retry a failed obtain after 2s (not a minute), check for due
// renewals every second.
const acmeTiming = "MCPGATE_ACME_TEST_TIMING=retry=2s,renew_check=1s"

// acmeIssuance bounds one issuance: Pebble's validation sleeps up to 5s.
const acmeIssuance = 45 * time.Second

type acmeEnv struct {
	g      *harness.Gateway
	pebble *harness.Pebble
	roots  *x509.CertPool // Pebble's issuing roots, once it runs
}

type acmeSetup struct {
	proxies    []harness.Proxy
	challenges string // TOML list
	blocklist  []string
	validity   int  // seconds; 0 = Pebble's default
	noPebble   bool // start Pebble later (StartPebbleLate)
}

// acmeLate is what a test that starts Pebble after the gateway needs.
type acmeLate struct {
	port, httpPort, tlsPort int
	dns                     string
	api                     *harness.PebbleAPICert
}

func startACME(t *testing.T, s acmeSetup) (*acmeEnv, *acmeLate) {
	t.Helper()
	httpsLn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	late := &acmeLate{
		httpPort: httpLn.Addr().(*net.TCPAddr).Port,
		tlsPort:  httpsLn.Addr().(*net.TCPAddr).Port,
		dns:      harness.ChallTestSrv(t),
	}
	env := &acmeEnv{}
	dirURL, rootFile := "", ""
	if s.noPebble {
		// Nothing listens there until the test starts Pebble.
		late.port = harness.FreePort(t)
		late.api = harness.NewPebbleAPICert(t)
		dirURL = "https://127.0.0.1:" + strconv.Itoa(late.port) + "/dir"
		rootFile = late.api.RootFile
	} else {
		env.pebble = harness.StartPebble(t, harness.PebbleOptions{
			HTTPPort: late.httpPort, TLSPort: late.tlsPort, DNS: late.dns,
			Blocklist: s.blocklist, Validity: s.validity,
		})
		env.roots = env.pebble.Roots(t)
		dirURL, rootFile = env.pebble.DirectoryURL, env.pebble.APIRootFile
	}
	challenges := s.challenges
	if challenges == "" {
		challenges = `["tls-alpn-01", "http-01"]`
	}
	global := fmt.Sprintf("[acme]\nemail = \"ops@example.com\"\ndirectory_url = %q\nca_root_file = %q\nchallenges = %s\n",
		dirURL, rootFile, challenges)
	env.g = harness.Start(t, harness.Options{
		Proxies:       s.proxies,
		GlobalTOML:    global,
		HTTPSListener: httpsLn,
		HTTPListener:  httpLn,
		Env:           []string{acmeTiming},
	})
	return env, late
}

// handshake connects to the gateway's https listener with SNI host,
// trusting only Pebble's roots, and returns the verified leaf.
func (e *acmeEnv) handshake(host string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", e.g.HTTPSAddr, &tls.Config{ServerName: host, RootCAs: e.roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitCert waits until host is served with a certificate from Pebble whose
// serial differs from not (nil: any).
func (e *acmeEnv) waitCert(t *testing.T, host string, not *x509.Certificate, timeout time.Duration) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leaf, err := e.handshake(host)
		if err == nil && (not == nil || leaf.SerialNumber.Cmp(not.SerialNumber) != 0) {
			return leaf
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new certificate from the CA within %v; last: %v\nstatus:\n%s", host, timeout, err, e.g.StatusText(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// client reaches the gateway's https listener trusting Pebble's roots.
func (e *acmeEnv) client() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: 5 * time.Second}
			return d.DialContext(ctx, network, e.g.HTTPSAddr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.roots},
		ForceAttemptHTTP2: true,
		Proxy:             nil,
	}
	e.g.Track(tr)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// acmeStatus is a certificate in `mcpgate status --json`.
type acmeStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	NotAfter time.Time `json:"not_after"`
	RenewAt  time.Time `json:"renew_at"`
	Serial   string    `json:"serial"`
	Error    string    `json:"error"`
	NextTry  time.Time `json:"next_try"`
}

// certStatus returns the certificate of host as the serving worker of
// proxy reports it, or nil.
func (e *acmeEnv) certStatus(t *testing.T, proxy, host string) *acmeStatus {
	t.Helper()
	res := harness.RunBinary(t, e.g.Bin, time.Minute, "status", "--json", "--config-dir", e.g.Dir)
	var st struct {
		Workers []struct {
			Proxy        string       `json:"proxy"`
			State        string       `json:"state"`
			PID          int          `json:"pid"`
			Certificates []acmeStatus `json:"certificates"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s%s", err, res.Stdout, res.Stderr)
	}
	for _, w := range st.Workers {
		if w.Proxy != proxy || w.State != "ready" {
			continue
		}
		for _, c := range w.Certificates {
			if c.Name == host {
				return &c
			}
		}
	}
	return nil
}

func (e *acmeEnv) waitStatus(t *testing.T, proxy, host, what string, cond func(*acmeStatus) bool) *acmeStatus {
	t.Helper()
	deadline := time.Now().Add(acmeIssuance)
	for {
		c := e.certStatus(t, proxy, host)
		if c != nil && cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: not %s within %v; last %+v\n%s", host, what, acmeIssuance, c, e.g.StatusText(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// filesProxy is a proxy with certificate files from the test PKI: it must
// keep serving whatever happens to the ACME proxies beside it.
func filesProxy(t *testing.T) harness.Proxy {
	return harness.Proxy{Name: "files", Hostnames: []string{"files.test"}, Target: backends.NewEcho(t, "files").URL}
}

func checkFilesProxy(t *testing.T, g *harness.Gateway) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if h, status, err := g.Health(ctx, "files.test"); !harness.HealthOK(h, status, err) {
		t.Errorf("the proxy with certificate files stopped serving: status %d, %v", status, err)
	}
}

// TestACMETLSALPN: first issuance over TLS-ALPN-01 (the CA's validation
// handshake reaches the worker through the supervisor's SNI routing), the
// site served with the CA's certificate, the status and `certs list`
// showing it, then `mcpgate certs renew` replacing it in the live worker
// without a reload.
func TestACMETLSALPN(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	env, _ := startACME(t, acmeSetup{
		challenges: `["tls-alpn-01"]`,
		proxies: []harness.Proxy{
			{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL, ACME: true},
			filesProxy(t),
		},
	})
	leaf := env.waitCert(t, "alpha.test", nil, acmeIssuance)
	if !strings.Contains(env.g.Logs(), `"challenge":"tls-alpn-01"`) && !strings.Contains(env.g.Logs(), "challenge=tls-alpn-01") {
		t.Errorf("the log shows no TLS-ALPN-01 challenge answered")
	}
	resp, body := get(t, env.client(), "https://alpha.test/hello", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo-Backend") != "alpha" {
		t.Fatalf("GET over the CA's certificate: %d %s", resp.StatusCode, body)
	}
	st := env.waitStatus(t, "alpha", "alpha.test", "valid", func(c *acmeStatus) bool { return c.State == "valid" })
	if !st.NotAfter.Equal(leaf.NotAfter) || st.RenewAt.IsZero() || !st.RenewAt.Before(st.NotAfter) || st.Serial != leaf.SerialNumber.Text(16) {
		t.Errorf("status %+v does not describe the served certificate (expires %v, serial %x)", st, leaf.NotAfter, leaf.SerialNumber)
	}
	list := harness.RunBinary(t, env.g.Bin, time.Minute, "certs", "list", "--config-dir", env.g.Dir)
	if list.ExitCode != 0 || !strings.Contains(list.Stdout, "alpha.test") || !strings.Contains(list.Stdout, "valid") {
		t.Errorf("certs list: exit %d\n%s%s", list.ExitCode, list.Stdout, list.Stderr)
	}
	pid := env.g.Status(t).WorkersOf("alpha")[0].PID
	reloadsBefore := env.g.Status(t).LastReload

	renew := harness.RunBinary(t, env.g.Bin, 2*time.Minute, "certs", "renew", "alpha.test", "--config-dir", env.g.Dir)
	if renew.ExitCode != 0 {
		t.Fatalf("certs renew: exit %d\n%s%s", renew.ExitCode, renew.Stdout, renew.Stderr)
	}
	renewed := env.waitCert(t, "alpha.test", leaf, 10*time.Second)
	if !strings.Contains(renew.Stdout, renewed.SerialNumber.Text(16)) {
		t.Errorf("certs renew said %q; the new serial is %x", renew.Stdout, renewed.SerialNumber)
	}
	after := env.g.Status(t)
	if w := after.WorkersOf("alpha"); len(w) != 1 || w[0].PID != pid {
		t.Errorf("workers of alpha after the renewal: %+v; want the same pid %d (no reload)", w, pid)
	}
	if after.LastReload != nil && reloadsBefore != nil && !after.LastReload.At.Equal(reloadsBefore.At) {
		t.Error("a reload happened during the renewal")
	}
	checkFilesProxy(t, env.g)

	bad := harness.RunBinary(t, env.g.Bin, time.Minute, "certs", "renew", "files.test", "--config-dir", env.g.Dir)
	if bad.ExitCode == 0 || !strings.Contains(bad.Stderr, `no proxy gets a certificate for "files.test" with ACME`) {
		t.Errorf("certs renew of a name without ACME: exit %d\n%s", bad.ExitCode, bad.Stderr)
	}
}

// TestACMEHTTP01: two proxies obtain at once over HTTP-01 (the CA's
// request reaches each worker through the supervisor's Host routing, and
// is answered before the redirect), sharing one ACME account; then a
// certificate renews in the background (short-lived certificates) and the
// renewed one is served without a reload.
func TestACMEHTTP01(t *testing.T) {
	t.Parallel()
	env, _ := startACME(t, acmeSetup{
		challenges: `["http-01"]`,
		validity:   30,
		proxies: []harness.Proxy{
			{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: backends.NewEcho(t, "alpha").URL, ACME: true},
			{Name: "beta", Hostnames: []string{"beta.test", "www.beta.test"}, Target: backends.NewEcho(t, "beta").URL, ACME: true},
		},
	})
	first := map[string]*x509.Certificate{}
	for _, h := range []string{"alpha.test", "beta.test", "www.beta.test"} {
		first[h] = env.waitCert(t, h, nil, acmeIssuance)
		if len(first[h].DNSNames) != 1 || first[h].DNSNames[0] != h {
			t.Errorf("%s: certificate for %v; want one per hostname", h, first[h].DNSNames)
		}
	}
	if !strings.Contains(env.g.Logs(), "/.well-known/acme-challenge/") {
		t.Error("the log shows no HTTP-01 challenge request")
	}
	// Redirects still work for everything else.
	resp, _ := get(t, env.g.PlainClient(), "http://alpha.test/x", nil)
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("plain http: status %d, want 308", resp.StatusCode)
	}
	users, _ := filepath.Glob(filepath.Join(env.g.StateDir, "acme", "acme", "*", "users", "*"))
	if len(users) != 1 {
		t.Errorf("ACME accounts in storage: %v; want exactly one (one per CA and email)", users)
	}
	if info, err := os.Stat(filepath.Join(env.g.StateDir, "acme")); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("state_dir/acme: %v %v; want mode 0700", err, info.Mode())
	}

	// 30s certificates are due for renewal after about 20s.
	pid := env.g.Status(t).WorkersOf("alpha")[0].PID
	renewed := env.waitCert(t, "alpha.test", first["alpha.test"], 40*time.Second)
	if renewed.NotAfter.Before(first["alpha.test"].NotAfter) {
		t.Errorf("renewed certificate expires %v, before the first (%v)", renewed.NotAfter, first["alpha.test"].NotAfter)
	}
	if w := env.g.Status(t).WorkersOf("alpha"); len(w) != 1 || w[0].PID != pid {
		t.Errorf("workers of alpha: %+v; want the same pid %d", w, pid)
	}
}

// TestACMEReloadDuringIssuance: a reload that replaces the worker while it
// is obtaining its certificate. The old worker drains and frees the lock;
// the new one finishes (or finds the certificate its predecessor stored)
// and serves it.
func TestACMEReloadDuringIssuance(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	alpha := harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL, ACME: true}
	env, _ := startACME(t, acmeSetup{proxies: []harness.Proxy{alpha, filesProxy(t)}})
	// Issuance takes seconds (Pebble's validation sleeps); the worker
	// reports within one.
	if c := env.waitStatus(t, "alpha", "alpha.test", "reported", func(*acmeStatus) bool { return true }); c.State != "obtaining" {
		t.Logf("alpha was already %s at the reload (a fast validation); the reload still must not break it", c.State)
	}
	alpha.Keys = "preserve_host = true" // a new hash: a fresh worker
	env.g.WriteProxy(t, alpha)
	if res := env.g.Reload(t); res.ExitCode != 0 {
		t.Fatalf("reload: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	env.waitCert(t, "alpha.test", nil, acmeIssuance)
	env.waitStatus(t, "alpha", "alpha.test", "valid", func(c *acmeStatus) bool { return c.State == "valid" })
	resp, body := get(t, env.client(), "https://alpha.test/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET after the reload: %d %s", resp.StatusCode, body)
	}
	if w := env.g.Status(t).WorkersOf("alpha"); len(w) != 1 {
		t.Errorf("workers of alpha: %+v; want one", w)
	}
	checkFilesProxy(t, env.g)
}

// TestACMEUnreachableCA: while the CA cannot be reached the proxy's
// handshakes fail with a reason in the log, the status says "obtaining"
// with the error and the next try, the other proxy serves; once the CA is
// up, the next try obtains the certificate.
func TestACMEUnreachableCA(t *testing.T) {
	t.Parallel()
	env, late := startACME(t, acmeSetup{
		noPebble: true,
		proxies: []harness.Proxy{
			{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: backends.NewEcho(t, "alpha").URL, ACME: true},
			filesProxy(t),
		},
	})
	st := env.waitStatus(t, "alpha", "alpha.test", "failing", func(c *acmeStatus) bool { return c.Error != "" })
	if st.State != "obtaining" || !strings.Contains(st.Error, "connection refused") || st.NextTry.IsZero() {
		t.Errorf("status %+v; want obtaining, connection refused, a next try", st)
	}
	if _, err := env.handshake("alpha.test"); err == nil {
		t.Error("handshake for alpha.test succeeded without a certificate")
	}
	checkFilesProxy(t, env.g)
	within(t, 15*time.Second, "the refused handshake in the log", func() (bool, error) {
		if strings.Contains(env.g.Logs(), "TLS handshake refused") && strings.Contains(env.g.Logs(), "no certificate yet") {
			return true, nil
		}
		return false, fmt.Errorf("not yet")
	}, env.g.Logs)
	if text := env.g.StatusText(t); !strings.Contains(text, "obtaining") {
		t.Errorf("mcpgate status does not say obtaining:\n%s", text)
	}

	// The CA comes up where the configuration said; the next try (every
	// 2s here) obtains the certificate, without a reload.
	pid := env.g.Status(t).WorkersOf("alpha")[0].PID
	p := harness.StartPebble(t, harness.PebbleOptions{Port: late.port, HTTPPort: late.httpPort, TLSPort: late.tlsPort, DNS: late.dns, API: late.api})
	env.pebble, env.roots = p, p.Roots(t)
	env.waitCert(t, "alpha.test", nil, acmeIssuance)
	env.waitStatus(t, "alpha", "alpha.test", "valid", func(c *acmeStatus) bool { return c.State == "valid" && c.Error == "" })
	if w := env.g.Status(t).WorkersOf("alpha"); len(w) != 1 || w[0].PID != pid {
		t.Errorf("workers of alpha: %+v; want the same pid %d", w, pid)
	}
	checkFilesProxy(t, env.g)
}

// TestACMECARefuses: a CA that refuses the name: a clear error in the log
// and in the status, retried, and the other proxy unaffected.
func TestACMECARefuses(t *testing.T) {
	t.Parallel()
	env, _ := startACME(t, acmeSetup{
		blocklist: []string{"refused.test"},
		proxies: []harness.Proxy{
			{Name: "refused", Hostnames: []string{"refused.test"}, Target: backends.NewEcho(t, "refused").URL, ACME: true},
			filesProxy(t),
		},
	})
	st := env.waitStatus(t, "refused", "refused.test", "failing", func(c *acmeStatus) bool { return c.Error != "" })
	if st.State != "obtaining" || !strings.Contains(st.Error, "rejectedIdentifier") {
		t.Errorf("status %+v; want obtaining with the CA's rejectedIdentifier", st)
	}
	if !strings.Contains(env.g.Logs(), "cannot obtain certificate") || !strings.Contains(env.g.Logs(), "rejectedIdentifier") {
		t.Errorf("the log does not say the CA refused:\n%s", env.g.Logs())
	}
	if _, err := env.handshake("refused.test"); err == nil {
		t.Error("handshake for refused.test succeeded")
	}
	if text := env.g.StatusText(t); !strings.Contains(text, "obtaining (next try") || !strings.Contains(text, "rejectedIdentifier") {
		t.Errorf("mcpgate status does not show the refusal:\n%s", text)
	} else {
		t.Logf("mcpgate status:\n%s", text)
	}
	checkFilesProxy(t, env.g)
}

// TestACMECheck: `mcpgate check` validates [acme] and the ACME proxies
// without contacting the CA: a listener at directory_url sees no
// connection, good or bad.
func TestACMECheck(t *testing.T) {
	t.Parallel()
	ca, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	contacted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ca.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case contacted <- struct{}{}:
			default:
			}
		}
	}()
	api := harness.NewPebbleAPICert(t)
	proxy := harness.Proxy{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: "http://127.0.0.1:3000", ACME: true}

	good := t.TempDir()
	harness.WriteConfig(t, good, filepath.Join(good, "state"), harness.NewPKI(t), harness.Options{
		Proxies: []harness.Proxy{proxy},
		GlobalTOML: fmt.Sprintf("[acme]\nemail = \"ops@example.com\"\ndirectory_url = \"https://%s/dir\"\nca_root_file = %q\n",
			ca.Addr(), api.RootFile),
	})
	res := harness.Run(t, 30*time.Second, "check", "--config-dir", good)
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "tls: acme") || !strings.Contains(res.Stdout, "acme: https://"+ca.Addr().String()+"/dir (email: ops@example.com") {
		t.Errorf("check: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}

	bad := t.TempDir()
	proxy.Hostnames = []string{"alpha.test", "*.alpha.test"}
	harness.WriteConfig(t, bad, filepath.Join(bad, "state"), harness.NewPKI(t), harness.Options{
		Proxies:    []harness.Proxy{proxy},
		GlobalTOML: fmt.Sprintf("[acme]\nemail = \"ops\"\ndirectory_url = \"https://%s/dir\"\nca_root_file = \"missing.pem\"\n", ca.Addr()),
	})
	res = harness.Run(t, 30*time.Second, "check", "--config-dir", bad)
	for _, want := range []string{
		`mcpgate.toml:6: acme.email: "ops": not an email address (name@example.com)`,
		`mcpgate.toml:8: acme.ca_root_file: ` + filepath.Join(bad, "missing.pem") + `: no such file or directory`,
		`alpha.toml:1: hostnames[1]: "*.alpha.test": a wildcard certificate needs the DNS-01 challenge`,
	} {
		if !strings.Contains(res.Stderr+res.Stdout, want) {
			t.Errorf("check output lacks %q:\n%s%s", want, res.Stdout, res.Stderr)
		}
	}
	if res.ExitCode != 1 {
		t.Errorf("check of a bad [acme]: exit %d, want 1", res.ExitCode)
	}
	select {
	case <-contacted:
		t.Error("mcpgate check contacted the CA")
	default:
	}
}
