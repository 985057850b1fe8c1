//go:build linux && (amd64 || arm64)

package dispatch

import (
	"net"
	"syscall"
	"unsafe"
)

// The supervisor's per-connection system calls, made raw: each is
// non-blocking (the listener and the accepted sockets are O_NONBLOCK), so
// none needs the runtime's syscall bookkeeping (see fdConn).

const rawSyscalls = true

// rawAccept accepts one connection from the listening socket lfd, non-blocking
// and close-on-exec, with both of its addresses.
func rawAccept(lfd int) (fd int, local, remote *net.TCPAddr, err error) {
	var rsa syscall.RawSockaddrAny
	n := uint32(syscall.SizeofSockaddrAny)
	r, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, nil, nil, e
	}
	fd = int(r)
	remote = tcpAddr(&rsa)
	n = uint32(syscall.SizeofSockaddrAny)
	var lsa syscall.RawSockaddrAny
	if _, _, e := syscall.RawSyscall(syscall.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&lsa)), uintptr(unsafe.Pointer(&n))); e != 0 {
		rawClose(fd)
		return -1, nil, nil, e
	}
	local = tcpAddr(&lsa)
	if local == nil || remote == nil {
		rawClose(fd)
		return -1, nil, nil, syscall.EAFNOSUPPORT
	}
	return fd, local, remote, nil
}

func tcpAddr(rsa *syscall.RawSockaddrAny) *net.TCPAddr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return &net.TCPAddr{IP: net.IPv4(p.Addr[0], p.Addr[1], p.Addr[2], p.Addr[3]), Port: int(port[0])<<8 | int(port[1])}
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		a := &net.TCPAddr{IP: make(net.IP, net.IPv6len), Port: int(port[0])<<8 | int(port[1])}
		copy(a.IP, p.Addr[:])
		if p.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(p.Scope_id)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}

func rawRead(fd int, p []byte) (int, error) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}

func rawClose(fd int) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}
