package reqpath

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/internal/proxy"
)

// refClean is an independent reference for Clean, written the way RFC
// 3986 states it rather than the way Clean is built: the whole path is
// tokenized first, slashes are merged on the string, and dot segments are
// removed with §5.2.4's input-buffer loop. Only whether an error occurs is
// compared, not which one.
func refClean(in string) (decoded, canonical string, ok bool) {
	if in == "" || in[0] != '/' {
		return "", "", false
	}
	// Tokens: each raw byte or escape, rewritten to its canonical spelling.
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		c, enc := in[i], false
		if c == '%' {
			if i+2 >= len(in) {
				return "", "", false
			}
			v, err := url.PathUnescape(in[i : i+3])
			if err != nil {
				return "", "", false
			}
			c, enc = v[0], true
			i += 2
		}
		const unreservedSet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
		const rawOK = "!$&'()*+,;=:@"
		switch {
		case c < 0x20 || c == 0x7f:
			return "", "", false
		case c == '\\':
			return "", "", false
		case c == '/' && enc:
			return "", "", false
		case c == '/':
			b.WriteByte('/')
		case !enc && (c == ' ' || c == '#' || c == '?'):
			return "", "", false
		case strings.IndexByte(unreservedSet, c) >= 0:
			b.WriteByte(c)
		case !enc && strings.IndexByte(rawOK, c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteString("%" + strings.ToUpper(hex2(c)))
		}
	}
	s := b.String()
	for strings.Contains(s, "//") {
		s = strings.ReplaceAll(s, "//", "/")
	}
	for _, seg := range strings.Split(s, "/") {
		d, _ := url.PathUnescape(seg)
		if d != "." && d != ".." && strings.Contains(d, ".") && strings.Trim(d, ". ") == "" {
			return "", "", false
		}
		if dot, _, semi := strings.Cut(d, ";"); semi && (dot == "." || dot == "..") {
			return "", "", false
		}
	}
	// RFC 3986 §5.2.4, steps A to E.
	out := ""
	removeLast := func() {
		if i := strings.LastIndexByte(out, '/'); i >= 0 {
			out = out[:i]
		} else {
			out = ""
		}
	}
	for s != "" {
		switch {
		case strings.HasPrefix(s, "../"):
			s = s[3:]
		case strings.HasPrefix(s, "./"):
			s = s[2:]
		case strings.HasPrefix(s, "/./"):
			s = "/" + s[3:]
		case s == "/.":
			s = "/"
		case strings.HasPrefix(s, "/../"):
			s = "/" + s[4:]
			removeLast()
		case s == "/..":
			s = "/"
			removeLast()
		case s == "." || s == "..":
			s = ""
		default:
			j := strings.IndexByte(s[1:], '/')
			if j < 0 {
				out += s
				s = ""
			} else {
				out += s[:j+1]
				s = s[j+1:]
			}
		}
	}
	if out == "" {
		out = "/"
	}
	d, err := url.PathUnescape(out)
	if err != nil {
		return "", "", false
	}
	return d, out, true
}

func hex2(c byte) string {
	const h = "0123456789abcdef"
	return string([]byte{h[c>>4], h[c&15]})
}

// generous reads an escaped path the way the most lenient backend would:
// everything decoded, "\" as "/", dots resolved, slashes merged.
func generous(escaped string) string {
	p, err := url.PathUnescape(escaped)
	if err != nil {
		p = escaped
	}
	return path.Clean("/" + strings.ReplaceAll(p, `\`, "/"))
}

var seeds = []string{
	"/", "/mcp", "/docs", "/docs/", "/docs/a//b",
	"/docs/../mcp", "/docs/%2e%2e/mcp", "/docs/%2E%2E/mcp", "/docs%2f..%2fmcp",
	"/docs/..%2fmcp", "/docs/.%2e/mcp", "/docs//../mcp", `/docs/..\mcp`,
	"/docs/%5c../mcp", "//mcp", "/docs/./../mcp", "/docs/..;/mcp",
	"/docs/%252e%252e/mcp", "/docs/%00/x", "/a%20b/%c3%a9/é", "/%7e/%41",
	"/a/b/..", "/..", "/.../x", "/..%20/x", "*", "", "/docs/..%3B/x", "/x?y", "/x#y", "/%",
}

// FuzzPath checks Clean against refClean and its own invariants, and that
// the prefix decision the bearer check makes on the decoded path equals
// the decision on the request line ReverseProxy actually sends, however
// leniently the backend reads it.
func FuzzPath(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, esc, err := Clean(in)
		rp, resc, rok := refClean(in)
		if (err == nil) != rok || p != rp || esc != resc {
			t.Fatalf("Clean(%q) = %q, %q, %v; reference %q, %q, ok=%v", in, p, esc, err, rp, resc, rok)
		}
		if err != nil {
			return
		}
		if p2, esc2, err2 := Clean(esc); err2 != nil || esc2 != esc || p2 != p {
			t.Fatalf("Clean(%q) = %q; not idempotent: Clean of that = %q, %q, %v", in, esc, p2, esc2, err2)
		}
		up := strings.ToUpper(esc)
		for _, bad := range []string{"//", "/./", "/../", "%2F", "%5C", `\`} {
			if strings.Contains(up, bad) {
				t.Fatalf("Clean(%q) = %q contains %q", in, esc, bad)
			}
		}
		if strings.HasSuffix(esc, "/.") || strings.HasSuffix(esc, "/..") || !strings.HasPrefix(esc, "/") {
			t.Fatalf("Clean(%q) = %q", in, esc)
		}
		if d, err := url.PathUnescape(esc); err != nil || d != p {
			t.Fatalf("Clean(%q): decoding %q gives %q, %v; want %q", in, esc, d, err, p)
		}

		// The request line ReverseProxy builds for the normalized URL, to a
		// target without and with a base path.
		u := &url.URL{Path: p, RawQuery: "q=1"}
		if u.RawPath = esc; (&url.URL{Path: p}).EscapedPath() == esc {
			u.RawPath = ""
		}
		if err := Normalize(u); err != nil || u.EscapedPath() != esc || u.Path != p {
			t.Fatalf("Normalize of the clean %q: %v, %q, %q", esc, err, u.Path, u.EscapedPath())
		}
		for _, base := range []string{"", "/base"} {
			req := &http.Request{URL: u, Header: http.Header{}}
			pr := &httputil.ProxyRequest{In: req, Out: req.Clone(req.Context())}
			pr.SetURL(&url.URL{Scheme: "http", Host: "backend.test", Path: base})
			line := pr.Out.URL.RequestURI()
			got, _, _ := strings.Cut(line, "?")
			if got != base+esc {
				t.Fatalf("input %q: backend request line %q, want path %q", in, line, base+esc)
			}
			if base != "" {
				continue
			}
			for _, prefix := range []string{"/docs", "/mcp", "/a"} {
				guard := proxy.MatchPrefix(p, prefix)
				if backend := proxy.MatchPrefix(generous(got), prefix); guard != backend {
					t.Fatalf("input %q: the guard decided %v for %q under %s, a backend reading %q decides %v", in, guard, p, prefix, got, backend)
				}
			}
		}
	})
}
