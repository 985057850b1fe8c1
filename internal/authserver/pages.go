package authserver

import (
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/mcpgate/mcpgate/internal/store"
)

// Pages are small, accessible and self-contained: no external assets, so
// the CSP can forbid everything but inline style. Parsed on first use:
// every process of the binary (each worker, the supervisor) would
// otherwise parse them at start-up, ≈30 KB of heap most never use.
var pages = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · mcpgate</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a;background:#fff}
h1{font-size:1.4rem}main{border:1px solid #ccc;border-radius:8px;padding:1.5rem}
ul{padding-left:1.2rem}code{background:#f2f2f2;padding:0 .2rem;border-radius:3px}
.actions{display:flex;gap:1rem;margin-top:1.5rem}
button{font:inherit;padding:.5rem 1.2rem;border-radius:6px;border:1px solid #555;cursor:pointer}
button.primary{background:#1d4ed8;color:#fff;border-color:#1d4ed8}
button:focus{outline:3px solid #f59e0b;outline-offset:2px}
.warn{color:#92400e}
.origin{font-size:1.15rem;margin-top:-.5rem}
</style></head><body><main>{{end}}
{{define "consent"}}{{template "head" .}}
<h1>Allow {{.ClientName}}?</h1>
{{if .DocumentHost}}<p class="origin">Published by <strong>{{.DocumentHost}}</strong></p>
<p>The name above is what <code>{{.DocumentHost}}</code> says about itself; mcpgate cannot check it.</p>{{end}}
{{if .Imitates}}<p class="warn" role="alert"><strong>Warning:</strong> this application calls itself “{{.ClientName}}”, which looks like {{.Imitates}}, but it is not published by {{.Imitates}}’s vendor. Deny unless you are sure.</p>{{end}}
<p><strong>{{.ClientName}}</strong> wants to use <strong>{{.Resource}}</strong> as <strong>{{.Login}}</strong>.</p>
<p>After you allow it, you will be sent to <code>{{.RedirectHost}}</code>.</p>
{{if .Unverified}}<p class="warn">This application registered itself; mcpgate cannot vouch for who made it. Allow it only if you started this sign-in.</p>{{end}}
<p>It will get these permissions:</p>
<ul>{{range .Scopes}}<li><code>{{.}}</code></li>{{end}}</ul>
<form method="post" action="{{.Action}}">
<input type="hidden" name="flow" value="{{.Flow}}">
<input type="hidden" name="proof" value="{{.Proof}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<div class="actions">
<button class="primary" type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</div></form>
</main></body></html>{{end}}
{{define "error"}}{{template "head" .}}
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
</main></body></html>{{end}}
`))
})

func securityHeaders(w http.ResponseWriter, formAction string) {
	h := w.Header()
	csp := "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
	if formAction != "" {
		csp += "; form-action " + formAction
	} else {
		csp += "; form-action 'none'"
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
}

// errorPage shows an error to the user (not to a client).
// unavailable answers 503 with Retry-After and reports true when err says
// the store cannot be reached: the browser may reload the page, nothing
// was changed (an error page, not a redirect to the client: the flow is
// still alive).
func (s *Server) unavailable(w http.ResponseWriter, err error) bool {
	if !errors.Is(err, store.ErrUnavailable) {
		return false
	}
	s.log.Warn("OAuth store unreachable", "err", err)
	w.Header().Set("Retry-After", retryAfter)
	s.errorPage(w, http.StatusServiceUnavailable, "Temporarily unavailable",
		"The sign-in service cannot reach its database right now. Reload this page in a few seconds.")
	return true
}

func (s *Server) errorPage(w http.ResponseWriter, status int, title, msg string) {
	securityHeaders(w, "")
	w.WriteHeader(status)
	pages().ExecuteTemplate(w, "error", map[string]string{"Title": title, "Message": msg})
}

// consentPage names the client, where it will send the user, and the
// scopes; the decision comes back as a CSRF-protected POST carrying the
// flow and its proof. A metadata-document client is shown with the host
// that publishes it, and a warning when its name imitates a well-known
// client's.
func (s *Server) consentPage(w http.ResponseWriter, r *http.Request, p *store.Pending, c *client, proof string) {
	csrf := randomToken()
	setCookie(w, csrfCookie, csrf, int(pendingTTL.Seconds()))
	redirectHost := p.RedirectURI
	formAction := "'self'"
	if u, err := url.Parse(p.RedirectURI); err == nil {
		redirectHost = u.Host
		if u.Host == "" {
			redirectHost = u.Scheme + ":"
		}
		// Browsers apply form-action to the redirect after the POST.
		if u.Scheme == "https" || u.Scheme == "http" {
			formAction += " " + u.Scheme + "://" + u.Host
		} else {
			formAction += " " + u.Scheme + ":"
		}
	}
	name := c.Name
	if name == "" {
		name = c.ID
	}
	var docHost, imitates string
	if c.Kind == kindMetadata {
		if u, err := url.Parse(c.ID); err == nil {
			docHost = u.Host
		}
		imitates = imitatedClient(name, c.ID)
	}
	securityHeaders(w, formAction)
	pages().ExecuteTemplate(w, "consent", map[string]any{
		"DocumentHost": docHost,
		"Imitates":     imitates,
		"Proof":        proof,
		"Title":        "Allow " + name,
		"ClientName":   name,
		"Resource":     p.Resource,
		"Login":        p.Login,
		"RedirectHost": redirectHost,
		"Unverified":   c.Kind == kindDynamic,
		"Scopes":       strings.Fields(p.Granted),
		"Action":       consentPath,
		"Flow":         p.ID,
		"CSRF":         csrf,
	})
}
