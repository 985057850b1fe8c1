package config

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// proxy converts one proxy file. The result takes part in cross-file checks
// even when the file has other errors, so all problems show up together.
func (l *loader) proxy(f *file, name, path string, pf *proxyFile) *loadedProxy {
	var root keyPath
	p := &Proxy{
		Name:         name,
		File:         path,
		Enabled:      true,
		PreserveHost: pf.PreserveHost,
		HTTP3:        pf.HTTP3 == nil || *pf.HTTP3,
		Timeouts: Timeouts{
			Connect:        DefaultConnectTimeout,
			ResponseHeader: DefaultResponseHeaderTimeout,
		},
	}
	if pf.Enabled != nil {
		p.Enabled = *pf.Enabled
	}
	lp := &loadedProxy{proxy: p, file: f}
	lp.hostnames(root.key("hostnames"), pf.Hostnames)

	if pf.Target == nil {
		f.errorf(root.key("target"), `required, e.g. target = "http://127.0.0.1:3000"`)
	} else {
		p.Target, _ = l.upstream(f, root.key("target"), *pf.Target, name)
	}
	p.Routes = l.routes(f, root.key("routes"), pf.Routes, name)
	p.TLS = l.certificate(f, root.key("tls"), pf.TLS, p.Enabled)
	if p.TLS.ACME {
		f.acmeHostnames(root.key("hostnames"), pf.Hostnames)
	}

	tp := root.key("timeouts")
	if d := pf.Timeouts.Connect; d != nil {
		p.Timeouts.Connect = f.positive(tp.key("connect"), *d, DefaultConnectTimeout)
	}
	if d := pf.Timeouts.ResponseHeader; d != nil {
		p.Timeouts.ResponseHeader = f.positive(tp.key("response_header"), *d, DefaultResponseHeaderTimeout)
	}
	p.Headers = f.headers(root.key("headers"), &pf.Headers)
	p.Auth = l.auth(f, root.key("auth"), pf.Auth, p.Enabled)
	return lp
}

// positive checks a duration is > 0; a zero timeout would mean "none" to
// net/http, which is never what was meant.
func (f *file) positive(p keyPath, d duration, dflt time.Duration) time.Duration {
	if d.Duration <= 0 {
		f.errorf(p, "must be greater than zero")
		return dflt
	}
	return d.Duration
}

func (lp *loadedProxy) hostnames(p keyPath, hosts []string) {
	f := lp.file
	if len(hosts) == 0 {
		f.errorf(p, "at least one hostname is required")
		return
	}
	index := map[string]bool{}
	for i, h := range hosts {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		norm, err := normalizeWildcard(h)
		if err != nil {
			f.errorf(ep, "%q: %v", h, err)
			continue
		}
		if index[norm] {
			f.errorAt(p, ep, "%q is listed more than once", norm)
			continue
		}
		index[norm] = true
		lp.proxy.Hostnames = append(lp.proxy.Hostnames, norm)
		lp.hostLines = append(lp.hostLines, f.lines.line(ep))
	}
}

// normalizeWildcard checks a hostname a proxy answers for. A wildcard must
// cover a whole label below a registrable-looking domain, as in TLS
// certificates: "*.example.com", never "*.com" or "a*.example.com".
func normalizeWildcard(h string) (string, error) {
	rest, wild := strings.CutPrefix(h, "*.")
	if !wild {
		if strings.Contains(h, "*") {
			return "", errors.New(`"*" is only allowed as the whole leftmost label, as in "*.example.com"`)
		}
		return normalizeHostname(h)
	}
	if strings.Contains(rest, "*") {
		return "", errors.New(`"*" is only allowed once, as the whole leftmost label`)
	}
	norm, err := normalizeHostname(rest)
	if err != nil {
		return "", err
	}
	if !strings.Contains(norm, ".") {
		return "", errors.New(`a wildcard must be followed by at least two labels, as in "*.example.com"`)
	}
	return "*." + norm, nil
}

// normalizeHostname lower-cases a DNS name, drops one trailing dot and checks
// it is something a client can send in TLS SNI.
func normalizeHostname(h string) (string, error) {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" {
		return "", errors.New("must not be empty")
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return "", errors.New("IP addresses cannot be used: TLS SNI cannot carry IP addresses")
	}
	if strings.Contains(h, ":") {
		return "", errors.New("a port is not allowed here")
	}
	if len(h) > 253 {
		return "", errors.New("longer than 253 characters")
	}
	for label := range strings.SplitSeq(h, ".") {
		switch {
		case label == "":
			return "", errors.New("empty label")
		case len(label) > 63:
			return "", fmt.Errorf("label %q is longer than 63 characters", label)
		case strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "":
			return "", fmt.Errorf("label %q may only contain letters, digits and '-'", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return "", fmt.Errorf("label %q must not start or end with '-'", label)
		}
	}
	return h, nil
}

