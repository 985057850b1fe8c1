package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Pebble, Let's Encrypt's ACME test server, and pebble-challtestsrv, the
// DNS server that resolves every test hostname to 127.0.0.1 for Pebble's
// validation authority. Both are built once per test process from the
// module proxy at this version (go install pkg@version into a temp dir;
// the project's go.mod does not change).
const PebbleVersion = "v2.10.3"

const pebbleModule = "github.com/letsencrypt/pebble/v2/cmd/"

var pebbleBuild struct {
	once sync.Once
	dir  string // removed by Main
	err  error
}

// pebbleBinary returns the path of cmd (pebble or pebble-challtestsrv).
func pebbleBinary(t testing.TB, cmd string) string {
	t.Helper()
	pebbleBuild.once.Do(func() {
		pebbleBuild.dir, pebbleBuild.err = os.MkdirTemp("", "mcpgate-e2e-pebble-")
		if pebbleBuild.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		c := exec.CommandContext(ctx, "go", "install",
			pebbleModule+"pebble@"+PebbleVersion, pebbleModule+"pebble-challtestsrv@"+PebbleVersion)
		c.Env = append(os.Environ(), "GOBIN="+pebbleBuild.dir, "GOFLAGS=")
		if out, err := c.CombinedOutput(); err != nil {
			pebbleBuild.err = fmt.Errorf("go install pebble %s: %v\n%s", PebbleVersion, err, out)
		}
	})
	if pebbleBuild.err != nil {
		t.Fatal(pebbleBuild.err)
	}
	return filepath.Join(pebbleBuild.dir, cmd)
}

func removePebble() {
	if pebbleBuild.dir != "" {
		os.RemoveAll(pebbleBuild.dir)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int { return freePorts(t, 1)[0] }

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago: every listener stays open until all are chosen, so one call never
// hands out a port twice. Another process may still take one before the
// caller binds it: the servers started on them are retried (startTries).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startTries bounds how often a server on freshly picked ports is started
// again after it died at start-up (a port taken in between, on a busy
// machine running tests in parallel).
const startTries = 3

// ChallTestSrv starts pebble-challtestsrv as a DNS server only, on
// loopback, answering 127.0.0.1 for every A query and nothing for AAAA
// (the gateway listens on 127.0.0.1). It returns the DNS address.
func ChallTestSrv(t testing.TB) string {
	t.Helper()
	for try := 1; ; try++ {
		ports := freePorts(t, 2)
		dns := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		logFile := filepath.Join(t.TempDir(), "challtestsrv.log")
		exited := startProcess(t, "pebble-challtestsrv", logFile, nil, pebbleBinary(t, "pebble-challtestsrv"),
			"-dnsserver", dns, "-management", mgmt, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
		if waitTCP(t, mgmt, logFile, exited, try < startTries) {
			return dns
		}
		t.Logf("pebble-challtestsrv exited or lost a port at start-up (try %d): %s", try, readTail(logFile))
	}
}

// PebbleOptions configure one Pebble.
type PebbleOptions struct {
	// HTTPPort and TLSPort are where Pebble's validation authority
	// connects for HTTP-01 and TLS-ALPN-01: the gateway's http and https
	// listeners.
	HTTPPort, TLSPort int
	DNS               string // ChallTestSrv's address
	// Port is the ACME API's port; 0 picks a free one. A test of an
	// unreachable CA configures the gateway with a port first and starts
	// Pebble on it later.
	Port int
	// Blocklist: Pebble refuses orders for these domains.
	Blocklist []string
	// Validity of issued certificates in seconds; 0 = Pebble's 90 days.
	Validity int
	// API is the ACME API's HTTPS certificate; nil makes one. A test that
	// configures the gateway before Pebble starts makes it first.
	API *PebbleAPICert
}

// PebbleAPICert is a throw-away CA (RootFile, the gateway's [acme]
// ca_root_file) and a certificate for 127.0.0.1 and localhost.
type PebbleAPICert struct {
	RootFile, CertFile, KeyFile string
	Pool                        *x509.CertPool
}

// Pebble is a running ACME test server.
type Pebble struct {
	DirectoryURL string
	// APIRootFile is the root of the ACME API's own HTTPS certificate: the
	// gateway's [acme] ca_root_file.
	APIRootFile string
	LogFile     string

	api  *http.Client
	mgmt string
}

// StartPebble runs Pebble on loopback with its randomised validation delays
// and nonce rejections left on (PEBBLE_VA_NOSLEEP and
// PEBBLE_WFE_NONCEREJECT unset), and waits until its directory answers.
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	for try := 1; ; try++ {
		if p := startPebble(t, o, try < startTries); p != nil {
			return p
		}
	}
}

// startPebble starts one Pebble and waits for its directory. When Pebble
// exits at start-up and retry is set, it returns nil (the caller tries
// again on other ports); otherwise the test fails.
func startPebble(t testing.TB, o PebbleOptions, retry bool) *Pebble {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2)
	port := o.Port
	if port == 0 {
		port = ports[0]
	} else {
		// A fixed port was handed out already (the gateway knows it): no
		// other try would help.
		retry = false
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	api := o.API
	if api == nil {
		api = NewPebbleAPICert(t)
	}
	validity := o.Validity
	if validity == 0 {
		validity = 90 * 24 * 3600
	}
	blocklist := o.Blocklist
	if blocklist == nil {
		blocklist = []string{}
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    api.CertFile,
		"privateKey":                     api.KeyFile,
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"domainBlocklist":                blocklist,
		// Retry-After on polls: short, so a test waits for validation,
		// not for polling.
		"retryAfter":   map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm": "ecdsa",
		"profiles": map[string]any{
			"default": map[string]any{"description": "mcpgate tests", "validityPeriod": validity},
		},
	}}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Pebble{
		DirectoryURL: "https://" + listen + "/dir",
		APIRootFile:  api.RootFile,
		LogFile:      filepath.Join(dir, "pebble.log"),
		api: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: api.Pool}, Proxy: nil,
		}},
		mgmt: mgmt,
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	exited := startProcess(t, "pebble", p.LogFile, env, pebbleBinary(t, "pebble"), "-config", cfgFile, "-dnsserver", o.DNS)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.api.Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			if retry {
				t.Logf("pebble exited at start-up; again on other ports: %s", readTail(p.LogFile))
				return nil
			}
			t.Fatalf("pebble exited at start-up: %v\n%s", err, readTail(p.LogFile))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not answering %s: %v\n%s", p.DirectoryURL, err, readTail(p.LogFile))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Roots returns the roots that Pebble's issued certificates chain to (from
