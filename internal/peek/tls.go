package peek

import (
	"errors"
	"io"
	"slices"
	"strings"
)

const (
	recordHeaderLen = 5
	recordTypeHS    = 0x16
	// maxRecordLen is the largest TLSCiphertext fragment (2^14 + 2048);
	// a plaintext ClientHello record must not exceed it.
	maxRecordLen = 16384 + 2048

	hsTypeClientHello = 1

	extServerName = 0
	extALPN       = 16
)

// ClientHelloInfo is what routing needs from a TLS ClientHello.
type ClientHelloInfo struct {
	ServerName string   // SNI host_name, lower-cased, trailing dot stripped; "" if absent
	ALPN       []string // protocols offered, in order; nil if absent
}

// ClientHello reads TLS records from r until a complete ClientHello handshake
// message is assembled, parses it and returns the info plus every byte
// consumed from r (also on error).
//
// The message may be split across many records and each record across many
// Reads. ClientHello reads each record header and then exactly that record's
// body, so it stops at the end of the record that completes the ClientHello
// and never consumes bytes of whatever follows. At most limit bytes are read
// (DefaultTLSLimit if limit <= 0); a hello that does not fit yields
// ErrTooLarge.
//
// If r reports io.EOF before any byte was read, the error is io.EOF; EOF
// after a partial message is io.ErrUnexpectedEOF. Other read errors (e.g.
// os.ErrDeadlineExceeded) are returned unchanged.
func ClientHello(r io.Reader, limit int) (ClientHelloInfo, []byte, error) {
	if limit <= 0 {
		limit = DefaultTLSLimit
	}
	if limit < recordHeaderLen {
		return ClientHelloInfo{}, nil, ErrTooLarge
	}
	// Start tiny and grow to exactly what the records declare, so memory
	// tracks what the peer actually sent rather than a guess.
	buf := make([]byte, 0, recordHeaderLen)
	buf, err := readMore(r, buf, recordHeaderLen)
	if err != nil {
		return ClientHelloInfo{}, buf, err
	}

	var (
		hs      []byte // handshake bytes assembled so far
		msgLen  = -1   // body length of the first handshake message, once known
		records int
	)
	for {
		// buf always ends with a complete record header here.
		hdr := buf[len(buf)-recordHeaderLen:]
		n := int(hdr[3])<<8 | int(hdr[4])
		if hdr[0] != recordTypeHS || hdr[1] != 3 || hdr[2] > 4 {
			if records == 0 {
				return ClientHelloInfo{}, buf, ErrNotTLS
			}
			return ClientHelloInfo{}, buf, malformed("unexpected record (type %#x, version %#x%02x) inside ClientHello", hdr[0], hdr[1], hdr[2])
		}
		if n == 0 {
			return ClientHelloInfo{}, buf, malformed("empty handshake record")
		}
		if n > maxRecordLen {
			return ClientHelloInfo{}, buf, malformed("record length %d exceeds %d", n, maxRecordLen)
		}
		records++

		// When this record certainly cannot complete the message, read the
		// next record header together with the body: one Read fewer per
		// record and still never past the end of the ClientHello records.
		have := len(hs) + n
		extra := 0
		if have < 4 || (msgLen >= 0 && have < 4+msgLen) {
			extra = recordHeaderLen
		}
		if len(buf)+n+extra > limit {
			return ClientHelloInfo{}, buf, ErrTooLarge
		}
		start := len(buf)
		buf, err = readMore(r, buf, n+extra)
		if err != nil {
			return ClientHelloInfo{}, buf, err
		}
		body := buf[start : start+n]
		if hs == nil {
			// Alias the first record; the capped capacity makes a later
			// append copy instead of overwriting buf.
			hs = body[:n:n]
		} else {
			hs = append(hs, body...)
		}

		if hs[0] != hsTypeClientHello {
			return ClientHelloInfo{}, buf, ErrNotTLS
		}
		if msgLen < 0 && len(hs) >= 4 {
			msgLen = int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
			// Fail fast on declared sizes that cannot fit, before reading
			// (and buffering) any of it.
			if len(buf)-extra+(4+msgLen-len(hs)) > limit {
				return ClientHelloInfo{}, buf, ErrTooLarge
			}
		}
		if msgLen >= 0 && len(hs) >= 4+msgLen {
			info, err := ParseClientHello(hs[:4+msgLen])
			return info, buf, err
		}
		if extra == 0 {
			if len(buf)+recordHeaderLen > limit {
				return ClientHelloInfo{}, buf, ErrTooLarge
			}
			buf, err = readMore(r, buf, recordHeaderLen)
			if err != nil {
				return ClientHelloInfo{}, buf, err
			}
		}
	}
}

// readMore appends exactly n bytes from r to buf. On error the bytes that
// were read are still appended; io.EOF becomes io.ErrUnexpectedEOF unless
// nothing at all has been consumed.
func readMore(r io.Reader, buf []byte, n int) ([]byte, error) {
	buf = slices.Grow(buf, n)
	got, err := io.ReadFull(r, buf[len(buf):len(buf)+n])
	buf = buf[:len(buf)+got]
	if errors.Is(err, io.EOF) && len(buf) > 0 {
		err = io.ErrUnexpectedEOF
	}
	return buf, err
}

