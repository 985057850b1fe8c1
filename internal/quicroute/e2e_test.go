package quicroute

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func selfSigned(t *testing.T, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// relay plays the supervisor: it owns the front socket, asks the Router,
// and forwards to worker sockets. Unlike production (unixgram to the
// worker, replies straight from the shared socket) each (client, worker)
// pair gets a relay socket whose replies it copies back to the client.
type relay struct {
	front   *net.UDPConn
	router  *Router
	bySNI   map[string]uint16
	workers map[uint16]*net.UDPAddr

	mu      sync.Mutex
	conns   map[[2]any]*net.UDPConn
	routed  map[netip.AddrPort]map[uint16]bool // client → workers its datagrams went to
	actions map[Action]int
	drops   []error
	kinds   map[string]int // forwarded datagrams by first packet type
}

func (p *relay) run() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dec := p.router.Route(buf[:n], from)
		p.mu.Lock()
		p.actions[dec.Action]++
		if dec.Action == Drop {
			p.drops = append(p.drops, dec.Err)
		}
		if dec.Action == Forward {
			kind := "1-RTT"
			if h, err := parseLongHeader(buf[:n]); err == nil {
				kind = h.typ.String()
			}
			p.kinds[kind]++
		}
		p.mu.Unlock()
		switch dec.Action {
		case Forward:
			p.send(from, dec.Worker, buf[:n])
		case NewConnection:
			w, ok := p.bySNI[dec.SNI]
			if !ok {
				p.router.Refuse(dec.DCID)
				continue
			}
			p.router.Bind(dec.DCID, w)
			for _, d := range dec.Buffered {
				p.send(d.From, w, d.Data)
			}
		}
	}
}

func (p *relay) send(client netip.AddrPort, w uint16, b []byte) {
	p.mu.Lock()
	if p.routed[client] == nil {
		p.routed[client] = map[uint16]bool{}
	}
	p.routed[client][w] = true
	c := p.conns[[2]any{client, w}]
	if c == nil {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			p.mu.Unlock()
			return
		}
		p.conns[[2]any{client, w}] = c
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				_, _ = p.front.WriteToUDPAddrPort(buf[:n], client)
			}
		}()
	}
	p.mu.Unlock()
	_, _ = c.WriteToUDP(b, p.workers[w])
}

func (p *relay) close() {
	p.front.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestEndToEndQuicGo runs two quic-go servers as workers 1 and 2, using
// Generator for their connection ids, behind a relay driven by Router,
// and connects quic-go clients by SNI (v1 and v2). Every datagram must
// reach the worker serving its SNI: the new-connection path, Initial
// ACKs sent to the server's id, Handshake and 1-RTT packets.
func TestEndToEndQuicGo(t *testing.T) {
	cert, pool := selfSigned(t, "a.example", "b.example")
	p := &relay{
		front:   listenUDP(t),
		router:  NewRouter(RouterConfig{Key: testKey}),
		bySNI:   map[string]uint16{"a.example": 1, "b.example": 2},
		workers: map[uint16]*net.UDPAddr{},
		conns:   map[[2]any]*net.UDPConn{},
		routed:  map[netip.AddrPort]map[uint16]bool{},
		actions: map[Action]int{},
		kinds:   map[string]int{},
	}
	for sni, w := range p.bySNI {
		conn := listenUDP(t)
		p.workers[w] = conn.LocalAddr().(*net.UDPAddr)
		tr := &quic.Transport{Conn: conn, ConnectionIDGenerator: NewGenerator(w, testKey, quic.ConnectionIDFromBytes)}
		ln, err := tr.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"e2e"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close(); tr.Close() })
		go serveEcho(ln, fmt.Sprintf("worker %d (%s): ", w, sni))
	}
	go p.run()
	t.Cleanup(p.close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clients := map[string]netip.AddrPort{}
	for _, tc := range []struct {
		sni     string
		version quic.Version
	}{{"a.example", quic.Version1}, {"b.example", quic.Version2}, {"b.example", quic.Version1}} {
		cli := listenUDP(t)
		conn, err := quic.Dial(ctx, cli, p.front.LocalAddr(),
			&tls.Config{ServerName: tc.sni, RootCAs: pool, NextProtos: []string{"e2e"}},
			&quic.Config{Versions: []quic.Version{tc.version}})
		if err != nil {
			t.Fatalf("%s: dial: %v", tc.sni, err)
		}
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := str.Write([]byte("hello " + tc.version.String())); err != nil {
			t.Fatal(err)
		}
		str.Close()
		got, err := io.ReadAll(str)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("worker %d (%s): hello %s", p.bySNI[tc.sni], tc.sni, tc.version)
		if string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		if conn.ConnectionState().Version != tc.version {
			t.Fatalf("negotiated %v", conn.ConnectionState().Version)
		}
		_ = conn.CloseWithError(0, "")
		clients[tc.sni+" "+tc.version.String()] = netip.MustParseAddrPort(cli.LocalAddr().String())
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	for name, addr := range clients {
		want := p.bySNI[name[:9]]
		if len(p.routed[addr]) != 1 || !p.routed[addr][want] {
			t.Errorf("%s: datagrams went to workers %v, want only %d", name, p.routed[addr], want)
		}
	}
	if len(p.drops) > 0 || p.actions[NewConnection] != 3 || p.actions[Forward] < 6 {
		t.Errorf("actions %v, drops %v", p.actions, p.drops)
	}
	// The client's ACKs of the server's Initials travel in Initials sent
	// to the server's id (keyed by the original DCID): the router's
	// decrypt-fails-then-decode path.
	if p.kinds["Initial"] == 0 || p.kinds["1-RTT"] == 0 {
		t.Errorf("forwarded %v", p.kinds)
	}
	t.Logf("actions %v, forwarded %v", p.actions, p.kinds)
}

func serveEcho(ln *quic.Listener, prefix string) {
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			str, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			data, _ := io.ReadAll(str)
			_, _ = str.Write(append([]byte(prefix), data...))
			str.Close()
		}()
	}
}
