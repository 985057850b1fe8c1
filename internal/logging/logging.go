// Package logging sets up mcpgate's structured logs and the one-line
// access log per request. It never records header values, query strings
// (OAuth codes travel there) or bodies.
package logging

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/metrics"
)

// New returns a logger writing to w: JSON unless w is a terminal, where
// text is easier to read; JSON with each line's syslog priority when w is
// the journal. level is "debug", "info", "warn" or "error".
// Records go out as they are logged, except through Deferred (batch.go).
func New(w *os.File, level string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: parseLevel(level)}
	h := &batched{out: &batchWriter{w: w}, json: true}
	switch {
	case ToJournal(w):
		h.inner, h.journal = newPrefixed(h.out, opts), true
	case isTerminal(w):
		h.inner, h.json = slog.NewTextHandler(h.out, opts), false
	default:
		h.inner = slog.NewJSONHandler(h.out, opts)
	}
	return slog.New(h)
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

// Access wraps h with the access log: one line per request, written when
// h returns. log nil means no line ([server] access_log = false); the
// request id is handled either way, since backends and clients correlate
// by it. The line never holds a query string (OAuth codes travel there),
// a header value other than the user agent, or a body.
func Access(log *slog.Logger, h http.Handler) http.Handler {
	var lw *lineWriter
	if log != nil {
		lw = newLineWriter(log)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One allocation for the response recorder and the request record.
		rec := &recorder{ResponseWriter: w, start: time.Now(), log: log, lw: lw}
		rec.req.rec = rec
		rec.req.ID = requestID(r.Header)
		w.Header().Set(RequestIDHeader, rec.req.ID)
		if r.Body != nil && r.Body != http.NoBody {
			rec.body = &countingBody{ReadCloser: r.Body}
			r.Body = rec.body
		}
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, &rec.req))
		rec.r = r
		defer func() {
			if rec.detachedLine == nil {
				rec.finish(0)
			}
		}()
		h.ServeHTTP(rec, r)
	})
}

// Detach hands the access line of the request in ctx to the caller, for a
// response that goes on after its handler returned (a stream served from a
// hijacked connection): the line is written when the returned function is
// called, with the bytes written to the client after the handler returned,
// and not when the handler returns. nil outside Access.
func Detach(ctx context.Context) func(bytesOut int64) {
	req := RequestFrom(ctx)
	if req == nil || req.rec == nil {
		return nil
	}
	rec := req.rec
	// What the line needs is copied now. The ResponseWriter and the
	// request would keep net/http's connection alive (its buffers, the
	// request's fields) for the life of the stream, which is what
	// detaching it exists to free.
	line := rec.line(rec.r)
	rec.detachedLine, rec.protoMajor = &line, rec.r.ProtoMajor
	rec.ResponseWriter, rec.r, rec.body = nil, nil, nil
	return rec.finish
}

// line is the access line of r as far as known before the handler ended.
func (rec *recorder) line(r *http.Request) accessLine {
	a := accessLine{
		client: r.RemoteAddr, method: r.Method, host: r.Host, path: r.URL.Path, proto: r.Proto,
		status: rec.finalStatus(r), bytesOut: rec.bytes, upstream: rec.req.Upstream,
		userAgent: clean(r.Header.Get("User-Agent"), maxUserAgent), requestID: rec.req.ID,
	}
	if rec.body != nil {
		a.bytesIn = rec.body.n
	}
	if p := rec.req.Principal; p != nil {
		a.hasUser, a.user, a.clientID = true, p.Login, p.ClientID
	}
	return a
}

