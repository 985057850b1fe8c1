// Package procfd reads a process's descriptor table from /proc (Linux),
// for tests that check which sockets a process holds, with which flags,
// and which files its epoll sets poll. Only tests import it.
package procfd

import (
	"os"
	"strconv"
	"strings"
)

// FD is one descriptor of a process.
type FD struct {
	// Socket is the socket's inode in hex, as fdinfo's "ino:" field
	// writes it; "" for anything but a socket.
	Socket string
	// Epoll: the descriptor is an epoll instance.
	Epoll bool
	// Info is the lines of /proc/PID/fdinfo/N (nil if it could not be
	// read: the descriptor was closed meanwhile).
	Info []string
}

// List returns pid's descriptors.
func List(pid int) ([]FD, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return nil, err
	}
	var out []FD
	for _, e := range ents {
		l, _ := os.Readlink(dir + "/fd/" + e.Name())
		var fd FD
		if n, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 64); err == nil {
				fd.Socket = strconv.FormatUint(ino, 16)
			}
		}
		fd.Epoll = l == "anon_inode:[eventpoll]"
		if info, err := os.ReadFile(dir + "/fdinfo/" + e.Name()); err == nil {
			fd.Info = strings.Split(string(info), "\n")
		}
		out = append(out, fd)
	}
	return out, nil
}

// EpollInodes returns the inodes (hex) of the files in pid's epoll sets:
// what its poller (the Go runtime's netpoller, for a Go process) waits on.
func EpollInodes(pid int) (map[string]bool, error) {
	fds, err := List(pid)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, fd := range fds {
		if !fd.Epoll {
			continue
		}
		for _, line := range fd.Info {
			if !strings.HasPrefix(line, "tfd:") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if ino, ok := strings.CutPrefix(f, "ino:"); ok {
					out[ino] = true
				}
			}
		}
	}
	return out, nil
}
