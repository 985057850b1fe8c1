package backends

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// EchoRequest is what the echo backend saw.
type EchoRequest struct {
	Backend    string      `json:"backend"` // the name given to NewEcho
	Method     string      `json:"method"`
	Path       string      `json:"path"`
	Query      string      `json:"query"`
	Host       string      `json:"host"`
	Proto      string      `json:"proto"`
	RemoteAddr string      `json:"remote_addr"`
	Header     http.Header `json:"header"`
	Body       string      `json:"body"`
}

// Echo answers every request with 200 and the JSON of an EchoRequest.
type Echo struct {
	*httptest.Server
	Name     string
	requests atomic.Int64
}

// NewEcho starts an echo backend that reports itself as name.
func NewEcho(t testing.TB, name string) *Echo {
	t.Helper()
	e := &Echo{Name: name}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo-Backend", name)
		_ = json.NewEncoder(w).Encode(EchoRequest{
			Backend: name, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Host: r.Host, Proto: r.Proto, RemoteAddr: r.RemoteAddr, Header: r.Header, Body: string(body),
		})
	}))
	t.Cleanup(e.Close)
	return e
}

// Requests is how many requests the backend has served.
func (e *Echo) Requests() int64 { return e.requests.Load() }

// NewSlow starts a backend that waits delay before sending headers (200,
// "slow ok"), or less if the request is cancelled.
func NewSlow(t testing.TB, delay time.Duration) *httptest.Server {
	t.Helper()
	closed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		case <-closed:
			return
		}
		_, _ = io.WriteString(w, "slow ok\n")
	}))
	t.Cleanup(func() {
		close(closed)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// ClosedURL returns an http URL on 127.0.0.1 where nothing listens: a port
// that was just bound and released.
func ClosedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}
