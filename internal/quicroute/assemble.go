package quicroute

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mcpgate/mcpgate/internal/peek"
)

// Per-connection bounds on what reassembling a ClientHello may cost. A
// ClientHello with a post-quantum key share is ~1.8 KB and spans two
// Initial packets; with retransmissions, reordering and a few duplicates
// 16 packets is plenty. 32 KiB leaves room for large session tickets or
// ECH while keeping a flood of never-completing connections cheap.
const (
	MaxInitialPackets = 16
	MaxCryptoBytes    = 32 << 10
)

// Assembler errors.
var (
	ErrTooManyPackets = errors.New("quicroute: too many Initial packets before the ClientHello was complete")
	ErrCryptoLimit    = errors.New("quicroute: CRYPTO data beyond the reassembly limit")
	ErrConflict       = errors.New("quicroute: conflicting CRYPTO data for the same offset")
	ErrIncomplete     = errors.New("quicroute: ClientHello incomplete")
)

// Assembler reassembles the ClientHello of one new connection from the
// CRYPTO frames of its client Initial packets. The zero value is ready to
// use. It is not safe for concurrent use.
//
// Frames may arrive in any order, overlap, or repeat (retransmissions
// resend the same bytes, possibly cut differently); bytes received twice
// must be equal. After an error the Assembler stays failed.
type Assembler struct {
	buf     []byte   // crypto stream bytes [0, len(buf))
	have    []uint64 // bitmap: bit i set when buf[i] was received
	contig  int      // buf[:contig] is all received
	packets int
	hello   []byte
	err     error
}

// Add records the CRYPTO frames of one Initial packet. Once bytes
// [0, 4+length) of the first handshake message are contiguous, it returns
// that message and done = true (and again on every later call); hand it to
// peek.ParseClientHello. The returned slice is never modified afterwards.
func (a *Assembler) Add(frags []CryptoFrame) (hello []byte, done bool, err error) {
	if a.err != nil {
		return nil, false, a.err
	}
	if a.hello != nil {
		return a.hello, true, nil
	}
	if a.packets++; a.packets > MaxInitialPackets {
		return a.fail(ErrTooManyPackets)
	}
	for _, f := range frags {
		if len(f.Data) == 0 {
			continue
		}
		if f.Offset > MaxCryptoBytes || uint64(len(f.Data)) > MaxCryptoBytes-f.Offset {
			return a.fail(fmt.Errorf("%w: bytes up to %d, limit %d", ErrCryptoLimit, f.Offset+uint64(len(f.Data)), MaxCryptoBytes))
		}
		if err := a.write(int(f.Offset), f.Data); err != nil {
			return a.fail(err)
		}
	}
	for a.contig < len(a.buf) && a.has(a.contig) {
		a.contig++
	}
	if a.contig < 4 {
		return nil, false, nil
	}
	if a.buf[0] != 1 {
		return a.fail(fmt.Errorf("%w: first handshake message has type %d", peek.ErrNotTLS, a.buf[0]))
	}
	n := 4 + (int(a.buf[1])<<16 | int(a.buf[2])<<8 | int(a.buf[3]))
	if n > MaxCryptoBytes {
		return a.fail(fmt.Errorf("%w: ClientHello of %d bytes, limit %d", ErrCryptoLimit, n, MaxCryptoBytes))
	}
	if a.contig < n {
		return nil, false, nil
	}
	a.hello = a.buf[:n:n]
	return a.hello, true, nil
}

func (a *Assembler) fail(err error) ([]byte, bool, error) {
	a.err = err
	return nil, false, err
}

func (a *Assembler) has(i int) bool { return a.have[i/64]&(1<<(i%64)) != 0 }

// write stores data at off, checking bytes already present. Buffer and
// bitmap grow only to the highest offset seen, so memory follows what the
// peer actually sent.
func (a *Assembler) write(off int, data []byte) error {
	end := off + len(data)
	if end > len(a.buf) {
		a.buf = append(a.buf, make([]byte, end-len(a.buf))...)
		if words := (end + 63) / 64; words > len(a.have) {
			a.have = append(a.have, make([]uint64, words-len(a.have))...)
		}
	}
	for i, c := range data {
		j := off + i
		w, bit := j/64, uint64(1)<<(j%64)
		if a.have[w]&bit != 0 {
			if a.buf[j] != c {
				return fmt.Errorf("%w at offset %d", ErrConflict, j)
			}
			continue
		}
		a.have[w] |= bit
		a.buf[j] = c
	}
	return nil
}

// size is the memory the Assembler holds, for the router's accounting.
func (a *Assembler) size() int { return cap(a.buf) + 8*cap(a.have) }

// SNI decrypts the client Initial packets in datagrams (one connection, any
// order; later packets of each datagram are ignored), reassembles the
// ClientHello and returns its server name ("" when the client sent none).
// It returns ErrIncomplete if the datagrams do not hold the whole
// ClientHello. Routers should use Router, which buffers across calls.
func SNI(datagrams ...[]byte) (string, error) {
	var (
		a    Assembler
		dcid []byte
	)
	for _, d := range datagrams {
		in, err := ParseInitial(d)
		if err != nil {
			return "", err
		}
		if dcid == nil {
			dcid = in.DCID
		} else if !bytes.Equal(dcid, in.DCID) {
			return "", malformed("datagrams of different connections")
		}
		hello, done, err := a.Add(in.Crypto)
		if err != nil {
			return "", err
		}
		if done {
			info, err := peek.ParseClientHello(hello)
			return info.ServerName, err
		}
	}
	return "", ErrIncomplete
}
