package worker

import (
	"net/http"

	"github.com/mcpgate/mcpgate/internal/proxy"
	"github.com/mcpgate/mcpgate/internal/reqpath"
)

// maxLoggedPath bounds the path in the refusal's log line.
const maxLoggedPath = 256

// cleanPath decides the request path once, for everything after it in
// the chain: the health path, the OAuth endpoints, the bearer check's
// public paths, the proxy's route and the request line to the backend all
// read the URL it leaves. It answers 400 itself and returns false when the
// path has no spelling they would all agree on.
func (w *Worker) cleanPath(rw http.ResponseWriter, r *http.Request) bool {
	err := reqpath.Request(r)
	if err == nil {
		return true
	}
	// The escaped path only: the query may carry OAuth codes.
	p := r.URL.EscapedPath()
	if len(p) > maxLoggedPath {
		p = p[:maxLoggedPath] + "…"
	}
	w.log.Debug("request path refused", "reason", err.Error(), "path", p)
	proxy.WriteJSONError(rw, http.StatusBadRequest, "invalid_path", err.Error(), w.spec.Proxy.Name)
	return false
}
