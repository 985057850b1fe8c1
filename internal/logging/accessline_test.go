package logging

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/identity"
)

// TestAccessLineMatchesSlog: the fast access line is, field for field and
// in the same order, what slog's JSON handler writes for the same request,
// for hostile strings too; on the journal it carries the info priority.
func TestAccessLineMatchesSlog(t *testing.T) {
	requests := []struct {
		name   string
		path   string
		ua     string
		who    *identity.Principal
		status int
	}{
		{name: "plain", path: "/mcp", ua: "probe/1", status: 200},
		{name: "identified", path: "/mcp", ua: "claude-code/2.0", who: &identity.Principal{Login: "alice", ClientID: "cli-1"}, status: 200},
		{name: "hostile", path: "/a\"b\\c\x00d\x1fe\u2028f\u2029g\xffh<&>", ua: "evil\n{\"x\":1}", status: 404,
			who: &identity.Principal{Login: "bo\"b\u2028", ClientID: "c\\1\xc3"}},
	}
	for _, journal := range []bool{false, true} {
		for _, rq := range requests {
			name := rq.name
			if journal {
				name += "/journal"
			}
			t.Run(name, func(t *testing.T) {
				run := func(fast bool) string {
					var buf lockedBuffer
					out := &batchWriter{w: &buf}
					h := &batched{out: out, json: true, journal: journal}
					if journal {
						h.inner = newPrefixed(out, nil)
					} else {
						h.inner = slog.NewJSONHandler(out, nil)
					}
					log := slog.New(h).With("proxy", "alpha", "pid", 4242)
					if !fast {
						// A logger the fast path does not take: the
						// same output through slog.
						log = slog.New(&slogOnly{log.Handler()})
					}
					handler := Access(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if rec := RequestFrom(r.Context()); rec != nil {
							rec.Principal = rq.who
							rec.Upstream = 1500 * time.Microsecond
						}
						w.WriteHeader(rq.status)
						io.WriteString(w, "body")
					}))
					req := httptest.NewRequest("POST", "https://notes.test/", strings.NewReader("{}"))
					req.URL.Path = rq.path
					req.RemoteAddr = "198.51.100.7:4000"
					req.Header.Set("User-Agent", rq.ua)
					req.Header.Set("X-Request-Id", "req-1")
					handler.ServeHTTP(httptest.NewRecorder(), req)
					Flush(slog.New(h))
					return strings.Join(buf.snapshot(), "")
				}
				fast, slow := run(true), run(false)
				if journal && (!strings.HasPrefix(fast, "<6>{") || !strings.HasPrefix(slow, "<6>{")) {
					t.Fatalf("journal lines without the info priority:\n%s\n%s", fast, slow)
				}
				strip := func(s string) (keys []string, m map[string]any) {
					s = strings.TrimPrefix(s, "<6>")
					dec := json.NewDecoder(strings.NewReader(s))
					if err := dec.Decode(&m); err != nil {
						t.Fatalf("%v: %q", err, s)
					}
					// The keys in order, from a token stream.
					tok := json.NewDecoder(strings.NewReader(s))
					tok.Token()
					for tok.More() {
						k, _ := tok.Token()
						keys = append(keys, k.(string))
						var skip any
						tok.Decode(&skip)
					}
					delete(m, "time")
					delete(m, "duration_ms")
					return keys, m
				}
				fk, fm := strip(fast)
				sk, sm := strip(slow)
				if !reflect.DeepEqual(fk, sk) || !reflect.DeepEqual(fm, sm) {
					t.Errorf("fast line\n%s\nslog line\n%s", fast, slow)
				}
			})
		}
	}
}

// slogOnly hides the batched handler from the fast path.
type slogOnly struct{ slog.Handler }

func TestAppendJSONStringMatchesSlog(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\x00\x01\x1f\x7f", "\n\r\t", "é€𝄞", "\xff\xfe", "\u2028\u2029", "<&>", "a\xc3"} {
		var buf strings.Builder
		slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key != "s" {
				return slog.Attr{}
			}
			return a
		}})).Info("", "s", s)
		want := strings.TrimSuffix(strings.TrimPrefix(buf.String(), `{"s":`), "}\n")
		if got := string(appendJSONString(nil, s)); got != want {
			t.Errorf("appendJSONString(%q) = %s, slog writes %s", s, got, want)
		}
	}
}

func BenchmarkAccessLine(b *testing.B) {
	out := &batchWriter{w: io.Discard}
	h := &batched{out: out, json: true, inner: slog.NewJSONHandler(out, nil)}
	for _, fast := range []bool{true, false} {
		name := "fast"
		log := slog.New(h).With("proxy", "alpha", "pid", 4242)
		if !fast {
			name = "slog"
			log = slog.New(&slogOnly{log.Handler()})
		}
		b.Run(name, func(b *testing.B) {
			handler := Access(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				RequestFrom(r.Context()).Principal = &identity.Principal{Login: "alice", ClientID: "cli"}
			}))
			req := httptest.NewRequest("GET", "https://notes.test/mcp", nil)
			req.Header.Set("User-Agent", "probe/1")
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for range b.N {
				handler.ServeHTTP(w, req)
			}
		})
	}
}
