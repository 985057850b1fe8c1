package proxy

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/mcpgate/mcpgate/internal/metrics"
)

// upstreamKind sorts a failed request to the backend for
// mcpgate_upstream_errors_total: could not connect, too slow, connection
// lost, or anything else (a refused upgrade, a malformed response).
func upstreamKind(err error) metrics.UpstreamKind {
	var op *net.OpError
	switch {
	case isTimeout(err):
		return metrics.UpstreamTimeout
	case errors.As(err, &op) && op.Op == "dial", errors.Is(err, syscall.ECONNREFUSED):
		return metrics.UpstreamConnect
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return metrics.UpstreamReset
	}
	return metrics.UpstreamOther
}

// streamOpened counts an open stream (SSE or WebSocket) until release is
// called; a body may be closed more than once, the count drops once.
func streamOpened(release func()) func() {
	metrics.Default.StreamOpened()
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			metrics.Default.StreamClosed()
		}
		release()
	}
}
