package peek

import (
	"bytes"
	"io"
)

// HTTPHost reads an HTTP/1.x request head (request line and header fields up
// to the empty line) from r and returns the authority: the host of an
// absolute-form request-target if present, else the Host header value. The
// host is lower-cased with any port and trailing dot removed; IPv6 literals
// are returned without brackets in canonical form ("[::1]:80" -> "::1").
//
// Reads are done in chunks, so consumed may extend past the head into the
// body; all of it is returned, also on error. At most limit bytes are read
// (DefaultHTTPLimit if limit <= 0); a head that does not end within them
// yields ErrTooLarge. EOF handling is as for ClientHello.
//
// Parsing follows RFC 9112 strictly where it matters for routing safety:
// obs-fold, whitespace before the colon, and conflicting Host fields are
// ErrMalformed. Bare LF line endings and leading empty lines are tolerated.
func HTTPHost(r io.Reader, limit int) (host string, consumed []byte, err error) {
	if limit <= 0 {
		limit = DefaultHTTPLimit
	}
	buf := make([]byte, 0, min(limit, 1024))
	var p headParser
	for {
		if len(buf) >= limit {
			return "", buf, ErrTooLarge
		}
		if len(buf) == cap(buf) {
			// Double, but never beyond limit so we cannot over-read it.
			nb := make([]byte, len(buf), min(2*cap(buf), limit))
			copy(nb, buf)
			buf = nb
		}
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			done, perr := p.feed(buf)
			if perr != nil {
				return "", buf, perr
			}
			if done {
				return p.host, buf, nil
			}
		}
		if rerr != nil {
			if rerr == io.EOF && len(buf) > 0 {
				rerr = io.ErrUnexpectedEOF
			}
			return "", buf, rerr
		}
	}
}

// headParser consumes the request head incrementally, line by line, as
// chunks arrive.
type headParser struct {
	pos        int // start of the current, incomplete line
	scanned    int // buf[pos:scanned] is known to hold no '\n'
	gotReqLine bool
	methodDone bool // a SP ending the method has been seen (in a partial line)

	absHost  string // host from an absolute-form target; "" if none
	hostSeen bool
	hostVal  []byte // first Host field value (aliases an old buf: never mutated)

	host string // result
}

// feed processes the complete lines in buf not yet seen. It reports done
// once the empty line ending the head has been parsed.
func (p *headParser) feed(buf []byte) (done bool, err error) {
	for {
		i := bytes.IndexByte(buf[p.scanned:], '\n')
		if i < 0 {
			if !p.gotReqLine && !p.methodDone {
				// Reject non-HTTP (e.g. TLS on the HTTP port) before a newline
				// arrives instead of waiting for the limit or a timeout.
				done, err := checkMethodPrefix(buf[p.pos:], p.scanned-p.pos)
				if err != nil {
					return false, err
				}
				p.methodDone = done
			}
			p.scanned = len(buf)
			return false, nil
		}
		end := p.scanned + i
		line := buf[p.pos:end]
		p.pos, p.scanned = end+1, end+1
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if !p.gotReqLine {
			if len(line) == 0 {
				continue // RFC 9112 §2.2: ignore empty lines before the request line
			}
			if err := p.requestLine(line); err != nil {
				return false, err
			}
			p.gotReqLine = true
			continue
		}
		if len(line) == 0 {
			return true, p.finish()
		}
		if err := p.field(line); err != nil {
			return false, err
		}
	}
}

// checkMethodPrefix validates the not yet terminated start of the request
// line: up to the first SP it must be a token. partial[:from] was already
// checked and holds no SP. It reports whether the method is complete.
func checkMethodPrefix(partial []byte, from int) (methodDone bool, err error) {
	for i := from; i < len(partial); i++ {
		c := partial[i]
		if c == ' ' {
			if i == 0 {
				return false, notHTTP("request line starts with a space")
			}
			return true, nil
		}
		// A lone CR may be the start of an empty line preceding the request.
		if !isTchar(c) && !(c == '\r' && i == 0) {
			return false, notHTTP("invalid byte %q in method", c)
		}
	}
	return false, nil
}

