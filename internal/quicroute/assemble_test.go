package quicroute

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/mcpgate/mcpgate/internal/peek"
)

// handshakeMsg returns a ClientHello-typed message of n body bytes.
func handshakeMsg(n int) []byte {
	m := []byte{1, byte(n >> 16), byte(n >> 8), byte(n)}
	for i := range n {
		m = append(m, byte(i*7+3))
	}
	return m
}

func frag(msg []byte, from, to int) CryptoFrame {
	return CryptoFrame{Offset: uint64(from), Data: msg[from:to]}
}

func TestAssembler(t *testing.T) {
	msg := handshakeMsg(100)
	for _, tc := range []struct {
		name    string
		packets [][]CryptoFrame
		doneAt  int // index of the packet that completes; -1 never
		err     error
	}{
		{"one frame", [][]CryptoFrame{{frag(msg, 0, 104)}}, 0, nil},
		{"reverse", [][]CryptoFrame{{frag(msg, 50, 104)}, {frag(msg, 4, 50)}, {frag(msg, 0, 4)}}, 2, nil},
		{"overlap", [][]CryptoFrame{{frag(msg, 10, 60), frag(msg, 0, 20)}, {frag(msg, 50, 104), frag(msg, 0, 104)}}, 1, nil},
		{"header split", [][]CryptoFrame{{frag(msg, 0, 2)}, {frag(msg, 3, 104)}, {frag(msg, 2, 3)}}, 2, nil},
		{"trailing data", [][]CryptoFrame{{frag(append(bytes.Clone(msg), 9, 9), 0, 106)}}, 0, nil},
		{"empty frames", [][]CryptoFrame{{{Offset: 1 << 40}}, {}, {frag(msg, 0, 104)}}, 2, nil},
		{"gap", [][]CryptoFrame{{frag(msg, 0, 50)}, {frag(msg, 51, 104)}}, -1, nil},
		{"conflict", [][]CryptoFrame{{frag(msg, 0, 50)}, {{Offset: 49, Data: []byte{0xff}}}}, -1, ErrConflict},
		{"beyond limit", [][]CryptoFrame{{{Offset: MaxCryptoBytes, Data: []byte{1}}}}, -1, ErrCryptoLimit},
		{"huge offset", [][]CryptoFrame{{{Offset: 1<<62 - 2, Data: []byte{1}}}}, -1, ErrCryptoLimit},
		{"declared too big", [][]CryptoFrame{{{Offset: 0, Data: []byte{1, 0, 0x80, 0}}}}, -1, ErrCryptoLimit},
		{"not a ClientHello", [][]CryptoFrame{{{Offset: 0, Data: []byte{2, 0, 0, 1, 0}}}}, -1, peek.ErrNotTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a Assembler
			for i, p := range tc.packets {
				hello, done, err := a.Add(p)
				if err != nil {
					if !errors.Is(err, tc.err) || i != len(tc.packets)-1 {
						t.Fatalf("packet %d: %v, want %v", i, err, tc.err)
					}
					// Sticky.
					if _, _, err2 := a.Add([]CryptoFrame{frag(msg, 0, 104)}); err2 != err {
						t.Fatalf("error not sticky: %v", err2)
					}
					return
				}
				if done != (i >= tc.doneAt && tc.doneAt >= 0) {
					t.Fatalf("packet %d: done=%v", i, done)
				}
				if done && !bytes.Equal(hello, msg) {
					t.Fatalf("hello % x", hello)
				}
			}
			if tc.err != nil {
				t.Fatalf("no error, want %v", tc.err)
			}
		})
	}

	// Once done, later packets (even conflicting ones) change nothing.
	var a Assembler
	a.Add([]CryptoFrame{frag(msg, 0, 104)})
	if hello, done, err := a.Add([]CryptoFrame{{Offset: 0, Data: []byte{9}}}); !done || err != nil || !bytes.Equal(hello, msg) {
		t.Fatal("done assembler changed")
	}

	// Packet limit: MaxInitialPackets packets, the last completing, pass;
	// one more fails.
	for _, extra := range []int{0, 1} {
		var a Assembler
		for i := range MaxInitialPackets - 1 + extra {
			if _, done, err := a.Add([]CryptoFrame{frag(msg, i, i+1)}); done || err != nil {
				t.Fatalf("packet %d: %v %v", i, done, err)
			}
		}
		_, done, err := a.Add([]CryptoFrame{frag(msg, 0, 104)})
		if extra == 0 && (!done || err != nil) {
			t.Fatalf("16th packet: %v %v", done, err)
		}
		if extra == 1 && !errors.Is(err, ErrTooManyPackets) {
			t.Fatalf("17th packet: %v", err)
		}
	}

	// The largest message that fits.
	big := handshakeMsg(MaxCryptoBytes - 4)
	a = Assembler{}
	if _, done, err := a.Add([]CryptoFrame{frag(big, 16000, len(big)), frag(big, 0, 16000)}); !done || err != nil {
		t.Fatalf("max size: %v %v", done, err)
	}
	if a.size() > MaxCryptoBytes*9/8+64 {
		t.Fatalf("assembler holds %d bytes", a.size())
	}
}

