package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mcpgate/mcpgate/internal/logging"
)

// The direct path: a request to a plain HTTP/1.1 backend (h1Transport)
// is written straight from the incoming request into the connection's
// write buffer, and the response's headers straight into the client's,
// without ReverseProxy's copy of the request and its header map, the
// trace hooks and the per-request wrappers: a third of a worker's
// allocations and about a tenth of its CPU per small request (make
// bench). It keeps ReverseProxy's behaviour, which the tests pin for both
// paths: hop-by-hop fields, X-Forwarded-*, the header policy (rewrite,
// modifyResponse), 1xx relays, trailers, streaming with a flush per
// write, drain, and an aborted response when the backend fails mid-body.
// Protocol switches (WebSocket) and requests with trailers take
// ReverseProxy.

// direct reports whether r can take the direct path.
func direct(r *http.Request) bool {
	_, up := r.Header["Upgrade"]
	return !up && len(r.Trailer) == 0
}

// hopByHop are the fields that describe one connection, never forwarded
// (RFC 9110 7.6.1, and ReverseProxy's list).
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHopByHop(k string) bool {
	for _, h := range hopByHop {
		if k == h {
			return true
		}
	}
	return false
}

// removeHopByHop deletes hop-by-hop fields, and those the Connection
// field names, from a response's header.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textprotoTrim(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

func textprotoTrim(s string) string { return strings.Trim(s, " \t") }

// forward serves r through up's h1Transport.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, up *upstream) {
	ctx := r.Context()
	var body io.Reader
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		// As ReverseProxy: a zero-length body is no body, never chunked.
		defer r.Body.Close()
		body = r.Body
		if r.ContentLength < 0 {
			var empty bool
			if body, empty = probeBody(r.Body); empty {
				body = nil
			}
		}
	}
	uri := requestURI(up.url, r.URL)
	x := &h1Exchange{
		ctx:    ctx,
		req:    r,
		inline: body == nil || (r.ContentLength > 0 && r.ContentLength <= h1InlineBody),
		replay: body == nil && (r.Method == "GET" || r.Method == "HEAD" || r.Method == "OPTIONS" || r.Method == "TRACE"),
		send: func(bw *bufio.Writer, inline bool) error {
			h.writeHead(bw, r, up, uri, body)
			if body == nil {
				return nil
			}
			if !inline {
				// A streamed body: the headers go first, so the backend can
				// answer before it has the body.
				if err := bw.Flush(); err != nil {
					return err
				}
			}
			return writeBody(bw, body, r.ContentLength, h.buffers)
		},
		got1xx: func(code int, hdr http.Header) error {
			// As ReverseProxy: relayed as they come, gateway cookies
			// removed. The fields are not kept for the final response,
			// and the gateway's own (the request id) come back after.
			dropGatewaySetCookies(hdr)
			out := w.Header()
			var saved http.Header
			for k, vs := range hdr {
				if prev, ok := out[k]; ok {
					if saved == nil {
						saved = http.Header{}
					}
					saved[k] = prev
				}
				out[k] = vs
			}
			w.WriteHeader(code)
			for k := range hdr {
				delete(out, k)
			}
			for k, vs := range saved {
				out[k] = vs
			}
			return nil
		},
	}
	start := time.Now()
	res, err := up.h1.do(x)
	if rec := logging.RequestFrom(ctx); rec != nil {
		rec.Upstream = time.Since(start)
	}
	if err != nil {
		h.errorHandler(w, r, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Nothing was asked to switch: a backend's 101 here is refused.
		res.Body.Close()
		h.errorHandler(w, r, errUpgradeRefused)
		return
	}
	removeHopByHop(res.Header)
	if err := h.modifyResponse(res); err != nil {
		res.Body.Close()
		h.errorHandler(w, r, err)
		return
	}
	out := w.Header()
	for k, vs := range res.Header {
		out[k] = append(out[k], vs...)
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		out.Add("Trailer", strings.Join(keys, ", "))
	}
	rb, _ := res.Body.(*h1Body)
	detach := detachable(r, res, rb, announced) && canHijack(w)
	if detach {
		// The connection ends with the stream (detach.go).
		out.Set("Connection", "close")
	}
	w.WriteHeader(res.StatusCode)
	streaming := isStreaming(res)
	if streaming {
		// The client learns the stream is open before its first event.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	if detach && h.detach(w, r, rb) {
		return
	}
	var ended atomic.Bool
	if streaming && rb != nil {
		// Ended by the drain or a revocation, the stream ends cleanly: the
		// client's reconnection meets the new worker, or the bearer check.
		who, _ := IdentityFrom(ctx)
		defer h.openStream(who, func() {
			ended.Store(true)
			rb.abort()
		})()
	}
	err = copyBody(w, res, rb, streaming, &ended, h.buffers)
	if err != nil {
		res.Body.Close()
		if ctx.Err() == nil {
			h.log.Warn("upstream response ended early", "path", r.URL.Path, "err", err)
		}
		// As ReverseProxy: the client must see an incomplete response,
		// never a clean end (HTTP/1.1: no final chunk; HTTP/2: RST_STREAM).
		panic(http.ErrAbortHandler)
	}
	res.Body.Close()
	if len(res.Trailer) == 0 {
		return
	}
	dropGatewaySetCookies(res.Trailer)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if len(res.Trailer) == announced {
		for k, vs := range res.Trailer {
			// An announced trailer that never came (a HEAD response, say)
			// stays absent, as ReverseProxy's copy leaves it.
			if len(vs) > 0 {
				out[k] = append(out[k], vs...)
			}
		}
		return
	}
	for k, vs := range res.Trailer {
		for _, v := range vs {
			out.Add(http.TrailerPrefix+k, v)
		}
	}
}

