package host

import (
	"errors"
	"testing"
)

func TestAuthority(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{"Example.COM", "example.com", 0, true},
		{"example.com.", "example.com", 0, true},
		{"example.com.:8443", "example.com", 8443, true},
		{"example.com:", "example.com", 0, true},
		{"example.com:443", "example.com", 443, true},
		{"under_score.test", "under_score.test", 0, true},
		{"[::1]:8443", "::1", 8443, true},
		{"[0:0::1]", "::1", 0, true},
		{"example.com..", "", 0, false},
		{".example.com", "", 0, false},
		{"exa mple.com", "", 0, false},
		{"bücher.test", "", 0, false},
		{"example.com:65536", "", 0, false},
		{"example.com:-1", "", 0, false},
		{"[::1%eth0]", "", 0, false},
		{"[::1", "", 0, false},
		{"", "", 0, false},
	} {
		h, p, err := Authority([]byte(tc.in))
		if (err == nil) != tc.ok || h != tc.host || p != tc.port {
			t.Errorf("Authority(%q) = %q, %d, %v; want %q, %d, ok=%v", tc.in, h, p, err, tc.host, tc.port, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Authority(%q) error %v is not ErrInvalid", tc.in, err)
		}
	}
}

func TestIndexMostSpecific(t *testing.T) {
	var ix Index[string]
	// The wildcard first: order must not matter.
	ix.Add("*.corp.test", "wild")
	ix.Add("secret.corp.test", "secret")
	ix.Add("*.a.corp.test", "deeper")
	if ix.Add("*.corp.test", "again") {
		t.Error("a taken pattern was added again")
	}
	for name, want := range map[string]string{
		"secret.corp.test": "secret",
		"other.corp.test":  "wild",
		"x.a.corp.test":    "deeper", // the nearer wildcard
		"a.corp.test":      "wild",
		"x.y.corp.test":    "", // one label only
		"corp.test":        "",
		"":                 "",
	} {
		got, _ := ix.Lookup(name)
		if got != want {
			t.Errorf("Lookup(%q) = %q, want %q", name, got, want)
		}
	}
	if ix.Len() != 3 {
		t.Errorf("Len() = %d, want 3", ix.Len())
	}
}
