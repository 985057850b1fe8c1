//go:build linux && (amd64 || arm64)

package handoff

import (
	"syscall"
	"unsafe"
)

// sendmsg is one non-blocking sendmsg(2) on the hand-off socket, made raw
// (no runtime syscall bookkeeping; it cannot block). MSG_NOSIGNAL: a worker
// gone away is an EPIPE, not a signal.
func sendmsg(fd int, p, oob []byte) error {
	var iov syscall.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	var m syscall.Msghdr
	m.Iov = &iov
	m.Iovlen = 1
	if len(oob) > 0 {
		m.Control = &oob[0]
		m.SetControllen(len(oob))
	}
	for {
		_, _, e := syscall.RawSyscall(syscall.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&m)), syscall.MSG_NOSIGNAL)
		switch e {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		}
		return e
	}
}
