package harness

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HTTP3Client returns a client that speaks HTTP/3 to the gateway's quic
// socket for every hostname (the gateway must run with Options.QUIC).
// Closed at cleanup.
func (g *Gateway) HTTP3Client(t testing.TB) *http.Client {
	t.Helper()
	if g.QUICAddr == "" {
		t.Fatal("HTTP3Client: the gateway has no quic socket (Options.QUIC)")
	}
	addr := g.QUICAddr
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: g.PKI.Pool},
		QUICConfig:      &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 30 * time.Second},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			return quic.DialAddrEarly(ctx, ua.String(), tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
