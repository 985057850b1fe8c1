// Package headless is a small user agent for OAuth authorization flows
// without a browser, for the demo client and the end-to-end tests: it
// follows redirects with a cookie jar, signs in at mcpgate's development
// identity provider (or a fake GitHub's sign-in page), answers mcpgate's
// consent form, and stops at the client's redirect URI. Like a browser it
// keeps every cookie, so mcpgate's binding of a flow to the browser (the
// flow cookie on the proxy host, the bind cookie on the callback host after
// /oauth/start) holds, and it submits forms with their hidden fields as
// they are (the consent form's flow, proof and csrf values).
package headless

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// Result is what the authorization server sent to the redirect URI.
type Result struct {
	Code, State, Iss string
}

// Agent walks an authorization flow.
type Agent struct {
	// Transport reaches the authorization server and identity provider.
	Transport http.RoundTripper
	// Login is typed into a sign-in form, if one is shown.
	Login string
	// Deny answers the consent form with "deny" instead of "approve".
	Deny bool
	// Logf, if set, narrates the flow.
	Logf func(format string, args ...any)
	// MaxSteps bounds the redirects and forms (default 20).
	MaxSteps int

	client *http.Client
}

// ErrDenied is returned when the redirect carries error=access_denied.
var ErrDenied = errors.New("authorization denied")

// Authorize starts at authURL and returns the code delivered to a URL
// starting with redirectPrefix.
func (a *Agent) Authorize(ctx context.Context, authURL, redirectPrefix string) (*Result, error) {
	if a.client == nil {
		jar, _ := cookiejar.New(nil)
		a.client = &http.Client{
			Transport:     a.Transport,
			Jar:           jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	steps := a.MaxSteps
	if steps == 0 {
		steps = 20
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, err
	}
	for range steps {
		res, err := a.client.Do(req)
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		switch {
		case res.StatusCode >= 300 && res.StatusCode < 400:
			loc, err := res.Location()
			if err != nil {
				return nil, fmt.Errorf("redirect without Location from %s", req.URL.Host)
			}
			if strings.HasPrefix(loc.String(), redirectPrefix) {
				return result(loc)
			}
			a.logf("redirect to %s://%s%s", loc.Scheme, loc.Host, loc.Path)
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
			if err != nil {
				return nil, err
			}
		case res.StatusCode == http.StatusOK && strings.HasPrefix(res.Header.Get("Content-Type"), "text/html"):
			form, err := findForm(body)
			if err != nil {
				return nil, fmt.Errorf("page at %s: %w (%s)", req.URL.Path, err, title(body))
			}
			vals := form.values
			switch {
			case vals.Has("decision") || form.hasDecision:
				d := "approve"
				if a.Deny {
					d = "deny"
				}
				vals.Set("decision", d)
				a.logf("consent page: %s (%s)", title(body), d)
			case form.hasLogin:
				if a.Login == "" {
					return nil, errors.New("a sign-in form was shown but no login name was given")
				}
				vals.Set(form.loginField, a.Login)
				a.logf("signing in as %s", a.Login)
			default:
				return nil, fmt.Errorf("unexpected form at %s (%s)", req.URL.Path, title(body))
			}
			target, err := req.URL.Parse(form.action)
			if err != nil {
				return nil, err
			}
			method := strings.ToUpper(form.method)
			if method == "GET" {
				target.RawQuery = vals.Encode()
				req, err = http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
			} else {
				req, err = http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(vals.Encode()))
				if err == nil {
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
			}
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("HTTP %d at %s://%s%s: %s", res.StatusCode, req.URL.Scheme, req.URL.Host, req.URL.Path, title(body))
		}
	}
	return nil, errors.New("too many steps in the authorization flow")
}

func (a *Agent) logf(format string, args ...any) {
	if a.Logf != nil {
		a.Logf(format, args...)
	}
}

func result(loc *url.URL) (*Result, error) {
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		if e == "access_denied" {
			return nil, fmt.Errorf("%w: %s", ErrDenied, q.Get("error_description"))
		}
		return nil, fmt.Errorf("authorization error %s: %s", e, q.Get("error_description"))
	}
	return &Result{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
}

type form struct {
	action, method string
	values         url.Values
	hasDecision    bool
	hasLogin       bool
	loginField     string
}

// findForm returns the first form of the page with its hidden fields.
func findForm(body []byte) (*form, error) {
	doc, err := html.Parse(strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	var f *form
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				if f == nil {
					f = &form{action: attr(n, "action"), method: attr(n, "method"), values: url.Values{}}
				}
			case "input":
				if f != nil {
					switch attr(n, "type") {
					case "hidden":
						f.values.Set(attr(n, "name"), attr(n, "value"))
					case "text", "":
						f.hasLogin, f.loginField = true, attr(n, "name")
					}
				}
			case "button":
				if f != nil && attr(n, "name") == "decision" {
					f.hasDecision = true
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if f == nil {
		return nil, errors.New("no form on the page")
	}
	return f, nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func title(body []byte) string {
	s := string(body)
	if i := strings.Index(s, "<h1>"); i >= 0 {
		if j := strings.Index(s[i:], "</h1>"); j > 0 {
			return s[i+4 : i+j]
		}
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
