package idp

import (
	"errors"
	"strings"
	"testing"
)

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"The code abc123 is bad; secret s3 too": "The code [redacted] is bad; secret [redacted] too",
		"line\nbreak\x1b[31m":                   "line break [31m",
		strings.Repeat("é", 150):                strings.Repeat("é", 100) + "…",
	} {
		if got := Sanitize(in, "abc123", "s3", ""); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestError(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	e := &Error{Provider: "github", Op: "GET /user", Status: 502, Code: "x", Description: "y", Err: cause}
	if e.Error() != "github: GET /user: HTTP 502: x: y: dial tcp: refused" || !errors.Is(e, cause) {
		t.Fatal(e)
	}
}
