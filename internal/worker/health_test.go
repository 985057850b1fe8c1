package worker

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
)

// TestHealthDetails: version, build and process details go to loopback
// clients only, unless health_details = "all"; everyone gets the status
// and the proxy's name. The address is the one after the PROXY header
// (RemoteAddr), so a remote client behind a local load balancer is remote.
func TestHealthDetails(t *testing.T) {
	full := []string{"build_id", "config_hash", "generation", "pid", "proxy", "started", "status", "version"}
	short := []string{"proxy", "status"}
	for _, tc := range []struct {
		setting, remote string
		want            []string
	}{
		{"", "127.0.0.1:5000", full},
		{"", "127.8.9.10:5000", full},
		{"", "[::1]:5000", full},
		{"", "[::ffff:127.0.0.1]:5000", full},
		{"", "203.0.113.7:5000", short},
		{"", "[2001:db8::7]:5000", short},
		{"", "garbage", short},
		{config.HealthDetailsLoopback, "198.51.100.1:443", short},
		{config.HealthDetailsAll, "203.0.113.7:5000", full},
	} {
		w := &Worker{
			spec:    &Spec{Proxy: &config.Proxy{Name: "notes", Hash: "abc"}, HealthDetails: tc.setting},
			started: time.Now(),
		}
		req := httptest.NewRequest("GET", "https://notes.test"+HealthPath, nil)
		req.RemoteAddr = tc.remote
		rr := httptest.NewRecorder()
		w.health(rr, req)
		var got map[string]any
		if err := json.Unmarshal(rr.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v", rr.Body, err)
		}
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, tc.want) {
			t.Errorf("health_details %q, client %s: fields %v, want %v", tc.setting, tc.remote, keys, tc.want)
		}
		if got["status"] != "ok" || got["proxy"] != "notes" {
			t.Errorf("health_details %q, client %s: %s", tc.setting, tc.remote, rr.Body)
		}
	}
}