// FuzzAssembler checks the Assembler against a simple model (a map of
// received bytes) on arbitrary fragment sets. Input: a sequence of
// records [flags][offset:2][n][n data bytes]; flags&1 ends the packet.
func FuzzAssembler(f *testing.F) {
	enc := func(packets ...[]CryptoFrame) []byte {
		var b []byte
		for _, p := range packets {
			for i, fr := range p {
				flags := byte(0)
				if i == len(p)-1 {
					flags = 1
				}
				b = append(b, flags)
				b = binary.BigEndian.AppendUint16(b, uint16(fr.Offset))
				b = append(b, byte(len(fr.Data)))
				b = append(b, fr.Data...)
			}
		}
		return b
	}
	msg := handshakeMsg(200)
	f.Add(enc([]CryptoFrame{frag(msg, 100, 204), frag(msg, 0, 50)}, []CryptoFrame{frag(msg, 40, 110)}))
	f.Add(enc([]CryptoFrame{frag(msg, 0, 3)}, []CryptoFrame{frag(msg, 3, 200)}, []CryptoFrame{frag(msg, 150, 204)}))
	f.Add(enc([]CryptoFrame{frag(msg, 0, 10)}, []CryptoFrame{{Offset: 5, Data: []byte{0}}}))
	f.Add(enc([]CryptoFrame{{Offset: 0xfff0, Data: []byte{1, 2}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		var packets [][]CryptoFrame
		var cur []CryptoFrame
		for len(in) >= 4 {
			flags, off, n := in[0], int(binary.BigEndian.Uint16(in[1:3])), int(in[3])
			in = in[4:]
			n = min(n, len(in))
			if flags&2 != 0 {
				off *= 4 // reach past the limit
			}
			cur = append(cur, CryptoFrame{Offset: uint64(off), Data: in[:n]})
			in = in[n:]
			if flags&1 != 0 || len(in) < 4 {
				packets = append(packets, cur)
				cur = nil
			}
		}

		var a Assembler
		model := map[int]byte{}
		var modelErr error
		for pi, p := range packets {
			hello, done, err := a.Add(p)
			if modelErr == nil {
				modelErr = modelAdd(model, pi, p)
			}
			wantHello, wantDone := []byte(nil), false
			if modelErr == nil {
				wantHello, wantDone, modelErr = modelHello(model)
			}
			if (err == nil) != (modelErr == nil) || (err != nil && !sameClass(err, modelErr)) {
				t.Fatalf("packet %d: err %v, model %v", pi, err, modelErr)
			}
			if done != wantDone || !bytes.Equal(hello, wantHello) {
				t.Fatalf("packet %d: done %v, model %v", pi, done, wantDone)
			}
			if a.size() > 2*MaxCryptoBytes {
				t.Fatalf("assembler holds %d bytes", a.size())
			}
			if done {
				return // the model would keep checking conflicts; Add stops
			}
		}
	})
}

func sameClass(a, b error) bool {
	for _, e := range []error{ErrConflict, ErrCryptoLimit, ErrTooManyPackets, peek.ErrNotTLS} {
		if errors.Is(a, e) {
			return errors.Is(b, e)
		}
	}
	return false
}

func modelAdd(model map[int]byte, packet int, p []CryptoFrame) error {
	if packet >= MaxInitialPackets {
		return ErrTooManyPackets
	}
	for _, f := range p {
		if len(f.Data) == 0 {
			continue
		}
		if int(f.Offset)+len(f.Data) > MaxCryptoBytes {
			return ErrCryptoLimit
		}
		for i, c := range f.Data {
			if old, ok := model[int(f.Offset)+i]; ok && old != c {
				return ErrConflict
			}
			model[int(f.Offset)+i] = c
		}
	}
	return nil
}

func modelHello(model map[int]byte) ([]byte, bool, error) {
	var contig []byte
	for {
		c, ok := model[len(contig)]
		if !ok {
			break
		}
		contig = append(contig, c)
	}
	if len(contig) < 4 {
		return nil, false, nil
	}
	if contig[0] != 1 {
		return nil, false, peek.ErrNotTLS
	}
	n := 4 + (int(contig[1])<<16 | int(contig[2])<<8 | int(contig[3]))
	if n > MaxCryptoBytes {
		return nil, false, ErrCryptoLimit
	}
	if len(contig) < n {
		return nil, false, nil
	}
	return contig[:n], true, nil
}
