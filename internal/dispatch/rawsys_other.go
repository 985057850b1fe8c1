//go:build !(linux && (amd64 || arm64))

package dispatch

import (
	"net"
	"syscall"
)

// Elsewhere the supervisor accepts through net (see rawsys_linux.go).
const rawSyscalls = false

func rawAccept(int) (int, *net.TCPAddr, *net.TCPAddr, error) { return -1, nil, nil, syscall.ENOSYS }
func rawRead(int, []byte) (int, error)                       { return 0, syscall.ENOSYS }
func rawClose(int) error                                     { return syscall.ENOSYS }
