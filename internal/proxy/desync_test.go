package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mcpgate/mcpgate/internal/config"
)

// poisonBackend is a raw HTTP/1.1 backend on loopback that keeps every
// connection alive. A request for /poison gets a correct response followed,
// in the same write, by an unsolicited second one whose body is "POISON";
// every other request gets its own path back as the body.
func poisonBackend(t *testing.T) string {
	t.Helper()
	return poisonBackendOn(t, nil)
}

// poisonBackendOn is poisonBackend over TLS when conf is not nil.
func poisonBackendOn(t *testing.T, conf *tls.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http://"
	if conf != nil {
		scheme = "https://"
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			raw, err := l.Accept()
			if err != nil {
				return
			}
			cork := &corkConn{Conn: raw}
			var c net.Conn = cork
			if conf != nil {
				c = tls.Server(cork, conf)
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
					body := req.URL.Path
					out := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					poison := "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"
					if body != "/poison" {
						if _, err := io.WriteString(c, out); err != nil {
							return
						}
						continue
					}
					// Over TLS the unsolicited response is a record of its
					// own, sent in the same TCP write: TLS hands the reader
					// one record at a time, so it waits in TLS's buffer,
					// not in the reader's, nor in the socket.
					cork.hold()
					io.WriteString(c, out)
					io.WriteString(c, poison)
					if err := cork.release(); err != nil {
						return
					}
				}
			}()
		}
	}()
	return scheme + l.Addr().String()
}

// corkConn writes through unless held: then its writes are kept and sent
// in one write at release.
type corkConn struct {
	net.Conn
	held bool
	buf  []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	if c.held {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *corkConn) hold() { c.held = true }

func (c *corkConn) release() error {
	c.held = false
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// testBackendTLS is a server TLS configuration for a test backend and the
// pool that trusts it (httptest's certificate, valid for 127.0.0.1).
func testBackendTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	conf := &tls.Config{Certificates: srv.TLS.Certificates, NextProtos: []string{"http/1.1"}}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	return conf, pool
}

// TestUpstreamDesync: a backend that appends an unsolicited response after
// a correct one must not make any other request receive it. Every request
// is answered by the backend with its own path, so any other body is a
// response that belonged to someone else.
func TestUpstreamDesync(t *testing.T) {
	t.Run("http", func(t *testing.T) { testUpstreamDesync(t, newProxy(t, poisonBackend(t), nil)) })
	// An https backend: the appended response comes decrypted from the
	// same TLS record, where no socket check can see it.
	t.Run("https", func(t *testing.T) {
		conf, pool := testBackendTLS(t)
		h, px := newProxyHandler(t, poisonBackendOn(t, conf), nil)
		h.def.h1.tls.RootCAs = pool
		testUpstreamDesync(t, px)
	})
}

func testUpstreamDesync(t *testing.T, px *httptest.Server) {
	c := px.Client()
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	const workers, perWorker = 16, 250
	var wrong, failed atomic.Int64
	var firstWrong atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				path := fmt.Sprintf("/r%d-%d", w, i)
				if i%2 == 0 {
					path = "/poison"
				}
				res, err := c.Get(px.URL + path)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				switch {
				case res.StatusCode == http.StatusBadGateway && path == "/poison":
					// Failing the poisoning request itself is allowed.
				case res.StatusCode != http.StatusOK:
					failed.Add(1)
				case string(body) != path:
					wrong.Add(1)
					firstWrong.CompareAndSwap(nil, fmt.Sprintf("%s got %q", path, body))
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests (half of them poisoning): %d answered with another's response, %d failed", workers*perWorker, wrong.Load(), failed.Load())
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d requests received a response that was not theirs (first: %s)", n, firstWrong.Load())
	}
}

// TestUpstreamReuse: clean responses keep their connection: requests one
// after another, with and without a body, over HTTP/1.1 and a unix socket,
// use one backend connection.
func TestUpstreamReuse(t *testing.T) {
	for _, network := range []string{"tcp", "unix", "tls"} {
		t.Run(network, func(t *testing.T) {
			var conns atomic.Int64
			b := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Trailer", "X-Sum")
				io.WriteString(w, r.Method+" "+r.URL.Path)
				w.Header().Set("X-Sum", "ok")
			}))
			b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			target := "http://backend"
			if network == "unix" {
				sock := filepath.Join(t.TempDir(), "b.sock")
				l, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				b.Listener = l
				b.Start()
				defer b.Close()
				px := newProxy(t, target, func(p *config.Proxy) { p.Target.Socket = sock })
				checkReuse(t, px, &conns)
				return
			}
			if network == "tls" {
				conf, pool := testBackendTLS(t)
				b.TLS = conf
				b.StartTLS()
				defer b.Close()
				h, px := newProxyHandler(t, b.URL, nil)
				h.def.h1.tls.RootCAs = pool
				checkReuse(t, px, &conns)
				return
			}
			b.Start()
			defer b.Close()
			checkReuse(t, newProxy(t, b.URL, nil), &conns)
		})
	}
}

func checkReuse(t *testing.T, px *httptest.Server, conns *atomic.Int64) {
	t.Helper()
	c := px.Client()
	for i := range 20 {
		var res *http.Response
		var err error
		if i%2 == 0 {
			res, err = c.Get(px.URL + "/x")
		} else {
			res, err = c.Post(px.URL+"/x", "application/json", strings.NewReader(`{"jsonrpc":"2.0"}`))
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := res.Request.Method + " /x"; string(body) != want || res.Trailer.Get("X-Sum") != "ok" {
			t.Fatalf("got %q trailer %q, want %q and the trailer", body, res.Trailer.Get("X-Sum"), want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d backend connections for 20 sequential requests, want 1", n)
	}
}
