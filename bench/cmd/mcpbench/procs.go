package main

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Cores: servers on serverCore, every load generator on loadCore
// (MCPBENCH_LOAD_CORE overrides it: bench/run.sh sets 0 on a one-CPU
// machine).
var (
	serverCore = "0"
	loadCore   = cmp.Or(os.Getenv("MCPBENCH_LOAD_CORE"), "1")
)

// proc is a server process started by the bench, pinned to serverCore, in
// its own process group (its children, such as nginx workers and mcpgate
// workers, stay in it unless they move themselves).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// registry remembers every process group the bench started, in memory and
// in a file that bench/run.sh reads in its exit trap, so that nothing
// survives the bench even if mcpbench itself is killed.
type registry struct {
	mu    sync.Mutex
	file  string
	procs []*proc
}

func (r *registry) start(name, logPath string, env []string, args ...string) (*proc, error) {
	full := append([]string{"-c", serverCore}, args...)
	cmd := exec.Command("taskset", full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	if r.file != "" {
		if f, err := os.OpenFile(r.file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "%d %s\n", cmd.Process.Pid, name)
			f.Close()
		}
	}
	r.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process, waits up to grace, then kills its whole
// process group.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Whatever is left in the group (workers that outlived their parent).
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
	}
}

func (r *registry) stopAll() {
	r.mu.Lock()
	ps := append([]*proc(nil), r.procs...)
	r.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop(syscall.SIGTERM, 3*time.Second)
	}
}

// procStat is what the bench reads from /proc about one process.
type procStat struct {
	pid, ppid int
	comm      string
}

func listProcs() []procStat {
	ents, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		j := bytes.IndexByte(b, '(')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, procStat{pid: pid, ppid: ppid, comm: string(b[j+1 : i])})
	}
	return out
}

// tree returns root and all its descendants.
func tree(root int) []int {
	all := listProcs()
	kids := map[int][]int{}
	for _, p := range all {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

// statusField reads a field of /proc/PID/status, e.g. VmRSS or
// Cpus_allowed_list.
func statusField(pid int, field string) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == field {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("no " + field)
}

// rssKB is VmRSS of pid in KiB.
func rssKB(pid int) (int64, error) {
	v, err := statusField(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
}

// treeMem sums smaps_rollup's RSS, PSS and USS over root and its
// descendants (processes that vanish meanwhile are left out).
func treeMem(root int) (memKB, []int) {
	var sum memKB
	pids := tree(root)
	for _, pid := range pids {
		if m, err := smapsKB(pid); err == nil {
			sum.RSS += m.RSS
			sum.PSS += m.PSS
			sum.USS += m.USS
		}
	}
	return sum, pids
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "?"
	}
	s := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

// memKB is one process's memory from /proc/PID/smaps_rollup, in KiB: RSS
// counts every resident page, PSS divides each shared page among the
// processes that map it (the workers share the binary's pages), USS is
// what the process alone holds (private clean + private dirty), the
// memory its exit would free.
type memKB struct {
	RSS int64 `json:"rss_kb"`
	PSS int64 `json:"pss_kb"`
	USS int64 `json:"uss_kb"`
}

func smapsKB(pid int) (memKB, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memKB{}, err
	}
	var m memKB
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "Rss":
			m.RSS = n
		case "Pss":
			m.PSS = n
		case "Private_Clean", "Private_Dirty":
			m.USS += n
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("pid %d: no Rss in smaps_rollup", pid)
	}
	return m, nil
}
