package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// pprofDir is where the gateway's workers serve Go's profiler
// ([server] pprof_dir).
func (g *gateway) pprofDir() string { return filepath.Join(g.state, "pprof") }

// goProfileWorker takes a Go CPU profile of the main mcpgate worker
// through its profiler socket while wrk loads it, then its allocation
// profile, saves both next to the results and lists their top functions.
func (b *bench) goProfileWorker(c *contender) error {
	socks, _ := filepath.Glob(filepath.Join(b.work, "mcpgate-main", "state", "pprof", "*.sock"))
	if len(socks) == 0 {
		return fmt.Errorf("no profiler socket (pprof_dir)")
	}
	sock := socks[0]
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	secs := b.p.ProfileSec
	dur := time.Duration(secs) * time.Second
	fetch := func(path, out string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://worker"+path, nil)
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("%s: HTTP %d", path, res.StatusCode)
		}
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, res.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	cpu := filepath.Join(b.outDir, b.stamp+"-worker-go.cpu.prof")
	mem := filepath.Join(b.outDir, b.stamp+"-worker-go.alloc.prof")
	errc := make(chan error, 1)
	go func() { errc <- fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), cpu, dur+time.Minute) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := b.wrk(c.url+"/small", c.t.token, b.p.WrkConns, dur); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if err := fetch("/debug/pprof/allocs", mem, time.Minute); err != nil {
		return err
	}
	pr := profile{Name: "worker-go", Source: "Go pprof of the mcpgate worker (profiler socket, [server] pprof_dir) under the h1 throughput load",
		CPUFile: filepath.Base(cpu), MemFile: filepath.Base(mem)}
	var err error
	if pr.CPUTop, err = b.pprofTop(b.mcpgateBin[0], cpu, ""); err != nil {
		return err
	}
	if pr.AllocTop, err = b.pprofTop(b.mcpgateBin[0], mem, "-sample_index=alloc_space"); err != nil {
		return err
	}
	b.res.Profiles = append(b.res.Profiles, pr)
	logf("worker Go profile: cpu %v; alloc %v", pr.CPUTop, pr.AllocTop)
	return nil
}
