package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/mcpgate/mcpgate/internal/metrics"
)

func TestUpstreamKind(t *testing.T) {
	for err, want := range map[error]metrics.UpstreamKind{
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}: metrics.UpstreamConnect,
		fmt.Errorf("x: %w", context.DeadlineExceeded):       metrics.UpstreamTimeout,
		&net.OpError{Op: "read", Err: syscall.ECONNRESET}:   metrics.UpstreamReset,
		io.ErrUnexpectedEOF: metrics.UpstreamReset,
		errUpgradeRefused:   metrics.UpstreamOther,
		errors.New("net/http: timeout awaiting response headers"): metrics.UpstreamTimeout,
	} {
		if got := upstreamKind(err); got != want {
			t.Errorf("%v → %v, want %v", err, got, want)
		}
	}
}

// TestStreamCountedOnce: a stream's body may be closed twice; the gauge
// drops once.
func TestStreamCountedOnce(t *testing.T) {
	before := metrics.Default.Snapshot().OpenStreams
	released := 0
	release := streamOpened(func() { released++ })
	if n := metrics.Default.Snapshot().OpenStreams; n != before+1 {
		t.Fatalf("open streams %d, want %d", n, before+1)
	}
	release()
	release()
	if n := metrics.Default.Snapshot().OpenStreams; n != before || released != 2 {
		t.Errorf("open streams %d (want %d), released %d times", n, before, released)
	}
}
