package authserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/metrics"
	"github.com/mcpgate/mcpgate/internal/store"
)

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// clientForm reads the form of a client-authenticated POST endpoint (token,
// revocation, introspection) and authenticates the client; on failure it
// has answered.
func (s *Server) clientForm(w http.ResponseWriter, r *http.Request) (*client, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, errInvalidRequest("use POST"))
		return nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeJSONError(w, errInvalidRequest("the request body must be application/x-www-form-urlencoded"))
		return nil, false
	}
	q := r.URL.Query()
	if q.Has("code") || q.Has("refresh_token") || q.Has("client_secret") || q.Has("token") {
		writeJSONError(w, errInvalidRequest("credentials must be sent in the request body"))
		return nil, false
	}
	c, oe := s.authenticateClient(r)
	if oe != nil {
		writeJSONError(w, oe)
		return nil, false
	}
	return c, true
}

// token is the token endpoint.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	c, ok := s.clientForm(w, r)
	if !ok {
		return
	}
	var oe *oauthError
	var resp *tokenResponse
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "authorization_code":
		resp, oe = s.codeGrant(r, c)
	case "refresh_token":
		resp, oe = s.refreshGrant(r, c)
	case "":
		oe = errInvalidRequest("grant_type is required")
	default:
		oe = errUnsupportedGrantType("supported: authorization_code, refresh_token")
	}
	if oe != nil {
		writeJSONError(w, oe)
		return
	}
	metrics.Default.TokenIssued(r.PostForm.Get("grant_type"))
	writeJSON(w, http.StatusOK, resp)
}

// codeGrant redeems an authorization code. A code is single use; a second
// use by the client it was issued to, with the right PKCE verifier, means
// the code leaked together with its verifier, and everything the first
// redemption issued is revoked (RFC 6749 §4.1.2). Anyone else presenting a
// redeemed code (another client, or without the verifier) only gets
// invalid_grant: a code seen in a log or a Referer must not be a way to
// kill the victim's grant.
func (s *Server) codeGrant(r *http.Request, c *client) (*tokenResponse, *oauthError) {
	f := r.PostForm
	code, verifier := f.Get("code"), f.Get("code_verifier")
	if code == "" {
		return nil, errInvalidRequest("code is required")
	}
	if verifier == "" {
		return nil, errInvalidRequest("code_verifier is required (PKCE)")
	}
	now := s.now()
	ac, err := s.o.Store.ConsumeAuthCode(r.Context(), hashHex(code), now)
	switch {
	case errors.Is(err, store.ErrAlreadyUsed):
		if ac.ClientID != c.ID || !validVerifier(verifier) || !pkceMatches(verifier, ac.CodeChallenge) {
			s.log.Warn("redeemed authorization code presented again by another client or without its verifier; nothing revoked",
				"client_id", c.ID, "issued_to", ac.ClientID)
			return nil, errInvalidGrant("the authorization code is invalid or was already used")
		}
		s.log.Warn("authorization code reused; revoking its grant", "client_id", ac.ClientID)
		if err := s.o.Store.RevokeGrant(r.Context(), ac.GrantID, now.Add(s.o.OAuth.AccessTokenTTL)); err != nil {
			s.log.Error("revoking grant", "err", err)
		}
		return nil, errInvalidGrant("the authorization code was already used")
	case errors.Is(err, store.ErrNotFound):
		return nil, errInvalidGrant("the authorization code is invalid or expired")
	case err != nil:
		s.log.Error("redeeming code", "err", err)
		return nil, errStore(err)
	}
	if ac.ClientID != c.ID {
		return nil, errInvalidGrant("the authorization code was issued to another client")
	}
	if ru := f.Get("redirect_uri"); ru != "" && ru != ac.RedirectURI {
		return nil, errInvalidGrant("redirect_uri does not match the authorization request")
	}
	if !validVerifier(verifier) || !pkceMatches(verifier, ac.CodeChallenge) {
		return nil, errInvalidGrant("code_verifier does not match the code_challenge")
	}
	if res := f.Get("resource"); res != "" {
		got, _, oe := s.resolveResource(res, r)
		if oe != nil || got != ac.Resource {
			return nil, errInvalidTarget("resource does not match the authorization request")
		}
	}
	g := &grant{id: ac.GrantID, subject: ac.Subject, login: ac.Login, scope: ac.Scope, resource: ac.Resource, host: ac.Host}
	resp, oe := s.issue(c, g)
	if oe != nil || !c.allowsRefresh() {
		return resp, oe
	}
	authTime := ac.AuthTime
	if authTime.IsZero() {
		authTime = now // a code stored before login times were kept
	}
	rt := randomToken()
	err = s.o.Store.CreateRefreshToken(r.Context(), &store.RefreshToken{
		TokenHash: hashHex(rt), GrantID: g.id, ClientID: c.ID, Subject: g.subject, Login: g.login,
		Scope: g.scope, Resource: g.resource, Host: g.host, Orgs: ac.Orgs, Teams: ac.Teams,
		AuthTime: authTime, CreatedAt: now, ExpiresAt: authTime.Add(s.o.OAuth.RefreshTokenTTL),
	})
	if err != nil {
		s.log.Error("storing refresh token", "err", err)
		return nil, errStore(err)
	}
	resp.RefreshToken = rt
	return resp, nil
}