// its management API: they are generated at every start).
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.api.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble roots: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble roots: status %d, %v", resp.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble roots: no PEM in %q", b)
	}
	return pool
}

// NewPebbleAPICert makes the certificate of an ACME API on 127.0.0.1.
func NewPebbleAPICert(t testing.TB) *PebbleAPICert {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "mcpgate e2e Pebble API CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "127.0.0.1"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	a := &PebbleAPICert{
		RootFile: filepath.Join(dir, "api-ca.pem"), CertFile: filepath.Join(dir, "api.pem"), KeyFile: filepath.Join(dir, "api.key"),
		Pool: x509.NewCertPool(),
	}
	writePEM(t, a.RootFile, "CERTIFICATE", caDER)
	writePEM(t, a.CertFile, "CERTIFICATE", der)
	writePEM(t, a.KeyFile, "PRIVATE KEY", keyDER)
	a.Pool.AddCert(ca)
	return a
}

// startProcess runs a helper process for the test's lifetime, output to
// logFile (shown if the test fails), stopped at cleanup.
// startProcess starts bin, stopping it when the test ends; the channel is
// closed when the process has exited.
func startProcess(t testing.TB, name, logFile string, env []string, bin string, args ...string) <-chan struct{} {
	t.Helper()
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	lf.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, readTail(logFile))
		}
	})
	return done
}

// waitTCP waits until addr accepts a connection (true), or the process
// has exited (false when retry is set; else the test fails).
func waitTCP(t testing.TB, addr, logFile string, exited <-chan struct{}, retry bool) bool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-exited:
			if retry {
				return false
			}
			t.Fatalf("the process serving %s exited:\n%s", addr, readTail(logFile))
		default:
		}
		// pebble-challtestsrv logs a management port taken in between
		// and runs on without it: as good as exited (the test's clean-up
		// stops it).
		if retry && strings.Contains(readTail(logFile), "address already in use") {
			return false
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s: %v\n%s", addr, err, readTail(logFile))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > maxLogDump {
		b = b[len(b)-maxLogDump:]
	}
	return string(b)
}