// finish counts the request in the metrics and writes its access line;
// more is what the client got after the handler returned (Detach).
func (rec *recorder) finish(more int64) {
	if r := rec.r; rec.detachedLine == nil && (rec.log == nil || !rec.log.Enabled(r.Context(), slog.LevelInfo)) {
		// Metrics count with the access log off too.
		metrics.Default.Request(rec.finalStatus(r), r.Method, metrics.ProtoOf(r.ProtoMajor), time.Since(rec.start))
		return
	}
	ctx := context.Background()
	var a accessLine
	protoMajor := rec.protoMajor
	if rec.detachedLine != nil {
		a = *rec.detachedLine
	} else {
		ctx, protoMajor = rec.r.Context(), rec.r.ProtoMajor
		a = rec.line(rec.r)
	}
	a.bytesOut += more
	a.duration = time.Since(rec.start)
	metrics.Default.Request(a.status, a.method, metrics.ProtoOf(protoMajor), a.duration)
	log := rec.log
	if log == nil || !log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	if lw := rec.lw; lw != nil {
		lw.write(time.Now(), &a)
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("client", a.client),
		slog.String("method", a.method),
		slog.String("host", a.host),
		slog.String("path", a.path),
		slog.String("proto", a.proto),
		slog.Int("status", a.status),
		slog.Int64("bytes_in", a.bytesIn),
		slog.Int64("bytes_out", a.bytesOut),
		slog.Float64("duration_ms", millis(a.duration)),
	)
	if a.upstream > 0 {
		attrs = append(attrs, slog.Float64("upstream_ms", millis(a.upstream)))
	}
	if a.hasUser {
		attrs = append(attrs, slog.String("user", a.user), slog.String("client_id", a.clientID))
	}
	attrs = append(attrs,
		slog.String("user_agent", a.userAgent),
		slog.String("request_id", a.requestID),
	)
	log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}

// finalStatus is the status the client got: nothing written means the
// handler returned without a body, which net/http answers with 200; a
// client gone first sees nothing (499).
func (rec *recorder) finalStatus(r *http.Request) int {
	if rec.status != 0 {
		return rec.status
	}
	if r.Context().Err() != nil {
		return 499
	}
	return http.StatusOK
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// RequestIDHeader carries the request id to the backend and back to the
// client.
const RequestIDHeader = "X-Request-Id"

// Request is what the access log learns about a request from the handlers
// it wraps, through the request's context (RequestFrom). Only the
// goroutine serving the request writes it; the access log reads it after
// that handler has returned, so it needs no lock.
type Request struct {
	// ID is the client's X-Request-Id when well-formed, else generated.
	ID string
	// Principal is who the bearer check verified; nil for requests that
	// did not pass it (OAuth endpoints, public paths, refusals).
	Principal *identity.Principal
	// Upstream is the time from sending the request to the backend to its
	// response headers; 0 when the request was not proxied.
	Upstream time.Duration

	rec *recorder // the record's own recorder, for Detach
}

type requestKey struct{}

// RequestFrom returns the record Access put into ctx, or nil outside Access.
func RequestFrom(ctx context.Context) *Request {
	r, _ := ctx.Value(requestKey{}).(*Request)
	return r
}

// maxRequestID bounds a client's X-Request-Id; longer ones are replaced.
const maxRequestID = 128

// requestID returns the client's X-Request-Id if it is one well-formed
// value, else a new random one: an id is copied into logs and to the
// backend, so it must be short and harmless.
func requestID(h http.Header) string {
	if v := h[RequestIDHeader]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	var b [16]byte
	// Not a secret, only unique: the runtime's per-thread generator is
	// fast enough for every request.
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// validRequestID: 1 to 128 characters of [A-Za-z0-9._-] (UUIDs, hex and
// base64url ids all fit).
func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// maxUserAgent bounds the user agent in the access log.
const maxUserAgent = 256

// clean truncates s to max bytes and replaces every byte outside printable
// ASCII with '?': a client-chosen string must not forge log lines or
// terminal escapes wherever the log is read.
func clean(s string, max int) string {
	ok := len(s) <= max
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 0x20 && s[i] < 0x7f
	}
	if ok {
		return s
	}
	b := make([]byte, min(len(s), max))
	for i := range b {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b[i] = c
		} else {
			b[i] = '?'
		}
	}
	return string(b)
}

// countingBody counts the request body bytes the handler read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// recorder notes status and size; Unwrap keeps http.ResponseController
// (flushing, hijacking, deadlines) working through it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	req    Request // in the request's context

	// For finish: what the access line and the metrics need.
	start time.Time
	r     *http.Request
	body  *countingBody
	log   *slog.Logger
	lw    *lineWriter

	detachedLine *accessLine // set by Detach, which took the line over: the line as it found it
	protoMajor   int         // r's, after Detach
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
