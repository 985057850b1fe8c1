package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mcpgate/mcpgate/internal/logging"
)

// endTransport lets a draining worker end open streams cleanly: when the
// handler's streams end (Handler.openStream: the drain's deadline, or a
// revoked token), the upstream request of every streaming response is
// canceled and its body reports io.EOF, so ReverseProxy finishes the
// response normally (final chunk, or HTTP/2 END_STREAM) instead of
// aborting it. SSE clients then reconnect with Last-Event-ID.
type endTransport struct {
	rt http.RoundTripper
	h  *Handler // its streams: openStream, watch
}

func (t *endTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	filter1xx(req)
	// http.Transport aborts a request only through its context, which
	// costs a context and a copy of the request; h1Transport's body is
	// aborted directly (h1Body.abort).
	cancel := context.CancelFunc(func() {})
	out := req
	if _, direct := t.rt.(*h1Transport); !direct {
		var ctx context.Context
		ctx, cancel = context.WithCancel(req.Context())
		out = req.WithContext(ctx)
	}
	start := time.Now()
	res, err := t.rt.RoundTrip(out)
	// RoundTrip returns with the response headers: the backend's share of
	// the request's time, for the access log.
	if rec := logging.RequestFrom(req.Context()); rec != nil {
		rec.Upstream = time.Since(start)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// ReverseProxy needs the upgraded body's Write; a drain ends with
		// the worker's process.
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			// Access withdrawn closes the upgraded connection: it has no
			// clean end to offer.
			who, _ := IdentityFrom(req.Context())
			unwatch := t.h.watch(who, func() { rwc.Close() })
			res.Body = &upgradedBody{ReadWriteCloser: rwc, release: streamOpened(func() { unwatch(); cancel() })}
		} else {
			cancel()
		}
		return res, nil
	}
	if !isStreaming(res) {
		// Only streams are cut at the drain deadline; an ordinary request,
		// even one still waiting for its headers then, keeps the grace the
		// servers get.
		res.Body = &endableBody{ReadCloser: res.Body, res: res, ended: new(atomic.Bool), release: cancel}
		return res, nil
	}
	abort := func() { cancel() }
	if b, ok := res.Body.(*h1Body); ok {
		abort = b.abort
	}
	ended := new(atomic.Bool)
	who, _ := IdentityFrom(req.Context())
	release := t.h.openStream(who, func() {
		ended.Store(true)
		abort()
	})
	res.Body = &endableBody{ReadCloser: res.Body, res: res, ended: ended, release: func() { release(); cancel() }}
	return res, nil
}

// isStreaming matches the responses ReverseProxy flushes immediately.
func isStreaming(res *http.Response) bool {
	return res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type"))
}

// isEventStream reports whether a Content-Type's media type is
// text/event-stream, as mime.ParseMediaType would read it, without its
// allocations: the type ends at ";" or blanks, in any case.
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

type endableBody struct {
	io.ReadCloser
	res     *http.Response // whose Trailer is complete once the body is closed
	ended   *atomic.Bool
	release func()
}

func (b *endableBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.ended.Load() {
		return n, io.EOF
	}
	return n, err
}

func (b *endableBody) Close() error {
	err := b.ReadCloser.Close()
	// ReverseProxy copies the backend's trailers after this Close, past
	// ModifyResponse: mcpgate's cookies must not be set from there either.
	dropGatewaySetCookies(b.res.Trailer)
	b.release()
	return err
}

// upgradedBody releases the request context when the upgraded connection
// closes.
type upgradedBody struct {
	io.ReadWriteCloser
	release context.CancelFunc
}

func (b *upgradedBody) Close() error {
	err := b.ReadWriteCloser.Close()
	b.release()
	return err
}
