// Package activation collects the supervisor's listening sockets: from
// systemd socket activation when present, otherwise by binding the
// configured addresses. Either way the supervisor owns them.
package activation

import (
	"fmt"
	"net"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Socket names, as in the socket unit's FileDescriptorName=.
const (
	HTTPS = "https"
	HTTP  = "http"
	QUIC  = "quic"
)

// Sockets are the listeners by role.
type Sockets struct {
	Activated bool // true when they came from systemd
	Stream    map[string][]net.Listener
	Packet    map[string][]net.PacketConn
}

// FromSystemd takes the sockets systemd passed, by name. It must be called
// once: go-systemd unsets LISTEN_* so a second call finds nothing. It
// returns ok=false when the process was not socket-activated.
func FromSystemd() (*Sockets, bool, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, false, nil
	}
	s := &Sockets{Activated: true, Stream: map[string][]net.Listener{}, Packet: map[string][]net.PacketConn{}}
	for _, f := range files {
		name := f.Name()
		if name == "" || strings.HasPrefix(name, "LISTEN_FD_") {
			// Unnamed sockets: without FileDescriptorName= the role is unknown.
			f.Close()
			return nil, true, fmt.Errorf("socket activation: fd %d has no FileDescriptorName= (want %q, %q or %q)", f.Fd(), HTTPS, HTTP, QUIC)
		}
		typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			f.Close()
			return nil, true, fmt.Errorf("socket activation: %s: %w", name, err)
		}
		switch typ {
		case unix.SOCK_STREAM:
			l, err := net.FileListener(f)
			f.Close()
			if err != nil {
				return nil, true, fmt.Errorf("socket activation: %s: %w", name, err)
			}
			s.Stream[name] = append(s.Stream[name], Wrap(l))
		case unix.SOCK_DGRAM:
			pc, err := net.FilePacketConn(f)
			f.Close()
			if err != nil {
				return nil, true, fmt.Errorf("socket activation: %s: %w", name, err)
			}
			s.Packet[name] = append(s.Packet[name], pc)
		default:
			f.Close()
			return nil, true, fmt.Errorf("socket activation: %s: unsupported socket type %d", name, typ)
		}
	}
	for name := range s.Stream {
		if name != HTTPS && name != HTTP {
			return nil, true, fmt.Errorf("socket activation: unknown stream socket name %q (want %q or %q)", name, HTTPS, HTTP)
		}
	}
	for name := range s.Packet {
		if name != QUIC {
			return nil, true, fmt.Errorf("socket activation: unknown datagram socket name %q (want %q)", name, QUIC)
		}
	}
	return s, true, nil
}

// quicBuffer is the socket buffer size quic-go wants for its UDP socket.
const quicBuffer = 7 << 20

// Bind listens on the configured addresses: TCP for https and http, UDP
// for quic.
func Bind(https, http, quic []string) (*Sockets, error) {
	s := &Sockets{Stream: map[string][]net.Listener{}, Packet: map[string][]net.PacketConn{}}
	bind := func(name string, addrs []string) error {
		for _, a := range addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			s.Stream[name] = append(s.Stream[name], Wrap(l))
		}
		return nil
	}
	if err := bind(HTTPS, https); err != nil {
		s.Close()
		return nil, err
	}
	if err := bind(HTTP, http); err != nil {
		s.Close()
		return nil, err
	}
	for _, a := range quic {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			s.Close()
			return nil, err
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			// Best effort: the kernel caps it at net.core.rmem_max.
			uc.SetReadBuffer(quicBuffer)
			uc.SetWriteBuffer(quicBuffer)
		}
		s.Packet[QUIC] = append(s.Packet[QUIC], pc)
	}
	return s, nil
}

// Wrap returns l as a *Listener when it is a TCP listener, else l.
func Wrap(l net.Listener) net.Listener {
	if tl, ok := l.(*net.TCPListener); ok {
		return NewListener(tl)
	}
	return l
}

// Close closes every socket.
func (s *Sockets) Close() {
	for _, ls := range s.Stream {
		for _, l := range ls {
			l.Close()
		}
	}
	for _, ps := range s.Packet {
		for _, p := range ps {
			p.Close()
		}
	}
}