// ParseClientHello parses one complete handshake message (type 1, 3-byte
// length, body) — usable for QUIC, where the ClientHello arrives in CRYPTO
// frames. A message of another handshake type yields ErrNotTLS; anything
// else that is wrong, including trailing bytes, yields ErrMalformed.
func ParseClientHello(msg []byte) (ClientHelloInfo, error) {
	if len(msg) < 4 {
		return ClientHelloInfo{}, malformed("short handshake header")
	}
	if msg[0] != hsTypeClientHello {
		return ClientHelloInfo{}, ErrNotTLS
	}
	if n := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]); n != len(msg)-4 {
		return ClientHelloInfo{}, malformed("handshake length %d, have %d bytes", n, len(msg)-4)
	}
	c := cursor(msg[4:])
	if !c.skip(2 + 32) { // legacy_version, random
		return ClientHelloInfo{}, malformed("short ClientHello")
	}
	sid, ok := c.vec8()
	if !ok || len(sid) > 32 {
		return ClientHelloInfo{}, malformed("bad session id")
	}
	suites, ok := c.vec16()
	if !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return ClientHelloInfo{}, malformed("bad cipher suites")
	}
	comp, ok := c.vec8()
	if !ok || len(comp) < 1 {
		return ClientHelloInfo{}, malformed("bad compression methods")
	}
	var info ClientHelloInfo
	if len(c) == 0 {
		return info, nil // extensions are optional
	}
	exts, ok := c.vec16()
	if !ok || len(c) != 0 {
		return ClientHelloInfo{}, malformed("bad extensions block")
	}
	var seen extSet
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		data, ok2 := exts.vec16()
		if !ok1 || !ok2 {
			return ClientHelloInfo{}, malformed("truncated extension")
		}
		if !seen.add(typ) {
			return ClientHelloInfo{}, malformed("duplicate extension %d", typ)
		}
		var err error
		switch typ {
		case extServerName:
			info.ServerName, err = parseSNI(data)
		case extALPN:
			info.ALPN, err = parseALPN(data)
		}
		if err != nil {
			return ClientHelloInfo{}, err
		}
	}
	return info, nil
}

// parseSNI parses the server_name extension (RFC 6066 §3). Like crypto/tls,
// entries of unknown name types are skipped, but they still must be
// well-formed length-prefixed values.
func parseSNI(data cursor) (string, error) {
	list, ok := data.vec16()
	if !ok || len(data) != 0 || len(list) == 0 {
		return "", malformed("bad server_name extension")
	}
	var name []byte
	found := false
	for len(list) > 0 {
		typ, ok1 := list.u8()
		v, ok2 := list.vec16()
		if !ok1 || !ok2 {
			return "", malformed("bad server_name entry")
		}
		if typ != 0 {
			continue
		}
		if found {
			return "", malformed("multiple host_name entries")
		}
		name, found = v, true
	}
	if !found {
		return "", nil
	}
	return normalizeHostname(name)
}

// parseALPN parses the application_layer_protocol_negotiation extension
// (RFC 7301 §3.1). All names share one backing string: two allocations
// regardless of how many protocols are offered.
func parseALPN(data cursor) ([]string, error) {
	list, ok := data.vec16()
	if !ok || len(data) != 0 || len(list) == 0 {
		return nil, malformed("bad ALPN extension")
	}
	count, total := 0, 0
	for l := list; len(l) > 0; {
		p, ok := l.vec8()
		if !ok || len(p) == 0 {
			return nil, malformed("bad ALPN protocol name")
		}
		count++
		total += len(p)
	}
	var sb strings.Builder
	sb.Grow(total)
	for l := list; len(l) > 0; {
		p, _ := l.vec8()
		sb.Write(p)
	}
	all := sb.String()
	out := make([]string, 0, count)
	off := 0
	for l := list; len(l) > 0; {
		p, _ := l.vec8()
		out = append(out, all[off:off+len(p)])
		off += len(p)
	}
	return out, nil
}

// extSet detects duplicate extension types. Real hellos carry a couple of
// dozen extensions, checked by a linear scan of a stack array; past that a
// bitmap keeps hostile inputs with thousands of empty extensions O(n).
type extSet struct {
	n     int
	small [32]uint16
	big   *[65536 / 64]uint64
}

// add records typ and reports whether it was new.
func (s *extSet) add(typ uint16) bool {
	if s.big == nil {
		for _, t := range s.small[:s.n] {
			if t == typ {
				return false
			}
		}
		if s.n < len(s.small) {
			s.small[s.n] = typ
			s.n++
			return true
		}
		s.big = new([65536 / 64]uint64)
		for _, t := range s.small {
			s.big[t/64] |= 1 << (t % 64)
		}
	}
	if s.big[typ/64]&(1<<(typ%64)) != 0 {
		return false
	}
	s.big[typ/64] |= 1 << (typ % 64)
	return true
}

// cursor is a minimal big-endian TLS vector reader.
type cursor []byte

func (c *cursor) skip(n int) bool {
	if len(*c) < n {
		return false
	}
	*c = (*c)[n:]
	return true
}

func (c *cursor) u8() (uint8, bool) {
	if len(*c) < 1 {
		return 0, false
	}
	v := (*c)[0]
	*c = (*c)[1:]
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	if len(*c) < 2 {
		return 0, false
	}
	v := uint16((*c)[0])<<8 | uint16((*c)[1])
	*c = (*c)[2:]
	return v, true
}

func (c *cursor) take(n int) (cursor, bool) {
	if len(*c) < n {
		return nil, false
	}
	v := (*c)[:n:n]
	*c = (*c)[n:]
	return v, true
}

func (c *cursor) vec8() (cursor, bool) {
	n, ok := c.u8()
	if !ok {
		return nil, false
	}
	return c.take(int(n))
}

func (c *cursor) vec16() (cursor, bool) {
	n, ok := c.u16()
	if !ok {
		return nil, false
	}
	return c.take(int(n))
}
