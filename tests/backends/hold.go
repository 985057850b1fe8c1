package backends

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Hold is a slow backend under the test's control: every request is
// held, without a response, until the test calls Release (or max has
// passed), then answered 200 with the body "held <path> ok\n".
type Hold struct {
	*httptest.Server

	arrived     chan string
	release     chan struct{}
	releaseOnce sync.Once
	closed      chan struct{} // closed at cleanup: held requests give up
}

// NewHold starts a holding backend; max bounds how long a request is held.
func NewHold(t testing.TB, max time.Duration) *Hold {
	t.Helper()
	h := &Hold{arrived: make(chan string, 64), release: make(chan struct{}), closed: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case h.arrived <- r.URL.Path:
		default: // nobody is watching this many arrivals
		}
		t := time.NewTimer(max)
		defer t.Stop()
		select {
		case <-h.release:
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-h.closed:
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "held "+r.URL.Path+" ok\n")
	}))
	t.Cleanup(func() {
		close(h.closed)
		h.CloseClientConnections()
		h.Close()
	})
	return h
}

// Arrived delivers the path of every request as it reaches the backend
// (the first 64 not yet received, beyond that they are not reported).
func (h *Hold) Arrived() <-chan string { return h.arrived }

// Release lets every held request, and every later one, be answered.
func (h *Hold) Release() { h.releaseOnce.Do(func() { close(h.release) }) }
