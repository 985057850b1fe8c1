package quicroute

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
)

// CIDLen is the length of every server-chosen connection id.
//
// It must be fixed because short header packets do not carry it: the
// supervisor reads the first CIDLen bytes after the first byte, and
// quic-go's Transport demands one length per transport (all workers).
// Eight bytes is the smallest length RFC 9000 §7.2 asks of unpredictable
// client ids and quic-go's own minimum for Initials; it holds a config
// byte, the encrypted worker id and a 40-bit random nonce. Longer ids
// would only cost bytes in every packet.
const CIDLen = 8

// Connection id layouts (8 bytes), told apart by the config bits:
//
//	config 1 (wide, this build):
//	byte 0      cccttttt  c: config id (1), t: 5-bit check
//	bytes 1-2   16-bit worker id (big endian) XOR pad
//	bytes 3-7   random nonce (40 bits)
//
//	config 0 (narrow, the previous format):
//	byte 0      cccttttt  c: config id (0), t: 5-bit check
//	byte 1      8-bit worker id XOR pad
//	bytes 2-7   random nonce (48 bits)
//
// with pad and the check taken from AES-128_key(nonce ‖ 0… ‖ config ‖
// label). The config bits are inside the encrypted block, so the two
// layouts never share a pad. The narrow layout capped live workers at 255;
// 500 proxies plus a reload's second generation need more, so workers of
// this build write the wide one (65,535 ids) when their supervisor speaks
// wire protocol 2 or later, and the narrow one for an older supervisor,
// which decodes only that. The Router decodes both: after an upgrade it
// still routes the previous build's workers, whose ids are narrow.
//
// This is a stream cipher with a random IV over the worker id plus a short
// MAC, rather than QUIC-LB's block ciphers (its single-pass mode needs 16
// byte ids, its four-pass Feistel mode is four AES calls and much more
// code for the same property at this size). The threat model is routing
// with mild unlinkability: an on-path observer who does not hold the key
// sees a config byte that is the same for everyone, worker bytes that are
// uniformly random for each id, and a random nonce, so it cannot tell
// which worker an id belongs to nor link two ids of one connection (RFC
// 9000 §9.5) by their content. The scheme does not stop anyone from
// making up ids: a forged or modified id only reaches some worker, which
// drops the packet (or answers with a stateless reset) — what any
// attacker can provoke by sending packets at all. The 5-bit check plus
// the config bits make a random 8-byte id decode with probability 1/128
// (either layout: 2/256), so most garbage is dropped by the supervisor
// and, more importantly, Decode answers "not ours" for most client-chosen
// ids.
//
// The wide layout pays for its worker bits with nonce bits. What the
// nonce buys is unchanged in kind: the pad is AES under the secret key of
// a fresh random value, so each id's worker bytes stay uniformly random to
// an observer; two ids share a pad only if their nonces are equal (visible
// in clear), which reveals the XOR of their two worker ids, nothing else,
// with probability 2⁻⁴⁰ per pair instead of 2⁻⁴⁸. Uniqueness: ids of one
// worker collide only if their 40-bit nonces do; with 10k live ids per
// worker the chance of any collision is 5·10⁻⁵ (birthday bound).
//
// The three config bits follow QUIC-LB's first-octet convention so that a
// future key rotation can run layouts or keys side by side (config 0b111
// means "unroutable" there and is never used).
const (
	cidNarrow = 0           // config id of the previous, 8-bit layout
	cidWide   = 1           // config id of the 16-bit layout
	cidLabel  = "quicroute" // domain separation: fills the 9 free block bytes
)

// cidCodec encodes and decodes the worker id with one AES block per id.
type cidCodec struct{ block cipher.Block }

func newCIDCodec(key [16]byte) cidCodec {
	return cidCodec{block: must(aes.NewCipher(key[:]))}
}

// pad computes AES(nonce ‖ config ‖ label) into out; in and out are
// caller-provided so the hot path can keep them off the heap. The nonce
// starts after the worker bytes of the id's layout; a wide id's 5-byte
// nonce leaves in[5] zero.
func (c cidCodec) pad(cid []byte, in, out *[16]byte) {
	if cid[0]>>5 == cidWide {
		copy(in[0:5], cid[3:8])
		in[5] = 0
	} else {
		copy(in[0:6], cid[2:8])
	}
	in[6] = cid[0] & 0xe0
	copy(in[7:], cidLabel)
	c.block.Encrypt(out[:], in[:])
}

