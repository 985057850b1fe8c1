package peek

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestHTTPHost(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		limit   int
		want    string
		wantErr error
	}{
		{"simple", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, "example.com", nil},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: example.com\r\n\r\n", 0, "example.com", nil},
		{"port", "GET /x HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", 0, "example.com", nil},
		{"empty port", "GET /x HTTP/1.1\r\nHost: example.com:\r\n\r\n", 0, "example.com", nil},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: example.com.:80\r\n\r\n", 0, "example.com", nil},
		{"upper", "GET / HTTP/1.1\r\nHost: WWW.Example.COM\r\n\r\n", 0, "www.example.com", nil},
		{"ipv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0, "::1", nil},
		{"ipv6 no port", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]\r\n\r\n", 0, "2001:db8::1", nil},
		{"ipv4", "GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n", 0, "10.0.0.1", nil},
		{"case-insensitive name", "GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT: a.example\r\nAccept: */*\r\n\r\n", 0, "a.example", nil},
		{"ows", "GET / HTTP/1.1\r\nHost: \t a.example \t\r\n\r\n", 0, "a.example", nil},
		{"no ows", "GET / HTTP/1.1\r\nHost:a.example\r\n\r\n", 0, "a.example", nil},
		{"lf only", "GET / HTTP/1.1\nHost: a.example\nX: y\n\n", 0, "a.example", nil},
		{"mixed endings", "GET / HTTP/1.1\r\nHost: a.example\n\r\n", 0, "a.example", nil},
		{"leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n", 0, "a.example", nil},
		{"absolute-form", "GET http://abs.example:81/p?q HTTP/1.1\r\nHost: other.example\r\n\r\n", 0, "abs.example", nil},
		{"absolute-form no path", "GET https://Abs.Example HTTP/1.1\r\n\r\n", 0, "abs.example", nil},
		{"absolute-form ipv6", "GET http://[fe80::1]:8080/ HTTP/1.1\r\n\r\n", 0, "fe80::1", nil},
		{"absolute-form query", "GET http://abs.example?x=/ HTTP/1.1\r\n\r\n", 0, "abs.example", nil},
		{"connect authority-form", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 0, "a.example", nil},
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n", 0, "a.example", nil},
		{"same host twice", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: A.example\r\n\r\n", 0, "a.example", nil},

		{"missing host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 0, "", ErrNoHost},
		{"empty host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", 0, "", ErrNoHost},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a.example\r\nX-A: b\r\n  c\r\n\r\n", 0, "", ErrMalformed},
		{"obs-fold tab", "GET / HTTP/1.1\r\n\tHost: a.example\r\n\r\n", 0, "", ErrMalformed},
		{"duplicate different hosts", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 0, "", ErrMalformed},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", 0, "", ErrMalformed},
		{"no colon", "GET / HTTP/1.1\r\nHost a.example\r\n\r\n", 0, "", ErrMalformed},
		{"empty name", "GET / HTTP/1.1\r\n: a.example\r\n\r\n", 0, "", ErrMalformed},
		{"bad host char", "GET / HTTP/1.1\r\nHost: a b.example\r\n\r\n", 0, "", ErrMalformed},
		{"bad host slash", "GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n", 0, "", ErrMalformed},
		{"bad host userinfo", "GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n", 0, "", ErrMalformed},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n", 0, "", ErrMalformed},
		{"dots only", "GET / HTTP/1.1\r\nHost: ..\r\n\r\n", 0, "", ErrMalformed},
		{"empty label", "GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 0, "", ErrMalformed},
		{"two colons", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", 0, "", ErrMalformed},
		{"bad ipv6", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 0, "", ErrMalformed},
		{"ipv4 in brackets", "GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n", 0, "", ErrMalformed},
		{"ipv6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 0, "", ErrMalformed},
		{"unterminated ipv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 0, "", ErrMalformed},
		{"cr in value", "GET / HTTP/1.1\r\nHost: a.example\rX\r\n\r\n", 0, "", ErrMalformed},
		{"absolute-form userinfo", "GET http://u:p@a.example/ HTTP/1.1\r\n\r\n", 0, "", ErrMalformed},
		{"absolute-form empty host", "GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n", 0, "", ErrMalformed},
		{"absolute-form bad host", "GET http://a_b!/ HTTP/1.1\r\n\r\n", 0, "", ErrMalformed},

		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, "", ErrNotHTTP},
		{"tls", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0, "", ErrNotHTTP},
		{"garbage", "hello world\r\n\r\n", 0, "", ErrNotHTTP},
		{"http/0.9", "GET /\r\n\r\n", 0, "", ErrNotHTTP},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 0, "", ErrNotHTTP},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 0, "", ErrNotHTTP},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 0, "", ErrNotHTTP},
		{"leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, "", ErrNotHTTP},
		{"ctl in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 0, "", ErrNotHTTP},

		{"too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 200) + "\r\nHost: a\r\n\r\n", 100, "", ErrTooLarge},
		{"too large request line", "GET /" + strings.Repeat("a", 20000) + " HTTP/1.1\r\n", 0, "", ErrTooLarge},
		{"empty input", "", 0, "", io.EOF},
		{"truncated", "GET / HTTP/1.1\r\nHost: a.example\r\n", 0, "", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			readers := map[string]io.Reader{
				"whole":  strings.NewReader(tt.in),
				"1-byte": iotest.OneByteReader(strings.NewReader(tt.in)),
				"3-byte": &chunkReader{b: []byte(tt.in), n: 3},
			}
			for rname, r := range readers {
				host, consumed, err := HTTPHost(r, tt.limit)
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("%s: err = %v, want %v", rname, err, tt.wantErr)
					}
				} else if err != nil {
					t.Fatalf("%s: %v", rname, err)
				}
				if host != tt.want {
					t.Errorf("%s: host = %q, want %q", rname, host, tt.want)
				}
				if !strings.HasPrefix(tt.in, string(consumed)) {
					t.Errorf("%s: consumed %q is not a prefix of the input", rname, consumed)
				}
				if tt.limit > 0 && len(consumed) > tt.limit {
					t.Errorf("%s: consumed %d bytes > limit %d", rname, len(consumed), tt.limit)
				}
				if err == nil && rname == "whole" && len(consumed) != len(tt.in) {
					t.Errorf("%s: consumed %d of %d bytes", rname, len(consumed), len(tt.in))
				}
			}
		})
	}
}

// Bytes following the head in the same read are part of consumed, and the
// reader is not touched beyond what consumed says.
func TestHTTPHostBody(t *testing.T) {
	head := "POST /mcp HTTP/1.1\r\nHost: mcp.example\r\nContent-Length: 11\r\n\r\n"
	in := head + `{"a":"b"}` + "\r\n"
	r := strings.NewReader(in)
	host, consumed, err := HTTPHost(r, 0)
	if err != nil || host != "mcp.example" {
		t.Fatalf("got %q, %v", host, err)
	}
	if string(consumed) != in {
		t.Fatalf("consumed %q, want whole input", consumed)
	}
	// With 1-byte reads exactly the head is consumed; the rest is left.
	r = strings.NewReader(in)
	_, consumed, err = HTTPHost(iotest.OneByteReader(r), 0)
	if err != nil || string(consumed) != head || r.Len() != len(in)-len(head) {
		t.Fatalf("consumed %q, left %d, err %v", consumed, r.Len(), err)
	}
}

// Non-HTTP bytes are rejected as soon as they arrive, without waiting for a
// newline that may never come.
func TestHTTPHostFailsFast(t *testing.T) {
	boom := errors.New("would block")
	for _, in := range []string{"\x16\x03\x01", "GE\x00", "PRI * HTTP/2.0\r\n\r\n", "G\rET"} {
		_, consumed, err := HTTPHost(&errAfterReader{b: []byte(in), err: boom}, 0)
		if !errors.Is(err, ErrNotHTTP) {
			t.Errorf("%q: err = %v, want ErrNotHTTP", in, err)
		}
		if string(consumed) != in {
			t.Errorf("%q: consumed %q", in, consumed)
		}
	}
	// A plausible prefix (including a long target across reads) waits.
	for _, in := range []string{"GET", "GET /a?b=c&d", "\r", "\r\nGET /x/y"} {
		_, _, err := HTTPHost(&chunkReader{b: []byte(in), n: 2}, 0)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("%q: err = %v, want io.ErrUnexpectedEOF", in, err)
		}
	}
}

func TestHTTPHostReadError(t *testing.T) {
	boom := errors.New("boom")
	in := "GET / HTTP/1.1\r\nHo"
	_, consumed, err := HTTPHost(&errAfterReader{b: []byte(in), err: boom}, 0)
	if !errors.Is(err, boom) || string(consumed) != in {
		t.Fatalf("err = %v, consumed %q", err, consumed)
	}
}

// Growing the buffer across many reads must keep earlier Host values valid.
func TestHTTPHostLargeHead(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("GET / HTTP/1.1\r\nHost: Big.Example\r\n")
	for b.Len() < 15000 {
		b.WriteString("X-Filler: " + strings.Repeat("z", 90) + "\r\n")
	}
	b.WriteString("host: big.example\r\n\r\n")
	for _, n := range []int{7, 1000, 1 << 20} {
		host, consumed, err := HTTPHost(&chunkReader{b: b.Bytes(), n: n}, 0)
		if err != nil || host != "big.example" || len(consumed) != b.Len() {
			t.Fatalf("chunk %d: %q %d %v", n, host, len(consumed), err)
		}
	}
	if _, _, err := HTTPHost(bytes.NewReader(b.Bytes()), 8<<10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func BenchmarkHTTPHost(b *testing.B) {
	req := []byte("GET /mcp/v1/sse?session=abc HTTP/1.1\r\nHost: Tools.Example.com:443\r\n" +
		"User-Agent: bench/1.0\r\nAccept: text/event-stream\r\nAuthorization: Bearer xyz\r\n\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	r := bytes.NewReader(req)
	for b.Loop() {
		r.Reset(req)
		if _, _, err := HTTPHost(r, 0); err != nil {
			b.Fatal(err)
		}
	}
}
