package worker

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"
)

// handshakeListener hands net/http connections whose TLS handshake is
// already done, each done on a goroutine of its own. net/http would run
// the handshake on the connection's serving goroutine, whose stack then
// keeps the handshake's depth (crypto) for as long as the connection
// lives: ≈ 8 KiB more for every open HTTP/1.1 connection, an SSE stream
// included (make bench). net/http skips a handshake already complete.
type handshakeListener struct {
	net.Listener // the hand-off listener: connections as the supervisor sent them
	conf         *tls.Config
	timeout      time.Duration // one handshake, as net/http's
	log          *slog.Logger

	out  chan net.Conn
	done chan struct{} // closed by Close: nothing is delivered any more
	once sync.Once

	mu      sync.Mutex
	pending map[net.Conn]struct{} // handshakes in progress
	wg      sync.WaitGroup
}

// drainGrace is how long handshakes still in progress when the hand-off
// listener closes (the worker drains) may take to finish.
const drainGrace = time.Second

func newHandshakeListener(l net.Listener, conf *tls.Config, timeout time.Duration, log *slog.Logger) *handshakeListener {
	h := &handshakeListener{
		Listener: l, conf: conf, timeout: timeout, log: log,
		out: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{},
	}
	go h.run()
	return h
}

// run accepts until the hand-off listener closes (it delivers what it
// had queued first), then gives the handshakes in progress drainGrace,
// and ends Accept only once each was delivered or failed: a worker's
// Serve returns after every connection it was sent is net/http's.
func (h *handshakeListener) run() {
	defer close(h.out)
	for {
		c, err := h.Listener.Accept()
		if err != nil {
			break
		}
		// Set here, before the drain below can shorten it.
		c.SetDeadline(time.Now().Add(h.timeout))
		h.mu.Lock()
		h.pending[c] = struct{}{}
		h.mu.Unlock()
		h.wg.Add(1)
		go h.handshake(c)
	}
	h.mu.Lock()
	for c := range h.pending {
		c.SetDeadline(time.Now().Add(drainGrace))
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *handshakeListener) handshake(c net.Conn) {
	defer h.wg.Done()
	tc := tls.Server(c, h.conf)
	err := tc.Handshake()
	h.mu.Lock()
	delete(h.pending, c)
	h.mu.Unlock()
	if err != nil {
		// As net/http: a failed handshake is the client's business, at
		// debug level.
		h.log.Debug("TLS handshake error", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	select {
	case h.out <- tc:
	case <-h.done:
		tc.Close()
	}
}

// Accept returns the next connection with its handshake done.
func (h *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c, ok := <-h.out:
		if ok {
			return c, nil
		}
	case <-h.done:
	}
	return nil, net.ErrClosed
}

// Close (http.Server.Close or Shutdown) stops deliveries and closes the
// hand-off listener; handshakes in progress end with their connections.
func (h *handshakeListener) Close() error {
	h.once.Do(func() {
		close(h.done)
		h.mu.Lock()
		for c := range h.pending {
			c.Close()
		}
		h.mu.Unlock()
	})
	return h.Listener.Close()
}
