//go:build !(linux && (amd64 || arm64))

package handoff

import "syscall"

// Elsewhere SendConn writes through net (see sendmsg_linux.go).
const rawSendmsg = false

func sendmsg(int, []byte, []byte) error { return syscall.ENOSYS }
