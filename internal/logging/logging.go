// Package logging sets up mcpgate's structured logs and the one-line
// access log per request. It never records header values, query strings
// (OAuth codes travel there) or bodies.
package logging

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// New returns a logger writing to w: JSON unless w is a terminal, where
// text is easier to read; JSON with each line's syslog priority when w is
// the journal. level is "debug", "info", "warn" or "error".
func New(w *os.File, level string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: parseLevel(level)}
	if ToJournal(w) {
		return slog.New(newPrefixed(w, opts))
	}
	if isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Access wraps h with the access log: one line per request.
func Access(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			status := rec.status
			if status == 0 {
				// Nothing written: the handler returned without a body, which
				// net/http answers with 200; a client gone first sees nothing.
				status = http.StatusOK
				if r.Context().Err() != nil {
					status = 499
				}
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("client", r.RemoteAddr),
				slog.String("method", r.Method),
				slog.String("host", r.Host),
				slog.String("path", r.URL.Path),
				slog.String("proto", r.Proto),
				slog.Int("status", status),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			)
		}()
		h.ServeHTTP(rec, r)
	})
}

// recorder notes status and size; Unwrap keeps http.ResponseController
// (flushing, hijacking, deadlines) working through it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	} else if code == http.StatusSwitchingProtocols {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

// Flush lets handlers that test for http.Flusher stream through the log.
func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
