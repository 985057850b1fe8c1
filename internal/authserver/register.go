package authserver

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

// registration is the client metadata mcpgate understands (RFC 7591 §2).
// Unknown fields are ignored, as the RFC requires (clients send e.g.
// "resource").
type registration struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	ResponseTypes           []string `json:"response_types,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri,omitempty"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
	Contacts                []string `json:"contacts,omitempty"`
	TOSURI                  string   `json:"tos_uri,omitempty"`
	PolicyURI               string   `json:"policy_uri,omitempty"`
	SoftwareID              string   `json:"software_id,omitempty"`
	SoftwareVersion         string   `json:"software_version,omitempty"`
	ApplicationType         string   `json:"application_type,omitempty"`
}

type registrationResponse struct {
	registration
	ClientID                string `json:"client_id"`
	ClientSecret            string `json:"client_secret,omitempty"`
	ClientIDIssuedAt        int64  `json:"client_id_issued_at"`
	ClientSecretExpiresAt   *int64 `json:"client_secret_expires_at,omitempty"`
	RegistrationAccessToken string `json:"registration_access_token,omitempty"`
	RegistrationClientURI   string `json:"registration_client_uri,omitempty"`
}

// validate fills defaults (RFC 7591 §2) and checks the metadata.
func (m *registration) validate() *oauthError {
	if len(m.RedirectURIs) == 0 {
		return errInvalidRedirectURI("redirect_uris is required")
	}
	for _, u := range m.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return errInvalidRedirectURI(u + ": " + err.Error())
		}
	}
	switch m.TokenEndpointAuthMethod {
	case "":
		m.TokenEndpointAuthMethod = "client_secret_basic"
	case "none", "client_secret_basic", "client_secret_post":
	default:
		return errInvalidClientMetadata("token_endpoint_auth_method must be none, client_secret_basic or client_secret_post")
	}
	if len(m.GrantTypes) == 0 {
		m.GrantTypes = []string{"authorization_code"}
	}
	for _, g := range m.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return errInvalidClientMetadata("unsupported grant type " + g)
		}
	}
	if !slices.Contains(m.GrantTypes, "authorization_code") {
		return errInvalidClientMetadata("grant_types must include authorization_code")
	}
	if len(m.ResponseTypes) == 0 {
		m.ResponseTypes = []string{"code"}
	}
	if len(m.ResponseTypes) != 1 || m.ResponseTypes[0] != "code" {
		return errInvalidClientMetadata("response_types must be [\"code\"]")
	}
	switch m.ApplicationType {
	case "", "web", "native":
	default:
		return errInvalidClientMetadata("application_type must be web or native")
	}
	if len(m.ClientName) > 200 {
		return errInvalidClientMetadata("client_name is too long")
	}
	return nil
}

// register is RFC 7591 dynamic client registration.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, errInvalidRequest("use POST"))
		return
	}
	switch ok, err := s.allowRegistration(r); {
	case err != nil:
		// Fail closed: an unlimited registration endpoint is the flood
		// the limit exists to stop.
		s.log.Error("counting registrations", "err", err)
		writeJSONError(w, errStore(err))
		return
	case !ok:
		w.Header().Set("Retry-After", "60")
		writeJSONError(w, errTooMany())
		return
	}
	var m registration
	if oe := decodeMetadata(w, r, &m); oe != nil {
		writeJSONError(w, oe)
		return
	}
	if oe := m.validate(); oe != nil {
		writeJSONError(w, oe)
		return
	}
	now := s.now()
	id := "mcpgate-" + randomToken()[:24]
	regToken := randomToken()
	c := &store.Client{
		ID: id, RedirectURIs: m.RedirectURIs, Name: m.ClientName, GrantTypes: m.GrantTypes,
		ResponseTypes: m.ResponseTypes, TokenEndpointAuthMethod: m.TokenEndpointAuthMethod,
		Scope: m.Scope, ApplicationType: m.ApplicationType, RegistrationTokenHash: hashHex(regToken),
		CreatedAt: now, UpdatedAt: now, LastUsedAt: now,
	}
	resp := registrationResponse{
		registration: m, ClientID: id, ClientIDIssuedAt: now.Unix(),
		RegistrationAccessToken: regToken, RegistrationClientURI: issuer(r) + "/register/" + id,
	}
	if m.TokenEndpointAuthMethod != "none" {
		secret := randomToken()
		c.SecretHash = hashHex(secret)
		resp.ClientSecret = secret
		zero := int64(0)
		resp.ClientSecretExpiresAt = &zero
	}
	c.Metadata, _ = json.Marshal(m)
	if err := s.o.Store.CreateClient(r.Context(), c); err != nil {
		s.log.Error("registering client", "err", err)
		writeJSONError(w, errStore(err))
		return
	}
	s.log.Info("client registered", "client_id", id, "name", m.ClientName, "auth_method", m.TokenEndpointAuthMethod)
	writeJSON(w, http.StatusCreated, resp)
}

func decodeMetadata(w http.ResponseWriter, r *http.Request, m *registration) *oauthError {
	ct := r.Header.Get("Content-Type")
	if ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return errInvalidClientMetadata("the body must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return errInvalidClientMetadata("the body is too large")
	}
	if err := json.Unmarshal(body, m); err != nil {
		return errInvalidClientMetadata("the body is not valid client metadata JSON")
	}
	return nil
}

// manageClient is RFC 7592: read, update and delete a registration with
// its registration access token.
func (s *Server) manageClient(w http.ResponseWriter, r *http.Request, id string) {
	c, err := s.o.Store.GetClient(r.Context(), id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("reading client", "err", err)
		writeJSONError(w, errStore(err))
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if c == nil || tok == "" || subtle.ConstantTimeCompare([]byte(hashHex(tok)), []byte(c.RegistrationTokenHash)) != 1 {
		// Unknown client and bad token look the same (RFC 7592 §2).
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	switch r.Method {
	case http.MethodGet:
		var m registration
		json.Unmarshal(c.Metadata, &m)
		writeJSON(w, http.StatusOK, registrationResponse{
			registration: m, ClientID: c.ID, ClientIDIssuedAt: c.CreatedAt.Unix(),
			RegistrationClientURI: issuer(r) + "/register/" + c.ID,
		})
	case http.MethodPut:
		var m registration
		if oe := decodeMetadata(w, r, &m); oe != nil {
			writeJSONError(w, oe)
			return
		}
		if oe := m.validate(); oe != nil {
			writeJSONError(w, oe)
			return
		}
		if (m.TokenEndpointAuthMethod == "none") != (c.SecretHash == "") {
			writeJSONError(w, errInvalidClientMetadata("token_endpoint_auth_method cannot switch between public and confidential"))
			return
		}
		c.RedirectURIs, c.Name, c.GrantTypes, c.ResponseTypes = m.RedirectURIs, m.ClientName, m.GrantTypes, m.ResponseTypes
		c.TokenEndpointAuthMethod, c.Scope, c.ApplicationType, c.UpdatedAt = m.TokenEndpointAuthMethod, m.Scope, m.ApplicationType, s.now()
		c.Metadata, _ = json.Marshal(m)
		if err := s.o.Store.UpdateClient(r.Context(), c); err != nil {
			s.log.Error("updating client", "err", err)
			writeJSONError(w, errStore(err))
			return
		}
		writeJSON(w, http.StatusOK, registrationResponse{
			registration: m, ClientID: c.ID, ClientIDIssuedAt: c.CreatedAt.Unix(),
			RegistrationClientURI: issuer(r) + "/register/" + c.ID,
		})
	case http.MethodDelete:
		// Every token of the client dies with it, in every worker.
		until := s.now().Add(s.o.OAuth.AccessTokenTTL + time.Minute)
		if err := s.o.Store.DeleteClient(r.Context(), c.ID, until); err != nil {
			s.log.Error("deleting client", "err", err)
			writeJSONError(w, errStore(err))
			return
		}
		s.log.Info("client deleted", "client_id", c.ID)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		writeJSONError(w, errInvalidRequest("use GET, PUT or DELETE"))
	}
}
