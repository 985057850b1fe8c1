package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/authserver"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/idp/github"
	"github.com/mcpgate/mcpgate/internal/idp/oidc"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/resource"
	"github.com/mcpgate/mcpgate/internal/revocation"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/backend"
	"github.com/mcpgate/mcpgate/internal/token"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// openTimeout bounds opening the store (connecting to PostgreSQL and
// migrating); a worker that cannot is restarted with back-off.
const openTimeout = 30 * time.Second

// oauth is a worker's authorization and resource server.
type oauth struct {
	store    store.Store
	keys     *keys.Set
	issuer   *token.Issuer
	verifier *token.Verifier
	revoked  *revocation.Mirror
	relay    *relayNotifier // the supervisor's revocation relay; nil without it
	server   *authserver.Server
	guard    *resource.Guard
	stop     context.CancelFunc
}

// setupOAuth opens the shared state and builds the servers. Without [oauth]
// only the guard exists (and lets everything through: config validation
// guarantees no proxy requires auth then).
func (w *Worker) setupOAuth() (*oauth, error) {
	spec := w.spec
	o := &oauth{}
	if spec.OAuth == nil {
		o.guard = resource.New(spec.Proxy, w.policy, nil, nil)
		return o, nil
	}
	oc := spec.OAuth
	octx, ocancel := context.WithTimeout(context.Background(), openTimeout)
	st, ks, err := backend.Open(octx, spec.StateDir, spec.Store, keys.Options{RetainFor: keys.RetainFor(oc.AccessTokenTTL)})
	ocancel()
	if err != nil {
		return nil, err
	}
	o.store = st
	o.keys = ks
	var notify revocation.Notifier // nil: the store's own (PostgreSQL), or polling
	if a, ok := st.(revocationAnnouncer); ok && spec.RevocationRelay {
		o.relay = newRelayNotifier()
		a.OnRevoke(func() {
			o.relay.wake()
			if err := w.hc.Send(wire.KindRevoked, nil); err != nil {
				// The others find it in their next slow poll.
				w.log.Warn("announcing a revocation to the supervisor", "err", err)
			}
		})
		notify = o.relay
	}
	o.revoked = revocation.New(st, notify)
	// A revoked token ends the streams it opened.
	w.proxy.WatchAccess(o.revoked)
	o.issuer = token.NewIssuer(ks, oc.AccessTokenTTL)
	o.verifier, err = token.NewVerifier(token.VerifierOptions{
		Keys:         ks,
		AcceptIssuer: w.policy.IsIssuer,
		Revoked:      o.revoked.Covers,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	provider, err := newProvider(oc)
	if err != nil {
		st.Close()
		return nil, err
	}
	o.server, err = authserver.New(authserver.Options{
		OAuth:   oc,
		Policy:  w.policy,
		Store:   st,
		IDP:     provider,
		Signer:  o.issuer,
		Reader:  o.verifier,
		Keys:    ks,
		Log:     w.log.With("component", "oauth"),
		Revoked: o.revoked.Covers,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	var origins []string
	for _, a := range oc.AllowedOrigins {
		origins = append(origins, strings.ToLower(a))
	}
	o.guard = resource.New(spec.Proxy, w.policy, o.verifier, origins)
	ctx, cancel := context.WithCancel(context.Background())
	o.stop = cancel
	go o.revoked.Run(ctx, w.log)
	go o.maintain(ctx, w)
	return o, nil
}

// revocationAnnouncer is a store that can announce its revocations
// (SQLite; PostgreSQL announces them to every node itself).
type revocationAnnouncer interface {
	OnRevoke(f func())
}

// relayNotifier is the supervisor's revocation relay as the mirror sees it
// (wire.KindRevoked): live as long as the worker runs, since a worker
// whose supervisor went away exits.
type relayNotifier struct{ ch chan struct{} }

func newRelayNotifier() *relayNotifier { return &relayNotifier{ch: make(chan struct{}, 1)} }

func (r *relayNotifier) Notify(context.Context) (<-chan struct{}, func() bool) {
	return r.ch, func() bool { return true }
}

// wake asks the mirror to read the log; wake-ups that arrive while one is
// pending are one.
func (r *relayNotifier) wake() {
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// maintain refreshes keys and cleans the store now and then.
func (o *oauth) maintain(ctx context.Context, w *Worker) {
	// Workers started together (serve, a reload) would otherwise clean the
	// shared SQLite store in the same instant every minute: with hundreds
	// of proxies most of them got SQLITE_BUSY. A random phase spreads them
	// over the interval; the first round comes sooner, never later.
	t := time.NewTimer(rand.N(keys.RefreshInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := o.keys.Refresh(); err != nil {
			w.log.Warn("refreshing signing keys", "err", err)
		}
		if err := o.store.Cleanup(ctx, time.Now()); err != nil {
			w.log.Warn("cleaning the OAuth store", "err", err)
		}
		if err := o.server.CollectClients(ctx); err != nil {
			w.log.Warn("collecting unused clients", "err", err)
		}
		t.Reset(keys.RefreshInterval)
	}
}

func (o *oauth) close() {
	if o.stop != nil {
		o.stop()
	}
	if o.store != nil {
		o.store.Close()
	}
}

func newProvider(oc *config.OAuth) (authserver.Provider, error) {
	switch {
	case oc.GitHub != nil:
		secret, err := readSecret(oc.GitHub.SecretFile)
		if err != nil {
			return nil, err
		}
		p, err := github.New(github.Config{
			ClientID: oc.GitHub.ClientID, ClientSecret: secret,
			AuthorizeURL: oc.GitHub.AuthorizeURL, TokenURL: oc.GitHub.TokenURL, APIURL: oc.GitHub.APIURL,
			NeedOrgs: len(oc.GitHub.AllowedOrgs) > 0 || len(oc.GitHub.AllowedTeams) > 0,
		}, nil)
		if err != nil {
			return nil, err
		}
		return p, nil
	case oc.OIDC != nil:
		secret, err := readSecret(oc.OIDC.SecretFile)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		p, err := oidc.New(ctx, oidc.Config{
			Issuer: oc.OIDC.Issuer, ClientID: oc.OIDC.ClientID, ClientSecret: secret,
			Scopes: oc.OIDC.Scopes, GroupsClaim: oc.OIDC.GroupsClaim, UsernameClaim: oc.OIDC.UsernameClaim,
		}, nil)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, errors.New("no identity provider configured")
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("client secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("client secret: %s is empty", path)
	}
	return s, nil
}
