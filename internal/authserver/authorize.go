package authserver

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mcpgate/mcpgate/internal/store"
)

const (
	continuePath = "/oauth/continue"
	consentPath  = "/oauth/consent"
	// flowCookie binds a flow to the browser that started it, on the host
	// it started on, so a login finished elsewhere (login CSRF) cannot be
	// continued there.
	flowCookie = "__Host-mcpgate-flow"
	csrfCookie = "__Host-mcpgate-csrf"
)

// Limits on an authorization request: everything in it may be stored
// until the flow expires, by anyone who can reach a proxy host.
const (
	maxAuthorizeBody = 16 << 10
	maxStateLen      = 1024
	maxScopeLen      = 512
	// maxPendingPerKey bounds the live pending flows of one client
	// network (clientKey), counted in the shared store, so one address
	// cannot fill the disk. Abandoned flows count until they expire.
	maxPendingPerKey = 30
)

// authorize handles the authorization request. Errors that cannot be
// sent to a verified redirect URI are shown to the user instead.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		s.errorPage(w, http.StatusMethodNotAllowed, "Method not allowed", "Use GET.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxAuthorizeBody)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "Bad request", "The authorization request could not be read.")
		return
	}
	q := r.Form
	// Before anything else (the client lookup may fetch a document): the
	// request must be small enough to store.
	if len(q.Get("state")) > maxStateLen || len(q.Get("scope")) > maxScopeLen {
		s.errorPage(w, http.StatusBadRequest, "Bad request", "The authorization request is too large.")
		return
	}
	c, err := s.lookupClient(r.Context(), q.Get("client_id"))
	if s.unavailable(w, err) {
		return
	}
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "Unknown application",
			"The application that sent you here is not registered with this server.")
		return
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" && len(c.RedirectURIs) == 1 {
		redirectURI = c.RedirectURIs[0]
	}
	if redirectURI == "" || !matchRedirect(c.RedirectURIs, redirectURI) {
		s.errorPage(w, http.StatusBadRequest, "Invalid redirect",
			"The application asked to return to an address it did not register, so the request was stopped.")
		return
	}
	iss := issuer(r)
	state := q.Get("state")
	fail := func(e *oauthError) { redirectError(w, r, redirectURI, state, iss, e) }
	failStore := func(err error) {
		if !s.unavailable(w, err) {
			fail(errServer("try again"))
		}
	}
	if q.Get("response_type") != "code" {
		fail(&oauthError{http.StatusBadRequest, "unsupported_response_type", "only response_type=code is supported"})
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "":
		fail(errInvalidRequest("PKCE is required: send code_challenge with code_challenge_method=S256"))
		return
	case method != "S256":
		fail(errInvalidRequest("code_challenge_method must be S256"))
		return
	case len(challenge) != 43 || strings.ContainsAny(challenge, "+/="):
		fail(errInvalidRequest("code_challenge must be a base64url SHA-256 hash"))
		return
	}
	resources := q["resource"]
	if len(resources) > 1 {
		fail(errInvalidTarget("one resource per request"))
		return
	}
	var requested string
	if len(resources) == 1 {
		requested = resources[0]
	}
	resource, _, oe := s.resolveResource(requested, r)
	if oe != nil {
		fail(oe)
		return
	}
	key := clientKey(r)
	if n, err := s.o.Store.CountPending(r.Context(), key, s.now()); err != nil {
		s.log.Error("counting pending authorizations", "err", err)
		failStore(err)
		return
	} else if n >= maxPendingPerKey {
		s.log.Warn("authorization refused: too many pending sign-ins from one address", "client", key, "pending", n)
		w.Header().Set("Retry-After", strconv.Itoa(int(pendingTTL.Seconds())))
		s.errorPage(w, http.StatusTooManyRequests, "Too many sign-ins",
			"Too many sign-ins were started from your network and not finished. Finish or wait for them to expire, then try again.")
		return
	}
	p := &store.Pending{
		ID:                  randomToken(),
		Host:                flowHost(r),
		ClientID:            c.ID,
		RedirectURI:         redirectURI,
		State:               state,
		CodeChallenge:       challenge,
		CodeChallengeMethod: method,
		Scope:               strings.Join(strings.Fields(q.Get("scope")), " "),
		Resource:            resource,
		ClientKey:           key,
		UpstreamVerifier:    randomToken(),
		Nonce:               randomToken(),
		ExpiresAt:           s.now().Add(pendingTTL),
	}
	// On the callback host the browser is bound right here; elsewhere it
	// is sent through /oauth/start on the callback host first (the bind
	// cookie must live where the provider's response arrives).
	var bind string
	onCallbackHost := s.isCallbackHost(r.Host)
	if onCallbackHost {
		bind = randomToken()
		p.BindHash = hashHex(bind)
	}
	if err := s.o.Store.PutPending(r.Context(), p); err != nil {
		s.log.Error("storing authorization request", "err", err)
		failStore(err)
		return
	}
	setCookie(w, flowCookie, hashHex(p.ID), int(pendingTTL.Seconds()))
	if !onCallbackHost {
		http.Redirect(w, r, s.startURL(p.ID), http.StatusFound)
		return
	}
	setCookie(w, bindCookieName(p.ID), bind, int(pendingTTL.Seconds()))
	s.toProvider(w, r, p)
}

