package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer records every write the batch makes, as separate writes.
type lockedBuffer struct {
	mu     sync.Mutex
	writes []string
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes = append(b.writes, string(p))
	return len(p), nil
}

func (b *lockedBuffer) snapshot() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.writes...)
}

func newBatchedForTest(w *lockedBuffer) *slog.Logger {
	out := &batchWriter{w: w}
	h := slog.NewJSONHandler(out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return slog.New(&batched{inner: h, out: out})
}

func TestBatchedAccessLines(t *testing.T) {
	t.Run("held, then written in order before the next ordinary record", func(t *testing.T) {
		var buf lockedBuffer
		log := newBatchedForTest(&buf).With("proxy", "notes")
		access := Deferred(log)
		access.Info("request", "n", 1)
		access.Info("request", "n", 2)
		if got := buf.snapshot(); len(got) != 0 {
			t.Fatalf("access lines written at once: %q", got)
		}
		log.Info("worker serving")
		got := buf.snapshot()
		if len(got) != 1 {
			t.Fatalf("want one write of three lines, got %d writes: %q", len(got), got)
		}
		want := `{"level":"INFO","msg":"request","proxy":"notes","n":1}` + "\n" +
			`{"level":"INFO","msg":"request","proxy":"notes","n":2}` + "\n" +
			`{"level":"INFO","msg":"worker serving","proxy":"notes"}` + "\n"
		if got[0] != want {
			t.Errorf("got\n%s\nwant\n%s", got[0], want)
		}
	})
	t.Run("a warning through the access logger is not held", func(t *testing.T) {
		var buf lockedBuffer
		access := Deferred(newBatchedForTest(&buf))
		access.Warn("slow")
		if got := buf.snapshot(); len(got) != 1 {
			t.Fatalf("warning held: %q", got)
		}
	})
	t.Run("written after the delay without another record", func(t *testing.T) {
		var buf lockedBuffer
		access := Deferred(newBatchedForTest(&buf))
		access.Info("request")
		deadline := time.Now().Add(5 * time.Second)
		for len(buf.snapshot()) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("held line never written")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("written when the batch is full", func(t *testing.T) {
		var buf lockedBuffer
		access := Deferred(newBatchedForTest(&buf))
		long := strings.Repeat("x", 1024)
		for range batchBytes/1024 + 1 {
			access.Info("request", "ua", long)
		}
		if got := buf.snapshot(); len(got) == 0 {
			t.Fatal("a full batch was not written")
		}
	})
	t.Run("Flush writes what is held", func(t *testing.T) {
		var buf lockedBuffer
		log := newBatchedForTest(&buf)
		Deferred(log).Info("request")
		Flush(log.With("x", 1))
		if got := buf.snapshot(); len(got) != 1 || !strings.Contains(got[0], `"msg":"request"`) {
			t.Fatalf("after Flush: %q", got)
		}
	})
	t.Run("a logger not from New is returned as is", func(t *testing.T) {
		l := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil))
		if Deferred(l) != l {
			t.Error("Deferred wrapped a foreign logger")
		}
		Flush(l) // no effect, no panic
	})
}