// grant is what an access token is issued from.
type grant struct {
	id, subject, login, scope, resource, host string
}

// issue mints an access token for g.
func (s *Server) issue(c *client, g *grant) (*tokenResponse, *oauthError) {
	now := s.now()
	// JWT times are whole seconds: fix them here, so expires_in tells the
	// client exactly what the token says.
	iat := now.Truncate(time.Second)
	at := &identity.Principal{
		Issuer: "https://" + g.host, Subject: g.subject, Audience: g.resource, ClientID: c.ID,
		Scopes: strings.Fields(g.scope), Login: g.login, GrantID: g.id, TokenID: randomToken()[:22],
		IssuedAt: iat, ExpiresAt: iat.Add(s.o.OAuth.AccessTokenTTL),
	}
	raw, err := s.o.Signer.Issue(at)
	if err != nil {
		s.log.Error("signing access token", "err", err)
		return nil, errStore(err)
	}
	s.log.Info("token issued", "user", g.login, "client_id", c.ID, "scope", g.scope, "resource", g.resource)
	return &tokenResponse{AccessToken: raw, TokenType: "Bearer", ExpiresIn: int64(at.ExpiresAt.Sub(now) / time.Second), Scope: g.scope}, nil
}

// successorLabel separates successor derivation from any other use of
// HMAC keyed by a refresh token; the version allows changing the scheme.
const successorLabel = "mcpgate refresh successor v1\x00"

