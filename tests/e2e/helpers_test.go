package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// protoCase is one client flavour: the ALPN it offers and the protocol the
// response must have.
type protoCase struct {
	name  string
	cfg   harness.ClientConfig
	proto string // resp.Proto
}

var protoCases = []protoCase{
	{"h2", harness.ClientConfig{}, "HTTP/2.0"},
	{"http1", harness.ClientConfig{HTTP1Only: true}, "HTTP/1.1"},
}

// sniClient makes every connection to the gateway with SNI sni, whatever
// the request's URL and Host: the way a coalescing HTTP/2 client or a
// domain-fronting attacker reuses one connection for another name.
func sniClient(g *harness.Gateway, sni string, cfg harness.ClientConfig) *http.Client {
	alpn := []string{"h2", "http/1.1"}
	if cfg.HTTP1Only {
		alpn = []string{"http/1.1"}
	}
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: g.TLSConfig(sni, alpn...)}
			return d.DialContext(ctx, "tcp", g.HTTPSAddr)
		},
		ForceAttemptHTTP2: !cfg.HTTP1Only,
	}
	g.Track(tr)
	return &http.Client{Transport: tr}
}

// get does a GET bounded by 10s and returns the response with its body read.
func get(t *testing.T, c *http.Client, url string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, body
}

// getEcho GETs url, expects 200 from an echo backend and decodes what it saw.
func getEcho(t *testing.T, c *http.Client, url string, hdr http.Header) (*http.Response, backends.EchoRequest) {
	t.Helper()
	resp, body := get(t, c, url, hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, body %q", url, resp.StatusCode, body)
	}
	var er backends.EchoRequest
	if err := json.Unmarshal(body, &er); err != nil {
		t.Fatalf("GET %s: not an echo response: %v: %q", url, err, body)
	}
	return resp, er
}

// sseEvent is one server-sent event.
type sseEvent struct {
	ID, Event, Data string
}

// readEvent reads one event (up to a blank line) from r.
func readEvent(r *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	var data []string
	for n := 0; n < 1000; n++ { // bounded: events here are a few lines
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if len(data) == 0 && ev.Event == "" && ev.ID == "" {
				continue // stray blank line
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		case strings.HasPrefix(line, ":"):
			// comment / keep-alive
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case strings.HasPrefix(line, "event:"):
			ev.Event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "id:"):
			ev.ID = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		}
	}
	return ev, fmt.Errorf("event too long")
}

// within runs f and fails the test if it does not return within d. onTimeout
// runs first (to cancel whatever f blocks on) and may add detail.
func within[T any](t *testing.T, d time.Duration, what string, f func() (T, error), onTimeout func() string) T {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.v
	case <-time.After(d):
		detail := onTimeout()
		t.Fatalf("%s: nothing within %v. %s", what, d, detail)
	}
	panic("unreachable")
}
