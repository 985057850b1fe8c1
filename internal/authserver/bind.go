package authserver

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"

	"github.com/mcpgate/mcpgate/internal/idp"
	"github.com/mcpgate/mcpgate/internal/store"
)

// Binding a flow to a browser on the callback host.
//
// Every proxy host runs the authorization server, but the identity
// provider sends its response to one callback_url. The flow cookie on the
// host a flow started on cannot be read there, so the browser is bound on
// the callback host too: /authorize on the callback host sets the bind
// cookie itself; on any other host it redirects to /oauth/start on the
// callback host, which sets it once per flow. The callback compares the
// cookie with the hash stored in the flow before it redeems the
// provider's code, so a provider response carried into another browser (a
// victim's, following a link from the attacker who started the flow) is
// refused without logging anyone in.

const startPath = "/oauth/start"

// bindCookiePrefix names the bind cookies; each flow has its own, so a
// browser can run flows for several proxies at once without one
// overwriting another's binding on the shared callback host.
const bindCookiePrefix = "__Host-mcpgate-bind-"

// bindCookieName is the flow's bind cookie: a short tag derived from the
// flow ID (which the URLs of the flow carry anyway), not a secret.
func bindCookieName(flowID string) string { return bindCookiePrefix + hashHex(flowID)[:16] }

// isCallbackHost reports whether host (with an optional port) is the host
// of callback_url. Cookies do not depend on the port, so neither does this.
func (s *Server) isCallbackHost(host string) bool {
	return hostOnly(host) == hostOnly(s.callbackHost)
}

// startURL is /oauth/start on the callback host for flow id.
func (s *Server) startURL(id string) string {
	u := url.URL{Scheme: s.callbackScheme, Host: s.callbackHost, Path: startPath, RawQuery: url.Values{"flow": {id}}.Encode()}
	return u.String()
}

// start binds the browser to a flow started on another host, once, and
// sends it to the identity provider. A second visit (the attacker's link
// forwarded to a victim, or the victim's after the attacker's) is refused:
// only the first browser can bring the provider's response back.
func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		s.errorPage(w, http.StatusMethodNotAllowed, "Method not allowed", "Use GET.")
		return
	}
	id := r.URL.Query().Get("flow")
	p, err := s.o.Store.GetPending(r.Context(), id)
	if err != nil || p.Subject != "" {
		s.errorPage(w, http.StatusBadRequest, "Sign-in expired",
			"This sign-in is unknown or has expired. Start again from your application.")
		return
	}
	bind := randomToken()
	switch err := s.o.Store.BindPending(r.Context(), id, hashHex(bind)); {
	case errors.Is(err, store.ErrAlreadyUsed):
		s.log.Warn("sign-in link refused: already used by another browser", "host", p.Host, "client_id", p.ClientID)
		s.errorPage(w, http.StatusForbidden, "Sign-in link already used",
			"This sign-in link was already opened, maybe in another browser. If you did not start this sign-in, someone may have sent you the link; otherwise start again from your application.")
		return
	case err != nil:
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("binding a sign-in to the browser", "err", err)
		}
		s.errorPage(w, http.StatusBadRequest, "Sign-in expired",
			"This sign-in is unknown or has expired. Start again from your application.")
		return
	}
	setCookie(w, bindCookieName(id), bind, int(pendingTTL.Seconds()))
	s.toProvider(w, r, p)
}

// boundHere reports whether r carries the bind cookie of flow p.
func (s *Server) boundHere(r *http.Request, p *store.Pending) bool {
	ck, err := r.Cookie(bindCookieName(p.ID))
	if err != nil || ck.Value == "" || p.BindHash == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(hashHex(ck.Value)), []byte(p.BindHash)) == 1
}

// toProvider sends the browser to the identity provider. The client's
// resource is never forwarded upstream: the provider authenticates the
// user for mcpgate, not for the MCP server.
func (s *Server) toProvider(w http.ResponseWriter, r *http.Request, p *store.Pending) {
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, s.o.IDP.AuthCodeURL(p.ID, s.o.OAuth.CallbackURL, upstreamSecrets(p)), http.StatusFound)
}

// upstreamSecrets are the flow's PKCE verifier and nonce for the provider.
func upstreamSecrets(p *store.Pending) idp.Secrets {
	return idp.Secrets{Verifier: p.UpstreamVerifier, Nonce: p.Nonce}
}
