package proxy

import "testing"

func TestMatchPrefix(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"/token", "/token", true},
		{"/token/x", "/token", true},
		{"/tokens", "/token", false},
		{"/token", "/token/", true},
		{"/tok", "/token", false},
		{"/", "/", true},
		{"/anything", "/", true},
		{"/api/v1/x", "/api/v1", true},
		{"/api/v10", "/api/v1", false},
	}
	for _, tt := range tests {
		if got := MatchPrefix(tt.path, tt.prefix); got != tt.want {
			t.Errorf("MatchPrefix(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}
