package worker

import (
	"context"
	"errors"
	"time"

	"github.com/mcpgate/mcpgate/internal/acme"
	"github.com/mcpgate/mcpgate/internal/certstatus"
)

// acmeTLS1 is the ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// renewTimeout bounds a forced renewal: the CA's validation may be slow.
const renewTimeout = 5 * time.Minute

// newACME sets up the proxy's certificate manager; run starts it once the
// worker is ready, and serves without waiting for the certificates.
func (w *Worker) newACME() (*acme.Manager, error) {
	if w.spec.ACME == nil {
		return nil, errors.New("acme: the spec names no CA (a supervisor older than this worker?)")
	}
	m, err := acme.New(acme.Options{
		Names:    w.spec.Proxy.Hostnames,
		ACME:     w.spec.ACME,
		StateDir: w.spec.StateDir,
		Log:      w.log,
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// stopACME ends obtaining and renewing (at the drain); certificates
// already loaded keep serving until the worker exits.
func (w *Worker) stopACME() {
	if w.acme != nil {
		w.acmeStop.Do(w.acme.Stop)
	}
}

// renewCert forces a renewal asked for with `mcpgate certs renew`; the
// outcome shows in the status.
func (w *Worker) renewCert(name string) {
	if w.acme == nil || !w.acme.Manages(name) {
		w.log.Warn("renewal requested for a certificate this worker does not manage", "name", name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), renewTimeout)
	defer cancel()
	w.log.Info("ACME: renewing on request", "name", name)
	w.acme.Renew(ctx, name)
}

// certsChanged wakes the stats reporter when a certificate changes state;
// nil (never ready) without ACME.
func (w *Worker) certsChanged() <-chan struct{} {
	if w.acme == nil {
		return nil
	}
	return w.acme.Changed()
}

func (w *Worker) certStatus() []certstatus.Cert {
	if w.acme == nil {
		return nil
	}
	return w.acme.Status()
}
