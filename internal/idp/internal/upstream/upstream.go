// Package upstream is the HTTP plumbing the identity provider connectors
// share: URL checks, per-call timeouts, bounded reads and clients that
// never follow a redirect with credentials.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// MaxBody bounds every response body read from a provider.
const MaxBody = 1 << 20

// DefaultTimeout bounds one call to a provider when the connector's
// configuration sets none.
const DefaultTimeout = 10 * time.Second

// Response is a fully read upstream response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrTooLarge is returned for a response body over MaxBody.
var ErrTooLarge = errors.New("response body too large")

// Do sends req with a deadline of timeout and reads the whole body (at most
// MaxBody bytes).
func Do(ctx context.Context, c *http.Client, req *http.Request, timeout time.Duration) (*Response, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxBody {
		return nil, ErrTooLarge
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// Client returns c, or a default client when c is nil.
func Client(c *http.Client) *http.Client {
	if c == nil {
		return &http.Client{}
	}
	return c
}

// NoRedirects returns a copy of c (sharing its transport) that hands every
// 3xx back to the caller instead of following it: a credentialed request
// (client secret in the body, bearer token) must not be replayed at
// whatever Location a response names.
func NoRedirects(c *http.Client) *http.Client {
	cp := *Client(c)
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// CheckURL parses an endpoint URL from the configuration or a provider's
// metadata: absolute, https (or http to a loopback host, for tests and the
// development identity provider), no user info, no fragment.
func CheckURL(what, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: not a URL", what)
	}
	switch {
	case !u.IsAbs() || u.Host == "":
		return nil, fmt.Errorf("%s %q: not an absolute URL", what, raw)
	case u.User != nil:
		return nil, fmt.Errorf("%s: must not contain user info", what)
	case u.Fragment != "":
		return nil, fmt.Errorf("%s %q: must not contain a fragment", what, raw)
	case u.Scheme == "https":
	case u.Scheme == "http" && IsLoopbackHost(u.Hostname()):
	default:
		return nil, fmt.Errorf("%s %q: must be https (http only to a loopback address)", what, raw)
	}
	return u, nil
}

// IsLoopbackHost reports whether host (no port) is "localhost" or a
// loopback IP address literal.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// SameOrigin reports whether a and b have the same scheme, host and port.
func SameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(hostPort(a), hostPort(b))
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// MediaType returns the media type of a Content-Type header, lower-case and
// without parameters.
func MediaType(h http.Header) string {
	ct, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.ToLower(strings.TrimSpace(ct))
}
