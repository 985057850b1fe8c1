// Package acme gets and renews a proxy's certificates from an ACME CA
// (RFC 8555) with certmagic, for a worker whose proxy sets
// [tls] acme = true.
//
// Certificates, account keys, locks and challenge data live in
// state_dir/acme (0700), shared by every worker: old and new workers of a
// reload, and any worker that a challenge reaches. certmagic's locks make
// one process obtain a name at a time, and its distributed solver writes
// each challenge to that storage, so whichever process the CA's validation
// lands on can answer it: TLS-ALPN-01 through the worker's GetCertificate
// (the supervisor routes it by SNI like any handshake), HTTP-01 through
// HandleHTTPChallenge on the plain-HTTP listener (routed by Host).
//
// A worker serves as soon as it starts; until the first certificate for a
// name is in storage, handshakes for that name fail with a logged reason.
// Renewal (certmagic's window, or the CA's ARI window) and OCSP stapling run
// in one maintenance goroutine per worker, and a renewed certificate is
// used by the next handshake.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	acmeproto "github.com/mholt/acmez/v3/acme"

	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/config"

	"github.com/mcpgate/mcpgate/internal/policy/host"
)

// Dir is the storage directory below state_dir.
const Dir = "acme"

// Options configure a Manager.
type Options struct {
	Names    []string     // the proxy's hostnames, all exact
	ACME     *config.ACME // the CA
	StateDir string
	Log      *slog.Logger
}

// Manager obtains, renews and serves the certificates of one proxy.
type Manager struct {
	names  []string
	log    *slog.Logger
	cfg    *certmagic.Config
	iss    *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	timing timing
	stub   net.Listener // see solverStub

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the obtain loops

	mu      sync.Mutex
	state   map[string]*nameState // guarded by mu; by name, fixed keys
	changed chan struct{}         // signalled (never closed) when a state changes
}

// nameState is what the status needs beyond the certificate cache.
type nameState struct {
	renewing bool
	err      string
	errAt    time.Time
	nextTry  time.Time
	wake     chan struct{} // a forced renewal before the first certificate: try now

	lastLoad time.Time // storage look-up on a handshake miss, at most once a second
	lastLog  time.Time // refused-handshake log line, at most once per refuseLogEvery

	// cancelAttempt ends the certmagic operation in progress (see once);
	// attemptErr is the failure that ended it.
	cancelAttempt context.CancelFunc
	attemptErr    error

	renewHash string    // certificate hash renewAt was computed for
	renewAt   time.Time // cached: reading the ARI window needs storage
	renewSeen time.Time
}

// refuseLogEvery bounds the log lines about handshakes refused for want of
// a certificate: a client retrying in a loop must not flood the journal.
const refuseLogEvery = 10 * time.Second

// New sets up the storage, the ACME account settings and the certificate
// cache (whose maintenance goroutine starts here). Start begins managing.
func New(o Options) (*Manager, error) {
	if len(o.Names) == 0 {
		return nil, errors.New("acme: no hostnames")
	}
	for _, n := range o.Names {
		if strings.HasPrefix(n, "*.") {
			return nil, fmt.Errorf("acme: %q: wildcards need DNS-01, which mcpgate does not answer", n)
		}
	}
	tm, err := timingFromEnv()
	if err != nil {
		return nil, err
	}
	if tm != (timing{}) {
		o.Log.Warn("ACME test timing in effect (" + timingEnv + "); never in production")
	}
	dir := filepath.Join(o.StateDir, Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	// Account and certificate keys live here: keep it private even when
	// it was created before by hand.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	roots, err := trustedRoots(o.ACME.CARootFile)
	if err != nil {
		return nil, err
	}
	var eab *acmeproto.EAB
	if o.ACME.EABKeyID != "" {
		key, err := config.ReadEABKey(o.ACME.EABHMACFile)
		if err != nil {
			return nil, fmt.Errorf("acme: eab_hmac_file: %w", err)
		}
		eab = &acmeproto.EAB{KeyID: o.ACME.EABKeyID, MACKey: base64.RawURLEncoding.EncodeToString(key)}
	}
	stub, err := newSolverStub()
	if err != nil {
		return nil, err
	}

	m := &Manager{
		names:   slices.Clone(o.Names),
		log:     o.Log,
		timing:  tm,
		stub:    stub,
		state:   map[string]*nameState{},
		changed: make(chan struct{}, 1),
	}
	for _, n := range m.names {
		m.state[n] = &nameState{wake: make(chan struct{}, 1)}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	zl := zapToSlog(o.Log.Handler())
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		RenewCheckInterval: tm.renewCheck, // 0: certmagic's default (10 minutes)
		Logger:             zl,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: dir},
		OnEvent: m.onEvent,
		Logger:  zl,
	})
	port := stub.Addr().(*net.TCPAddr).Port
	m.iss = certmagic.NewACMEIssuer(m.cfg, certmagic.ACMEIssuer{
		CA:     o.ACME.DirectoryURL,
		Email:  o.ACME.Email,
		Agreed: true, // configuring a CA is agreeing to its terms; nobody is there to ask
		// The CA picks among the challenges offered; the distributed
		// solver stores each one for whichever worker the CA reaches.
		DisableHTTPChallenge:    !slices.Contains(o.ACME.Challenges, config.ChallengeHTTP),
		DisableTLSALPNChallenge: !slices.Contains(o.ACME.Challenges, config.ChallengeTLSALPN),
		ListenHost:              "127.0.0.1",
		AltHTTPPort:             port,
		AltTLSALPNPort:          port,
		TrustedRoots:            roots,
		ExternalAccount:         eab,
		Logger:                  zl,
	})
	m.cfg.Issuers = []certmagic.Issuer{m.iss}
	return m, nil
}

