package authserver

import (
	"net/http"
)

// metadata serves RFC 8414 metadata; the same document answers OpenID
// Connect discovery, which some clients try first. It advertises exactly
// what is implemented.
func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeJSONError(w, errInvalidRequest("use GET"))
		return
	}
	iss := issuer(r)
	auth := []string{"none", "client_secret_basic", "client_secret_post"}
	m := map[string]any{
		"issuer":                                         iss,
		"authorization_endpoint":                         iss + "/authorize",
		"token_endpoint":                                 iss + "/token",
		"revocation_endpoint":                            iss + "/revoke",
		"introspection_endpoint":                         iss + "/introspect",
		"jwks_uri":                                       iss + "/jwks",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          auth,
		"revocation_endpoint_auth_methods_supported":     auth,
		"introspection_endpoint_auth_methods_supported":  []string{"client_secret_basic", "client_secret_post"},
		"scopes_supported":                               s.scopes(),
		"authorization_response_iss_parameter_supported": true,
		"client_id_metadata_document_supported":          s.o.OAuth.ClientMetadataDocuments,
		// Required by OpenID Connect Discovery parsers.
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	}
	if s.o.OAuth.DynamicRegistration {
		m["registration_endpoint"] = iss + "/register"
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", "application/json")
	writeJSONBody(w, m)
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(s.o.Keys.JWKS())
}
