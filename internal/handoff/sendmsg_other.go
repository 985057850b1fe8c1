//go:build !(linux && (amd64 || arm64))

package handoff

import "syscall"

// sendmsg is one sendmsg(2) through the syscall package (see
// sendmsg_linux.go). The socket is non-blocking, so a full queue is
// EAGAIN; a worker gone away is EPIPE (Go ignores SIGPIPE on descriptors
// other than standard output and error).
func sendmsg(fd int, p, oob []byte) error {
	_, err := syscall.SendmsgN(fd, p, oob, nil, 0)
	return err
}