// Start manages every name in the background: certificates already in
// storage are served at once (and renewed if due), the others obtained.
func (m *Manager) Start() {
	for _, name := range m.names {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.manage(name)
		}()
	}
}

// Stop ends the obtain loops (releasing their storage locks, so a
// successor takes over at once) and the maintenance goroutine.
func (m *Manager) Stop() {
	m.cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		m.log.Warn("ACME: obtain loops still running at stop")
	}
	m.cache.Stop()
	m.stub.Close()
}

// Changed is signalled when a certificate's state changes, for reporting.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

func (m *Manager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// manage serves name from storage, or obtains it first.
func (m *Manager) manage(name string) {
	if m.inStorage(name) {
		if err := m.cfg.ManageAsync(m.ctx, []string{name}); err != nil {
			m.log.Error("ACME: loading the stored certificate", "name", name, "err", err)
		} else {
			m.notify()
			return
		}
	}
	m.obtain(name)
}

// obtain tries until a certificate for name is in storage, then manages
// it. Each attempt is one certmagic obtain (lock, order, challenge,
// finalize, unlock); between attempts the lock is free, so a worker of a
// reload can take over, and storage is watched in case it did.
func (m *Manager) obtain(name string) {
	st := m.state[name]
	attempts := 0
	for {
		err := m.once(m.ctx, name, func(ctx context.Context) error { return m.cfg.ObtainCertAsync(ctx, name) })
		if m.ctx.Err() != nil {
			return
		}
		if err == nil {
			if err = m.cfg.ManageAsync(m.ctx, []string{name}); err == nil {
				m.mu.Lock()
				st.err, st.errAt, st.nextTry = "", time.Time{}, time.Time{}
				m.mu.Unlock()
				m.log.Info("ACME: certificate ready; serving", "name", name)
				m.notify()
				return
			}
		}
		wait := m.timing.retry(attempts)
		attempts++
		msg := describe(err)
		m.mu.Lock()
		st.err, st.errAt, st.nextTry = msg, time.Now(), time.Now().Add(wait)
		m.mu.Unlock()
		m.notify()
		m.log.Error("ACME: cannot obtain certificate; handshakes for this name fail until it is obtained",
			"name", name, "err", msg, "attempt", attempts, "retry_in", wait.String())
		if !m.sleep(name, wait) {
			return
		}
	}
}

// once runs one attempt of a non-interactive certmagic operation on name
// (ObtainCertAsync, RenewCertAsync) and returns its failure. certmagic
// would retry by itself, holding the name's lock all along; mcpgate
// retries on its own schedule instead, so the attempt is cancelled at its
// first failure (the cert_failed event). The interactive variants are not
// an option: without an email they prompt for one on stdin.
func (m *Manager) once(ctx context.Context, name string, op func(context.Context) error) error {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := m.state[name]
	m.mu.Lock()
	st.cancelAttempt, st.attemptErr = cancel, nil
	m.mu.Unlock()
	err := op(actx)
	m.mu.Lock()
	st.cancelAttempt = nil
	if st.attemptErr != nil {
		err = st.attemptErr
	}
	m.mu.Unlock()
	return err
}

// sleep waits before the next attempt, cut short by a forced renewal or by
// another process putting the certificate in storage. It reports false
// when the manager stops.
func (m *Manager) sleep(name string, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return false
		case <-t.C:
			return true
		case <-m.state[name].wake:
			return true
		case <-poll.C:
			if m.inStorage(name) {
				return true
			}
		}
	}
}

