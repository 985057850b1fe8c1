package peek

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestClientHelloReal(t *testing.T) {
	tests := []struct {
		name       string
		serverName string
		alpn       []string
		wantSNI    string
	}{
		{"sni+alpn", "example.com", []string{"h2", "http/1.1"}, "example.com"},
		{"upper-case sni", "WWW.Example.COM", []string{"mcp"}, "www.example.com"},
		{"no alpn", "api.example.org", nil, "api.example.org"},
		{"no sni", "", []string{"h2"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := realHello(t, tt.serverName, tt.alpn...)
			// Default Go config offers X25519MLKEM768: the hello is bigger
			// than a typical single TCP segment payload.
			if len(recs) < 1200 {
				t.Fatalf("hello is only %d bytes; expected a post-quantum key share", len(recs))
			}
			trailer := []byte{0x14, 3, 3, 0, 1, 1} // a CCS record that must not be consumed
			in := append(slices.Clone(recs), trailer...)
			readers := map[string]func() io.Reader{
				"whole":   func() io.Reader { return bytes.NewReader(in) },
				"1-byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(in)) },
				"3-byte":  func() io.Reader { return &chunkReader{b: in, n: 3} },
				"1000":    func() io.Reader { return &chunkReader{b: in, n: 1000} },
				"half":    func() io.Reader { return iotest.HalfReader(bytes.NewReader(in)) },
				"dataerr": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(recs)) },
			}
			for rname, mk := range readers {
				r := mk()
				info, consumed, err := ClientHello(r, 64<<10)
				if err != nil {
					t.Fatalf("%s: %v", rname, err)
				}
				if info.ServerName != tt.wantSNI {
					t.Errorf("%s: ServerName = %q, want %q", rname, info.ServerName, tt.wantSNI)
				}
				if !slices.Equal(info.ALPN, tt.alpn) || (tt.alpn == nil) != (info.ALPN == nil) {
					t.Errorf("%s: ALPN = %q, want %q", rname, info.ALPN, tt.alpn)
				}
				if !bytes.Equal(consumed, recs) {
					t.Errorf("%s: consumed %d bytes, want exactly the %d hello bytes", rname, len(consumed), len(recs))
				}
			}
		})
	}
}

func TestClientHelloReframed(t *testing.T) {
	recs := realHello(t, "frag.example.com", "h2")
	msg := recordBodies(t, recs)
	for _, size := range []int{1, 2, 3, 4, 5, 7, 100, 16384} {
		in := frame(msg, size)
		for _, chunk := range []int{1, 3, 6, 1 << 20} {
			r := &chunkReader{b: append(slices.Clone(in), "trailing"...), n: chunk}
			info, consumed, err := ClientHello(r, 64<<10)
			if err != nil {
				t.Fatalf("records of %d, reads of %d: %v", size, chunk, err)
			}
			if info.ServerName != "frag.example.com" || !slices.Equal(info.ALPN, []string{"h2"}) {
				t.Errorf("records of %d, reads of %d: got %+v", size, chunk, info)
			}
			if !bytes.Equal(consumed, in) {
				t.Errorf("records of %d, reads of %d: consumed %d bytes, want %d", size, chunk, len(consumed), len(in))
			}
			if string(r.b) != "trailing" {
				t.Errorf("records of %d, reads of %d: reader left %q", size, chunk, r.b)
			}
		}
	}
}

// countingReader counts Read calls.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// Reading is chunked: one Read for the first header, then one per record
// (each body is read together with the following header when the message
// is known to continue), plus one header Read after the record that first
// reveals the message length.
func TestClientHelloReadCount(t *testing.T) {
	msg := recordBodies(t, realHello(t, "count.example"))
	for _, size := range []int{2, 100, 1 << 14} {
		in := frame(msg, size)
		records := (len(msg) + size - 1) / size
		r := &countingReader{r: bytes.NewReader(in)}
		if _, _, err := ClientHello(r, 0); err != nil {
			t.Fatal(err)
		}
		want := records + 2
		if records == 1 {
			want = 2
		}
		if r.reads != want {
			t.Errorf("records of %d: %d Reads for %d records, want %d", size, r.reads, records, want)
		}
	}
}

