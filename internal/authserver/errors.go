package authserver

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"

	"github.com/mcpgate/mcpgate/internal/metrics"
	"github.com/mcpgate/mcpgate/internal/store"
)

// oauthError is an OAuth 2.0 error response (RFC 6749 §5.2, RFC 7591 §3.2.2,
// RFC 8707 §2). Every error the endpoints return is one of these values,
// written in one place.
type oauthError struct {
	status int
	Code   string `json:"error"`
	Desc   string `json:"error_description,omitempty"`
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Desc }

func errInvalidRequest(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_request", desc}
}
func errInvalidClient(desc string) *oauthError {
	return &oauthError{http.StatusUnauthorized, "invalid_client", desc}
}
func errInvalidGrant(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_grant", desc}
}
func errUnauthorizedClient(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "unauthorized_client", desc}
}
func errUnsupportedGrantType(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "unsupported_grant_type", desc}
}
func errInvalidScope(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_scope", desc}
}
func errInvalidTarget(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_target", desc}
}
func errInvalidRedirectURI(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_redirect_uri", desc}
}
func errInvalidClientMetadata(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_client_metadata", desc}
}
func errServer(desc string) *oauthError {
	// Never a 500 with internals: the cause goes to the log.
	return &oauthError{http.StatusInternalServerError, "server_error", desc}
}

// retryAfter is the Retry-After of a 503: the store's pool reconnects by
// itself within seconds.
const retryAfter = "5"

// errUnavailable: the store cannot be reached right now. Nothing was
// changed, so the client may repeat the request as it is.
func errUnavailable() *oauthError {
	return &oauthError{http.StatusServiceUnavailable, "temporarily_unavailable", "the authorization server cannot reach its store; try again shortly"}
}

// errStore answers a failed store operation: 503 while the store is
// unreachable (store.ErrUnavailable), else 500.
func errStore(err error) *oauthError {
	if errors.Is(err, store.ErrUnavailable) {
		return errUnavailable()
	}
	return errServer("try again")
}

func errTooMany() *oauthError {
	return &oauthError{http.StatusTooManyRequests, "slow_down", "too many registrations from this address; try again later"}
}

// writeJSONError writes e as a JSON body.
func writeJSONError(w http.ResponseWriter, e *oauthError) {
	metrics.Default.OAuthDenied(e.Code)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="mcpgate"`)
	}
	if e.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", retryAfter)
	}
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(e)
}

// redirectError sends an authorization error back to the client's
// redirect URI (RFC 6749 §4.1.2.1), with state and iss.
func redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state, iss string, e *oauthError) {
	u, err := url.Parse(redirectURI)
	if err != nil {
		writeJSONError(w, errInvalidRequest("bad redirect_uri"))
		return
	}
	metrics.Default.OAuthDenied(e.Code)
	q := u.Query()
	q.Set("error", e.Code)
	if e.Desc != "" {
		q.Set("error_description", e.Desc)
	}
	if state != "" {
		q.Set("state", state)
	}
	q.Set("iss", iss)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeJSONBody(w http.ResponseWriter, v any) {
	json.NewEncoder(w).Encode(v)
}