// inStorage reports whether storage has a certificate for name from this
// CA (a file stat; the lock is not needed to look).
func (m *Manager) inStorage(name string) bool {
	return m.cfg.Storage.Exists(m.ctx, certmagic.StorageKeys.SiteCert(m.iss.IssuerKey(), name))
}

// describe shortens an ACME error to what an operator needs: the CA's
// problem document when there is one.
func describe(err error) string {
	if err == nil {
		return "unknown error"
	}
	var p acmeproto.Problem
	if errors.As(err, &p) {
		return strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:") + ": " + p.Detail
	}
	return err.Error()
}

// onEvent follows certmagic's events for the status.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	m.mu.Lock()
	st := m.state[name]
	if st != nil {
		renewal, _ := data["renewal"].(bool)
		switch event {
		case "cert_obtaining":
			st.renewing = renewal
		case "cert_obtained":
			st.renewing = false
			st.err, st.errAt = "", time.Time{}
		case "cert_failed":
			st.renewing = false
			err, _ := data["error"].(error)
			if err == nil {
				err = errors.New("the CA did not issue a certificate")
			}
			st.err, st.errAt = describe(err), time.Now()
			if st.cancelAttempt != nil {
				st.attemptErr = err
				st.cancelAttempt()
			}
		}
	}
	m.mu.Unlock()
	m.notify()
	return nil
}

// GetCertificate is the tls.Config callback: the challenge certificate for
// a TLS-ALPN-01 validation (acme-tls/1), else the name's certificate. A
// name without one yet is looked up in storage (another process may have
// just obtained it), and otherwise refused with a logged reason.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := m.cfg.GetCertificate(hello)
	if err == nil || slices.Equal(hello.SupportedProtos, []string{acmez.ACMETLS1Protocol}) {
		return cert, err
	}
	name, _ := host.Name([]byte(hello.ServerName))
	m.mu.Lock()
	st := m.state[name]
	if st == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("mcpgate: no certificate for server name %q", name)
	}
	load := time.Since(st.lastLoad) >= time.Second
	if load {
		st.lastLoad = time.Now()
	}
	m.mu.Unlock()
	if load && m.inStorage(name) {
		if _, lerr := m.cfg.CacheManagedCertificate(hello.Context(), name); lerr == nil {
			m.notify()
			if cert, err := m.cfg.GetCertificate(hello); err == nil {
				return cert, nil
			}
		}
	}
	m.mu.Lock()
	logNow := time.Since(st.lastLog) >= refuseLogEvery
	if logNow {
		st.lastLog = time.Now()
	}
	last := st.err
	m.mu.Unlock()
	if logNow {
		args := []any{"server_name", name, "reason", "no certificate yet: it is being obtained from the CA"}
		if last != "" {
			args = append(args, "last_error", last)
		}
		m.log.Warn("TLS handshake refused", args...)
	}
	return nil, fmt.Errorf("mcpgate: no certificate for %s yet: it is being obtained from the CA", name)
}

// HandleHTTPChallenge answers an HTTP-01 validation request
// (/.well-known/acme-challenge/…) for any challenge in storage, and
// reports whether it did.
func (m *Manager) HandleHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	return m.iss.HandleHTTPChallenge(w, r)
}

// Manages reports whether name is one of this manager's names.
func (m *Manager) Manages(name string) bool {
	return slices.Contains(m.names, name)
}

