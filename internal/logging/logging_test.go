package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/metrics"
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
	want := map[string]any{"client": "192.0.2.1:1234", "method": "POST", "path": "/oauth/callback", "status": float64(418), "bytes_out": float64(5)}
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

// TestAccessLogFields: the line carries what the handlers behind the
// access log recorded (who, upstream time), the body sizes, the user agent
// cleaned up, and the request id the client sent, which is also returned.
func TestAccessLogFields(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	h := Access(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := RequestFrom(r.Context())
		if rec == nil {
			t.Fatal("no request record in the handler's context")
		}
		io.Copy(io.Discard, r.Body)
		rec.Principal = &identity.Principal{Login: "alice", ClientID: "cli-1"}
		rec.Upstream = 1500 * time.Microsecond
		w.Write([]byte("ok"))
	}))
	req := httptest.NewRequest("POST", "https://notes.test/mcp?x=1", strings.NewReader(`{"jsonrpc":"2.0"}`))
	req.RemoteAddr = "198.51.100.7:4000"
	req.Header.Set("User-Agent", "evil\n{\"forged\":1}\x1b[31m"+strings.Repeat("x", 400))
	req.Header.Set("X-Request-Id", "req-42.A_b")
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)

	if got := rr.Header().Get("X-Request-Id"); got != "req-42.A_b" {
		t.Errorf("response X-Request-Id = %q, want the client's", got)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := map[string]any{
		"msg": "request", "client": "198.51.100.7:4000", "method": "POST", "host": "notes.test", "path": "/mcp",
		"proto": "HTTP/1.1", "status": float64(200), "bytes_in": float64(17), "bytes_out": float64(2),
		"upstream_ms": 1.5, "user": "alice", "client_id": "cli-1", "request_id": "req-42.A_b",
		"user_agent": "evil?{\"forged\":1}?[31m" + strings.Repeat("x", 256-len("evil?{\"forged\":1}?[31m")),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
}

// TestAccessLogAnonymous: a request nobody identified, not proxied, has no
// user, client_id or upstream_ms fields at all.
func TestAccessLogAnonymous(t *testing.T) {
	var buf bytes.Buffer
	h := Access(slog.New(slog.NewJSONHandler(&buf, nil)), http.NotFoundHandler())
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"user", "client_id", "upstream_ms"} {
		if _, ok := got[k]; ok {
			t.Errorf("anonymous request logged %s: %s", k, buf.Bytes())
		}
	}
	if got["status"] != float64(404) || got["bytes_in"] != float64(0) {
		t.Errorf("line %s, want status 404 and bytes_in 0", buf.Bytes())
	}
}

// TestRequestID: a well-formed client id is kept; anything else (too long,
// other characters, two values, none) is replaced by a fresh 32-hex id,
// which the handler sees, the client gets back, and the log names, even
// when the access log is off.
func TestRequestID(t *testing.T) {
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, tc := range []struct {
		name string
		sent []string
		keep bool
	}{
		{"uuid", []string{"0b3c6d2e-9f1a-4c1e-8d5b-2a7f6e4c9b10"}, true},
		{"128 characters", []string{strings.Repeat("a", 128)}, true},
		{"129 characters", []string{strings.Repeat("a", 129)}, false},
		{"space", []string{"a b"}, false},
		{"newline", []string{"a\nb"}, false},
		{"slash", []string{"a/b"}, false},
		{"non-ASCII", []string{"é"}, false},
		{"empty", []string{""}, false},
		{"two values", []string{"a", "b"}, false},
		{"none", nil, false},
	} {
		for _, logged := range []bool{true, false} {
			var buf bytes.Buffer
			var log *slog.Logger
			if logged {
				log = slog.New(slog.NewJSONHandler(&buf, nil))
			}
			var seen string
			h := Access(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = RequestFrom(r.Context()).ID
			}))
			req := httptest.NewRequest("GET", "/", nil)
			if tc.sent != nil {
				req.Header["X-Request-Id"] = tc.sent
			}
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, req)
			back := rr.Header().Get("X-Request-Id")
			switch {
			case tc.keep && seen != tc.sent[0]:
				t.Errorf("%s: handler saw id %q, want the client's", tc.name, seen)
			case !tc.keep && !generated.MatchString(seen):
				t.Errorf("%s: handler saw id %q, want a generated one", tc.name, seen)
			case back != seen:
				t.Errorf("%s: client got id %q, handler saw %q", tc.name, back, seen)
			}
			if logged && !strings.Contains(buf.String(), `"request_id":"`+seen+`"`) {
				t.Errorf("%s: line %s does not name id %q", tc.name, buf.String(), seen)
			}
			if !logged && buf.Len() != 0 {
				t.Errorf("%s: access log off, but wrote %s", tc.name, buf.String())
			}
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"curl/8.5.0":             "curl/8.5.0",
		"a\tb\r\nc\x7f":          "a?b??c?",
		"Mozilla/5.0 (ü)":        "Mozilla/5.0 (??)",
		strings.Repeat("z", 300): strings.Repeat("z", 256),
	} {
		if got := clean(in, maxUserAgent); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAccessCountsRequests: every request reaches the metrics, with the
// access log on or off.
func TestAccessCountsRequests(t *testing.T) {
	count := func() uint64 {
		for _, r := range metrics.Default.Snapshot().Requests {
			if r.Code == "418" || (r.Code == "4xx" && r.Method == "PUT" && r.Protocol == "h1") {
				return r.N
			}
		}
		return 0
	}
	before := count()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, log := range []*slog.Logger{nil, slog.New(slog.NewTextHandler(io.Discard, nil))} {
		Access(log, h).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("PUT", "/", nil))
	}
	if after := count(); after != before+2 {
		t.Errorf("requests counted %d → %d, want +2", before, after)
	}
}

// TestDetach: a handler that detaches its request gets the line written
// when it says the response ended, with what it wrote before and after,
// the time until then, and the same fields as an ordinary line; not when
// it returns. Outside Access there is nothing to detach.
func TestDetach(t *testing.T) {
	if Detach(context.Background()) != nil {
		t.Error("Detach outside Access returned a function")
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	var finish func(int64)
	h := Access(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		RequestFrom(r.Context()).Principal = &identity.Principal{Login: "alice", ClientID: "cli-1"}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: 1\n\n"))
		finish = Detach(r.Context())
	}))
	req := httptest.NewRequest("GET", "https://notes.test/mcp", nil)
	req.Header.Set("X-Request-Id", "req-7")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if finish == nil {
		t.Fatal("Detach inside Access returned nil")
	}
	if buf.Len() != 0 {
		t.Fatalf("line written when the handler returned: %s", buf.Bytes())
	}
	time.Sleep(20 * time.Millisecond)
	finish(100)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := map[string]any{"msg": "request", "method": "GET", "host": "notes.test", "path": "/mcp", "status": float64(200),
		"bytes_out": float64(109), "user": "alice", "client_id": "cli-1", "request_id": "req-7"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if d, _ := got["duration_ms"].(float64); d < 20 {
		t.Errorf("duration_ms %v: the time until the end was not counted", got["duration_ms"])
	}
}