// upstream parses a target. The second result is false if it is invalid.
func (l *loader) upstream(f *file, p keyPath, raw, name string) (Upstream, bool) {
	const use = "use http, https or unix:/path.sock"
	up := Upstream{Raw: raw}
	if sock, ok := strings.CutPrefix(raw, "unix:"); ok {
		// unix:///run/x.sock is common elsewhere; unix://x would be ambiguous.
		if strings.HasPrefix(sock, "///") {
			sock = sock[2:]
		} else if strings.HasPrefix(sock, "//") {
			f.errorf(p, "write unix:/absolute/path.sock or unix:relative/path.sock, not unix://")
			return up, false
		}
		if sock == "" {
			f.errorf(p, "unix: needs a socket path, as in unix:/run/app.sock")
			return up, false
		}
		// Requests over a socket still need a Host; the proxy name is a
		// stable, meaningful one.
		up.Scheme, up.Host, up.Socket = "http", name, l.path(sock)
		return up, true
	}
	if raw == "" {
		f.errorf(p, "must not be empty")
		return up, false
	}
	if !strings.Contains(raw, "://") {
		f.errorf(p, "%q is not a URL (%s, as in http://127.0.0.1:3000)", raw, use)
		return up, false
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		f.errorf(p, "invalid URL: %v", err)
		return up, false
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		f.errorf(p, "scheme %q is not supported (%s)", u.Scheme, use)
	case u.User != nil:
		f.errorf(p, "must not contain user info; set credentials with [headers] instead")
	case u.Hostname() == "":
		f.errorf(p, "missing host")
	case u.RawQuery != "" || u.ForceQuery:
		f.errorf(p, "must not contain a query")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		f.errorf(p, "must not contain a fragment")
	case !validPort(u):
		f.errorf(p, "invalid port %q", u.Port())
	default:
		up.Scheme, up.Host, up.Path = u.Scheme, u.Host, strings.TrimRight(u.Path, "/")
		return up, true
	}
	return up, false
}

// validPort accepts no port or 1-65535; url.Parse only checks for digits.
func validPort(u *url.URL) bool {
	port := u.Port()
	if port == "" {
		return !strings.HasSuffix(u.Host, ":")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}

func (l *loader) routes(f *file, p keyPath, routes []routeTable, name string) []Route {
	var out []Route
	seen := map[string]int{}
	for i, r := range routes {
		rp := p.at(i)
		if f.isBad(rp) {
			continue
		}
		ok := true
		var route Route
		switch {
		case r.Path == nil:
			f.errorf(rp.key("path"), "required")
			ok = false
		default:
			path, err := routePath(*r.Path)
			if err != nil {
				f.errorf(rp.key("path"), "%q: %v", *r.Path, err)
				ok = false
			} else if j, dup := seen[path]; dup {
				f.errorf(rp.key("path"), "%q is already routed by %s", path, p.at(j))
				ok = false
			} else {
				seen[path] = i
				route.Path = path
			}
		}
		if r.Target == nil {
			f.errorf(rp.key("target"), "required")
			ok = false
		} else if up, good := l.upstream(f, rp.key("target"), *r.Target, name); good {
			route.Target = up
		} else {
			ok = false
		}
		if ok {
			out = append(out, route)
		}
	}
	// Longest prefix first, so the first match is the most specific.
	slices.SortFunc(out, func(a, b Route) int {
		return cmp.Or(cmp.Compare(len(b.Path), len(a.Path)), cmp.Compare(a.Path, b.Path))
	})
	return out
}

// routePath checks a route prefix and drops a trailing slash, since
// matching is by whole path segments anyway.
func routePath(s string) (string, error) {
	switch {
	case !strings.HasPrefix(s, "/"):
		return "", errors.New(`must start with "/"`)
	case s == "/":
		return "", errors.New(`"/" would match everything; set target instead`)
	case strings.ContainsAny(s, "?#"):
		return "", errors.New(`must not contain "?" or "#"`)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ' ' }):
		return "", errors.New("must not contain spaces or control characters")
	}
	s = strings.TrimSuffix(s, "/")
	for seg := range strings.SplitSeq(s[1:], "/") {
		switch seg {
		case "":
			return "", errors.New(`must not contain "//"`)
		case ".", "..":
			return "", fmt.Errorf("must not contain a %q segment", seg)
		}
	}
	return s, nil
}

