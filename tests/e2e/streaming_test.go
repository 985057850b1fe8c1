package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// streamWait bounds each step of a streaming test. The backend sends its
// first part at once, so seconds are plenty; a buffering gateway fails here
// instead of hanging until the stream ends.
const streamWait = 5 * time.Second

// TestStreaming proves that streamed responses are not buffered: the client
// must receive the first event while the backend still holds back the
// second one, which it sends only after the test has seen the first.
func TestStreaming(t *testing.T) {
	t.Parallel()
	sse := backends.NewSSE(t)
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "stream", Hostnames: []string{"stream.test"}, Target: sse.URL},
	}})

	readData := func(r *bufio.Reader) (string, error) {
		ev, err := readEvent(r)
		return ev.Data, err
	}
	readLine := func(r *bufio.Reader) (string, error) {
		return r.ReadString('\n')
	}
	kinds := []struct {
		name, method, path, body string
		contentType              string // of the response
		read                     func(*bufio.Reader) (string, error)
		want1, want2             string
	}{
		{"GET-sse", http.MethodGet, "/sse", "", "text/event-stream", readData, "event 1", "event 2"},
		{"POST-sse", http.MethodPost, "/mcp-sse",
			`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow"}}`,
			"text/event-stream", readData, "event 1", `"id":7`},
		{"chunked", http.MethodGet, "/chunked", "", "text/plain", readLine, "chunk 1", "chunk 2"},
	}

	for _, pc := range protoCases {
		c := g.Client(pc.cfg)
		for _, k := range kinds {
			t.Run(pc.name+"/"+k.name, func(t *testing.T) {
				id := pc.name + "-" + k.name
				ctx, cancel := context.WithTimeout(context.Background(), 4*streamWait)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, k.method, "https://stream.test"+k.path+"?id="+id, strings.NewReader(k.body))
				if err != nil {
					t.Fatal(err)
				}
				if k.method == http.MethodPost {
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Accept", "application/json, text/event-stream")
				}
				backendState := func() string {
					cancel()
					select {
					case <-sse.FirstSent(id):
						return "The backend had flushed its first part: the gateway buffers the stream."
					default:
						return "The backend never got (or never answered) the request."
					}
				}

				resp := within(t, streamWait, "response headers", func() (*http.Response, error) { return c.Do(req) }, backendState)
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
					t.Fatalf("status %d, body %q", resp.StatusCode, b)
				}
				if resp.Proto != pc.proto {
					t.Errorf("protocol %s, want %s", resp.Proto, pc.proto)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, k.contentType) {
					t.Errorf("Content-Type %q, want %s", ct, k.contentType)
				}
				br := bufio.NewReader(resp.Body)

				first := within(t, streamWait, "first part", func() (string, error) { return k.read(br) }, backendState)
				if !strings.Contains(first, k.want1) {
					t.Fatalf("first part %q, want it to contain %q", first, k.want1)
				}
				// Only now may the backend continue.
				sse.Release(id)
				second := within(t, streamWait, "second part", func() (string, error) { return k.read(br) }, func() string { cancel(); return "" })
				if !strings.Contains(second, k.want2) {
					t.Fatalf("second part %q, want it to contain %q", second, k.want2)
				}
				rest := within(t, streamWait, "end of stream", func() (string, error) {
					b, err := io.ReadAll(br)
					if err != nil && !errors.Is(err, io.EOF) {
						return "", err
					}
					return string(b), nil
				}, func() string { cancel(); return "" })
				if strings.TrimSpace(rest) != "" {
					t.Errorf("unexpected data after the second part: %q", rest)
				}
			})
		}
	}
}

// TestStreamClientGone: when the client of an open event stream goes away,
// the gateway closes the backend's stream at once, whichever protocol; an
// HTTP/1.1 GET stream, which leaves net/http once its head is sent (and so
// says Connection: close), is watched on the handed-over socket itself.
func TestStreamClientGone(t *testing.T) {
	t.Parallel()
	sse := backends.NewSSE(t)
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "stream", Hostnames: []string{"stream.test"}, Target: sse.URL},
	}})
	for _, pc := range protoCases {
		t.Run(pc.name, func(t *testing.T) {
			id := "gone-" + pc.name
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://stream.test/sse?id="+id, nil)
			resp := within(t, streamWait, "response headers", func() (*http.Response, error) { return g.Client(pc.cfg).Do(req) }, func() string { cancel(); return "" })
			defer resp.Body.Close()
			if detached := pc.cfg.HTTP1Only; resp.Close != detached {
				t.Errorf("Connection: close is %v, want %v (an HTTP/1.1 GET stream leaves net/http)", resp.Close, detached)
			}
			br := bufio.NewReader(resp.Body)
			if ev := within(t, streamWait, "first event", func() (sseEvent, error) { return readEvent(br) }, func() string { cancel(); return "" }); ev.Data != "event 1" {
				t.Fatalf("first event %+v", ev)
			}
			cancel() // the client goes away
			select {
			case <-sse.Gone(id):
			case <-time.After(streamWait):
				t.Fatal("the backend's stream stayed open after its client left")
			}
		})
	}
}
