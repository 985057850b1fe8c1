package proxy

import (
	"errors"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
)

// The request and response header rules that keep the backend from being
// told, or telling the client, something only mcpgate may say. All of it
// runs on every request: plain loops, no allocation unless something is
// removed (filter1xx aside, one small closure).

// plainName reports whether a header name has only letters, digits and
// '-', the names nginx accepts by default (underscores_in_headers off,
// ignore_invalid_headers on). Go accepts every token byte, but CGI, WSGI
// and Rack backends map '-' and '_' (some also '.') to the same '_', so
// X_MCPGate_User would reach them as HTTP_X_MCPGATE_USER beside, or
// instead of, mcpgate's X-MCPGate-User (CVE-2024-45614).
func plainName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if lc := c | 0x20; c != '-' && (c < '0' || c > '9') && (lc < 'a' || lc > 'z') {
			return false
		}
	}
	return true
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// dropHeaders removes from hdr (request headers or trailers) every name that
// is not plain and every name in mcpgate's reserved identity space, in any
// case spelling. Only names are logged: values may be credentials.
func (h *Handler) dropHeaders(hdr http.Header, where string) {
	for k := range hdr {
		switch {
		case !plainName(k):
			delete(hdr, k)
			h.log.Debug("dropped request field with a name other than letters, digits and '-'", "where", where, "name", k)
		case hasPrefixFold(k, IdentityPrefix):
			// Go's servers canonicalise names, so X-Mcpgate- alone would
			// do; folding keeps this right whatever built the map.
			delete(hdr, k)
		}
	}
}

// gatewayCookie reports whether a Cookie crumb or a Set-Cookie value names
// one of mcpgate's cookies (__Host-mcpgate-*, and __Secure-mcpgate-* and
// mcpgate-* for safety), ignoring case as browsers do for the __Host- and
// __Secure- prefixes. Leading blanks, quotes and '=' are skipped: a
// Set-Cookie "=mcpgate-x=1" is a nameless cookie that browsers send back
// as "mcpgate-x=1". The prefixes hold no '=' or ';', so matching the start
// of the whole crumb or value matches its name.
func gatewayCookie(s string) bool {
	s = strings.TrimLeft(s, " \t\"=")
	return hasPrefixFold(s, "__Host-mcpgate-") || hasPrefixFold(s, "__Secure-mcpgate-") || hasPrefixFold(s, "mcpgate-")
}

// withoutGatewayCookies returns a Cookie header value without mcpgate's
// cookies, the others kept in order; v itself (no allocation) if it holds
// none of them.
func withoutGatewayCookies(v string) string {
	found := false
	for rest := v; rest != ""; {
		var crumb string
		crumb, rest, _ = strings.Cut(rest, ";")
		if gatewayCookie(crumb) {
			found = true
			break
		}
	}
	if !found {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	for rest := v; rest != ""; {
		var crumb string
		crumb, rest, _ = strings.Cut(rest, ";")
		crumb = strings.Trim(crumb, " \t")
		if crumb == "" || gatewayCookie(crumb) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(crumb)
	}
	return b.String()
}

// stripGatewayCookies rewrites the Cookie fields of a proxied request
// without mcpgate's cookies: they carry its login flow state and CSRF
// secret, which the backend has no business reading. HTTP/1.1 may bring
// several Cookie fields; each is filtered and empty ones are dropped.
func stripGatewayCookies(hdr http.Header) {
	vs, ok := hdr["Cookie"]
	if !ok {
		return
	}
	kept := vs[:0] // hdr is the outgoing request's own copy
	for _, v := range vs {
		if v = withoutGatewayCookies(v); v != "" {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		delete(hdr, "Cookie")
		return
	}
	hdr["Cookie"] = kept
}

// dropGatewaySetCookies removes the backend's Set-Cookie fields for
// mcpgate's cookie names, so a backend cannot overwrite (fixate) or clear
// the gateway's login state in the user's browser. It reports how many it
// removed.
func dropGatewaySetCookies(hdr http.Header) int {
	vs, ok := hdr["Set-Cookie"]
	if !ok {
		return 0
	}
	kept := vs[:0]
	for _, v := range vs {
		if !gatewayCookie(v) {
			kept = append(kept, v)
		}
	}
	n := len(vs) - len(kept)
	if len(kept) == 0 {
		delete(hdr, "Set-Cookie")
	} else {
		hdr["Set-Cookie"] = kept
	}
	return n
}

// filter1xx makes the backend's informational responses (103 Early Hints)
// pass dropGatewaySetCookies too: ReverseProxy relays them to the client
// from its own httptrace hook, before and apart from ModifyResponse. The
// hook belongs to this request alone (ReverseProxy makes one per request),
// so wrapping it in place costs one small allocation where composing a
// second trace would cost several.
func filter1xx(req *http.Request) {
	tr := httptrace.ContextClientTrace(req.Context())
	if tr == nil || tr.Got1xxResponse == nil {
		return
	}
	relay := tr.Got1xxResponse
	tr.Got1xxResponse = func(code int, h textproto.MIMEHeader) error {
		dropGatewaySetCookies(http.Header(h))
		return relay(code, h)
	}
}

// isWebSocket reports whether an Upgrade field is exactly one protocol,
// websocket (RFC 6455 names it case-insensitively). It is the only
// protocol switch mcpgate forwards: after a 101 the connection carries
// whatever the two ends say, unseen by the bearer check, and an h2c switch
// would carry further HTTP requests past it. A list ("h2c, websocket") is
// refused rather than narrowed: a browser's WebSocket never sends one.
func isWebSocket(up []string) bool {
	return len(up) == 1 && strings.EqualFold(strings.Trim(up[0], " \t"), "websocket")
}

// restrictUpgrade removes a request's protocol switch unless it is to
// WebSocket; the request then reaches the backend as an ordinary one.
// ReverseProxy has already reduced Connection to "Upgrade" and the
// Upgrade field to a single value when the client asked for a switch, and
// removed both otherwise. HTTP2-Settings only means something beside
// Upgrade: h2c (RFC 7540 3.2), and over HTTP/2 it is an ordinary-looking
// field; it never passes.
func restrictUpgrade(hdr http.Header) (dropped bool) {
	delete(hdr, "Http2-Settings")
	up, ok := hdr["Upgrade"]
	if !ok || isWebSocket(up) {
		return false
	}
	delete(hdr, "Upgrade")
	delete(hdr, "Connection")
	return true
}

// errUpgradeRefused answers a backend's 101 to anything but a WebSocket
// request switching to WebSocket; errorHandler turns it into a 502.
var errUpgradeRefused = errors.New("backend switched protocols to something other than the WebSocket the client asked for; not relayed")

// checkSwitch refuses a 101 unless the request asked for WebSocket and the
// backend switched to WebSocket. ReverseProxy already requires the two to
// match; this keeps the one-protocol rule in this file, independent of it.
func checkSwitch(res *http.Response) error {
	if res.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	if res.Request == nil || !isWebSocket(res.Request.Header["Upgrade"]) || !isWebSocket(res.Header["Upgrade"]) {
		return errUpgradeRefused
	}
	return nil
}