// copyBody copies the response body to the client: a streaming one
// flushed after every read and read only once bytes are there (no buffer
// held by an idle stream), the others through one pooled buffer.
func copyBody(w http.ResponseWriter, res *http.Response, rb *h1Body, streaming bool, ended *atomic.Bool, pool httputil.BufferPool) error {
	if res.Body == http.NoBody {
		return nil
	}
	flusher, _ := w.(http.Flusher)
	var read int64
	for {
		if streaming && rb != nil && (res.ContentLength < 0 || read < res.ContentLength) {
			if err := rb.pc.waitReadable(); err != nil {
				if ended.Load() {
					return nil
				}
				return err
			}
		}
		buf := pool.Get()
		n, rerr := res.Body.Read(buf)
		var werr error
		if n > 0 {
			read += int64(n)
			_, werr = w.Write(buf[:n])
			if werr == nil && streaming && flusher != nil {
				flusher.Flush()
			}
		}
		pool.Put(buf)
		switch {
		case werr != nil:
			return werr
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			if ended.Load() {
				return nil // the drain deadline ended the stream: a clean end
			}
			return rerr
		}
	}
}

// writeHead writes the request line and header for the backend: the
// client's fields but those rewrite drops, then mcpgate's own, then the
// proxy's [headers] request fields; the same set rewrite builds for
// ReverseProxy, without copying the client's map.
func (h *Handler) writeHead(bw *bufio.Writer, r *http.Request, up *upstream, uri string, body io.Reader) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := up.url.Host
	if h.cfg.PreserveHost {
		host = r.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")

	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if h.skipRequestField(k, conn) {
			continue
		}
		if k == "Cookie" {
			for _, v := range vs {
				if v = withoutGatewayCookies(v); v != "" {
					writeField(bw, k, v)
				}
			}
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	if te := r.Header["Te"]; len(te) > 0 && tokenListed(te, "trailers") {
		h.writeOwn(bw, "Te", "trailers")
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h.writeOwn(bw, "X-Forwarded-For", ip)
	}
	h.writeOwn(bw, "X-Forwarded-Host", r.Host)
	if r.TLS != nil {
		h.writeOwn(bw, "X-Forwarded-Proto", "https")
	} else {
		h.writeOwn(bw, "X-Forwarded-Proto", "http")
	}
	if who, ok := IdentityFrom(r.Context()); ok {
		h.writeOwn(bw, IdentityPrefix+"User", who.Login)
		h.writeOwn(bw, IdentityPrefix+"Scopes", who.Scope())
		h.writeOwn(bw, IdentityPrefix+"Client-Id", who.ClientID)
	}
	if rec := logging.RequestFrom(r.Context()); rec != nil {
		h.writeOwn(bw, logging.RequestIDHeader, rec.ID)
	}
	for k, v := range h.headers.Request {
		writeField(bw, k, v)
	}
	switch {
	case body == nil:
		// As Request.Write: an empty body is announced for the methods
		// that normally carry one.
		if r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			bw.WriteString("Content-Length: 0\r\n")
		}
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	default:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
}

// skipRequestField reports whether a client's field stays behind: framing
// and hop-by-hop fields, fields the Connection field names, names that are
// not plain or lie in mcpgate's identity space, forwarding fields mcpgate
// sets itself, protocol switches, and the fields [headers] removes or sets.
func (h *Handler) skipRequestField(k string, conn []string) bool {
	switch k {
	case "Host", "Content-Length", "Forwarded", "X-Real-Ip", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "Http2-Settings", logging.RequestIDHeader:
		return true
	}
	if !plainName(k) {
		h.log.Debug("dropped request field with a name other than letters, digits and '-'", "where", "header", "name", k)
		return true
	}
	if isHopByHop(k) || hasPrefixFold(k, IdentityPrefix) {
		return true
	}
	if len(conn) > 0 && tokenListed(conn, k) {
		return true
	}
	if _, set := h.headers.Request[k]; set {
		return true
	}
	return h.removed(k)
}

func (h *Handler) removed(k string) bool {
	for _, rm := range h.headers.RemoveRequest {
		if strings.EqualFold(rm, k) {
			return true
		}
	}
	return false
}

// writeOwn writes one of mcpgate's fields unless [headers] removes it or
// sets it itself.
func (h *Handler) writeOwn(bw *bufio.Writer, k, v string) {
	if _, set := h.headers.Request[k]; set || h.removed(k) {
		return
	}
	writeField(bw, k, v)
}

// writeField writes "k: v". Values that came from elsewhere than the
// client's validated request (a login from the identity provider) may hold
// CR or LF: as Request.Write does, they become spaces.
func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n\x00") {
		v = strings.NewReplacer("\r", " ", "\n", " ", "\x00", " ").Replace(v)
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// tokenListed reports whether a comma-separated field (Connection, TE)
// lists token, in any case.
func tokenListed(vs []string, token string) bool {
	for _, v := range vs {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(textprotoTrim(f), token) {
				return true
			}
		}
	}
	return false
}