func notHTTP(format string, args ...any) error {
	return wrapf(ErrNotHTTP, format, args...)
}

func (p *headParser) requestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return notHTTP("bad request line")
	}
	for _, c := range line[:sp1] {
		if !isTchar(c) {
			return notHTTP("invalid byte %q in method", c)
		}
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return notHTTP("bad request line")
	}
	target, version := rest[:sp2], rest[sp2+1:]
	// Case-sensitive per RFC 9112 §2.3; HTTP/2.0 (the h2c prior-knowledge
	// preface "PRI * HTTP/2.0") and anything else is not ours to route.
	if len(version) != 8 || string(version[:7]) != "HTTP/1." || version[7] < '0' || version[7] > '9' {
		return notHTTP("unsupported version %q", version)
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return notHTTP("invalid byte %q in request target", c)
		}
	}
	auth, ok := absoluteAuthority(target)
	if !ok {
		return nil
	}
	if len(auth) == 0 {
		return malformed("absolute-form target without host")
	}
	if bytes.IndexByte(auth, '@') >= 0 {
		// RFC 9110 §4.2.4: userinfo in http(s) URIs is to be treated as an error.
		return malformed("userinfo in request target")
	}
	h, err := normalizeAuthority(auth)
	if err != nil {
		return err
	}
	p.absHost = h
	return nil
}

// absoluteAuthority returns the authority component if target is in
// absolute-form (scheme "://" authority ...).
func absoluteAuthority(target []byte) ([]byte, bool) {
	if len(target) == 0 || !isAlpha(target[0]) {
		return nil, false
	}
	i := 1
	for i < len(target) && (isAlpha(target[i]) || isDigit(target[i]) || target[i] == '+' || target[i] == '-' || target[i] == '.') {
		i++
	}
	if !bytes.HasPrefix(target[i:], []byte("://")) {
		return nil, false
	}
	auth := target[i+3:]
	for j, c := range auth {
		if c == '/' || c == '?' || c == '#' {
			return auth[:j], true
		}
	}
	return auth, true
}

func (p *headParser) field(line []byte) error {
	if line[0] == ' ' || line[0] == '\t' {
		return malformed("obsolete line folding")
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return malformed("header line without colon")
	}
	if colon == 0 {
		return malformed("empty header field name")
	}
	name := line[:colon]
	for _, c := range name {
		if c == ' ' || c == '\t' {
			return malformed("whitespace between field name and colon")
		}
		if !isTchar(c) {
			return malformed("invalid byte %q in field name", c)
		}
	}
	value := trimOWS(line[colon+1:])
	// RFC 9110 §5.5: CR, LF and NUL inside a value must be rejected.
	if bytes.IndexByte(value, '\r') >= 0 || bytes.IndexByte(value, 0) >= 0 {
		return malformed("invalid byte in field value")
	}
	if len(name) != 4 || !bytes.EqualFold(name, []byte("host")) {
		return nil
	}
	if p.hostSeen {
		if !bytes.EqualFold(p.hostVal, value) {
			return malformed("conflicting Host header fields")
		}
		return nil
	}
	p.hostSeen, p.hostVal = true, value
	return nil
}

func (p *headParser) finish() error {
	if p.absHost != "" {
		// RFC 9112 §3.2.2: absolute-form target overrides Host.
		p.host = p.absHost
		return nil
	}
	if len(p.hostVal) == 0 {
		return ErrNoHost
	}
	h, err := normalizeAuthority(p.hostVal)
	if err != nil {
		return err
	}
	p.host = h
	return nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// tchar per RFC 9110 §5.6.2.
var tcharTable = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = isAlpha(byte(c)) || isDigit(byte(c))
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

func isTchar(c byte) bool { return tcharTable[c] }
