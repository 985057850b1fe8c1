// Package reqpath decides a request's path once, before anything looks at
// it. The OAuth endpoints, the health path, the bearer check's public
// paths, the proxy's route pick and the request line the backend receives
// all read the URL that Request leaves behind, so a spelling that one of
// them would read differently from another (dot segments, encoded slashes,
// doubled slashes) cannot walk a request out of a public path.
//
// The rules follow Envoy's normalize_path, merge_slashes and
// path_with_escaped_slashes_action = REJECT_REQUEST, with RFC 3986
// §5.2.4 (remove_dot_segments) and §6.2.2 (case and percent-encoding
// normalization):
//
//   - The path must start with "/"; "*", authority-form (CONNECT) and
//     opaque targets are refused. (net/http answers "OPTIONS *" over
//     HTTP/1.1 and HTTP/2 itself, before any handler runs; over HTTP/3 it
//     gets 400.)
//   - Percent-encoded unreserved characters are decoded (%2E is ".", %7E
//     is "~"), so "%2e%2e" is a dot segment; every other escape is kept,
//     with upper-case hex, so the backend sees what the client sent.
//   - An encoded "/" (%2F) or "\" (%5C), a raw "\", control characters
//     and NUL (raw or encoded), a raw space, "#" or "?", and a malformed
//     escape are refused: there is no spelling of them every reader agrees
//     on.
//   - Other raw bytes a URI may not contain ('"', "{", non-ASCII, …) are
//     percent-encoded.
//   - Repeated slashes are merged first, then dot segments are removed:
//     "/docs//../mcp" is "/mcp", as a server that ignores empty segments
//     reads it. ".." at the root stays at the root, as RFC 3986 and Envoy
//     do: the result is a path both the check and the backend see.
//   - A segment that some server reads as a dot segment is refused: "."
//     or ".." with a path parameter (".;x", "..;x", also with ";"
//     encoded), which Java servlet containers strip, and one made only of
//     dots and spaces ("...", ".. "), which Windows trims.
//   - A trailing slash is kept ("/a/b/.." is "/a/").
//
// The query is checked too, though never decoded: HTTP/2 and HTTP/3
// clients can put any byte into :path and Go's URL parser keeps most of
// them, so a query with a raw space or control character is refused
// ("GET /docs?x /mcp HTTP/1.1" is a request for /mcp to a lenient
// backend), and other bytes a query may not hold raw are percent-encoded;
// escapes the client wrote are left as they are.
package reqpath

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// The reasons a path is refused. Their texts are safe to log and to show
// the client: they never contain the path or the query.
var (
	ErrNotAbsolute  = errors.New(`the request path must start with "/"`)
	ErrEncodedSlash = errors.New(`the request path contains an encoded "/" or "\"`)
	ErrBackslash    = errors.New(`the request path contains "\"`)
	ErrControl      = errors.New("the request path contains a control character or a space")
	ErrDelimiter    = errors.New(`the request path contains a raw "#" or "?"`)
	ErrBadEscape    = errors.New("the request path contains a malformed percent-encoding")
	ErrDisguisedDot = errors.New(`the request path contains a segment some servers read as "." or ".."`)
	ErrInconsistent = errors.New("the request URL's path and raw path disagree")
	ErrQueryControl = errors.New("the request query contains a control character or a space")
)

// Request normalizes r's path in place: r.URL.Path and r.URL.RawPath, and
// r.RequestURI, which then carries the same path. On error r is unchanged
// and the request must be refused with 400.
func Request(r *http.Request) error {
	q, err := Query(r.URL.RawQuery)
	if err != nil {
		return err
	}
	if err := Normalize(r.URL); err != nil {
		return err
	}
	r.URL.RawQuery = q
	if r.RequestURI != "" {
		r.RequestURI = r.URL.RequestURI()
	}
	return nil
}

// Normalize rewrites u's Path and RawPath to the normalized path, so that
// u.EscapedPath() is exactly Clean's escaped result. The query is left
// alone. On error u is unchanged.
func Normalize(u *url.URL) error {
	if u.Opaque != "" {
		return ErrNotAbsolute
	}
	// The spelling the client sent: Go's URL parser keeps it in RawPath
	// whenever it differs from the default escaping of Path; it may hide
	// an encoded slash behind bytes that make RawPath "invalid" for
	// EscapedPath, so it is read directly.
	src := u.RawPath
	if src != "" {
		if p, err := url.PathUnescape(src); err != nil || p != u.Path {
			return ErrInconsistent
		}
	} else {
		src = u.EscapedPath()
	}
	path, escaped, err := Clean(src)
	if err != nil {
		return err
	}
	// RawPath only when the default escaping of Path differs, as
	// url.Parse does; httputil's joinURLPath takes the simpler branch
	// then.
	v := url.URL{Path: path}
	if v.EscapedPath() != escaped {
		v.RawPath = escaped
	}
	if v.EscapedPath() != escaped {
		// Cannot happen: Clean's output is a valid encoding of path.
		return ErrInconsistent
	}
	u.Path, u.RawPath = v.Path, v.RawPath
	return nil
}