// successorToken is the refresh token that replaces raw in a rotation with
// nonce: base64url(HMAC-SHA256(key = raw, successorLabel || nonce)).
//
// Deriving the successor instead of drawing it at random lets a retry
// inside refresh_reuse_grace get exactly the successor the first refresh
// stored (its hash matches), without keeping any token in plaintext:
//   - Computing it takes raw, a 256-bit random value only the client holds
//     (the store has its SHA-256), and nonce, a 256-bit random value only
//     the store holds (written with the rotation). Neither alone suffices,
//     and HMAC-SHA256 with a 256-bit key is a PRF, so the successor is as
//     unguessable as a random token.
//   - The nonce is what keeps rotation's theft detection: without it
//     anyone holding an old, rotated token could compute every later one
//     and use the live token unnoticed instead of tripping reuse detection.
//   - After the grace window a rotated token is reuse: refreshGrant
//     revokes the family before anything is derived.
func successorToken(raw, nonce string) string {
	m := hmac.New(sha256.New, []byte(raw))
	m.Write([]byte(successorLabel))
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// maxSuccessorWalk bounds how far a retry inside the grace window follows
// the family forward (the client may have rotated the successor too).
const maxSuccessorWalk = 4

// refreshGrant rotates a refresh token. Every refresh re-evaluates the
// current policy for the user and the resource (see reevaluate) and keeps
// the family's absolute lifetime: no token of a family outlives its login
// plus refresh_token_ttl, however often it rotates. Access tokens issued
// before a policy change stay valid until they expire (access_token_ttl
// bounds that); memberships changed at the identity provider are seen at
// the next login, which the absolute lifetime forces.
//
// A token rotated moments ago (a client racing its own refreshes) gets the
// successor already issued, within the grace window; any later reuse means
// the token leaked, and the whole family is revoked.
func (s *Server) refreshGrant(r *http.Request, c *client) (*tokenResponse, *oauthError) {
	f := r.PostForm
	raw := f.Get("refresh_token")
	if raw == "" {
		return nil, errInvalidRequest("refresh_token is required")
	}
	requested := strings.Fields(f.Get("scope"))
	ctx := r.Context()
	for attempt := 0; attempt < 3; attempt++ {
		now := s.now()
		rt, err := s.o.Store.GetRefreshToken(ctx, hashHex(raw))
		if errors.Is(err, store.ErrNotFound) {
			return nil, errInvalidGrant("the refresh token is invalid, expired or revoked")
		}
		if err != nil {
			s.log.Error("reading refresh token", "err", err)
			return nil, errStore(err)
		}
		if rt.ClientID != c.ID {
			return nil, errInvalidGrant("the refresh token was issued to another client")
		}
		if !c.allowsRefresh() {
			return nil, errUnauthorizedClient("this client may not use refresh tokens")
		}
		if res := f.Get("resource"); res != "" {
			got, _, oe := s.resolveResource(res, r)
			if oe != nil || got != rt.Resource {
				return nil, errInvalidTarget("resource does not match the grant")
			}
		}
		if !rt.RotatedAt.IsZero() {
			if now.Sub(rt.RotatedAt) > s.o.OAuth.RefreshReuseGrace {
				s.log.Warn("refresh token reused after rotation; revoking its family", "client_id", c.ID, "user", rt.Login)
				if err := s.o.Store.RevokeGrant(ctx, rt.GrantID, now.Add(s.o.OAuth.AccessTokenTTL)); err != nil {
					s.log.Error("revoking grant", "err", err)
				}
				return nil, errInvalidGrant("the refresh token was already used")
			}
			return s.repeatRefresh(r, c, raw, rt, requested)
		}
		end := s.familyEnd(rt)
		if !now.Before(end) {
			return nil, errInvalidGrant("the refresh token expired: refresh_token_ttl counts from the login")
		}
		family, access, oe := s.reevaluate(r, rt, requested)
		if oe != nil {
			return nil, oe
		}
		nonce := randomToken()
		next := successorToken(raw, nonce)
		err = s.o.Store.RotateRefreshToken(ctx, rt.TokenHash, nonce, &store.RefreshToken{
			TokenHash: hashHex(next), GrantID: rt.GrantID, ClientID: c.ID, Subject: rt.Subject, Login: rt.Login,
			Scope: family, Resource: rt.Resource, Host: rt.Host, Orgs: rt.Orgs, Teams: rt.Teams,
			AuthTime: rt.AuthTime, CreatedAt: now, ExpiresAt: end,
		}, now)
		switch {
		case errors.Is(err, store.ErrAlreadyRotated):
			continue // lost a rotation race: read again, now rotated
		case errors.Is(err, store.ErrNotFound):
			return nil, errInvalidGrant("the refresh token is invalid, expired or revoked")
		case err != nil:
			s.log.Error("rotating refresh token", "err", err)
			return nil, errStore(err)
		}
		return s.refreshResponse(c, rt, access, next)
	}
	return nil, errServer("try again")
}

// repeatRefresh answers a refresh with a token rotated inside the grace
// window: the successor already stored (following the family forward if
// that was rotated too), with a new access token under the current policy.
func (s *Server) repeatRefresh(r *http.Request, c *client, raw string, rt *store.RefreshToken, requested []string) (*tokenResponse, *oauthError) {
	cur, curRaw := rt, raw
	for i := 0; !cur.RotatedAt.IsZero(); i++ {
		if i == maxSuccessorWalk || cur.RotationNonce == "" {
			return nil, errInvalidGrant("the refresh token was already used")
		}
		curRaw = successorToken(curRaw, cur.RotationNonce)
		next, err := s.o.Store.GetRefreshToken(r.Context(), hashHex(curRaw))
		if errors.Is(err, store.ErrNotFound) {
			return nil, errInvalidGrant("the refresh token is invalid, expired or revoked")
		}
		if err != nil {
			s.log.Error("reading refresh token", "err", err)
			return nil, errStore(err)
		}
		cur = next
	}
	if !s.now().Before(s.familyEnd(cur)) {
		return nil, errInvalidGrant("the refresh token expired: refresh_token_ttl counts from the login")
	}
	_, access, oe := s.reevaluate(r, cur, requested)
	if oe != nil {
		return nil, oe
	}
	return s.refreshResponse(c, cur, access, curRaw)
}

func (s *Server) refreshResponse(c *client, rt *store.RefreshToken, scope, refresh string) (*tokenResponse, *oauthError) {
	resp, oe := s.issue(c, &grant{id: rt.GrantID, subject: rt.Subject, login: rt.Login, scope: scope, resource: rt.Resource, host: rt.Host})
	if oe != nil {
		return nil, oe
	}
	resp.RefreshToken = refresh
	return resp, nil
}

// familyEnd is when rt's family ends: its login plus the refresh_token_ttl
// configured now, and never later than rt's own expiry (a shorter ttl
// after a reload applies at once; a longer one does not extend a family).
func (s *Server) familyEnd(rt *store.RefreshToken) time.Time {
	if rt.AuthTime.IsZero() {
		return rt.ExpiresAt
	}
	end := rt.AuthTime.Add(s.o.OAuth.RefreshTokenTTL)
	if rt.ExpiresAt.Before(end) {
		end = rt.ExpiresAt
	}
	return end
}

// reevaluate applies the current configuration to a refresh: the resource
// must still be protected here, the user must still be allowed (user
// lists, and the org, team or group restrictions checked against the
// memberships stored at the login), and the family keeps only the scopes
// still granted. It returns the family's scope and the access token's
// (narrowed further to the requested scopes, which must lie within the
// family's).
func (s *Server) reevaluate(r *http.Request, rt *store.RefreshToken, requested []string) (family, access string, oe *oauthError) {
	_, p, oe := s.resolveResource(rt.Resource, r)
	if oe != nil {
		return "", "", errInvalidGrant("the resource of this grant is no longer served by this gateway")
	}
	who := &identity.User{Subject: rt.Subject, Login: rt.Login, Orgs: rt.Orgs, Teams: rt.Teams}
	if !s.allowed(p, who) {
		s.log.Info("refresh refused: user no longer allowed", "user", rt.Login, "proxy", p.Name)
		return "", "", errInvalidGrant("the user may no longer use this resource")
	}
	had := strings.Fields(rt.Scope)
	for _, sc := range requested {
		if !slices.Contains(had, sc) {
			return "", "", errInvalidScope("a refresh cannot widen the granted scope")
		}
	}
	granted := s.grant(p, who, had)
	var kept, narrowed []string
	for _, sc := range had {
		if !slices.Contains(granted, sc) {
			continue
		}
		kept = append(kept, sc)
		if len(requested) == 0 || slices.Contains(requested, sc) {
			narrowed = append(narrowed, sc)
		}
	}
	if len(kept) == 0 {
		s.log.Info("refresh refused: no scope left for user", "user", rt.Login, "proxy", p.Name)
		return "", "", errInvalidGrant("the user no longer has any permission on this resource")
	}
	if len(narrowed) == 0 {
		return "", "", errInvalidScope("none of the requested scopes is granted any more")
	}
	if len(kept) < len(had) {
		s.log.Info("refresh narrowed to the current policy", "user", rt.Login, "proxy", p.Name, "scope", strings.Join(kept, " "))
	}
	return strings.Join(kept, " "), strings.Join(narrowed, " "), nil
}

func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range v {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

func pkceMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

// revoke is RFC 7009: always 200, whatever the token was.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	c, ok := s.clientForm(w, r)
	if !ok {
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeJSONError(w, errInvalidRequest("token is required"))
		return
	}
	now := s.now()
	rt, err := s.o.Store.GetRefreshToken(r.Context(), hashHex(tok))
	if errors.Is(err, store.ErrUnavailable) {
		// Not "unknown token, 200": the client would believe a refresh
		// token revoked that is not.
		s.log.Error("reading refresh token", "err", err)
		writeJSONError(w, errUnavailable())
		return
	}
	if err == nil {
		if rt.ClientID == c.ID {
			if err := s.o.Store.RevokeGrant(r.Context(), rt.GrantID, now.Add(s.o.OAuth.AccessTokenTTL)); err != nil {
				s.log.Error("revoking grant", "err", err)
				writeJSONError(w, errStore(err))
				return
			}
			s.log.Info("refresh token revoked", "client_id", c.ID, "user", rt.Login)
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if at, err := s.o.Reader.VerifyAnyAudience(tok); err == nil && at.ClientID == c.ID {
		if err := s.o.Store.RevokeAccessToken(r.Context(), at.TokenID, at.ExpiresAt); err != nil {
			s.log.Error("revoking access token", "err", err)
			writeJSONError(w, errStore(err))
			return
		}
		s.log.Info("access token revoked", "client_id", c.ID, "user", at.Login)
	}
	w.WriteHeader(http.StatusOK)
}

// introspect is RFC 7662. The caller must authenticate as a confidential
// client (401 invalid_client otherwise, as §2.1 requires). A resource
// server, a static client with introspect = true, learns about any token.
// Any other confidential client (dynamically registered, or static without
// introspect) learns only about its own tokens, which it holds anyway;
// every other token is {"active": false}, exactly as for an unknown one,
// so a malicious client cannot probe other clients' tokens.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	c, ok := s.clientForm(w, r)
	if !ok {
		return
	}
	if c.Public {
		writeJSONError(w, errInvalidClient("introspection needs a confidential client"))
		return
	}
	mayKnow := func(clientID string) bool { return c.Introspect || clientID == c.ID }
	inactive := map[string]any{"active": false}
	tok := r.PostForm.Get("token")
	if at, err := s.o.Reader.VerifyAnyAudience(tok); err == nil {
		if !mayKnow(at.ClientID) || s.revokedAccess(r, at) {
			writeJSON(w, http.StatusOK, inactive)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "scope": at.Scope(), "client_id": at.ClientID, "username": at.Login,
			"token_type": "Bearer", "exp": at.ExpiresAt.Unix(), "iat": at.IssuedAt.Unix(),
			"sub": at.Subject, "aud": at.Audience, "iss": at.Issuer, "jti": at.TokenID,
		})
		return
	}
	if rt, err := s.o.Store.GetRefreshToken(r.Context(), hashHex(tok)); err == nil && rt.RotatedAt.IsZero() && mayKnow(rt.ClientID) {
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "scope": rt.Scope, "client_id": rt.ClientID, "username": rt.Login,
			"token_type": "refresh_token", "exp": s.familyEnd(rt).Unix(), "iat": rt.CreatedAt.Unix(),
			"sub": rt.Subject, "aud": rt.Resource, "iss": "https://" + rt.Host,
		})
		return
	}
	writeJSON(w, http.StatusOK, inactive)
}

// Revoked reports whether an access token is covered by a revocation; set
// by the worker, which keeps the revocation log in memory.
type Revoked func(*identity.Principal) bool

func (s *Server) revokedAccess(_ *http.Request, at *identity.Principal) bool {
	if s.o.Revoked == nil {
		return false
	}
	return s.o.Revoked(at)
}
