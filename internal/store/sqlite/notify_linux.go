package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// activeWindow: after a write to the database by any process, the mirror
// polls at its normal rate for this long. The write() of a commit's WAL
// frames wakes it at once, but the commit becomes visible only after the
// fsync and the wal-index update, which make no inotify event; polling on
// through the window finds it.
const activeWindow = 2 * time.Second

// startWindow is the same at the start of a watch, for a commit whose
// frames were written just before the watch began; shorter, because every
// worker of a start (500 at once) would otherwise poll 8 times in it.
const startWindow = 500 * time.Millisecond

// Notify lets revocation.Mirror sleep while nobody writes the database: it
// watches the database's directory with inotify for writes to the file and
// its WAL (by any process on this host: the only ones that can share a
// SQLite WAL database). wake receives on each such write; live is false
// within activeWindow of the last one, when the mirror polls as usual, and
// while the watch is broken. An idle worker then reads the revocation log
// every revocation.NotifiedPoll instead of four times a second: at 500
// proxies that was 2,000 queries a second on an idle host, and the
// garbage of each poll kept the heap of every idle worker growing.
func (s *Store) Notify(ctx context.Context) (wake <-chan struct{}, live func() bool) {
	ch := make(chan struct{}, 1)
	var up atomic.Bool
	var lastWrite atomic.Int64 // unix nanoseconds
	live = func() bool {
		return up.Load() && time.Since(time.Unix(0, lastWrite.Load())) > activeWindow
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return ch, live
	}
	dir, base := filepath.Split(s.path)
	wal := base + "-wal"
	const mask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
		unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return ch, live
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: reads wait in the netpoller
	lastWrite.Store(time.Now().Add(startWindow - activeWindow).UnixNano())
	up.Store(true)
	signal := func() {
		lastWrite.Store(time.Now().UnixNano())
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer up.Store(false)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					signal()
				}
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				off += unix.SizeofInotifyEvent + int(ev.Len)
				switch {
				case ev.Mask&(unix.IN_Q_OVERFLOW|unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0:
					// Events lost, or the directory is gone: poll from now on.
					signal()
					return
				case isDB(name, base, wal):
					signal()
				}
			}
		}
	}()
	return ch, live
}

// isDB: the event's name (NUL-padded) is the database file or its WAL.
func isDB(name []byte, base, wal string) bool {
	for len(name) > 0 && name[len(name)-1] == 0 {
		name = name[:len(name)-1]
	}
	return string(name) == base || string(name) == wal
}