// A record carrying the end of the hello plus another handshake message is
// consumed entirely (records are atomic), but nothing after it.
func TestClientHelloSharedRecord(t *testing.T) {
	msg := synthHello(sniExt("a.example"))
	extra := []byte{2, 0, 0, 1, 0xaa}
	rec := frame(append(slices.Clone(msg), extra...), 1<<14)
	r := bytes.NewReader(append(slices.Clone(rec), 0x17, 3, 3, 0, 5))
	info, consumed, err := ClientHello(r, 0)
	if err != nil || info.ServerName != "a.example" {
		t.Fatalf("got %+v, %v", info, err)
	}
	if !bytes.Equal(consumed, rec) || r.Len() != 5 {
		t.Fatalf("consumed %d bytes (want %d), left %d (want 5)", len(consumed), len(rec), r.Len())
	}
}

func TestClientHelloPadded(t *testing.T) {
	msg := recordBodies(t, realHello(t, "big.example.com", "h2", "http/1.1"))
	msg = appendExtension(t, msg, 21, make([]byte, 17000)) // padding
	in := frame(msg, 16384)
	if len(in) < 16384+5 || in[16384+5] != 0x16 {
		t.Fatalf("padded hello does not span two records")
	}
	for _, chunk := range []int{1 << 20, 1460, 3} {
		info, consumed, err := ClientHello(&chunkReader{b: in, n: chunk}, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if info.ServerName != "big.example.com" || len(info.ALPN) != 2 {
			t.Errorf("got %+v", info)
		}
		if !bytes.Equal(consumed, in) {
			t.Errorf("consumed %d bytes, want %d", len(consumed), len(in))
		}
	}
	// The same hello does not fit a 16KiB limit.
	_, consumed, err := ClientHello(bytes.NewReader(in), 16<<10)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if len(consumed) > 16<<10 || !bytes.HasPrefix(in, consumed) {
		t.Fatalf("consumed %d bytes beyond limit or not a prefix", len(consumed))
	}
}

func TestClientHelloSynthetic(t *testing.T) {
	tests := []struct {
		name    string
		msg     []byte
		wantSNI string
		alpn    []string
		wantErr error
	}{
		{"no extensions", synthHello(), "", nil, nil},
		{"empty extensions", synthHello([]byte{}), "", nil, nil},
		{"trailing dot", synthHello(sniExt("Example.COM.")), "example.com", nil, nil},
		{"underscore", synthHello(sniExt("_acme.example")), "_acme.example", nil, nil},
		{"unknown name type skipped", synthHello(ext(0, vec16(append([]byte{7}, vec16([]byte("x y"))...), append([]byte{0}, vec16([]byte("ok.example"))...)))), "ok.example", nil, nil},
		{"alpn", synthHello(alpnExt("h2", "http/1.1", "mcp")), "", []string{"h2", "http/1.1", "mcp"}, nil},
		{"bad sni space", synthHello(sniExt("exa mple.com")), "", nil, ErrMalformed},
		{"bad sni nul", synthHello(sniExt("ex\x00.com")), "", nil, ErrMalformed},
		{"bad sni utf8", synthHello(sniExt("bücher.example")), "", nil, ErrMalformed},
		{"bad sni slash", synthHello(sniExt("a/b")), "", nil, ErrMalformed},
		{"empty sni", synthHello(sniExt("")), "", nil, ErrMalformed},
		{"dot sni", synthHello(sniExt(".")), "", nil, ErrMalformed},
		{"two dots sni", synthHello(sniExt("..")), "", nil, ErrMalformed},
		{"double dot sni", synthHello(sniExt("a..example")), "", nil, ErrMalformed},
		{"leading dot sni", synthHello(sniExt(".a.example")), "", nil, ErrMalformed},
		{"long label sni", synthHello(sniExt(strings.Repeat("a", 64) + ".example")), "", nil, ErrMalformed},
		{"max label sni", synthHello(sniExt(strings.Repeat("a", 63) + ".example")), strings.Repeat("a", 63) + ".example", nil, nil},
		{"254-byte sni", synthHello(sniExt(strings.Repeat("abcdefg.", 31) + "abcdef")), "", nil, ErrMalformed},
		{"253-byte sni", synthHello(sniExt(strings.Repeat("abcdefg.", 31) + "abcde.")), strings.Repeat("abcdefg.", 31) + "abcde", nil, nil},
		{"two host names", synthHello(sniExt("a.example", "b.example")), "", nil, ErrMalformed},
		{"empty sni list", synthHello(ext(0, vec16())), "", nil, ErrMalformed},
		{"empty sni ext", synthHello(ext(0, nil)), "", nil, ErrMalformed},
		{"sni trailing junk", synthHello(ext(0, append(vec16(append([]byte{0}, vec16([]byte("a"))...)), 0))), "", nil, ErrMalformed},
		{"duplicate sni", synthHello(sniExt("a.example"), sniExt("a.example")), "", nil, ErrMalformed},
		{"duplicate alpn", synthHello(alpnExt("h2"), alpnExt("h2")), "", nil, ErrMalformed},
		{"duplicate unknown", synthHello(ext(0xfe0d, nil), ext(0xfe0d, nil)), "", nil, ErrMalformed},
		{"empty alpn list", synthHello(ext(extALPN, vec16())), "", nil, ErrMalformed},
		{"empty alpn name", synthHello(alpnExt("h2", "")), "", nil, ErrMalformed},
		{"alpn overflow", synthHello(ext(extALPN, vec16([]byte{5, 'h'}))), "", nil, ErrMalformed},
		{"extension overflow", synthHello([]byte{0, 21, 0, 9, 0}), "", nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := frame(tt.msg, 1<<14)
			info, consumed, err := ClientHello(bytes.NewReader(in), 0)
			if !bytes.Equal(consumed, in) {
				t.Errorf("consumed %d bytes, want %d", len(consumed), len(in))
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.ServerName != tt.wantSNI || !slices.Equal(info.ALPN, tt.alpn) {
				t.Errorf("got %+v, want %q %q", info, tt.wantSNI, tt.alpn)
			}
		})
	}
}

func TestClientHelloManyExtensions(t *testing.T) {
	var exts [][]byte
	for i := range 300 {
		exts = append(exts, ext(uint16(1000+i*7), nil))
	}
	exts = append(exts, sniExt("many.example"))
	info, err := ParseClientHello(synthHello(exts...))
	if err != nil || info.ServerName != "many.example" {
		t.Fatalf("distinct: %+v %v", info, err)
	}
	// Duplicates are found both within the first few and far apart.
	for _, dup := range []uint16{1000, 1000 + 31*7, 1000 + 32*7, 1000 + 299*7} {
		_, err := ParseClientHello(synthHello(append(slices.Clone(exts), ext(dup, nil))...))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("duplicate %d: err = %v", dup, err)
		}
	}
}

