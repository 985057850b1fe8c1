package supervisor

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once process pid has exited (a zombie, not yet
// reaped), waiting in the runtime's poller on a pidfd, which turns
// readable at the exit. os.Process.Wait waits in a blocking waitid(2) that
// holds an OS thread for as long as the worker lives: 500 threads in the
// supervisor at 500 proxies. false: no pidfd here (Linux before 5.10, a
// seccomp filter, not our child); the caller waits the blocking way.
func awaitExit(pid int) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			exited = err == nil && n > 0
			// Not yet: wait for the poller to see the pidfd readable.
			return exited || err != nil
		}
	})
	return err == nil && exited
}
