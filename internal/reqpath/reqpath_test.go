package reqpath

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
)

// TestClean pins the normalization rules, one row per rule or attack
// spelling, with the exact decoded and escaped results.
func TestClean(t *testing.T) {
	for _, tc := range []struct {
		in, path, escaped string
		err               error
	}{
		// Unchanged.
		{in: "/", path: "/", escaped: "/"},
		{in: "/mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/", path: "/docs/", escaped: "/docs/"},
		{in: "/a/b:c@d!$&'()*+,;=", path: "/a/b:c@d!$&'()*+,;=", escaped: "/a/b:c@d!$&'()*+,;="},
		{in: "/a-b_c.d~e", path: "/a-b_c.d~e", escaped: "/a-b_c.d~e"},
		// Dot segments (RFC 3986 §5.2.4), clamped at the root.
		{in: "/docs/../mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/./../mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/../../../mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/..", path: "/", escaped: "/"},
		{in: "/.", path: "/", escaped: "/"},
		{in: "/a/b/..", path: "/a/", escaped: "/a/"},
		{in: "/a/b/.", path: "/a/b/", escaped: "/a/b/"},
		{in: "/a/./b/./", path: "/a/b/", escaped: "/a/b/"},
		{in: "/a/..b/c..", path: "/a/..b/c..", escaped: "/a/..b/c.."},
		// Encoded dots are dots.
		{in: "/docs/%2e%2e/mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/%2E%2E/mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/.%2e/mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/%2e./mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/%2e/mcp", path: "/docs/mcp", escaped: "/docs/mcp"},
		// Slashes merged before dot segments are removed.
		{in: "//mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs//../mcp", path: "/mcp", escaped: "/mcp"},
		{in: "/docs/a//b", path: "/docs/a/b", escaped: "/docs/a/b"},
		{in: "/docs///", path: "/docs/", escaped: "/docs/"},
		{in: "//", path: "/", escaped: "/"},
		// Unreserved escapes decoded, the others kept in upper case.
		{in: "/%7euser/%41%2d%5f", path: "/~user/A-_", escaped: "/~user/A-_"},
		{in: "/a%20b", path: "/a b", escaped: "/a%20b"},
		{in: "/a%3fb%3Bc%25d%23e", path: "/a?b;c%d#e", escaped: "/a%3Fb%3Bc%25d%23e"},
		{in: "/%c3%a9", path: "/é", escaped: "/%C3%A9"},
		{in: "/%252e%252e", path: "/%2e%2e", escaped: "/%252e%252e"},
		// Bytes a URI may not hold raw are encoded.
		{in: "/é", path: "/é", escaped: "/%C3%A9"},
		{in: "/a{b}|c^\"`<>[]", path: "/a{b}|c^\"`<>[]", escaped: "/a%7Bb%7D%7Cc%5E%22%60%3C%3E%5B%5D"},
		// Refused.
		{in: "", err: ErrNotAbsolute},
		{in: "*", err: ErrNotAbsolute},
		{in: "mcp", err: ErrNotAbsolute},
		{in: "%2fmcp", err: ErrNotAbsolute},
		{in: "/docs%2f..%2fmcp", err: ErrEncodedSlash},
		{in: "/docs%2F..%2Fmcp", err: ErrEncodedSlash},
		{in: "/docs/..%2fmcp", err: ErrEncodedSlash},
		{in: "/docs/%2e%2e%2fmcp", err: ErrEncodedSlash},
		{in: "/docs/%5c../mcp", err: ErrEncodedSlash},
		{in: "/docs/..%5Cmcp", err: ErrEncodedSlash},
		{in: `/docs/..\mcp`, err: ErrBackslash},
		{in: `\mcp`, err: ErrNotAbsolute},
		{in: "/docs/%00/../mcp", err: ErrControl},
		{in: "/a\x00b", err: ErrControl},
		{in: "/a%0ab", err: ErrControl},
		{in: "/a%7f", err: ErrControl},
		{in: "/a\tb", err: ErrControl},
		{in: "/a b", err: ErrControl},
		{in: "/a\x7f", err: ErrControl},
		{in: "/a#b", err: ErrDelimiter},
		{in: "/a?b", err: ErrDelimiter},
		{in: "/a%", err: ErrBadEscape},
		{in: "/a%4", err: ErrBadEscape},
		{in: "/a%zz", err: ErrBadEscape},
		{in: "/a%%41", err: ErrBadEscape},
		{in: "/docs/..;/mcp", err: ErrDisguisedDot},
		{in: "/docs/.;x/mcp", err: ErrDisguisedDot},
		{in: "/docs/..%3b/mcp", err: ErrDisguisedDot},
		{in: "/docs/%2e%2e;jsessionid=1/mcp", err: ErrDisguisedDot},
		{in: "/docs/.../mcp", err: ErrDisguisedDot},
		{in: "/docs/..%2e/mcp", err: ErrDisguisedDot},
		{in: "/docs/..%20/mcp", err: ErrDisguisedDot},
		{in: "/docs/.%20./mcp", err: ErrDisguisedDot},
		{in: "/docs/%20", path: "/docs/ ", escaped: "/docs/%20"},
		// A ";" or a space elsewhere is just a character.
		{in: "/docs/a..%20b/.a", path: "/docs/a.. b/.a", escaped: "/docs/a..%20b/.a"},
		{in: "/docs/a;b/..", path: "/docs/", escaped: "/docs/"},
	} {
		path, escaped, err := Clean(tc.in)
		if !errors.Is(err, tc.err) || path != tc.path || escaped != tc.escaped {
			t.Errorf("Clean(%q) = %q, %q, %v; want %q, %q, %v", tc.in, path, escaped, err, tc.path, tc.escaped, tc.err)
		}
	}
}