func TestParseClientHelloErrors(t *testing.T) {
	good := synthHello(sniExt("a.example"))
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	setLen := func(b []byte) []byte {
		n := len(b) - 4
		b[1], b[2], b[3] = byte(n>>16), byte(n>>8), byte(n)
		return b
	}
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"server hello", mod(func(b []byte) []byte { b[0] = 2; return b }), ErrNotTLS},
		{"length too long", mod(func(b []byte) []byte { b[3]++; return b }), ErrMalformed},
		{"trailing byte", append(slices.Clone(good), 0), ErrMalformed},
		{"session id 33", setLen(slices.Concat([]byte{1, 0, 0, 0, 3, 3}, make([]byte, 32), vec8(make([]byte, 33)), vec16([]byte{0x13, 1}), vec8([]byte{0}))), ErrMalformed},
		{"odd suites", setLen(append([]byte{1, 0, 0, 0, 3, 3}, append(make([]byte, 32), 0, 0, 3, 1, 2, 3, 1, 0)...)), ErrMalformed},
		{"no suites", setLen(append([]byte{1, 0, 0, 0, 3, 3}, append(make([]byte, 32), 0, 0, 0, 1, 0)...)), ErrMalformed},
		{"no compression", setLen(append([]byte{1, 0, 0, 0, 3, 3}, append(make([]byte, 32), 0, 0, 2, 0x13, 1, 0)...)), ErrMalformed},
		{"junk after extensions", setLen(append(slices.Clone(good), 0)), ErrMalformed},
		{"lone extension length byte", setLen(append(synthHello(), 0)), ErrMalformed},
	}
	// The hand-built messages are valid apart from the one defect.
	if _, err := ParseClientHello(setLen(slices.Concat([]byte{1, 0, 0, 0, 3, 3}, make([]byte, 32), vec8(make([]byte, 32)), vec16([]byte{0x13, 1}), vec8([]byte{0})))); err != nil {
		t.Fatalf("control: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseClientHello(tt.msg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestClientHelloRecordErrors(t *testing.T) {
	good := frame(synthHello(sniExt("a.example")), 1<<14)
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	twoRecs := frame(synthHello(sniExt("a.example")), 20)
	tests := []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0, ErrNotTLS},
		{"application data", mod(func(b []byte) []byte { b[0] = 0x17; return b }), 0, ErrNotTLS},
		{"sslv2 style", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0}, 0, ErrNotTLS},
		{"version 2.0", mod(func(b []byte) []byte { b[1] = 2; return b }), 0, ErrNotTLS},
		{"version 3.5", mod(func(b []byte) []byte { b[2] = 5; return b }), 0, ErrNotTLS},
		{"server hello", mod(func(b []byte) []byte { b[5] = 2; return b }), 0, ErrNotTLS},
		{"zero length record", []byte{0x16, 3, 1, 0, 0}, 0, ErrMalformed},
		{"oversized record", []byte{0x16, 3, 1, 0x48, 0x01}, 0, ErrMalformed},
		{"alert mid-message", func() []byte { b := slices.Clone(twoRecs); b[25] = 0x15; return b }(), 0, ErrMalformed},
		{"bad version mid-message", func() []byte { b := slices.Clone(twoRecs); b[26] = 4; return b }(), 0, ErrMalformed},
		{"zero record mid-message", append(slices.Clone(twoRecs[:25]), 0x16, 3, 1, 0, 0), 0, ErrMalformed},
		{"limit below header", good, 4, ErrTooLarge},
		{"limit below record", good, 20, ErrTooLarge},
		{"limit one short", good, len(good) - 1, ErrTooLarge},
		{"limit mid multi-record", twoRecs, len(twoRecs) - 1, ErrTooLarge},
		{"huge declared handshake", []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, 0, ErrTooLarge},
		{"huge declared handshake split", []byte{0x16, 3, 1, 0, 2, 1, 0xff, 0x16, 3, 1, 0, 2, 0xff, 0xff}, 0, ErrTooLarge},
		{"empty", nil, 0, io.EOF},
		{"eof in header", good[:3], 0, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, consumed, err := ClientHello(bytes.NewReader(tt.in), tt.limit)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !bytes.HasPrefix(tt.in, consumed) {
				t.Fatalf("consumed is not a prefix of the input")
			}
			if tt.limit > 0 && len(consumed) > tt.limit {
				t.Fatalf("consumed %d > limit %d", len(consumed), tt.limit)
			}
		})
	}
	// A limit exactly the hello size is enough.
	if _, _, err := ClientHello(bytes.NewReader(good), len(good)); err != nil {
		t.Fatalf("exact limit: %v", err)
	}
	if _, _, err := ClientHello(bytes.NewReader(twoRecs), len(twoRecs)); err != nil {
		t.Fatalf("exact limit, many records: %v", err)
	}
}

