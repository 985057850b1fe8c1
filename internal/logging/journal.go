package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ToJournal reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM holds its "device:inode" (systemd.exec(5)). A
// worker inherits both the variable and the descriptor, so it answers
// the same; stderr redirected elsewhere (a file, a pipe) does not match.
func ToJournal(f *os.File) bool {
	v := os.Getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(v, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// priority is the syslog priority journald reads from a "<N>" line prefix
// (sd-daemon(3)): err, warning, info, debug.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

// prefixed writes each record's line with the priority prefix of its
// level, so `journalctl -p warning` shows warnings and errors only.
type prefixed struct {
	inner slog.Handler
	out   *prefixWriter
}

// prefixWriter is shared by a handler and those derived from it: the
// prefix is set under mu for the one Write the inner handler makes per
// record.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string // guarded by mu
	buf    []byte // guarded by mu
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	// One write per line: the journal splits the stream at newlines, and a
	// separate prefix write could interleave with another process's line.
	p.buf = append(append(p.buf[:0], p.prefix...), b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

func newPrefixed(w io.Writer, opts *slog.HandlerOptions) *prefixed {
	out := &prefixWriter{w: w}
	return &prefixed{inner: slog.NewJSONHandler(out, opts), out: out}
}

func (h *prefixed) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *prefixed) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prefix = priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *prefixed) WithAttrs(as []slog.Attr) slog.Handler {
	return &prefixed{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *prefixed) WithGroup(name string) slog.Handler {
	return &prefixed{inner: h.inner.WithGroup(name), out: h.out}
}
