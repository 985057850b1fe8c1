package backends

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// maxTicks bounds one stream of the ticker backend.
const maxTicks = 100000

// Ticker is an SSE backend whose streams resume after Last-Event-ID, the
// way an MCP server resumes a Streamable HTTP stream. A GET of any path
// with ?until=N answers text/event-stream with the events last+1 … N, one
// every Interval, where last is the request's Last-Event-ID header (0 when
// absent); each event is
//
//	id: K
//	data: tick K
//
// written and flushed at once, and after event N the response ends. A
// client that lost its stream early reconnects with Last-Event-ID set to
// the last id it saw and must get the very next one.
type Ticker struct {
	*httptest.Server
	Interval time.Duration

	streams atomic.Int64
	closed  chan struct{} // closed at cleanup: streams end
}

// NewTicker starts a ticker backend sending an event every interval.
func NewTicker(t testing.TB, interval time.Duration) *Ticker {
	t.Helper()
	tk := &Ticker{Interval: interval, closed: make(chan struct{})}
	tk.Server = httptest.NewServer(http.HandlerFunc(tk.serve))
	t.Cleanup(func() {
		close(tk.closed)
		tk.CloseClientConnections()
		tk.Close()
	})
	return tk
}

// Streams is how many streams the backend has started.
func (tk *Ticker) Streams() int64 { return tk.streams.Load() }

func (tk *Ticker) serve(w http.ResponseWriter, r *http.Request) {
	last := int64(0)
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad Last-Event-ID", http.StatusBadRequest)
			return
		}
		last = n
	}
	until, err := strconv.ParseInt(r.URL.Query().Get("until"), 10, 64)
	if err != nil || until < last || until-last > maxTicks {
		http.Error(w, "want ?until=N with Last-Event-ID <= N <= Last-Event-ID+100000", http.StatusBadRequest)
		return
	}
	tk.streams.Add(1)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(tk.Interval)
	defer tick.Stop()
	for id := last + 1; id <= until; id++ {
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		case <-tk.closed:
			return
		}
		fmt.Fprintf(w, "id: %d\ndata: tick %d\n\n", id, id)
		if rc.Flush() != nil {
			return
		}
	}
}
