package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mcpgate/mcpgate/tests/harness"
)

// poisoningBackend is a raw HTTP/1.1 backend that keeps connections
// alive; /poison is answered correctly and then, in the same write, with
// an unsolicited second response whose body is "POISON". Every other
// request gets its own path as the body.
func poisoningBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					p := req.URL.Path
					out := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(p), p)
					if p == "/poison" {
						out += "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"
					}
					if _, err := io.WriteString(c, out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// TestUpstreamDesync (issue 15, requirement 5): a backend that appends an
// unsolicited response after a correct one must not make any other
// request through the gateway receive it (response-queue desync on the
// pooled upstream connection). Bounded: 32 clients x 250 requests, every
// other one poisoning.
func TestUpstreamDesync(t *testing.T) {
	t.Parallel()
	target := poisoningBackend(t)
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "poison", Hostnames: []string{"poison.test"}, Target: target},
	}})
	const clients, each = 32, 250
	var wrong, failed atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for n := range clients {
		c := g.HTTP1Client()
		if n%2 == 1 {
			c = g.HTTP2Client()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				path := fmt.Sprintf("/r%d-%d", n, i)
				if i%2 == 0 {
					path = "/poison"
				}
				res, err := c.Get("https://poison.test" + path)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				switch {
				case res.StatusCode == http.StatusBadGateway && path == "/poison":
				case res.StatusCode != http.StatusOK:
					failed.Add(1)
				case string(body) != path:
					wrong.Add(1)
					first.CompareAndSwap(nil, fmt.Sprintf("%s got %q", path, body))
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests, half poisoning: %d received another's response, %d failed", clients*each, wrong.Load(), failed.Load())
	if wrong.Load() > 0 {
		t.Errorf("%d requests received a response that was not theirs (first: %v)", wrong.Load(), first.Load())
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
}
