package upstream

import (
	"net/url"
	"testing"
)

func TestCheckURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://github.com/login/oauth/authorize": true,
		"http://127.0.0.1:9000/login":              true,
		"http://[::1]:9000/":                       true,
		"http://localhost:9000/":                   true,
		"http://github.com/":                       false,
		"https://u:p@github.com/":                  false,
		"https://github.com/#x":                    false,
		"/relative":                                false,
		"ftp://github.com/":                        false,
	} {
		if _, err := CheckURL("x", raw); (err == nil) != ok {
			t.Errorf("%s: %v", raw, err)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	if !SameOrigin(u("https://API.github.com/user"), u("https://api.github.com:443/x")) ||
		SameOrigin(u("https://api.github.com"), u("http://api.github.com")) ||
		SameOrigin(u("https://api.github.com"), u("https://api.github.com.evil")) {
		t.Fatal("SameOrigin")
	}
}