// Clean normalizes an escaped path (as sent on the request line, without
// the query) and returns it decoded (for comparisons) and escaped (for
// the request line to the backend). The two name the same segments: no
// "/" is ever decoded.
func Clean(escaped string) (path, canonical string, err error) {
	if !strings.HasPrefix(escaped, "/") {
		return "", "", ErrNotAbsolute
	}
	segs := strings.Split(escaped[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		c, err := segment(s)
		if err != nil {
			return "", "", err
		}
		last := i == len(segs)-1
		switch c {
		case "", ".":
			// Empty segments merge into their neighbours.
			trailing = last
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
			continue
		}
		if disguisedDot(c) {
			return "", "", ErrDisguisedDot
		}
		out = append(out, c)
		trailing = false
	}
	canonical = "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		canonical += "/"
	}
	path, err = url.PathUnescape(canonical)
	if err != nil {
		// Cannot happen: segment emits only valid escapes.
		return "", "", ErrBadEscape
	}
	return path, canonical, nil
}

const upperhex = "0123456789ABCDEF"

func writeEscaped(b *strings.Builder, c byte) {
	b.WriteByte('%')
	b.WriteByte(upperhex[c>>4])
	b.WriteByte(upperhex[c&15])
}

// segment returns one path segment in canonical form: unreserved
// characters decoded, other escapes upper-case, bytes a URI may not hold
// raw encoded.
func segment(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return "", ErrBadEscape
			}
			d := unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
			switch {
			case d == '/' || d == '\\':
				return "", ErrEncodedSlash
			case d < 0x20 || d == 0x7f:
				return "", ErrControl
			case unreserved(d):
				b.WriteByte(d)
			default:
				writeEscaped(&b, d)
			}
		case c == '\\':
			return "", ErrBackslash
		case c <= 0x20 || c == 0x7f:
			return "", ErrControl
		case c == '#' || c == '?':
			return "", ErrDelimiter
		case unreserved(c) || subDelim(c) || c == ':' || c == '@':
			b.WriteByte(c)
		default:
			writeEscaped(&b, c)
		}
	}
	return b.String(), nil
}

// Query returns a raw query a request line can carry as it is: bytes a
// query may not hold raw (RFC 3986 3.4) percent-encoded, everything else,
// escapes included, unchanged; q itself when nothing needs encoding. A
// space or control character is an error.
func Query(q string) (string, error) {
	i := 0
	for ; i < len(q); i++ {
		if !queryByte(q[i]) {
			break
		}
	}
	if i == len(q) {
		return q, nil
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	b.WriteString(q[:i])
	for ; i < len(q); i++ {
		c := q[i]
		switch {
		case c <= 0x20 || c == 0x7f:
			return "", ErrQueryControl
		case queryByte(c):
			b.WriteByte(c)
		default:
			writeEscaped(&b, c)
		}
	}
	return b.String(), nil
}

// queryByte: pchar, "/" and "?" (RFC 3986 3.4), and "%" (escapes are the
// client's business as long as the request line stays one line).
func queryByte(c byte) bool {
	return unreserved(c) || subDelim(c) || c == ':' || c == '@' || c == '/' || c == '?' || c == '%'
}

// disguisedDot reports whether a canonical segment other than "." and
// ".." is one that some server resolves as a dot segment: Tomcat and Jetty
// strip path parameters first ("..;x"), Windows trims trailing dots and
// spaces ("...", ".. ").
func disguisedDot(c string) bool {
	for _, p := range []string{".;", "..;", ".%3B", "..%3B"} {
		if strings.HasPrefix(c, p) {
			return true
		}
	}
	return strings.Contains(c, ".") && strings.Trim(strings.ReplaceAll(c, "%20", " "), ". ") == ""
}

// unreserved is RFC 3986's unreserved set.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// subDelim is RFC 3986's sub-delims set.
func subDelim(c byte) bool {
	return strings.IndexByte("!$&'()*+,;=", c) >= 0
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