// Renew replaces name's certificate now, whatever its renewal window
// (`mcpgate certs renew`), and serves the new one from the next
// handshake. Before the first certificate it makes the next obtain
// attempt happen now instead.
func (m *Manager) Renew(ctx context.Context, name string) error {
	st := m.state[name]
	if st == nil {
		return fmt.Errorf("%s is not managed here", name)
	}
	old := m.cache.AllMatchingCertificates(name)
	if len(old) == 0 && !m.inStorage(name) {
		select {
		case st.wake <- struct{}{}:
		default:
		}
		return nil
	}
	m.mu.Lock()
	st.renewing = true
	m.mu.Unlock()
	m.notify()
	err := m.once(ctx, name, func(ctx context.Context) error { return m.cfg.RenewCertAsync(ctx, name, true) })
	if err == nil {
		_, err = m.cfg.CacheManagedCertificate(ctx, name)
	}
	m.mu.Lock()
	st.renewing = false
	if err != nil {
		st.err, st.errAt = describe(err), time.Now()
	}
	m.mu.Unlock()
	m.notify()
	if err != nil {
		m.log.Error("ACME: forced renewal failed; the current certificate stays in use", "name", name, "err", describe(err))
		return err
	}
	// The renewed certificate is cached beside the old one; drop the old
	// so every handshake from now on gets the new one.
	var stale []string
	for _, c := range old {
		stale = append(stale, c.Hash())
	}
	m.cache.Remove(stale)
	m.log.Info("ACME: certificate renewed on request; serving the new one", "name", name)
	return nil
}

// Status describes every managed name.
func (m *Manager) Status() []certstatus.Cert {
	out := make([]certstatus.Cert, 0, len(m.names))
	for _, name := range m.names {
		out = append(out, m.status(name))
	}
	return out
}

func (m *Manager) status(name string) certstatus.Cert {
	var cur *certmagic.Certificate
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && (cur == nil || c.Leaf.NotAfter.After(cur.Leaf.NotAfter)) {
			cur = &c
		}
	}
	renewAt := time.Time{}
	if cur != nil {
		renewAt = m.renewAt(name, *cur)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[name]
	s := certstatus.Cert{Name: name, State: certstatus.Obtaining, Error: st.err, ErrorAt: st.errAt}
	if cur == nil {
		s.NextTry = st.nextTry
		return s
	}
	s.NotAfter = cur.Leaf.NotAfter
	s.Issuer = cur.Leaf.Issuer.CommonName
	s.Serial = cur.Leaf.SerialNumber.Text(16)
	s.RenewAt = renewAt
	switch {
	case st.renewing:
		s.State = certstatus.Renewing
	case time.Now().After(cur.Leaf.NotAfter):
		s.State = certstatus.Expired
	default:
		s.State = certstatus.Valid
	}
	return s
}

// renewAt is when certmagic will renew cert: the time it selected in the
// CA's ARI window when there is one (kept in storage beside the
// certificate), else when a third of the lifetime is left. Cached per
// certificate for a while: ARI windows move rarely.
func (m *Manager) renewAt(name string, cert certmagic.Certificate) time.Time {
	m.mu.Lock()
	st := m.state[name]
	if st.renewHash == cert.Hash() && time.Since(st.renewSeen) < time.Minute {
		t := st.renewAt
		m.mu.Unlock()
		return t
	}
	m.mu.Unlock()
	t := m.ariTime(name)
	if t.IsZero() {
		lifetime := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)
		t = cert.Leaf.NotAfter.Add(-time.Duration(float64(lifetime) * certmagic.DefaultRenewalWindowRatio))
	}
	m.mu.Lock()
	st.renewHash, st.renewAt, st.renewSeen = cert.Hash(), t, time.Now()
	m.mu.Unlock()
	return t
}

func (m *Manager) ariTime(name string) time.Time {
	b, err := m.cfg.Storage.Load(m.ctx, certmagic.StorageKeys.SiteMeta(m.iss.IssuerKey(), name))
	if err != nil {
		return time.Time{}
	}
	var meta struct {
		IssuerData acmeproto.Certificate `json:"issuer_data"`
	}
	if json.Unmarshal(b, &meta) != nil || meta.IssuerData.RenewalInfo == nil {
		return time.Time{}
	}
	ri := meta.IssuerData.RenewalInfo
	if !ri.SelectedTime.IsZero() {
		return ri.SelectedTime
	}
	return ri.SuggestedWindow.Start
}

// trustedRoots is the system pool plus the configured extra root, or nil
// (the system pool) without one.
func trustedRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("acme: ca_root_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("acme: ca_root_file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// newSolverStub holds a loopback port that the ACME issuer's own
// challenge servers are pointed at. certmagic starts a server for a
// challenge only when it can bind the port; finding it taken (and
// answering), it leaves the challenge to the distributed solver, which is
// what mcpgate wants: the worker owns no listening socket, the supervisor
// hands it the validation connections. Without the stub, certmagic would
// try to bind :80 and :443 itself.
func newSolverStub() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l, nil
}
