package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawBackend answers the first request of every connection ("/first")
// with fixed bytes, and "/second" with a short "ok" response of its own.
// It closes a connection after the fixed bytes when told to (net/http's
// reader would see the end of the bytes there), and otherwise waits for
// the next request: a "/second" on a connection that served "/first"
// counts as a reuse.
type rawBackend struct {
	l      net.Listener
	raw    []byte
	close  bool
	reused atomic.Int64
	mu     sync.Mutex
	conns  []net.Conn
}

func newRawBackend(tb testing.TB, raw []byte, closeAfter bool) *rawBackend {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &rawBackend{l: l, raw: raw, close: closeAfter}
	go b.serve()
	tb.Cleanup(b.shut)
	return b
}

func (b *rawBackend) shut() {
	b.l.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

func (b *rawBackend) serve() {
	for {
		c, err := b.l.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			served := false
			for range 4 {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.URL.Path == "/second" {
					if served {
						b.reused.Add(1)
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					continue
				}
				if req.URL.Path == "/first" && req.Header.Get("X-Early") == "" {
					io.Copy(io.Discard, req.Body)
				}
				served = true
				c.Write(b.raw)
				if b.close {
					return
				}
			}
		}()
	}
}

// reference reads raw as the response to a method request the way
// http.Transport would (interim 1xx responses skipped), then the body to
// its end: the answer mcpgate must give, or fail with 502. leftover is
// what a connection would still hold after it.
func reference(raw []byte, method string) (res *http.Response, body []byte, leftover int, err error) {
	src := bytes.NewReader(raw)
	br := bufio.NewReader(src)
	req := &http.Request{Method: method}
	for n := 0; ; n++ {
		if res, err = http.ReadResponse(br, req); err != nil {
			return nil, nil, 0, err
		}
		if res.StatusCode < 100 || res.StatusCode > 199 || res.StatusCode == 101 {
			break
		}
		if n == h1Max1xx {
			return nil, nil, 0, errH1Too1xx
		}
	}
	if body, err = io.ReadAll(res.Body); err != nil {
		return nil, nil, 0, err
	}
	return res, body, br.Buffered() + src.Len(), nil
}

type diffResult struct {
	reused   bool // the next request went over the same connection
	leftover int
	failed   bool // mcpgate's client failed the request (502)
}

// differ sends raw through h1Transport and checks the result against
// reference: the same status, header, body and trailer, or an error.
// Then a second request must get its own response, on a connection that
// is reused only if nothing was left over.
func differ(tb testing.TB, raw []byte, method string) diffResult {
	tb.Helper()
	want, wantBody, leftover, refErr := reference(raw, method)
	if refErr == nil && want.StatusCode == http.StatusSwitchingProtocols {
		return diffResult{} // a protocol switch has no end to compare
	}
	b := newRawBackend(tb, raw, refErr != nil || want.Close)
	var d net.Dialer
	tr := &h1Transport{
		dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", b.l.Addr().String()) },
		respHeaderTimeout: 3 * time.Second,
		idleTimeout:       time.Minute,
		maxIdle:           4,
	}
	defer tr.CloseIdleConnections()
	base := "http://" + b.l.Addr().String()
	req, _ := http.NewRequest(method, base+"/first", nil)
	var result diffResult
	res, err := tr.RoundTrip(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	switch {
	case err != nil:
		result.failed = true
	case refErr != nil:
		tb.Fatalf("net/http fails this response (%v), mcpgate proxied %d %q", refErr, res.StatusCode, body)
	case res.StatusCode != want.StatusCode || !reflect.DeepEqual(res.Header, want.Header) ||
		!bytes.Equal(body, wantBody) || !reflect.DeepEqual(res.Trailer, want.Trailer):
		tb.Fatalf("mcpgate read %d %v %q %v; net/http %d %v %q %v",
			res.StatusCode, res.Header, body, res.Trailer, want.StatusCode, want.Header, wantBody, want.Trailer)
	}
	req2, _ := http.NewRequest("GET", base+"/second", nil)
	res2, err := tr.RoundTrip(req2)
	if err != nil {
		tb.Fatalf("the next request failed: %v", err)
	}
	body2, err := io.ReadAll(res2.Body)
	res2.Body.Close()
	if err != nil || string(body2) != "ok" {
		tb.Fatalf("the next request read %q, %v: not its own response (desync)", body2, err)
	}
	result.reused = b.reused.Load() > 0
	result.leftover = leftover
	if result.reused && (refErr != nil || leftover > 0) {
		tb.Fatalf("connection reused after a response that left %d bytes (reference error %v)", leftover, refErr)
	}
	return result
}

const okHead = "HTTP/1.1 200 OK\r\n"

// upstreamCases are responses a broken or hostile backend may send. reuse
// says whether the connection may go back to the pool: "no" for every
// doubtful framing and every response followed by stray bytes.
var upstreamCases = []struct {
	name, raw string
	reuse     bool
}{
	{"content-length", okHead + "Content-Length: 5\r\nX-T: a\r\n\r\nhello", true},
	{"chunked with trailer", okHead + "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", true},
	{"no body 204", "HTTP/1.1 204 No Content\r\nX-T: a\r\n\r\n", true},
	{"appended response", okHead + "Content-Length: 5\r\n\r\nhello" + okHead + "Content-Length: 6\r\n\r\nPOISON", false},
	{"one stray byte", okHead + "Content-Length: 5\r\n\r\nhellox", false},
	{"stray CRLF", okHead + "Content-Length: 5\r\n\r\nhello\r\n", false},
	{"CL and TE", okHead + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
	{"TE and CL smuggling", okHead + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + okHead + "Content-Length: 6\r\n\r\nPOISON", false},
	{"duplicate CL same", okHead + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", false},
	{"duplicate CL differ", okHead + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false},
	{"CL list", okHead + "Content-Length: 5, 5\r\n\r\nhello", false},
	{"negative CL", okHead + "Content-Length: -1\r\n\r\nhello", false},
	{"CL plus sign", okHead + "Content-Length: +5\r\n\r\nhello", false},
	{"TE gzip, chunked", okHead + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false},
	{"TE identity", okHead + "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", false},
	{"bad chunk size", okHead + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false},
	{"chunk size overflow", okHead + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n", false},
	{"chunk extension", okHead + "Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n", true},
	{"chunk extension bare LF", okHead + "Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n", false},
	{"chunk data too long", okHead + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", false},
	{"obs-fold", okHead + "X-T: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", false},
	{"obs-fold CL", okHead + "X-T: a\r\n\tContent-Length: 9\r\nContent-Length: 5\r\n\r\nhello", false},
	{"bare LF headers", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", false},
	{"bare LF one line", okHead + "Content-Length: 5\nX-T: a\r\n\r\nhello", false},
	{"bare CR", okHead + "X-T: a\rb\r\nContent-Length: 5\r\n\r\nhello", false},
	{"NUL in value", okHead + "X-T: a\x00b\r\nContent-Length: 5\r\n\r\nhello", false},
	{"NUL in name", okHead + "X\x00T: a\r\nContent-Length: 5\r\n\r\nhello", false},
	{"space before colon", okHead + "Content-Length : 5\r\n\r\nhello", false},
	{"oversize header", okHead + "X-Big: " + strings.Repeat("a", h1MaxHeaderBytes) + "\r\nContent-Length: 5\r\n\r\nhello", false},
	{"103 then 200", "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + okHead + "Content-Length: 5\r\n\r\nhello", true},
	{"100 then 200", "HTTP/1.1 100 Continue\r\n\r\n" + okHead + "Content-Length: 5\r\n\r\nhello", true},
	{"too many 1xx", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", h1Max1xx+1) + okHead + "Content-Length: 5\r\n\r\nhello", false},
	{"1xx with CL and TE", "HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n" + okHead + "Content-Length: 5\r\n\r\nhello", false},
	{"close mid-chunk", okHead + "Transfer-Encoding: chunked\r\n\r\n10\r\nhel", false},
	{"close mid-body", okHead + "Content-Length: 10\r\n\r\nhel", false},
	{"close mid-headers", okHead + "Content-Len", false},
	{"close-delimited", okHead + "\r\nhello", false},
	{"connection close", okHead + "Connection: close\r\nContent-Length: 5\r\n\r\nhello", false},
	{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", true},
	{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", false},
	{"bad status line", "HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello", false},
	{"HTTP/2 status", "HTTP/2 200 OK\r\nContent-Length: 5\r\n\r\nhello", false},
	{"garbage", "hello world\r\n\r\n", false},
	{"304 with body bytes", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", false},
}

// TestUpstreamDifferential: each response is proxied exactly as net/http
// reads it or failed, the next request always gets its own response, and
// only clean framing keeps the connection.
func TestUpstreamDifferential(t *testing.T) {
	for _, tc := range upstreamCases {
		t.Run(tc.name, func(t *testing.T) {
			r := differ(t, []byte(tc.raw), "GET")
			if r.reused != tc.reuse {
				t.Errorf("connection reused = %v, want %v (failed %v, leftover %d)", r.reused, tc.reuse, r.failed, r.leftover)
			}
		})
	}
	t.Run("HEAD with Content-Length", func(t *testing.T) {
		if r := differ(t, []byte(okHead+"Content-Length: 5\r\n\r\n"), "HEAD"); !r.reused {
			t.Error("clean HEAD response did not keep its connection")
		}
	})
	t.Run("HEAD with a body", func(t *testing.T) {
		if r := differ(t, []byte(okHead+"Content-Length: 5\r\n\r\nhello"), "HEAD"); r.reused {
			t.Error("connection reused after a HEAD response with body bytes")
		}
	})
}

// TestUpstreamEarlyResponse: a backend that answers before reading the
// request body gets its answer proxied, and the connection, whose request
// was never sent in full, is not reused.
func TestUpstreamEarlyResponse(t *testing.T) {
	raw := okHead + "Content-Length: 5\r\n\r\nearly"
	b := newRawBackend(t, []byte(raw), false)
	var d net.Dialer
	tr := &h1Transport{
		dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", b.l.Addr().String()) },
		respHeaderTimeout: 3 * time.Second, idleTimeout: time.Minute, maxIdle: 4,
	}
	defer tr.CloseIdleConnections()
	// More than the socket buffers hold, from a reader that never ends on
	// its own: the write cannot finish.
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		chunk := make([]byte, 64<<10)
		for range 256 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequest("POST", "http://"+b.l.Addr().String()+"/first", pr)
	req.Header.Set("X-Early", "1")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "early" {
		t.Fatalf("read %q, %v", body, err)
	}
	tr.mu.Lock()
	idle := len(tr.idle)
	tr.mu.Unlock()
	if idle != 0 {
		t.Fatal("connection pooled while its request body was still being written")
	}
}

// TestUpstreamCancel: a canceled request fails with the context's error,
// and its connection is not pooled.
func TestUpstreamCancel(t *testing.T) {
	b := newRawBackend(t, []byte(okHead+"Content-Length: 10\r\n\r\nhel"), false)
	var d net.Dialer
	tr := &h1Transport{
		dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", b.l.Addr().String()) },
		respHeaderTimeout: 3 * time.Second, idleTimeout: time.Minute, maxIdle: 4,
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+b.l.Addr().String()+"/first", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("body of a canceled request ended cleanly")
	}
	if len(tr.idle) != 0 {
		t.Fatal("canceled connection pooled")
	}
	_, err = tr.RoundTrip(req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip after cancel: %v, want context.Canceled", err)
	}
}

// FuzzUpstreamResponse: whatever bytes the backend sends, mcpgate's client
// reads what net/http reads or fails, and the next request gets its own
// response over a connection reused only if no byte was left over.
func FuzzUpstreamResponse(f *testing.F) {
	for _, tc := range upstreamCases {
		if len(tc.raw) < 4096 {
			f.Add([]byte(tc.raw), false)
		}
	}
	f.Add([]byte(okHead+"Content-Length: 5\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		if len(raw) > 8192 {
			return
		}
		method := "GET"
		if head {
			method = "HEAD"
		}
		differ(t, raw, method)
	})
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestUpstreamOneWrite: a small request body goes out with its headers in
// one write; a streamed one after its headers, beside the read.
func TestUpstreamOneWrite(t *testing.T) {
	b := newRawBackend(t, []byte(okHead+"Content-Length: 2\r\n\r\nok"), false)
	var d net.Dialer
	var writes atomic.Int64
	tr := &h1Transport{
		dial: func(ctx context.Context) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", b.l.Addr().String())
			return countingConn{c, &writes}, err
		},
		respHeaderTimeout: 3 * time.Second, idleTimeout: time.Minute, maxIdle: 4,
	}
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		body   io.Reader
		writes int64
	}{
		{strings.NewReader(`{"jsonrpc":"2.0","id":1}`), 1},
		// Unknown length: chunked, headers first, then each chunk as it comes.
		{io.MultiReader(strings.NewReader(`{"jsonrpc":`), strings.NewReader(`"2.0"}`)), 4},
	} {
		writes.Store(0)
		req, _ := http.NewRequest("POST", "http://"+b.l.Addr().String()+"/first", tc.body)
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(res.Body)
		res.Body.Close()
		if got := writes.Load(); got != tc.writes {
			t.Errorf("ContentLength %d: %d writes, want %d", req.ContentLength, got, tc.writes)
		}
	}
}

// TestUpstreamStaleIdle: a backend that closes a kept-alive connection
// right after its response (keep-alive timeout, restart) costs the next
// request nothing: the closed connection is seen before reuse, or the
// request is sent again on a new one.
func TestUpstreamStaleIdle(t *testing.T) {
	b := newRawBackend(t, []byte(okHead+"Content-Length: 2\r\n\r\nhi"), true)
	var d net.Dialer
	tr := &h1Transport{
		dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", b.l.Addr().String()) },
		respHeaderTimeout: 3 * time.Second, idleTimeout: time.Minute, maxIdle: 4,
	}
	defer tr.CloseIdleConnections()
	base := "http://" + b.l.Addr().String()
	for i := range 50 {
		for _, path := range []string{"/first", "/second"} {
			req, _ := http.NewRequest("GET", base+path, nil)
			res, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("round %d %s: %v", i, path, err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if want := map[string]string{"/first": "hi", "/second": "ok"}[path]; err != nil || string(body) != want {
				t.Fatalf("round %d %s: %q %v, want %q", i, path, body, err, want)
			}
		}
	}
}
