package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAccessLogLineHasNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	h := Access(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("12345"))
	}))
	req := httptest.NewRequest("POST", "https://notes.test/oauth/callback?code=SECRETCODE&state=S", nil)
	req.Header.Set("Authorization", "Bearer SECRETTOKEN")
	req.Header.Set("Cookie", "__Host-session=SECRETCOOKIE")
	req.RemoteAddr = "192.0.2.1:1234"
	h.ServeHTTP(httptest.NewRecorder(), req)

	line := buf.String()
	for _, secret := range []string{"SECRETCODE", "SECRETTOKEN", "SECRETCOOKIE", "Bearer"} {
		if strings.Contains(line, secret) {
			t.Errorf("log line contains %q: %s", secret, line)
		}
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"client": "192.0.2.1:1234", "method": "POST", "path": "/oauth/callback", "status": float64(418), "bytes": float64(5)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["duration_ms"]; !ok {
		t.Error("no duration_ms")
	}
}

func TestRecorderKeepsFlusher(t *testing.T) {
	rr := httptest.NewRecorder()
	h := Access(slog.New(slog.DiscardHandler), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush through the access log: %v", err)
		}
	}))
	h.ServeHTTP(rr, httptest.NewRequest("GET", "/", nil))
	if !rr.Flushed {
		t.Error("response not flushed")
	}
}
