package authserver

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

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
	writeJSON(w, http.StatusOK, resp)
}

// codeGrant redeems an authorization code (single use; a second use
// revokes everything the first issued).
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
		s.log.Warn("authorization code reused; revoking its grant", "client_id", ac.ClientID)
		if err := s.o.Store.RevokeGrant(r.Context(), ac.GrantID, now.Add(s.o.OAuth.AccessTokenTTL)); err != nil {
			s.log.Error("revoking grant", "err", err)
		}
		return nil, errInvalidGrant("the authorization code was already used")
	case errors.Is(err, store.ErrNotFound):
		return nil, errInvalidGrant("the authorization code is invalid or expired")
	case err != nil:
		s.log.Error("redeeming code", "err", err)
		return nil, errServer("try again")
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
	return s.issue(r, c, &grant{
		id: ac.GrantID, subject: ac.Subject, login: ac.Login, scope: ac.Scope,
		resource: ac.Resource, host: ac.Host,
	}, "")
}

// grant is what tokens are issued from.
type grant struct {
	id, subject, login, scope, resource, host string
}

// issue mints an access token and, for clients that use refresh tokens, a
// refresh token in the grant's family. replaces, if set, is the refresh
// token hash this one rotates.
func (s *Server) issue(r *http.Request, c *client, g *grant, replaces string) (*tokenResponse, *oauthError) {
	now := s.now()
	// JWT times are whole seconds: fix them here, so expires_in tells the
	// client exactly what the token says.
	iat := now.Truncate(time.Second)
	at := &AccessToken{
		Issuer: "https://" + g.host, Subject: g.subject, Audience: g.resource, ClientID: c.ID,
		Scope: g.scope, Login: g.login, GrantID: g.id, JTI: randomToken()[:22],
		IssuedAt: iat, ExpiresAt: iat.Add(s.o.OAuth.AccessTokenTTL),
	}
	raw, err := s.o.Tokens.Issue(at)
	if err != nil {
		s.log.Error("signing access token", "err", err)
		return nil, errServer("try again")
	}
	resp := &tokenResponse{AccessToken: raw, TokenType: "Bearer", ExpiresIn: int64(at.ExpiresAt.Sub(now) / time.Second), Scope: g.scope}
	if c.allowsRefresh() {
		rt := randomToken()
		next := &store.RefreshToken{
			TokenHash: hashHex(rt), GrantID: g.id, ClientID: c.ID, Subject: g.subject, Login: g.login,
			Scope: g.scope, Resource: g.resource, Host: g.host, CreatedAt: now, ExpiresAt: now.Add(s.o.OAuth.RefreshTokenTTL),
		}
		if replaces != "" {
			err = s.o.Store.RotateRefreshToken(r.Context(), replaces, "", next, now)
		} else {
			err = s.o.Store.CreateRefreshToken(r.Context(), next)
		}
		if errors.Is(err, store.ErrAlreadyRotated) {
			return nil, nil // the caller handles the race
		}
		if err != nil {
			s.log.Error("storing refresh token", "err", err)
			return nil, errServer("try again")
		}
		resp.RefreshToken = rt
	}
	s.log.Info("token issued", "user", g.login, "client_id", c.ID, "scope", g.scope, "resource", g.resource)
	return resp, nil
}