// certificate checks where the certificate comes from. Key material is only
// read for enabled proxies: a disabled one may be waiting for its certificate.
func (l *loader) certificate(f *file, p keyPath, t *tlsTable, enabled bool) TLS {
	const how = "set acme = true, or cert_file and key_file (self_signed = true for development)"
	if t == nil {
		f.errorf(p, how)
		return TLS{}
	}
	if f.isBad(p.key("acme")) {
		return TLS{} // reported by bind; "set acme = true" would only confuse
	}
	switch {
	case t.ACME && (t.CertFile != "" || t.KeyFile != ""):
		f.errorf(p.key("acme"), "cannot be combined with cert_file and key_file")
		return TLS{}
	case t.ACME && t.SelfSigned:
		f.errorf(p.key("acme"), "cannot be combined with self_signed")
		return TLS{}
	case t.ACME:
		return TLS{ACME: true}
	case t.SelfSigned && (t.CertFile != "" || t.KeyFile != ""):
		f.errorf(p.key("self_signed"), "cannot be combined with cert_file and key_file")
		return TLS{}
	case t.SelfSigned:
		return TLS{SelfSigned: true}
	case t.CertFile == "" && t.KeyFile == "":
		f.errorf(p, how)
		return TLS{}
	case t.CertFile == "":
		f.errorf(p.key("cert_file"), "required with key_file")
		return TLS{}
	case t.KeyFile == "":
		f.errorf(p.key("key_file"), "required with cert_file")
		return TLS{}
	}
	out := TLS{CertFile: l.path(t.CertFile), KeyFile: l.path(t.KeyFile)}
	if !enabled {
		return out
	}
	cert, err := os.ReadFile(out.CertFile)
	if err != nil {
		f.errorf(p.key("cert_file"), "%v", err)
	}
	key, kerr := os.ReadFile(out.KeyFile)
	if kerr != nil {
		f.errorf(p.key("key_file"), "%v", kerr)
	}
	if err == nil && kerr == nil {
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			f.errorf(p.key("cert_file"), "%v", err)
		}
	}
	return out
}

// acmeHostnames rejects wildcards for a proxy whose certificates come from
// ACME: a wildcard certificate needs the DNS-01 challenge, and mcpgate
// answers only the challenges that reach its own sockets.
func (f *file) acmeHostnames(p keyPath, hosts []string) {
	for i, h := range hosts {
		if strings.HasPrefix(h, "*.") && !f.isBad(p.at(i)) {
			f.errorf(p.at(i), "%q: a wildcard certificate needs the DNS-01 challenge, which mcpgate does not answer: use cert_file and key_file for this proxy", h)
		}
	}
}

// Headers a proxy must manage itself: hop-by-hop headers (RFC 9110 7.6.1)
// describe one connection, Host and Content-Length describe the message.
var (
	hopByHop = map[string]bool{
		"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
		"Transfer-Encoding": true, "Upgrade": true, "Te": true, "Trailer": true,
	}
	// reservedPrefix is for headers mcpgate sets itself; letting the
	// config set or strip them would let it forge or hide them.
	reservedPrefix = "X-Mcpgate-"
)

func (f *file) headers(p keyPath, h *headersTable) Headers {
	var out Headers
	out.Request = f.setHeaders(p.key("request"), h.Request)
	out.Response = f.setHeaders(p.key("response"), h.Response)
	out.RemoveRequest = f.removeHeaders(p.key("remove_request"), h.RemoveRequest, out.Request, p.key("request"))
	out.RemoveResponse = f.removeHeaders(p.key("remove_response"), h.RemoveResponse, out.Response, p.key("response"))
	return out
}

func (f *file) setHeaders(p keyPath, in map[string]string) map[string]string {
	var out map[string]string
	written := map[string]string{} // canonical -> name as written
	for _, name := range sortedKeys(in) {
		np := p.key(name)
		if f.isBad(np) {
			continue
		}
		canon, err := headerName(name)
		if err != nil {
			f.errorf(np, "%v", err)
			continue
		}
		if other, dup := written[canon]; dup {
			f.errorf(np, "same header as %s", p.key(other))
			continue
		}
		written[canon] = name
		if strings.ContainsAny(in[name], "\r\n\x00") {
			f.errorf(np, "value must not contain CR, LF or NUL")
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[canon] = in[name]
	}
	return out
}

func (f *file) removeHeaders(p keyPath, in []string, set map[string]string, setPath keyPath) []string {
	var out []string
	for i, name := range in {
		ep := p.at(i)
		if f.isBad(ep) {
			continue
		}
		canon, err := headerName(name)
		switch {
		case err != nil:
			f.errorf(ep, "%v", err)
		case slices.Contains(out, canon):
			f.errorf(ep, "%q is listed more than once", canon)
		case hasKey(set, canon):
			f.errorf(ep, "%q is also set in %s", canon, setPath)
		default:
			out = append(out, canon)
		}
	}
	return out
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// headerName checks a header name may be configured and canonicalizes it.
func headerName(name string) (string, error) {
	if !isToken(name) {
		return "", fmt.Errorf("%q is not a valid header name", name)
	}
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		// The proxy drops such names on the way in (nginx's
		// underscores_in_headers off): "X_MCPGate_User" reads as
		// HTTP_X_MCPGATE_USER to a CGI-style backend.
		return "", fmt.Errorf("%q: header names may only contain letters, digits and '-'", name)
	}
	canon := textproto.CanonicalMIMEHeaderKey(name)
	switch {
	case hopByHop[canon]:
		return "", fmt.Errorf("%q is a hop-by-hop header and cannot be set or removed", canon)
	case canon == "Host":
		return "", fmt.Errorf(`"Host" cannot be set or removed (use preserve_host)`)
	case canon == "Content-Length":
		return "", fmt.Errorf(`"Content-Length" is managed by the proxy and cannot be set or removed`)
	case strings.HasPrefix(canon, reservedPrefix):
		return "", fmt.Errorf("%q is reserved (names starting with %q belong to mcpgate)", canon, reservedPrefix)
	}
	return canon, nil
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
