package authserver

import (
	"net"
	"sync"
	"time"
)

// rateLimiter allows n events per window per key (the client address):
// a fixed-window counter is enough to stop registration floods.
type rateLimiter struct {
	n      int
	window time.Duration
	mu     sync.Mutex
	seen   map[string]*window // guarded by mu
}

type window struct {
	start time.Time
	count int
}

func newRateLimiter(n int, per time.Duration) *rateLimiter {
	return &rateLimiter{n: n, window: per, seen: map[string]*window{}}
}

func (l *rateLimiter) allow(remoteAddr string, now time.Time) bool {
	key, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		key = remoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) > 10000 {
		for k, w := range l.seen {
			if now.Sub(w.start) > l.window {
				delete(l.seen, k)
			}
		}
	}
	w := l.seen[key]
	if w == nil || now.Sub(w.start) > l.window {
		w = &window{start: now}
		l.seen[key] = w
	}
	w.count++
	return w.count <= l.n
}
