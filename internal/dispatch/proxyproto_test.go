package dispatch

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/mcpgate/mcpgate/internal/activation"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// captureTarget records what the dispatcher hands over.
type captureTarget struct {
	got chan delivery
}

type delivery struct {
	header *proxyproto.Header
	peeked []byte
}

func (c *captureTarget) Name() string { return "capture" }
func (c *captureTarget) Deliver(kind wire.Kind, conn Conn, header, peeked []byte) error {
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(header)))
	if err != nil {
		return err
	}
	c.got <- delivery{h, peeked}
	return nil
}

// clientHello captures the ClientHello a real TLS client sends for sni.
func clientHello(t *testing.T, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{ServerName: sni, NextProtos: []string{"h2"}}).Handshake()
	}()
	var buf bytes.Buffer
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	buf.Write(hdr)
	buf.Write(body)
	a.Close()
	b.Close()
	return buf.Bytes()
}

// listenerKinds are the two accept paths: the supervisor's listeners
// (activation.Listener: raw accept on a pollable duplicate, fdConn) and
// any other net.Listener (net's Accept).
var listenerKinds = []struct {
	name string
	wrap func(net.Listener) net.Listener
}{
	{"activation listener", activation.Wrap},
	{"net listener", func(l net.Listener) net.Listener { return l }},
}

func startDispatcher(t *testing.T, network, addr string, trusted []string) (*Dispatcher, *captureTarget, string) {
	t.Helper()
	return startDispatcherOn(t, activation.Wrap, network, addr, trusted)
}

func startDispatcherOn(t *testing.T, wrap func(net.Listener) net.Listener, network, addr string, trusted []string) (*Dispatcher, *captureTarget, string) {
	t.Helper()
	nl, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	l := wrap(nl)
	t.Cleanup(func() { l.Close() })
	target := &captureTarget{got: make(chan delivery, 1)}
	d := &Dispatcher{Log: slog.New(slog.DiscardHandler), PeekTimeout: 500 * time.Millisecond}
	tb := NewTable()
	tb.Add("notes.test", target)
	d.SetTable(tb)
	var pfx []netip.Prefix
	for _, s := range trusted {
		pfx = append(pfx, netip.MustParsePrefix(s))
	}
	d.SetTrustedProxies(pfx)
	go d.ServeTLS(l)
	return d, target, l.Addr().String()
}

func TestProxyProtocolFromTrustedLoadBalancer(t *testing.T) {
	hello := clientHello(t, "notes.test")
	v2 := func(src, dst string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		h.SetTLVs([]proxyproto.TLV{
			{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("req-42")},
			{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("spoofed.test")},
			{Type: handoff.TLVOfferedALPN, Value: []byte("\x02xx")},
		})
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name, network, listen string
		header                []byte
		wantSrc               string
	}{
		{"v1 IPv4", "tcp4", "127.0.0.1:0", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"), "203.0.113.7:5555"},
		{"v1 IPv6", "tcp4", "127.0.0.1:0", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n"), "[2001:db8::7]:5555"},
		{"v2 IPv4", "tcp4", "127.0.0.1:0", v2("203.0.113.8:6666", "192.0.2.1:443"), "203.0.113.8:6666"},
		{"v2 IPv6 over IPv6", "tcp6", "[::1]:0", v2("[2001:db8::8]:6666", "[2001:db8::1]:443"), "[2001:db8::8]:6666"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, target, addr := startDispatcher(t, tt.network, tt.listen, []string{"127.0.0.0/8", "::1/128"})
			c, err := net.Dial(tt.network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Header and hello in one write: the bytes read past the header
			// must not be lost.
			c.Write(append(bytes.Clone(tt.header), hello...))
			select {
			case d := <-target.got:
				if got := d.header.SourceAddr.String(); got != tt.wantSrc {
					t.Errorf("client address %s, want %s", got, tt.wantSrc)
				}
				if !bytes.Equal(d.peeked, hello) {
					t.Errorf("peeked %d bytes, want the %d-byte ClientHello", len(d.peeked), len(hello))
				}
				tlvs, _ := d.header.TLVs()
				var authority, unique []byte
				nALPN := 0
				for _, tl := range tlvs {
					switch tl.Type {
					case proxyproto.PP2_TYPE_AUTHORITY:
						authority = tl.Value
					case proxyproto.PP2_TYPE_UNIQUE_ID:
						unique = tl.Value
					case handoff.TLVOfferedALPN:
						nALPN++
					}
				}
				if string(authority) != "notes.test" {
					t.Errorf("authority TLV %q, want the routed SNI", authority)
				}
				if tt.header[0] != 'P' && string(unique) != "req-42" {
					t.Errorf("unique id TLV %q not forwarded", unique)
				}
				if nALPN != 1 {
					t.Errorf("%d offered-ALPN TLVs; the load balancer's private TLV must be dropped", nALPN)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("connection not handed off")
			}
		})
	}
}

func TestProxyProtocolRefusals(t *testing.T) {
	hello := clientHello(t, "notes.test")
	tests := []struct {
		name    string
		trusted []string
		send    []byte
		slow    bool
	}{
		{"header from an untrusted peer", []string{"192.0.2.0/24"}, append([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"), hello...), false},
		{"v2 header from an untrusted peer", nil, append(bytes.Clone(proxyproto.SIGV2), hello...), false},
		{"trusted peer without a header", []string{"127.0.0.0/8"}, hello, false},
		{"slow header", []string{"127.0.0.0/8"}, []byte("PROXY TCP4 203.0.113.7"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, target, addr := startDispatcher(t, "tcp4", "127.0.0.1:0", tt.trusted)
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tt.send)
			select {
			case <-target.got:
				t.Fatal("connection was handed off")
			case <-time.After(200 * time.Millisecond):
			}
			// The dispatcher closes the connection (at the latest when the
			// header read times out).
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("connection left open")
			}
		})
	}
}
