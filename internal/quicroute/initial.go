package quicroute

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
)

// QUIC versions this package can decrypt.
const (
	Version1 uint32 = 0x00000001 // RFC 9000
	Version2 uint32 = 0x6b3343cf // RFC 9369
)

// MinInitialDatagramSize is the smallest UDP payload that may carry a client
// Initial (RFC 9000 §14.1): servers must discard smaller ones, and requiring
// it means a peer pays 1200 bytes for each decryption it makes us do.
const MinInitialDatagramSize = 1200

const (
	maxCIDLenV1 = 20 // RFC 9000 §17.2: v1 (and v2) ids are at most 20 bytes
	// minClientDCIDLen: a client's first Initial must use an unpredictable
	// DCID of at least 8 bytes (RFC 9000 §7.2).
	minClientDCIDLen = 8
	sampleLen        = 16
	tagLen           = 16
	maxVarint        = 1<<62 - 1
)

// Errors; match with errors.Is. Most are wrapped with detail.
var (
	// ErrShortHeader: a 1-RTT packet. It is not an Initial; route it by its
	// connection id.
	ErrShortHeader = errors.New("quicroute: short header packet")
	// ErrNotInitial: a long header packet of another type (0-RTT,
	// Handshake, Retry) or a Version Negotiation packet.
	ErrNotInitial = errors.New("quicroute: not an Initial packet")
	// ErrUnsupportedVersion: a long header with a version other than v1
	// and v2; the error is a *VersionError.
	ErrUnsupportedVersion = errors.New("quicroute: unsupported QUIC version")
	// ErrDatagramTooSmall: an Initial in a datagram under 1200 bytes.
	ErrDatagramTooSmall = errors.New("quicroute: Initial in a datagram smaller than 1200 bytes")
	// ErrMalformed: truncated header, bad lengths, forbidden frames, …
	ErrMalformed = errors.New("quicroute: malformed packet")
	// ErrDecrypt: the packet does not authenticate under the client
	// Initial keys of its DCID: garbage, a server-side Initial, or a
	// client Initial sent after the client switched to a server-chosen
	// DCID (those stay keyed by the original DCID).
	ErrDecrypt = errors.New("quicroute: Initial packet does not decrypt")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// VersionError reports a long header packet of a version this package does
// not handle. DCID and SCID are what a Version Negotiation reply echoes
// (swapped); they alias the datagram.
type VersionError struct {
	Version    uint32
	DCID, SCID []byte
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("quicroute: unsupported QUIC version %#08x", e.Version)
}

// Is makes errors.Is(err, ErrUnsupportedVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrUnsupportedVersion }

// CryptoFrame is the payload of one CRYPTO frame: Data belongs at Offset of
// the Initial crypto stream.
type CryptoFrame struct {
	Offset uint64
	Data   []byte
}

// Initial is a decrypted client Initial packet. DCID, SCID and the CRYPTO
// data live in memory owned by the Initial, not in the datagram.
type Initial struct {
	Version      uint32
	DCID, SCID   []byte
	TokenLen     int    // length of the address-validation token, 0 if none
	PacketNumber uint64 // full packet number (see decodePacketNumber)
	// HeaderLen is the length of the header including the packet number;
	// PacketLen the length of the whole packet. datagram[PacketLen:] holds
	// coalesced packets (Handshake, 0-RTT) that the caller may ignore:
	// they share the DCID, so they route with this one (RFC 9000 §12.2).
	HeaderLen, PacketLen int
	Crypto               []CryptoFrame // in the order of the frames
	// ConnectionClose: the packet carried a CONNECTION_CLOSE frame; frames
	// after it are not parsed.
	ConnectionClose bool
}

// Long header packet types, independent of the version's bit encoding.
type packetType uint8

const (
	typeInitial packetType = iota
	type0RTT
	typeHandshake
	typeRetry
)

func (t packetType) String() string {
	return [...]string{"Initial", "0-RTT", "Handshake", "Retry"}[t]
}

// longHeader is the version-independent part of a long header (RFC 8999
// §5.1) plus the packet type for the versions we know.
type longHeader struct {
	version    uint32
	typ        packetType // meaningful for v1 and v2 only
	dcid, scid []byte     // alias the datagram
	end        int        // offset just past the SCID
}

// parseLongHeader reads the invariant fields. It fails with ErrShortHeader,
// ErrMalformed, ErrNotInitial (Version Negotiation) or a *VersionError; the
// last still comes with the header filled in.
func parseLongHeader(b []byte) (longHeader, error) {
	var h longHeader
	if len(b) == 0 {
		return h, malformed("empty datagram")
	}
	if b[0]&0x80 == 0 {
		return h, ErrShortHeader
	}
	if len(b) < 6 {
		return h, malformed("long header truncated")
	}
	h.version = binary.BigEndian.Uint32(b[1:5])
	// RFC 8999 allows ids of up to 255 bytes in versions we do not know;
	// a Version Negotiation reply must echo them, so read them as such.
	n := int(b[5])
	off := 6
	if len(b) < off+n+1 {
		return h, malformed("destination connection id truncated")
	}
	h.dcid = b[off : off+n]
	off += n
	n = int(b[off])
	off++
	if len(b) < off+n {
		return h, malformed("source connection id truncated")
	}
	h.scid = b[off : off+n]
	h.end = off + n

	switch h.version {
	case 0:
		return h, fmt.Errorf("%w: version negotiation packet", ErrNotInitial)
	case Version1, Version2:
	default:
		return h, &VersionError{Version: h.version, DCID: h.dcid, SCID: h.scid}
	}
	if len(h.dcid) > maxCIDLenV1 || len(h.scid) > maxCIDLenV1 {
		return h, malformed("connection id longer than %d bytes", maxCIDLenV1)
	}
	// The fixed bit (0x40) is not checked: RFC 9287 lets a client that
	// remembers the server's grease_quic_bit clear it, even in Initials.
	bits := b[0] >> 4 & 3
	if h.version == Version2 {
		// RFC 9369 §3.2: Initial 0b01, 0-RTT 0b10, Handshake 0b11, Retry 0b00.
		bits = (bits + 3) & 3
	}
	h.typ = packetType(bits)
	return h, nil
}

// readVarint decodes a QUIC variable-length integer (RFC 9000 §16).
func readVarint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0, false
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, n, true
}

