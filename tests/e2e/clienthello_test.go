package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// splitConn writes at most max bytes per underlying Write, sleeping delay
// between pieces, for the first budget bytes: the ClientHello reaches the
// gateway in many TCP segments spread over time.
type splitConn struct {
	net.Conn
	max    int
	delay  time.Duration
	budget int // bytes still to split; afterwards writes pass through
}

func (c *splitConn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if c.budget <= 0 {
			m, err := c.Conn.Write(p)
			return n + m, err
		}
		k := min(c.max, len(p), c.budget)
		m, err := c.Conn.Write(p[:k])
		n += m
		c.budget -= m
		if err != nil {
			return n, err
		}
		p = p[k:]
		time.Sleep(c.delay)
	}
	return n, nil
}

// recordConn re-frames the first TLS record written (the ClientHello) into
// records of at most size payload bytes each; TLS allows a handshake message
// to span records, so a server must reassemble it before it can read SNI.
type recordConn struct {
	net.Conn
	size int
	buf  []byte
	done bool
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.done {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) < 5 {
		return len(p), nil
	}
	if c.buf[0] != 0x16 { // not a handshake record: leave it alone
		c.done = true
		_, err := c.Conn.Write(c.buf)
		return len(p), err
	}
	end := 5 + (int(c.buf[3])<<8 | int(c.buf[4]))
	if len(c.buf) < end {
		return len(p), nil
	}
	c.done = true
	hdr, payload, rest := c.buf[:3], c.buf[5:end], c.buf[end:]
	var out []byte
	for len(payload) > 0 {
		k := min(c.size, len(payload))
		out = append(out, hdr...)
		out = append(out, byte(k>>8), byte(k))
		out = append(out, payload[:k]...)
		payload = payload[k:]
	}
	out = append(out, rest...)
	_, err := c.Conn.Write(out)
	return len(p), err
}

// TestFragmentedClientHello sends ClientHellos split into tiny TCP writes
// and/or many TLS records; the gateway must still read the SNI, complete the
// handshake and route to the right backend.
func TestFragmentedClientHello(t *testing.T) {
	t.Parallel()
	alpha := backends.NewEcho(t, "alpha")
	beta := backends.NewEcho(t, "beta")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alpha.URL},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL},
	}})

	wrappers := []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"3-byte-writes", func(c net.Conn) net.Conn {
			return &splitConn{Conn: c, max: 3, delay: time.Millisecond, budget: 4096}
		}},
		{"64-byte-records", func(c net.Conn) net.Conn { return &recordConn{Conn: c, size: 64} }},
		{"16-byte-records+3-byte-writes", func(c net.Conn) net.Conn {
			return &recordConn{Conn: &splitConn{Conn: c, max: 3, delay: time.Millisecond, budget: 8192}, size: 16}
		}},
	}
	// Beta is not the first proxy, so routing must really come from SNI.
	for _, pc := range protoCases {
		for _, w := range wrappers {
			t.Run(pc.name+"/"+w.name, func(t *testing.T) {
				alpn := []string{"h2", "http/1.1"}
				if pc.cfg.HTTP1Only {
					alpn = []string{"http/1.1"}
				}
				tr := &http.Transport{
					DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
						d := net.Dialer{Timeout: 5 * time.Second}
						raw, err := d.DialContext(ctx, "tcp", g.HTTPSAddr)
						if err != nil {
							return nil, err
						}
						conn := tls.Client(w.wrap(raw), g.TLSConfig("beta.test", alpn...))
						hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
						defer cancel()
						if err := conn.HandshakeContext(hctx); err != nil {
							raw.Close()
							return nil, fmt.Errorf("handshake: %w", err)
						}
						return conn, nil
					},
					ForceAttemptHTTP2: !pc.cfg.HTTP1Only,
					DisableKeepAlives: true,
				}
				defer tr.CloseIdleConnections()
				resp, er := getEcho(t, &http.Client{Transport: tr}, "https://beta.test/fragmented", nil)
				if er.Backend != "beta" {
					t.Errorf("routed to backend %q, want beta", er.Backend)
				}
				if resp.Proto != pc.proto {
					t.Errorf("protocol %s, want %s", resp.Proto, pc.proto)
				}
			})
		}
	}
}
