package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestProxyProtocolFromLoadBalancer: behind a trusted load balancer the
// client address of its PROXY header (v1 or v2, IPv4 or IPv6) is the one
// the backend sees; from an untrusted address a header is refused, and a
// trusted peer without one is refused too.
func TestProxyProtocolFromLoadBalancer(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "echo")
	g := harness.Start(t, harness.Options{
		// The load balancer is 127.0.0.2; the harness's own checks come
		// from 127.0.0.1 without a header, as ordinary clients.
		ServerTOML: `proxy_protocol_from = ["127.0.0.2"]`,
		Proxies:    []harness.Proxy{{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL}},
	})
	v2 := func(src, dst string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		local  string // dial from
		header []byte
		wantIP string // "" = refused
	}{
		{"v1 IPv4", "127.0.0.2", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"), "203.0.113.7"},
		{"v1 IPv6", "127.0.0.2", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n"), "2001:db8::7"},
		{"v2 IPv4", "127.0.0.2", v2("198.51.100.9:4000", "192.0.2.1:443"), "198.51.100.9"},
		{"v2 IPv6", "127.0.0.2", v2("[2001:db8::9]:4000", "[2001:db8::1]:443"), "2001:db8::9"},
		{"untrusted peer with a header", "127.0.0.1", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"), ""},
		{"trusted peer without a header", "127.0.0.2", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.local)}}
			raw, err := d.Dial("tcp", g.HTTPSAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.header != nil {
				raw.Write(tc.header)
			}
			conn := tls.Client(raw, &tls.Config{ServerName: "alpha.test", RootCAs: g.PKI.Pool, NextProtos: []string{"http/1.1"}})
			err = conn.Handshake()
			if tc.wantIP == "" {
				if err == nil {
					t.Fatal("the connection was served")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			req, _ := http.NewRequestWithContext(context.Background(), "GET", "https://alpha.test/whoami", nil)
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			if err := req.Write(conn); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var seen struct {
				Header http.Header `json:"header"`
			}
			json.NewDecoder(res.Body).Decode(&seen)
			if got := seen.Header.Get("X-Forwarded-For"); got != tc.wantIP {
				t.Errorf("backend saw X-Forwarded-For %q, want %q", got, tc.wantIP)
			}
		})
	}
}