// refreshGrant rotates a refresh token. A token rotated moments ago (a
// client racing its own refreshes) gets a fresh successor within the grace
// window; any later reuse means the token leaked, and the whole family is
// revoked.
func (s *Server) refreshGrant(r *http.Request, c *client) (*tokenResponse, *oauthError) {
	f := r.PostForm
	raw := f.Get("refresh_token")
	if raw == "" {
		return nil, errInvalidRequest("refresh_token is required")
	}
	hash := hashHex(raw)
	for attempt := 0; attempt < 2; attempt++ {
		now := s.now()
		rt, err := s.o.Store.GetRefreshToken(r.Context(), hash)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errInvalidGrant("the refresh token is invalid, expired or revoked")
		}
		if err != nil {
			s.log.Error("reading refresh token", "err", err)
			return nil, errServer("try again")
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
		scope := rt.Scope
		if req := strings.Fields(f.Get("scope")); len(req) > 0 {
			for _, sc := range req {
				if !strings.Contains(" "+rt.Scope+" ", " "+sc+" ") {
					return nil, errInvalidScope("a refresh cannot widen the granted scope")
				}
			}
			scope = strings.Join(req, " ")
		}
		// The operator may have removed the user since the login.
		if _, p, oe := s.resolveResource(rt.Resource, r); oe != nil || !matchUser(s.users(p).Allowed, rt.Login) {
			return nil, errInvalidGrant("the user may no longer use this resource")
		}
		g := &grant{id: rt.GrantID, subject: rt.Subject, login: rt.Login, scope: scope, resource: rt.Resource, host: rt.Host}
		if rt.RotatedAt.IsZero() {
			resp, oe := s.issue(r, c, g, hash)
			if resp == nil && oe == nil {
				continue // lost a rotation race: read again, now rotated
			}
			return resp, oe
		}
		if now.Sub(rt.RotatedAt) <= s.o.OAuth.RefreshReuseGrace {
			return s.issue(r, c, g, "")
		}
		s.log.Warn("refresh token reused after rotation; revoking its family", "client_id", c.ID, "user", rt.Login)
		if err := s.o.Store.RevokeGrant(r.Context(), rt.GrantID, now.Add(s.o.OAuth.AccessTokenTTL)); err != nil {
			s.log.Error("revoking grant", "err", err)
		}
		return nil, errInvalidGrant("the refresh token was already used")
	}
	return nil, errServer("try again")
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
	if rt, err := s.o.Store.GetRefreshToken(r.Context(), hashHex(tok)); err == nil {
		if rt.ClientID == c.ID {
			if err := s.o.Store.RevokeGrant(r.Context(), rt.GrantID, now.Add(s.o.OAuth.AccessTokenTTL)); err != nil {
				s.log.Error("revoking grant", "err", err)
				writeJSONError(w, errServer("try again"))
				return
			}
			s.log.Info("refresh token revoked", "client_id", c.ID, "user", rt.Login)
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if at, err := s.o.Tokens.Parse(tok); err == nil && at.ClientID == c.ID {
		if err := s.o.Store.RevokeAccessToken(r.Context(), at.JTI, at.ExpiresAt); err != nil {
			s.log.Error("revoking access token", "err", err)
			writeJSONError(w, errServer("try again"))
			return
		}
		s.log.Info("access token revoked", "client_id", c.ID, "user", at.Login)
	}
	w.WriteHeader(http.StatusOK)
}

// introspect is RFC 7662, for confidential clients.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	c, ok := s.clientForm(w, r)
	if !ok {
		return
	}
	if c.Public {
		writeJSONError(w, errInvalidClient("introspection needs a confidential client"))
		return
	}
	inactive := map[string]any{"active": false}
	tok := r.PostForm.Get("token")
	if at, err := s.o.Tokens.Parse(tok); err == nil {
		if s.revokedAccess(r, at) {
			writeJSON(w, http.StatusOK, inactive)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "scope": at.Scope, "client_id": at.ClientID, "username": at.Login,
			"token_type": "Bearer", "exp": at.ExpiresAt.Unix(), "iat": at.IssuedAt.Unix(),
			"sub": at.Subject, "aud": at.Audience, "iss": at.Issuer, "jti": at.JTI,
		})
		return
	}
	if rt, err := s.o.Store.GetRefreshToken(r.Context(), hashHex(tok)); err == nil && rt.RotatedAt.IsZero() {
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "scope": rt.Scope, "client_id": rt.ClientID, "username": rt.Login,
			"token_type": "refresh_token", "exp": rt.ExpiresAt.Unix(), "iat": rt.CreatedAt.Unix(),
			"sub": rt.Subject, "aud": rt.Resource, "iss": "https://" + rt.Host,
		})
		return
	}
	writeJSON(w, http.StatusOK, inactive)
}

// Revoked reports whether an access token is covered by a revocation; set
// by the worker, which keeps the revocation log in memory.
type Revoked func(jti, grantID, clientID string) bool

func (s *Server) revokedAccess(_ *http.Request, at *AccessToken) bool {
	if s.o.Revoked == nil {
		return false
	}
	return s.o.Revoked(at.JTI, at.GrantID, at.ClientID)
}
