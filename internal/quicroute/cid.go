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
// byte, the encrypted worker id and a 48-bit random nonce. Longer ids
// would only cost bytes in every packet.
const CIDLen = 8

// Connection id layout (8 bytes):
//
//	byte 0    cccttttt  c: config id (0), t: 5-bit check
//	byte 1    worker id XOR pad
//	bytes 2-7 random nonce
//
// with pad and the check taken from AES-128_key(nonce ‖ config ‖ label).
//
// This is a stream cipher with a random IV over one byte plus a short
// MAC, rather than QUIC-LB's block ciphers (its single-pass mode needs 16
// byte ids, its four-pass Feistel mode is four AES calls and much more
// code for the same property at this size). The threat model is routing
// with mild unlinkability: an on-path observer who does not hold the key
// sees a config byte that is the same for everyone, a worker byte that is
// uniformly random for each id, and a random nonce, so it cannot tell
// which worker an id belongs to nor link two ids of one connection (RFC
// 9000 §9.5) by their content. The scheme does not stop anyone from
// making up ids: a forged or modified id only reaches some worker, which
// drops the packet (or answers with a stateless reset) — what any
// attacker can provoke by sending packets at all. The 5-bit check plus
// the config bits make a random 8-byte id decode with probability 1/256,
// so most garbage is dropped by the supervisor and, more importantly,
// Decode answers "not ours" for most client-chosen ids.
//
// The three config bits follow QUIC-LB's first-octet convention so that a
// future key rotation can run two keys side by side (config 0b111 means
// "unroutable" there and is never used). Today only config 0 exists.
//
// Uniqueness: ids of one worker collide only if their 48-bit nonces do;
// with 100k live ids per worker the chance of any collision is 2·10⁻⁵
// (birthday bound).
const (
	cidConfig = 0
	cidLabel  = "quicroute" // domain separation: fills the 9 free block bytes
)

// cidCodec encodes and decodes the worker id with one AES block per id.
type cidCodec struct{ block cipher.Block }

func newCIDCodec(key [16]byte) cidCodec {
	return cidCodec{block: must(aes.NewCipher(key[:]))}
}

// pad computes AES(nonce ‖ config ‖ label) into out; in and out are
// caller-provided so the hot path can keep them off the heap.
func (c cidCodec) pad(cid []byte, in, out *[16]byte) {
	copy(in[0:6], cid[2:8])
	in[6] = cid[0] & 0xe0
	copy(in[7:], cidLabel)
	c.block.Encrypt(out[:], in[:])
}

func (c cidCodec) encode(worker uint8, nonce [6]byte) [CIDLen]byte {
	var cid [CIDLen]byte
	cid[0] = cidConfig << 5
	copy(cid[2:], nonce[:])
	var in, out [16]byte
	c.pad(cid[:], &in, &out)
	cid[0] |= out[1] & 0x1f
	cid[1] = worker ^ out[0]
	return cid
}

func (c cidCodec) decode(cid []byte, in, out *[16]byte) (uint8, bool) {
	if len(cid) != CIDLen || cid[0]>>5 != cidConfig {
		return 0, false
	}
	c.pad(cid, in, out)
	if cid[0]&0x1f != out[1]&0x1f {
		return 0, false
	}
	return cid[1] ^ out[0], true
}

// DecodeWorker returns the worker id encoded in a connection id made by a
// Generator with the same key. ok is false for ids of another length or
// whose check does not match (all but 1/256 of random ids). It sets up
// AES on each call; Router keeps a prepared one.
func DecodeWorker(cid []byte, key [16]byte) (workerID uint8, ok bool) {
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
	worker uint8
	codec  cidCodec
	conv   func([]byte) ID
}

// NewGenerator returns a Generator for workerID. All workers and the
// supervisor's Router must share key; it must stay the same across worker
// restarts for as long as connections of an old worker may live.
func NewGenerator[ID any](workerID uint8, key [16]byte, conv func([]byte) ID) *Generator[ID] {
	return &Generator[ID]{worker: workerID, codec: newCIDCodec(key), conv: conv}
}

// GenerateConnectionID returns a fresh id encoding the worker.
func (g *Generator[ID]) GenerateConnectionID() (ID, error) {
	var nonce [6]byte
	_, _ = rand.Read(nonce[:]) // never fails (Go ≥ 1.24 crashes instead)
	cid := g.codec.encode(g.worker, nonce)
	return g.conv(cid[:]), nil
}

// ConnectionIDLen returns CIDLen.
func (g *Generator[ID]) ConnectionIDLen() int { return CIDLen }
