package supervisor

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once process pid has exited (a zombie, not yet
// reaped), waiting in the runtime's poller on a pidfd, which turns
// readable at the exit. os.Process.Wait waits in a blocking waitid(2) that
// holds an OS thread for as long as the worker lives: 500 threads in the
// supervisor at 500 proxies. Without a pidfd (Linux before 5.10, a seccomp
// filter) it returns at once, and the caller's Wait blocks as before.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			// Not yet: wait for the poller to see the pidfd readable.
			return err != nil || n > 0
		}
	})
}