// callback is the single URL registered at the identity provider. It
// checks that the browser bringing the provider's response is the one the
// flow was bound to, before the provider's code is redeemed; then it logs
// the user in, decides what they may get, and sends the browser back to
// the host the flow started on with a one-time proof.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, err := s.o.Store.GetPending(r.Context(), q.Get("state"))
	if s.unavailable(w, err) {
		return
	}
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "Sign-in expired",
			"This sign-in is unknown or has expired. Start again from your application.")
		return
	}
	if !s.boundHere(r, p) {
		// Login CSRF: someone else's flow, finished in this browser. The
		// flow is dead; the provider's code is never redeemed.
		s.o.Store.TakePending(r.Context(), p.ID)
		s.log.Warn("login refused: the provider's response came to a browser that did not start the flow",
			"host", p.Host, "client_id", p.ClientID)
		s.errorPage(w, http.StatusForbidden, "Sign-in not recognised",
			"This sign-in was not started in this browser, so it was stopped. If you did not start it, someone may have sent you this link; otherwise start again from your application.")
		return
	}
	clearCookie(w, bindCookieName(p.ID))
	if p.Subject != "" {
		s.errorPage(w, http.StatusBadRequest, "Sign-in expired", "This sign-in was already used. Start again from your application.")
		return
	}
	if e := q.Get("error"); e != "" {
		s.o.Store.TakePending(r.Context(), p.ID)
		redirectError(w, r, p.RedirectURI, p.State, "https://"+p.Host, &oauthError{Code: "access_denied", Desc: "the identity provider did not sign the user in"})
		return
	}
	id, err := s.o.IDP.Exchange(r.Context(), q.Get("code"), s.o.OAuth.CallbackURL, upstreamSecrets(p))
	if err != nil {
		s.o.Store.TakePending(r.Context(), p.ID)
		s.log.Warn("upstream login failed", "err", err)
		s.errorPage(w, http.StatusBadGateway, "Sign-in failed",
			"The identity provider could not confirm who you are. Start again from your application.")
		return
	}
	_, proxy, oe := s.resolveResource(p.Resource, r)
	if oe != nil {
		s.o.Store.TakePending(r.Context(), p.ID)
		s.errorPage(w, http.StatusBadRequest, "Unknown resource", "The requested server is no longer configured.")
		return
	}
	if !s.allowed(proxy, id) {
		s.o.Store.TakePending(r.Context(), p.ID)
		s.log.Info("login refused: user not allowed", "user", id.Login, "proxy", proxy.Name)
		s.errorPage(w, http.StatusForbidden, "Access denied",
			"You signed in as "+id.Login+", but that account may not use "+proxy.Name+". Ask the administrator to add you.")
		return
	}
	granted := s.grant(proxy, id, strings.Fields(p.Scope))
	if len(granted) == 0 {
		s.o.Store.TakePending(r.Context(), p.ID)
		s.log.Info("login refused: no scope for user", "user", id.Login, "proxy", proxy.Name)
		s.errorPage(w, http.StatusForbidden, "No access",
			"You signed in as "+id.Login+", but that account has no permissions on "+proxy.Name+". Ask the administrator to add you.")
		return
	}
	proof := randomToken()
	p.Subject, p.Login, p.Granted, p.ProofHash = id.Subject, id.Login, strings.Join(granted, " "), hashHex(proof)
	// Kept with the grant: every refresh re-checks them against the
	// configuration of the day.
	p.Orgs, p.Teams = id.Orgs, id.Teams
	// The provider's code is redeemed: its verifier and nonce are spent.
	p.UpstreamVerifier, p.Nonce = "", ""
	if err := s.o.Store.UpdatePending(r.Context(), p); err != nil {
		s.log.Error("storing login", "err", err)
		if !s.unavailable(w, err) {
			s.errorPage(w, http.StatusInternalServerError, "Sign-in failed", "Try again.")
		}
		return
	}
	u := url.URL{Scheme: "https", Host: p.Host, Path: continuePath, RawQuery: url.Values{"flow": {p.ID}, "proof": {proof}}.Encode()}
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// continueFlow runs on the originating host after the login: consent if
// needed, else the code.
func (s *Server) continueFlow(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, c, ok := s.flowFromRequest(w, r, q.Get("flow"), q.Get("proof"))
	if !ok {
		return
	}
	if c.needsConsent() {
		cons, err := s.o.Store.GetConsent(r.Context(), p.Subject, c.ID)
		if err != nil || !covers(cons.Scope, p.Granted) {
			s.consentPage(w, r, p, c, q.Get("proof"))
			return
		}
	}
	s.issueCode(w, r, p)
}

