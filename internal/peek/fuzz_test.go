package peek

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const fuzzTLSLimit = 32 << 10

// checkHost verifies that a returned host is in normalized form.
func checkHost(t *testing.T, host string) {
	t.Helper()
	if strings.Contains(host, ":") {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.String() != host {
			t.Fatalf("bad IPv6 host %q", host)
		}
		return
	}
	if h, err := normalizeHostname([]byte(host)); err != nil || h != host || strings.HasSuffix(host, ".") {
		t.Fatalf("host %q not normalized (%q, %v)", host, h, err)
	}
}

func checkInfo(t *testing.T, info ClientHelloInfo) {
	t.Helper()
	if info.ServerName != "" {
		checkHost(t, info.ServerName)
		if strings.Contains(info.ServerName, ":") {
			t.Fatalf("SNI %q contains a colon", info.ServerName)
		}
	}
	if info.ALPN != nil && len(info.ALPN) == 0 {
		t.Fatal("empty non-nil ALPN")
	}
	for _, p := range info.ALPN {
		if p == "" {
			t.Fatal("empty ALPN protocol")
		}
	}
}

func FuzzClientHello(f *testing.F) {
	for _, h := range [][]byte{
		realHello(f, "example.com", "h2", "http/1.1"),
		realHello(f, ""),
		frame(recordBodies(f, realHello(f, "Frag.Example.", "mcp")), 7),
		frame(synthHello(sniExt("a.example"), alpnExt("h2")), 1<<14),
		frame(synthHello(), 3),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		for _, chunk := range []byte{0, 2, 200} {
			f.Add(append([]byte{chunk}, h...))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		chunk, in := int(data[0])+1, data[1:]
		info, consumed, err := ClientHello(&chunkReader{b: in, n: chunk}, fuzzTLSLimit)
		if !bytes.HasPrefix(in, consumed) {
			t.Fatal("consumed is not a prefix of the input")
		}
		if len(consumed) > fuzzTLSLimit {
			t.Fatalf("consumed %d bytes > limit", len(consumed))
		}
		// Chunking must not change the outcome.
		info2, consumed2, err2 := ClientHello(bytes.NewReader(in), fuzzTLSLimit)
		if !bytes.Equal(consumed, consumed2) || (err == nil) != (err2 == nil) ||
			info.ServerName != info2.ServerName || !slices.Equal(info.ALPN, info2.ALPN) {
			t.Fatalf("chunked (%d) result differs: %v / %v", chunk, err, err2)
		}
		if err != nil {
			if info.ServerName != "" || info.ALPN != nil {
				t.Fatal("info returned with error")
			}
			return
		}
		checkInfo(t, info)
		// Success means the input started with a valid hello: it parses the
		// same once reassembled.
		if consumed[0] != 0x16 {
			t.Fatal("success without handshake record")
		}
	})
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(recordBodies(f, realHello(f, "example.com", "h2", "http/1.1")))
	f.Add(recordBodies(f, realHello(f, "")))
	f.Add(synthHello(sniExt("A.example."), alpnExt("h2", "x")))
	f.Add(synthHello())
	f.Add(synthHello([]byte{}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		info, err := ParseClientHello(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotTLS) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		checkInfo(t, info)
		// The same message framed into records must give the same answer.
		in := frame(msg, 1000)
		info2, consumed, err := ClientHello(bytes.NewReader(in), 1<<20)
		if err != nil || info2.ServerName != info.ServerName || !slices.Equal(info.ALPN, info2.ALPN) || !bytes.Equal(consumed, in) {
			t.Fatalf("ClientHello disagrees with ParseClientHello: %v", err)
		}
	})
}

func FuzzHTTPHost(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http://abs.example:81/p HTTP/1.1\r\nHost: o\r\n\r\n",
		"POST /mcp HTTP/1.1\nhost: [::1]:8080\nContent-Length: 2\n\n{}",
		"\r\nOPTIONS * HTTP/1.0\r\nHOST: A.B.\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
	} {
		for _, chunk := range []byte{0, 4, 255} {
			f.Add(append([]byte{chunk}, s...))
		}
	}
	const limit = 4 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		chunk, in := int(data[0])+1, data[1:]
		host, consumed, err := HTTPHost(&chunkReader{b: in, n: chunk}, limit)
		if !bytes.HasPrefix(in, consumed) {
			t.Fatal("consumed is not a prefix of the input")
		}
		if len(consumed) > limit {
			t.Fatalf("consumed %d bytes > limit", len(consumed))
		}
		// The verdict must not depend on how the bytes were chunked (consumed
		// legitimately does, since reads may run past the head).
		host2, _, err2 := HTTPHost(bytes.NewReader(in), limit)
		if host != host2 || (err == nil) != (err2 == nil) {
			t.Fatalf("chunk %d: %q %v vs whole: %q %v", chunk, host, err, host2, err2)
		}
		if err != nil {
			if host != "" {
				t.Fatal("host returned with error")
			}
			return
		}
		checkHost(t, host)
	})
}