// probeWait bounds how long a body of unknown length is waited for before
// the request goes out chunked (Request.Write waits as long).
const probeWait = 200 * time.Millisecond

// probeBody tells an empty body of unknown length (HTTP/3 requests carry
// no length; a GET's body ends at once) from one that has bytes, so an
// empty one is not sent chunked: a GET with a chunked body is refused by
// some backends. A body with nothing to read within probeWait (a stream
// the client fills later) is sent chunked, with whatever comes first.
func probeBody(body io.Reader) (io.Reader, bool) {
	first := make([]byte, 1)
	done := make(chan readResult, 1)
	go func() {
		n, err := body.Read(first)
		done <- readResult{n, err}
	}()
	t := time.NewTimer(probeWait)
	defer t.Stop()
	select {
	case r := <-done:
		return probed(first, r.n, r.err, body)
	case <-t.C:
		return &lateBody{done: done, first: first, rest: body}, false
	}
}

func probed(first []byte, n int, err error, rest io.Reader) (io.Reader, bool) {
	switch {
	case n == 0 && err == io.EOF:
		return nil, true
	case n == 0 && err != nil:
		return &errReader{err}, false
	case err == io.EOF:
		return bytes.NewReader(first[:n]), false
	case err != nil:
		return io.MultiReader(bytes.NewReader(first[:n]), &errReader{err}), false
	}
	return io.MultiReader(bytes.NewReader(first[:n]), rest), false
}

// lateBody is a probed body whose first read had not returned by
// probeWait: it is waited for at the first Read.
type readResult struct {
	n   int
	err error
}

type lateBody struct {
	done  chan readResult
	first []byte
	rest  io.Reader
	r     io.Reader
}

func (b *lateBody) Read(p []byte) (int, error) {
	if b.r == nil {
		res := <-b.done
		if b.r, _ = probed(b.first, res.n, res.err, b.rest); b.r == nil {
			b.r = eofReader{}
		}
	}
	return b.r.Read(p)
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

var errBodyLength = errors.New("request body shorter than its Content-Length")

// writeBody writes the request body: n bytes, or chunked when n < 0.
func writeBody(bw *bufio.Writer, body io.Reader, n int64, pool httputil.BufferPool) error {
	if n > 0 {
		m, err := io.CopyN(bw, body, n)
		if m < n {
			if err == nil || err == io.EOF {
				err = errBodyLength
			}
			return err
		}
		return nil
	}
	buf := pool.Get()
	defer pool.Put(buf)
	for {
		m, err := body.Read(buf)
		if m > 0 {
			bw.WriteString(strconv.FormatInt(int64(m), 16))
			bw.WriteString("\r\n")
			bw.Write(buf[:m])
			if _, werr := bw.WriteString("\r\n"); werr != nil {
				return werr
			}
			// A streamed body goes on as it comes: the backend may answer
			// each part (an MCP client's stream) before the next.
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if err == io.EOF {
			_, werr := bw.WriteString("0\r\n\r\n")
			return werr
		}
		if err != nil {
			return err
		}
	}
}

// requestURI is the request target for the backend, as ReverseProxy's
// SetURL builds it: the target's path joined with the request's, queries
// joined.
func requestURI(target, in *url.URL) string {
	u := url.URL{RawQuery: in.RawQuery}
	u.Path, u.RawPath = joinURLPath(target, in)
	if target.RawQuery != "" {
		if u.RawQuery == "" {
			u.RawQuery = target.RawQuery
		} else {
			u.RawQuery = target.RawQuery + "&" + u.RawQuery
		}
	}
	return u.RequestURI()
}

func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	apath, bpath := a.EscapedPath(), b.EscapedPath()
	aslash, bslash := strings.HasSuffix(apath, "/"), strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

func singleJoiningSlash(a, b string) string {
	aslash, bslash := strings.HasSuffix(a, "/"), strings.HasPrefix(b, "/")
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}