// consent handles the consent form.
func (s *Server) consent(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.errorPage(w, http.StatusMethodNotAllowed, "Method not allowed", "Use the form.")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	ck, err := r.Cookie(csrfCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form was not submitted from this site. Start again from your application.")
		return
	}
	p, c, ok := s.flowFromRequest(w, r, r.PostForm.Get("flow"), r.PostForm.Get("proof"))
	if !ok {
		return
	}
	clearCookie(w, csrfCookie)
	if r.PostForm.Get("decision") != "approve" {
		s.o.Store.TakePending(r.Context(), p.ID)
		redirectError(w, r, p.RedirectURI, p.State, issuer(r), &oauthError{Code: "access_denied", Desc: "the user denied the request"})
		return
	}
	if err := s.o.Store.PutConsent(r.Context(), &store.Consent{Subject: p.Subject, ClientID: c.ID, Scope: p.Granted, GrantedAt: s.now()}); err != nil {
		s.log.Error("storing consent", "err", err)
	}
	s.issueCode(w, r, p)
}

// flowFromRequest loads a logged-in flow for this browser and host. It
// takes both halves: the flow cookie, set on this host in the browser that
// started the flow, and the proof the callback gave the browser that
// signed in. A flow whose login came back elsewhere has only one of them.
func (s *Server) flowFromRequest(w http.ResponseWriter, r *http.Request, flow, proof string) (*store.Pending, *client, bool) {
	ck, err := r.Cookie(flowCookie)
	cookieOK := flow != "" && err == nil && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(hashHex(flow))) == 1
	p, err := s.o.Store.GetPending(r.Context(), flow)
	if s.unavailable(w, err) {
		return nil, nil, false
	}
	if err != nil || p.Subject == "" || p.Host != flowHost(r) {
		if !cookieOK {
			s.errorPage(w, http.StatusForbidden, "Sign-in not recognised",
				"This sign-in was not started in this browser. Start again from your application.")
			return nil, nil, false
		}
		s.errorPage(w, http.StatusBadRequest, "Sign-in expired", "This sign-in is unknown or has expired. Start again from your application.")
		return nil, nil, false
	}
	proofOK := p.ProofHash != "" && subtle.ConstantTimeCompare([]byte(hashHex(proof)), []byte(p.ProofHash)) == 1
	if !cookieOK || !proofOK {
		if cookieOK != proofOK {
			// One half only: the flow was started in one browser and signed
			// in in another, so the identity attached is not the starter's
			// (or the starter's link was used by someone else). The flow is
			// dead, so the other half is worthless too.
			s.o.Store.TakePending(r.Context(), p.ID)
			s.log.Warn("sign-in refused: started and signed in in different browsers", "host", p.Host, "client_id", p.ClientID,
				"has_flow_cookie", cookieOK, "has_proof", proofOK)
		}
		s.errorPage(w, http.StatusForbidden, "Sign-in not recognised",
			"This sign-in was not started and completed in the same browser, so it was stopped. If you did not start it, someone may have sent you a link; otherwise start again from your application.")
		return nil, nil, false
	}
	c, err := s.lookupClient(r.Context(), p.ClientID)
	if s.unavailable(w, err) {
		return nil, nil, false
	}
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "Unknown application", "The application is no longer registered.")
		return nil, nil, false
	}
	return p, c, true
}

func covers(have, want string) bool {
	h := strings.Fields(have)
	for _, s := range strings.Fields(want) {
		if !slices.Contains(h, s) {
			return false
		}
	}
	return true
}

// issueCode ends the flow: a single-use code bound to client, redirect
// URI, PKCE challenge and resource, returned with state and iss.
func (s *Server) issueCode(w http.ResponseWriter, r *http.Request, p *store.Pending) {
	if _, err := s.o.Store.TakePending(r.Context(), p.ID); err != nil {
		s.errorPage(w, http.StatusBadRequest, "Sign-in expired", "This sign-in was already used. Start again from your application.")
		return
	}
	clearCookie(w, flowCookie)
	code := randomToken()
	err := s.o.Store.CreateAuthCode(r.Context(), &store.AuthCode{
		CodeHash: hashHex(code), GrantID: randomToken(), ClientID: p.ClientID, RedirectURI: p.RedirectURI,
		CodeChallenge: p.CodeChallenge, Resource: p.Resource, Scope: p.Granted, Subject: p.Subject,
		Login: p.Login, Host: p.Host, Orgs: p.Orgs, Teams: p.Teams, AuthTime: s.now(), ExpiresAt: s.now().Add(codeTTL),
	})
	if err != nil {
		s.log.Error("storing code", "err", err)
		if s.unavailable(w, err) {
			return
		}
		redirectError(w, r, p.RedirectURI, p.State, "https://"+p.Host, errServer("try again"))
		return
	}
	u, err := url.Parse(p.RedirectURI)
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "Invalid redirect", "The application's address is invalid.")
		return
	}
	qv := u.Query()
	qv.Set("code", code)
	if p.State != "" {
		qv.Set("state", p.State)
	}
	qv.Set("iss", "https://"+p.Host)
	u.RawQuery = qv.Encode()
	s.log.Info("authorization granted", "user", p.Login, "client_id", p.ClientID, "scope", p.Granted, "resource", p.Resource)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}