// initialSecrets are the client's Initial packet protection keys.
type initialSecrets struct {
	key, iv, hp []byte
}

var (
	// RFC 9001 §5.2.
	saltV1 = []byte{0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a}
	// RFC 9369 §3.3.1.
	saltV2 = []byte{0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9}
)

// clientInitialSecrets derives the client Initial key, IV and header
// protection key from the client's original DCID (RFC 9001 §5.2; RFC 9369
// §3.3 changes the salt and the "quic …" labels to "quicv2 …").
func clientInitialSecrets(version uint32, dcid []byte) initialSecrets {
	salt, prefix := saltV1, "quic "
	if version == Version2 {
		salt, prefix = saltV2, "quicv2 "
	}
	initial := must(hkdf.Extract(sha256.New, dcid, salt))
	client := expandLabel(initial, "client in", sha256.Size)
	return initialSecrets{
		key: expandLabel(client, prefix+"key", 16),
		iv:  expandLabel(client, prefix+"iv", 12),
		hp:  expandLabel(client, prefix+"hp", 16),
	}
}

// expandLabel is TLS 1.3 HKDF-Expand-Label with an empty context
// (RFC 8446 §7.1).
func expandLabel(secret []byte, label string, length int) []byte {
	info := make([]byte, 0, 4+6+len(label))
	info = append(info, byte(length>>8), byte(length), byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	return must(hkdf.Expand(sha256.New, secret, string(info), length))
}

// must is for operations that cannot fail with the fixed sizes used here
// (HKDF output ≤ 255·32 bytes, 16-byte AES keys, 12-byte GCM nonces).
func must[T any](v T, err error) T {
	if err != nil {
		panic("quicroute: " + err.Error())
	}
	return v
}

// ParseInitial parses and decrypts the first packet of datagram, which must
// be a client Initial of QUIC v1 or v2, and returns its CRYPTO frames.
//
// It does not modify datagram. Errors: ErrShortHeader, ErrNotInitial,
// ErrUnsupportedVersion (*VersionError), ErrDatagramTooSmall, ErrMalformed,
// ErrDecrypt.
//
// The packet number is decoded as the first packet the server receives
// (RFC 9000 §17.1, no packet acknowledged yet), which makes it the
// truncated value; that is exact for a connection's first packets and
// only used here to recognise duplicates.
func ParseInitial(datagram []byte) (*Initial, error) {
	h, err := parseLongHeader(datagram)
	if err != nil {
		return nil, err
	}
	if h.typ != typeInitial {
		return nil, fmt.Errorf("%w: %s packet", ErrNotInitial, h.typ)
	}
	if len(datagram) < MinInitialDatagramSize {
		return nil, ErrDatagramTooSmall
	}
	off := h.end
	tokenLen, n, ok := readVarint(datagram[off:])
	if !ok || tokenLen > uint64(len(datagram)-off-n) {
		return nil, malformed("token truncated")
	}
	off += n + int(tokenLen)
	length, n, ok := readVarint(datagram[off:])
	if !ok || length > uint64(len(datagram)-off-n) {
		return nil, malformed("packet length %d exceeds datagram", length)
	}
	pnOff := off + n
	end := pnOff + int(length)
	// RFC 9001 §5.4.2: the sample starts 4 bytes after the start of the
	// packet number, whatever its real length.
	if int(length) < 4+sampleLen {
		return nil, malformed("packet too short for header protection sample")
	}

	keys := clientInitialSecrets(h.version, h.dcid)
	hp := must(aes.NewCipher(keys.hp))

	// Work on a copy: the caller's datagram stays untouched, and the
	// decrypted payload (which the CRYPTO frames point into) is ours.
	pkt := make([]byte, end)
	copy(pkt, datagram)
	var mask [aes.BlockSize]byte
	hp.Encrypt(mask[:], pkt[pnOff+4:pnOff+4+sampleLen])
	pkt[0] ^= mask[0] & 0x0f // long header: 4 protected bits
	pnLen := int(pkt[0]&3) + 1
	var pn uint64
	for i := range pnLen {
		pkt[pnOff+i] ^= mask[1+i]
		pn = pn<<8 | uint64(pkt[pnOff+i])
	}
	hdrLen := pnOff + pnLen
	if end-hdrLen < tagLen {
		return nil, malformed("payload shorter than the AEAD tag")
	}

	aead := must(cipher.NewGCM(must(aes.NewCipher(keys.key))))
	var nonce [12]byte
	copy(nonce[:], keys.iv)
	for i := range 8 {
		nonce[4+i] ^= byte(pn >> (56 - 8*i))
	}
	payload, err := aead.Open(pkt[hdrLen:hdrLen], nonce[:], pkt[hdrLen:end], pkt[:hdrLen])
	if err != nil {
		return nil, ErrDecrypt
	}
	// Only now: the reserved bits are protected, so their value means
	// something only once the packet authenticated (RFC 9000 §17.2).
	if pkt[0]&0x0c != 0 {
		return nil, malformed("reserved header bits set")
	}

	in := &Initial{
		Version:      h.version,
		DCID:         pkt[6 : 6+len(h.dcid) : 6+len(h.dcid)],
		SCID:         pkt[h.end-len(h.scid) : h.end : h.end],
		TokenLen:     int(tokenLen),
		PacketNumber: pn,
		HeaderLen:    hdrLen,
		PacketLen:    end,
	}
	if err := parseFrames(payload, in); err != nil {
		return nil, err
	}
	return in, nil
}

// Frame types allowed in Initial packets (RFC 9000 §12.4, Table 3).
const (
	framePadding         = 0x00
	framePing            = 0x01
	frameACK             = 0x02
	frameACKECN          = 0x03
	frameCrypto          = 0x06
	frameConnectionClose = 0x1c
)

// parseFrames walks the decrypted payload. Any frame type not allowed in an
// Initial is a protocol violation, so rejecting it keeps the router from
// buffering anything else; frame types are single bytes in this set (a
// longer varint encoding of a type is itself an error, RFC 9000 §12.4).
func parseFrames(p []byte, in *Initial) error {
	if len(p) == 0 {
		return malformed("packet without frames") // RFC 9000 §12.4
	}
	for len(p) > 0 {
		typ := p[0]
		p = p[1:]
		switch typ {
		case framePadding:
			for len(p) > 0 && p[0] == 0 {
				p = p[1:]
			}
		case framePing:
		case frameACK, frameACKECN:
			rest, err := skipACK(p, typ == frameACKECN)
			if err != nil {
				return err
			}
			p = rest
		case frameCrypto:
			off, n, ok := readVarint(p)
			if !ok {
				return malformed("CRYPTO offset truncated")
			}
			p = p[n:]
			l, n, ok := readVarint(p)
			if !ok || l > uint64(len(p)-n) {
				return malformed("CRYPTO data truncated")
			}
			p = p[n:]
			if off+l > maxVarint { // RFC 9000 §19.6
				return malformed("CRYPTO frame ends beyond 2^62-1")
			}
			in.Crypto = append(in.Crypto, CryptoFrame{Offset: off, Data: p[:l:l]})
			p = p[l:]
		case frameConnectionClose:
			// error code, frame type, reason phrase
			for range 2 {
				_, n, ok := readVarint(p)
				if !ok {
					return malformed("CONNECTION_CLOSE truncated")
				}
				p = p[n:]
			}
			l, n, ok := readVarint(p)
			if !ok || l > uint64(len(p)-n) {
				return malformed("CONNECTION_CLOSE reason truncated")
			}
			// The client gave up; what follows does not matter.
			in.ConnectionClose = true
			return nil
		default:
			return malformed("frame type %#x not allowed in an Initial packet", typ)
		}
	}
	return nil
}

// skipACK returns p after an ACK frame body (RFC 9000 §19.3).
func skipACK(p []byte, ecn bool) ([]byte, error) {
	var f [4]uint64 // largest acknowledged, delay, range count, first range
	for i := range f {
		v, n, ok := readVarint(p)
		if !ok {
			return nil, malformed("ACK frame truncated")
		}
		f[i], p = v, p[n:]
	}
	if f[3] > f[0] {
		return nil, malformed("ACK first range exceeds largest acknowledged")
	}
	// Each range is at least two bytes: reject absurd counts before
	// looping over them.
	if f[2] > uint64(len(p)/2) {
		return nil, malformed("ACK range count %d exceeds frame", f[2])
	}
	n := 2 * int(f[2])
	if ecn {
		n += 3 // ECT(0), ECT(1), ECN-CE counts
	}
	for range n {
		_, l, ok := readVarint(p)
		if !ok {
			return nil, malformed("ACK frame truncated")
		}
		p = p[l:]
	}
	return p, nil
}

// AppendVersionNegotiation appends to dst a Version Negotiation packet
// (RFC 9000 §17.2.1, RFC 8999 §6) answering a client packet whose ids are
// clientDCID and clientSCID (see VersionError) and offering versions,
// typically Version1, Version2 and one reserved 0x?a?a?a?a version for
// greasing (RFC 9000 §6.3). Send it only for datagrams of at least
// MinInitialDatagramSize bytes, and never in reply to a Version
// Negotiation packet.
func AppendVersionNegotiation(dst, clientDCID, clientSCID []byte, versions ...uint32) []byte {
	// The low bits are arbitrary; 0x40 makes it look like other QUIC
	// packets to middleboxes, as RFC 9000 recommends.
	dst = append(dst, 0xc0|byte(mrand.Uint32()&0x3f), 0, 0, 0, 0)
	dst = append(dst, byte(len(clientSCID)))
	dst = append(dst, clientSCID...)
	dst = append(dst, byte(len(clientDCID)))
	dst = append(dst, clientDCID...)
	for _, v := range versions {
		dst = binary.BigEndian.AppendUint32(dst, v)
	}
	return dst
}