// Every truncation of a real hello is an unexpected EOF with all the bytes
// returned; truncating the message itself (consistent lengths) is malformed
// except at the one boundary where a hello without extensions remains.
func TestClientHelloTruncated(t *testing.T) {
	recs := realHello(t, "trunc.example", "h2")
	for _, in := range [][]byte{recs, frame(recordBodies(t, recs), 50)} {
		for i := 0; i < len(in); i++ {
			_, consumed, err := ClientHello(bytes.NewReader(in[:i]), 0)
			want := io.ErrUnexpectedEOF
			if i == 0 {
				want = io.EOF
			}
			if err != want {
				t.Fatalf("truncated at %d: err = %v, want %v", i, err, want)
			}
			if !bytes.Equal(consumed, in[:i]) {
				t.Fatalf("truncated at %d: consumed %d bytes", i, len(consumed))
			}
		}
	}
	msg := recordBodies(t, recs)
	boundary := extensionsOffset(t, msg)
	for i := 4; i < len(msg); i++ {
		m := slices.Clone(msg[:i])
		n := i - 4
		m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
		_, err := ParseClientHello(m)
		if i == boundary {
			if err != nil {
				t.Errorf("hello cut before extensions: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("message truncated to %d: err = %v, want ErrMalformed", i, err)
		}
		// The raw prefix without fixed-up length must fail too.
		if _, err := ParseClientHello(msg[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("raw prefix %d: err = %v", i, err)
		}
	}
}

func TestClientHelloReadErrors(t *testing.T) {
	recs := realHello(t, "slow.example")
	boom := errors.New("boom")
	for _, cut := range []int{0, 3, 5, 100} {
		_, consumed, err := ClientHello(&errAfterReader{b: recs[:cut], err: boom}, 0)
		if !errors.Is(err, boom) {
			t.Errorf("cut %d: err = %v, want boom", cut, err)
		}
		if !bytes.Equal(consumed, recs[:cut]) {
			t.Errorf("cut %d: consumed %d bytes", cut, len(consumed))
		}
	}

	// A real deadline on a net.Conn surfaces as os.ErrDeadlineExceeded.
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go c2.Write(recs[:50])
	if err := c1.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, consumed, err := ClientHello(c1, 0)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want os.ErrDeadlineExceeded", err)
	}
	if !bytes.Equal(consumed, recs[:50]) {
		t.Fatalf("consumed %d bytes, want 50", len(consumed))
	}
}

// Attacker-declared lengths must not turn into big allocations: the buffer
// only grows with what was actually received.
func TestClientHelloAllocBound(t *testing.T) {
	in := []byte{0x16, 3, 1, 0, 4, 1, 0, 0xff, 0xff}
	_, consumed, err := ClientHello(iotest.OneByteReader(bytes.NewReader(in)), 1<<20)
	if !errors.Is(err, io.ErrUnexpectedEOF) || cap(consumed) > 4096 {
		t.Fatalf("err = %v, cap(consumed) = %d", err, cap(consumed))
	}
}

func BenchmarkClientHello(b *testing.B) {
	recs := realHello(b, "bench.example.com", "h2", "http/1.1")
	b.ReportAllocs()
	b.SetBytes(int64(len(recs)))
	r := bytes.NewReader(recs)
	for b.Loop() {
		r.Reset(recs)
		if _, _, err := ClientHello(r, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	msg := recordBodies(b, realHello(b, "bench.example.com", "h2", "http/1.1"))
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := ParseClientHello(msg); err != nil {
			b.Fatal(err)
		}
	}
}
