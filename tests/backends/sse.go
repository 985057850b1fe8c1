package backends

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// maxGateWait bounds how long a streaming handler waits for Release, so a
// forgotten gate cannot hang the test binary.
const maxGateWait = 30 * time.Second

// SSE is a streaming backend. Every stream sends its first part, then waits
// until the test calls Release with the stream's id (the ?id= query
// parameter), then sends its second part and ends:
//
//   - GET /sse: text/event-stream, events with data "event 1" and "event 2"
//   - POST /mcp-sse: the Streamable HTTP shape; the request body is a
//     JSON-RPC request, the response is text/event-stream with a
//     notifications/message whose data is "event 1", then the JSON-RPC
//     result whose text is "event 2"
//   - GET /chunked: text/plain of unknown length, lines "chunk 1", "chunk 2"
//   - POST /release?id=X: the same as Release("X"), for out-of-process use
//
// Because the second part is only sent after the test has seen the first,
// a gateway that buffers makes the test time out instead of passing.
type SSE struct {
	*httptest.Server

	mu     sync.Mutex
	gates  map[string]*gate // guarded by mu
	closed chan struct{}    // closed at cleanup: waiting handlers give up
}

type gate struct {
	sent, release, gone             chan struct{}
	sentOnce, releaseOnce, goneOnce sync.Once
}

// NewSSE starts the streaming backend.
func NewSSE(t testing.TB) *SSE {
	t.Helper()
	s := &SSE{gates: map[string]*gate{}, closed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sse", s.serveSSE)
	mux.HandleFunc("POST /mcp-sse", s.serveMCPSSE)
	mux.HandleFunc("GET /chunked", s.serveChunked)
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, r *http.Request) {
		s.Release(r.URL.Query().Get("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(s.closed)
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

func (s *SSE) gate(id string) *gate {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gates[id]
	if g == nil {
		g = &gate{sent: make(chan struct{}), release: make(chan struct{}), gone: make(chan struct{})}
		s.gates[id] = g
	}
	return g
}

// Release lets stream id send its second part.
func (s *SSE) Release(id string) {
	g := s.gate(id)
	g.releaseOnce.Do(func() { close(g.release) })
}

// FirstSent is closed once stream id has written and flushed its first
// part: if the client has not seen it by then, something between buffers.
func (s *SSE) FirstSent(id string) <-chan struct{} { return s.gate(id).sent }

// Gone is closed when stream id's request ended while it waited for
// Release: the gateway closed the upstream connection (its client left).
func (s *SSE) Gone(id string) <-chan struct{} { return s.gate(id).gone }

// firstDone marks the first part flushed and waits for Release; false means
// give up (client gone, cleanup, or maxGateWait).
func (s *SSE) firstDone(r *http.Request, id string) bool {
	g := s.gate(id)
	g.sentOnce.Do(func() { close(g.sent) })
	select {
	case <-g.release:
		return true
	case <-r.Context().Done():
		g.goneOnce.Do(func() { close(g.gone) })
	case <-s.closed:
	case <-time.After(maxGateWait):
	}
	return false
}

func (s *SSE) serveSSE(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	fmt.Fprint(w, "id: 1\nevent: message\ndata: event 1\n\n")
	if rc.Flush() != nil || !s.firstDone(r, id) {
		return
	}
	fmt.Fprint(w, "id: 2\nevent: message\ndata: event 2\n\n")
	_ = rc.Flush()
}

func (s *SSE) serveMCPSSE(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	var req struct {
		ID json.RawMessage `json:"id"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(body, &req); err != nil || len(req.ID) == 0 {
		http.Error(w, "want a JSON-RPC request", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	fmt.Fprint(w, "event: message\ndata: "+
		`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"event 1"}}`+"\n\n")
	if rc.Flush() != nil || !s.firstDone(r, id) {
		return
	}
	fmt.Fprintf(w, "event: message\ndata: "+
		`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"event 2"}]}}`+"\n\n", req.ID)
	_ = rc.Flush()
}

func (s *SSE) serveChunked(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rc := http.NewResponseController(w)
	fmt.Fprint(w, "chunk 1\n")
	if rc.Flush() != nil || !s.firstDone(r, id) {
		return
	}
	fmt.Fprint(w, "chunk 2\n")
}
