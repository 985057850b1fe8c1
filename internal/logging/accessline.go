package logging

import (
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The access line is the one record per request. Through slog it cost
// about 4 µs of a worker's CPU per small request (15 attributes, each
// through slog's generic value encoding; make bench); accessLine writes
// the same JSON object straight into the batch: the keys and values of
// the slog path, in the same order, with the logger's own attributes
// (proxy, pid) after the message, as slog's JSON handler writes them.

// lineWriter is the fast path for a logger made by New (JSON or journal
// output) whose attributes are all plain: nil when the logger writes
// text or has groups, which keep the slog path.
type lineWriter struct {
	out      *batchWriter
	deferred bool
	prefix   string // "<6>" for the journal
	static   []byte // `,"proxy":"alpha","pid":42`
}

func newLineWriter(l *slog.Logger) *lineWriter {
	h, ok := l.Handler().(*batched)
	if !ok || !h.json || h.grouped {
		return nil
	}
	lw := &lineWriter{out: h.out, deferred: h.deferred}
	if h.journal {
		lw.prefix = priority(slog.LevelInfo)
	}
	for _, a := range h.attrs {
		lw.static = append(lw.static, ',')
		lw.static = appendJSONString(lw.static, a.Key)
		lw.static = append(lw.static, ':')
		switch v := a.Value.Resolve(); v.Kind() {
		case slog.KindString:
			lw.static = appendJSONString(lw.static, v.String())
		case slog.KindInt64:
			lw.static = strconv.AppendInt(lw.static, v.Int64(), 10)
		default:
			return nil // never made by mcpgate; slog knows how
		}
	}
	return lw
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// accessLine is one request's fields, in the slog path's order.
type accessLine struct {
	client, method, host, path, proto string
	status                            int
	bytesIn, bytesOut                 int64
	duration, upstream                time.Duration
	user, clientID                    string
	hasUser                           bool
	userAgent, requestID              string
}

func (lw *lineWriter) write(t time.Time, a *accessLine) {
	bp := lineBufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, lw.prefix...)
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request"`...)
	b = append(b, lw.static...)
	b = appendField(b, "client", a.client)
	b = appendField(b, "method", a.method)
	b = appendField(b, "host", a.host)
	b = appendField(b, "path", a.path)
	b = appendField(b, "proto", a.proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, a.bytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, a.bytesOut, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, millis(a.duration), 'f', -1, 64)
	if a.upstream > 0 {
		b = append(b, `,"upstream_ms":`...)
		b = strconv.AppendFloat(b, millis(a.upstream), 'f', -1, 64)
	}
	if a.hasUser {
		b = appendField(b, "user", a.user)
		b = appendField(b, "client_id", a.clientID)
	}
	b = appendField(b, "user_agent", a.userAgent)
	b = appendField(b, "request_id", a.requestID)
	b = append(b, "}\n"...)
	lw.out.mu.Lock()
	lw.out.deferred = lw.deferred
	lw.out.Write(b)
	lw.out.mu.Unlock()
	*bp = b
	lineBufs.Put(bp)
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as slog's JSON handler does: quote, backslash
// and control characters escaped, invalid UTF-8 as U+FFFD, U+2028 and
// U+2029 escaped, nothing else (no HTML escaping).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&15])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