// TestRequest checks what the worker calls: the URL as net/http parses
// the request line, rewritten so that Path, EscapedPath and RequestURI
// agree, and the query left alone.
func TestRequest(t *testing.T) {
	for _, tc := range []struct {
		target, path, uri string
		err               error
	}{
		{target: "/docs/%2e%2e/mcp?a=%2e%2e/x", path: "/mcp", uri: "/mcp?a=%2e%2e/x"},
		{target: "/docs/a%20b//c", path: "/docs/a b/c", uri: "/docs/a%20b/c"},
		{target: "/%41%62c", path: "/Abc", uri: "/Abc"},
		{target: "/x/%3B", path: "/x/;", uri: "/x/%3B"},
		{target: "/x/;", path: "/x/;", uri: "/x/;"},
		{target: "https://alpha.test/docs/../mcp", path: "/mcp", uri: "/mcp"},
		// An encoded slash behind a byte that makes RawPath invalid for
		// EscapedPath is still seen.
		{target: "/docs%2F..%2Fmcp/{", err: ErrEncodedSlash},
		{target: "/docs/..%2fmcp", err: ErrEncodedSlash},
		{target: "*", err: ErrNotAbsolute},
		{target: "https:opaque", err: ErrNotAbsolute},
	} {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatalf("ParseRequestURI(%q): %v", tc.target, err)
		}
		r := &http.Request{Method: "GET", URL: u, RequestURI: tc.target}
		err = Request(r)
		if !errors.Is(err, tc.err) {
			t.Errorf("Request(%q): error %v, want %v", tc.target, err, tc.err)
			continue
		}
		if err != nil {
			if r.RequestURI != tc.target {
				t.Errorf("Request(%q) failed but changed RequestURI to %q", tc.target, r.RequestURI)
			}
			continue
		}
		if r.URL.Path != tc.path || r.URL.RequestURI() != tc.uri || r.RequestURI != tc.uri {
			t.Errorf("Request(%q): Path %q, URL.RequestURI %q, RequestURI %q; want %q, %q", tc.target, r.URL.Path, r.URL.RequestURI(), r.RequestURI, tc.path, tc.uri)
		}
	}
	// CONNECT's authority-form target has no path.
	r := &http.Request{Method: "CONNECT", URL: &url.URL{Host: "alpha.test:443"}, RequestURI: "alpha.test:443"}
	if err := Request(r); !errors.Is(err, ErrNotAbsolute) {
		t.Errorf("CONNECT alpha.test:443: %v, want %v", err, ErrNotAbsolute)
	}
	// A URL whose RawPath does not encode its Path is not guessed at.
	u := &url.URL{Path: "/docs/../mcp", RawPath: "/docs"}
	if err := Normalize(u); !errors.Is(err, ErrInconsistent) {
		t.Errorf("inconsistent URL: %v, want %v", err, ErrInconsistent)
	}
}
