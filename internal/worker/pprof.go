package worker

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"
)

// keepHeapProfile turns the runtime's allocation sampling off unless
// pprof_dir is set, the only way to read a worker's heap profile. Each
// sampled call stack gets a bucket in a 1.4 MB hash table placed by the
// stack's hash, so a worker serving varied requests touched another page
// of it for almost every new stack: ≈ 40–50 pages (160–200 KiB) after
// 7,000 requests of 7 kinds, for a profile nobody could read.
func keepHeapProfile(pprofDir string) {
	if pprofDir == "" {
		runtime.MemProfileRate = 0
	}
}

// servePprof serves Go's profiler on a unix socket named after the proxy
// and the pid (two workers of one proxy overlap during a reload), only
// reachable by the service's user. It returns a function removing it.
func (w *Worker) servePprof() (func(), error) {
	dir := w.spec.PprofDir
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	path := filepath.Join(dir, w.spec.Proxy.Name+"-"+strconv.Itoa(os.Getpid())+".sock")
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	w.log.Info("profiler listening", "socket", path)
	return func() {
		srv.Close()
		os.Remove(path)
	}, nil
}
