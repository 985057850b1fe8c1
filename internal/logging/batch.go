package logging

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Access lines are the one record a worker writes per request; a write(2)
// each was about a tenth of a worker's CPU per small request (make bench).
// They are batched instead: held for at most batchDelay or batchBytes,
// then written together. Every other record is written at once and takes
// the held lines with it, in order, so the log never reorders and a
// warning is never late. A worker flushes before it exits (Flush); lines
// held when a process dies without exiting (SIGKILL, a runtime fault) are
// lost, as with nginx's buffered access_log.
const (
	batchDelay = 100 * time.Millisecond
	batchBytes = 32 << 10
)

// batchWriter sits under the encoding handler. Its Write is only ever
// called by the handler stack while batched.Handle holds mu.
type batchWriter struct {
	mu       sync.Mutex
	w        io.Writer
	buf      []byte
	deferred bool // the record being written may wait; guarded by mu
	armed    bool // a flush is scheduled; guarded by mu
}

func (b *batchWriter) Write(p []byte) (int, error) {
	if !b.deferred {
		if len(b.buf) == 0 {
			return b.w.Write(p)
		}
		b.buf = append(b.buf, p...)
		return len(p), b.flushLocked()
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchBytes {
		return len(p), b.flushLocked()
	}
	if !b.armed {
		b.armed = true
		time.AfterFunc(batchDelay, b.flush)
	}
	return len(p), nil
}

func (b *batchWriter) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	if cap(b.buf) > 4*batchBytes {
		b.buf = nil // a burst of long lines is not kept for ever
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

func (b *batchWriter) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	b.flushLocked()
}

// batched is the handler New returns: inner encodes, out decides when the
// bytes are written.
type batched struct {
	inner    slog.Handler
	out      *batchWriter
	deferred bool

	// What the access line's fast path (accessline.go) needs to write
	// what inner would: its encoding and the attributes added with With.
	json, journal, grouped bool
	attrs                  []slog.Attr
}

func (h *batched) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *batched) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.deferred = h.deferred && r.Level < slog.LevelWarn
	return h.inner.Handle(ctx, r)
}

func (h *batched) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	c.attrs = append(h.attrs[:len(h.attrs):len(h.attrs)], as...)
	return &c
}

func (h *batched) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.grouped = true
	return &c
}

// Deferred returns a logger like l whose records below warning may be
// held for a moment and written with others (the access log). A logger
// not made by New is returned as it is.
func Deferred(l *slog.Logger) *slog.Logger {
	if l == nil {
		return nil
	}
	h, ok := l.Handler().(*batched)
	if !ok {
		return l
	}
	c := *h
	c.deferred = true
	return slog.New(&c)
}

// Flush writes every held record of l's output now (before exiting).
func Flush(l *slog.Logger) {
	if l == nil {
		return
	}
	if h, ok := l.Handler().(*batched); ok {
		h.out.flush()
	}
}
