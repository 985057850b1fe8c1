package worker

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
)

// captureConn stands for the TLS connection: it records writes.
type captureConn struct {
	writes [][]byte
}

func (c *captureConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// frames encodes frames as the server's framer would.
func frames(t *testing.T, write func(*http2.Framer)) []byte {
	var b bytes.Buffer
	write(http2.NewFramer(&b, nil))
	return b.Bytes()
}

// TestH2ConnAnnounceBetweenFrames: the announcing GOAWAY goes out at once
// between frames, and after the current frame when the server is in the
// middle of one, however the server's writes split its frames; the
// server's bytes pass unchanged around it.
func TestH2ConnAnnounceBetweenFrames(t *testing.T) {
	out := frames(t, func(f *http2.Framer) {
		f.WriteSettings()
		f.WriteData(1, false, bytes.Repeat([]byte("x"), 100))
		f.WriteData(1, true, nil)
		f.WritePing(false, [8]byte{1})
	})
	firstFrameEnd := 9 // an empty SETTINGS frame
	for split := 1; split < len(out); split++ {
		for _, announceAt := range []int{0, 3, firstFrameEnd, firstFrameEnd + 20} {
			if announceAt > split {
				continue
			}
			cc := &captureConn{}
			c := &h2Conn{out: cc}
			c.Write(out[:announceAt])
			c.announce()
			c.Write(out[announceAt:split])
			c.Write(out[split:])
			got := bytes.Join(cc.writes, nil)
			// Where the GOAWAY must be: the first frame boundary at or
			// after announceAt.
			at := boundaryAtOrAfter(out, announceAt)
			want := append(append(bytes.Clone(out[:at]), announceGoAway...), out[at:]...)
			if !bytes.Equal(got, want) {
				t.Fatalf("split %d, announce at %d: wrote\n%x\nwant\n%x", split, announceAt, got, want)
			}
		}
	}
}

func boundaryAtOrAfter(out []byte, pos int) int {
	for at := 0; at < len(out); {
		if at >= pos {
			return at
		}
		at += 9 + (int(out[at])<<16 | int(out[at+1])<<8 | int(out[at+2]))
	}
	return len(out)
}

// TestH2ConnCountsDiscardedStreams: streams the client opened above the
// last stream id of the server's final GOAWAY are counted, however the
// reads and writes split the frames; the announcing GOAWAY does not count
// as final.
func TestH2ConnCountsDiscardedStreams(t *testing.T) {
	headers := func(ids ...uint32) []byte {
		return frames(t, func(f *http2.Framer) {
			for _, id := range ids {
				f.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true})
				f.WriteData(id, true, []byte("body"))
			}
		})
	}
	in := append([]byte(http2.ClientPreface), frames(t, func(f *http2.Framer) { f.WriteSettings() })...)
	in = append(in, headers(1, 3, 5, 7, 9)...)
	for _, split := range []int{1, 5, 24, 30, len(in) - 3} {
		cc := &captureConn{}
		c := &h2Conn{out: cc, rskip: len(http2.ClientPreface)}
		c.finalGoAway.Store(-1)
		c.followRead(in[:split])
		c.announce()
		if got := c.discarded(); got != 0 {
			t.Fatalf("split %d: %d discarded before any final GOAWAY", split, got)
		}
		// The server's final GOAWAY says it read up to stream 5, written
		// in two pieces.
		goaway := frames(t, func(f *http2.Framer) { f.WriteGoAway(5, http2.ErrCodeNo, nil) })
		c.Write(goaway[:11])
		c.Write(goaway[11:])
		c.followRead(in[split:])
		if got := c.discarded(); got != 2 {
			t.Errorf("split %d: %d streams discarded, want 2 (7 and 9)", split, got)
		}
	}
}
