package harness

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// procInfo identifies a process across time: a pid plus its start time,
// so a reused pid is not mistaken for the original process.
type procInfo struct {
	pid, ppid int
	start     string // field 22 of /proc/pid/stat
	state     string
	cmdline   string // NUL separators shown as spaces
}

// readProc reads /proc/pid; ok is false if the process is gone.
func readProc(pid int) (procInfo, bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// comm (field 2) may contain spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 > len(stat) {
		return procInfo{}, false
	}
	f := strings.Fields(string(stat[i+2:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return procInfo{
		pid:     pid,
		ppid:    ppid,
		state:   f[0],
		start:   f[19],
		cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))),
	}, true
}

// alive reports whether the same process still runs (zombies count as gone:
// they have exited and only wait to be reaped).
func (p procInfo) alive() bool {
	now, ok := readProc(p.pid)
	return ok && now.start == p.start && now.state != "Z" && now.state != "X"
}

func allPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mentions reports whether a NUL-separated /proc file of pid names dir as a
// whole path (an argument or environment value equal to dir or below it).
func mentions(pid int, file, dir string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		return false
	}
	b = append(b, 0)
	return bytes.Contains(b, []byte(dir+"\x00")) || bytes.Contains(b, []byte(dir+"/"))
}

// scan finds live processes whose argv or environment names this gateway's
// config dir (the supervisor and, normally, its workers).
func (g *Gateway) scan() []procInfo {
	self := os.Getpid()
	var out []procInfo
	for _, pid := range allPIDs() {
		if pid == self {
			continue
		}
		if mentions(pid, "cmdline", g.Dir) || mentions(pid, "environ", g.Dir) {
			if p, ok := readProc(pid); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// members is the supervisor's descendants plus whatever scan finds.
func (g *Gateway) members() []procInfo {
	procs := map[int]procInfo{}
	children := map[int][]int{}
	for _, pid := range allPIDs() {
		if p, ok := readProc(pid); ok {
			procs[pid] = p
			children[p.ppid] = append(children[p.ppid], pid)
		}
	}
	var out []procInfo
	queue := append([]int(nil), children[g.PID()]...)
	for n := 0; len(queue) > 0 && n < 10000; n++ { // bounded: pid loops cannot happen, but stay safe
		pid := queue[0]
		queue = queue[1:]
		out = append(out, procs[pid])
		queue = append(queue, children[pid]...)
	}
	return dedup(append(out, g.scan()...))
}

func dedup(ps []procInfo) []procInfo {
	seen := map[int]bool{}
	var out []procInfo
	for _, p := range ps {
		if !seen[p.pid] {
			seen[p.pid] = true
			out = append(out, p)
		}
	}
	return out
}

// ProcessCmdline returns the command line of pid with NULs as spaces, or ""
// if there is no such process.
func ProcessCmdline(pid int) string {
	p, ok := readProc(pid)
	if !ok {
		return ""
	}
	return p.cmdline
}

// ProcessAlive reports whether pid exists and is not a zombie.
func ProcessAlive(pid int) bool {
	p, ok := readProc(pid)
	return ok && p.state != "Z" && p.state != "X"
}