// encode makes a wide id, or a narrow one when narrow is set (worker must
// then be below 256).
func (c cidCodec) encode(worker uint16, narrow bool, nonce [6]byte) [CIDLen]byte {
	var cid [CIDLen]byte
	var in, out [16]byte
	if narrow {
		cid[0] = cidNarrow << 5
		copy(cid[2:], nonce[:])
		c.pad(cid[:], &in, &out)
		cid[0] |= out[1] & 0x1f
		cid[1] = uint8(worker) ^ out[0]
		return cid
	}
	cid[0] = cidWide << 5
	copy(cid[3:], nonce[:5])
	c.pad(cid[:], &in, &out)
	cid[0] |= out[2] & 0x1f
	cid[1] = uint8(worker>>8) ^ out[0]
	cid[2] = uint8(worker) ^ out[1]
	return cid
}

func (c cidCodec) decode(cid []byte, in, out *[16]byte) (uint16, bool) {
	if len(cid) != CIDLen {
		return 0, false
	}
	switch cid[0] >> 5 {
	case cidWide:
		c.pad(cid, in, out)
		if cid[0]&0x1f != out[2]&0x1f {
			return 0, false
		}
		return uint16(cid[1]^out[0])<<8 | uint16(cid[2]^out[1]), true
	case cidNarrow:
		c.pad(cid, in, out)
		if cid[0]&0x1f != out[1]&0x1f {
			return 0, false
		}
		return uint16(cid[1] ^ out[0]), true
	}
	return 0, false
}

// DecodeWorker returns the worker id encoded in a connection id made by a
// Generator with the same key, in either layout. ok is false for ids of
// another length, another config or whose check does not match (all but
// 1/128 of random ids). It sets up AES on each call; Router keeps a
// prepared one.
func DecodeWorker(cid []byte, key [16]byte) (workerID uint16, ok bool) {
	var in, out [16]byte
	return newCIDCodec(key).decode(cid, &in, &out)
}

// Generator makes connection ids for one worker. With ID =
// quic.ConnectionID and conv = quic.ConnectionIDFromBytes it implements
// quic-go's ConnectionIDGenerator, for quic.Transport.ConnectionIDGenerator:
//
//	tr := &quic.Transport{
//		Conn:                  conn,
//		ConnectionIDGenerator: quicroute.NewGenerator(workerID, key, quic.ConnectionIDFromBytes),
//	}
//
// The type parameter keeps this package free of a quic-go dependency. A
// Generator is safe for concurrent use.
type Generator[ID any] struct {
	worker uint16
	narrow bool
	codec  cidCodec
	conv   func([]byte) ID
}

// NewGenerator returns a Generator of wide ids for workerID. All workers
// and the supervisor's Router must share key; it must stay the same across
// worker restarts for as long as connections of an old worker may live.
func NewGenerator[ID any](workerID uint16, key [16]byte, conv func([]byte) ID) *Generator[ID] {
	return &Generator[ID]{worker: workerID, codec: newCIDCodec(key), conv: conv}
}

// NewNarrowGenerator returns a Generator of the previous build's 8-bit
// layout, for a worker whose supervisor decodes only that one.
func NewNarrowGenerator[ID any](workerID uint8, key [16]byte, conv func([]byte) ID) *Generator[ID] {
	return &Generator[ID]{worker: uint16(workerID), narrow: true, codec: newCIDCodec(key), conv: conv}
}

// GenerateConnectionID returns a fresh id encoding the worker.
func (g *Generator[ID]) GenerateConnectionID() (ID, error) {
	var nonce [6]byte
	_, _ = rand.Read(nonce[:]) // never fails (Go ≥ 1.24 crashes instead)
	cid := g.codec.encode(g.worker, g.narrow, nonce)
	return g.conv(cid[:]), nil
}

// ConnectionIDLen returns CIDLen.
func (g *Generator[ID]) ConnectionIDLen() int { return CIDLen }
