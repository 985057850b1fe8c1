package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/activation"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// A supervisor upgrade re-executes the supervisor in place (same pid, so
// systemd's main process and the workers' parent stay the same) from the
// binary on disk. Listening sockets and the workers' hand-off sockets cross
// the exec as inherited descriptors, described by this environment
// variable; the new binary serves with the inherited workers at once and
// then reloads them.
const upgradeEnv = "MCPGATE_UPGRADE_STATE"

type handoverState struct {
	// Protocol is the wire version of the binary that wrote this (0:
	// before versioning); the next binary may be older or newer.
	Protocol  int                `json:"protocol,omitempty"`
	Activated bool               `json:"activated"`
	Listeners []handoverListener `json:"listeners"`
	Workers   []handoverWorker   `json:"workers"`
	Control   int                `json:"control_fd,omitempty"` // fd of the `mcpgate upgrade` caller, or 0
	// ControlListener is the control socket's listener: passed on, so
	// `mcpgate status` and `reload` work throughout the upgrade.
	ControlListener int                 `json:"control_listener_fd,omitempty"`
	Started         time.Time           `json:"started"`
	QUICKey         *[16]byte           `json:"quic_key,omitempty"`
	sockets         *activation.Sockets `json:"-"`
}

type handoverListener struct {
	Name   string `json:"name"`
	FD     int    `json:"fd"`
	Packet bool   `json:"packet,omitempty"` // a datagram socket (quic)
}

type handoverWorker struct {
	PID      int        `json:"pid"`
	FD       int        `json:"fd"`
	DgramFD  int        `json:"dgram_fd,omitempty"` // QUIC datagram socket to the worker, or 0
	Spec     wire.Spec  `json:"spec"`
	Ready    wire.Ready `json:"ready"`
	Started  time.Time  `json:"started"`
	Draining bool       `json:"draining"`
}

// enqueueUpgrade asks the reloader for an upgrade; c, if not nil, is the
// control connection to answer.
func (s *Supervisor) enqueueUpgrade(trigger string, c net.Conn) {
	s.enqueue(reloadRequest{trigger: trigger, upgrade: true, conn: c})
}

// inheritable returns a descriptor for sc that survives exec.
func inheritable(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	err = rc.Control(func(orig uintptr) {
		// A dup without close-on-exec; the original stays as it is, so a
		// failed exec leaves this process unchanged.
		fd, derr = unix.Dup(int(orig))
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// upgrade replaces this process with the binary on disk. It returns only
// on failure, with the supervisor serving as before. Its phases, each
// failing loudly: find the binary, pause accepting, collect every
// descriptor to hand over, exec.
func (s *Supervisor) upgrade(reqs []reloadRequest) ReloadResult {
	fail := func(err error) ReloadResult {
		s.log.Error("supervisor upgrade failed; continuing with the running binary", "err", err)
		return ReloadResult{Errors: []string{"upgrade failed: " + err.Error()}, Trigger: "upgrade", At: time.Now()}
	}
	exe, err := upgradeBinary()
	if err != nil {
		return fail(err)
	}
	s.log.Info("upgrading supervisor", "executable", exe)
	s.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=upgrading supervisor")

	paused := s.pauseAccepting()
	h, err := s.collectHandover(reqs)
	if err == nil {
		err = execNext(exe, h.state)
	}
	// Still here: something failed before or in the exec. The control
	// socket never stopped; the listeners resume.
	h.closeFDs()
	s.resume(paused)
	s.notify("READY=1\nSTATUS=" + s.status())
	return fail(err)
}

// upgradeBinary is the upgrade's first phase: the binary on disk now
// (after a package upgrade, the new one), which must exist.
func upgradeBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(exe); err != nil {
		return "", err
	}
	return exe, nil
}

// pauseAccepting stops accepting and finishes routing what was accepted;
// new connections wait in the backlog of the sockets the next binary
// inherits. It returns the paused listeners, for resume.
func (s *Supervisor) pauseAccepting() []net.Listener {
	var all []net.Listener
	for _, ls := range s.sockets.Stream {
		all = append(all, ls...)
	}
	s.disp.Pause(all)
	s.accepting.Wait()
	s.disp.Wait()
	return all
}

// handover is what collectHandover gathered: the description for the next
// binary and the inheritable descriptors it names, which the caller closes
// if the exec fails.
type handover struct {
	state handoverState
	fds   []int
}

func (h *handover) add(fd int) int {
	h.fds = append(h.fds, fd)
	return fd
}

func (h *handover) closeFDs() {
	for _, fd := range h.fds {
		unix.Close(fd)
	}
	h.fds = nil
}

// collectHandover is the upgrade's third phase: an inheritable duplicate of
// every descriptor the next binary needs (listeners, workers' sockets, the
// control socket and the caller waiting on it). Any one that cannot be
// passed fails the upgrade: a next binary without it would lose a listener,
// a worker or the answer to its caller.
func (s *Supervisor) collectHandover(reqs []reloadRequest) (*handover, error) {
	h := &handover{state: handoverState{Protocol: wire.Protocol, Activated: s.activated, Started: s.started}}
	for _, phase := range []func(*handover) error{
		s.passListeners,
		s.passWorkers,
		s.passControlListener,
		func(h *handover) error { return passControlCaller(h, reqs) },
	} {
		if err := phase(h); err != nil {
			h.closeFDs()
			return h, err
		}
	}
	return h, nil
}

func (s *Supervisor) passListeners(h *handover) error {
	pass := func(name string, sock any, packet bool) error {
		sc, ok := sock.(syscall.Conn)
		if !ok {
			return fmt.Errorf("socket %s is a %T, not a socket", name, sock)
		}
		fd, err := inheritable(sc)
		if err != nil {
			return fmt.Errorf("socket %s: %w", name, err)
		}
		h.state.Listeners = append(h.state.Listeners, handoverListener{Name: name, FD: h.add(fd), Packet: packet})
		return nil
	}
	for _, name := range sortedNames(s.sockets.Stream) {
		for _, l := range s.sockets.Stream[name] {
			if err := pass(name, l, false); err != nil {
				return err
			}
		}
	}
	for _, name := range sortedNames(s.sockets.Packet) {
		for _, pc := range s.sockets.Packet[name] {
			if err := pass(name, pc, true); err != nil {
				return err
			}
		}
	}
	if s.quic != nil {
		k := s.quic.key
		h.state.QUICKey = &k
	}
	return nil
}

// passWorkers hands over the ready workers and the draining ones.
func (s *Supervisor) passWorkers(h *handover) error {
	type entry struct {
		p        *proc
		draining bool
	}
	var procs []entry
	s.mu.Lock()
	for _, sl := range s.slots {
		if p := sl.current(); p != nil {
			procs = append(procs, entry{p, false})
		}
	}
	for sl := range s.draining {
		if p := sl.latest(); p != nil {
			procs = append(procs, entry{p, true})
		}
	}
	s.mu.Unlock()
	for _, e := range procs {
		fd, err := e.p.hc.Inheritable()
		if err != nil {
			return fmt.Errorf("worker %s (pid %d): hand-off socket: %w", e.p.name, e.p.pid(), err)
		}
		hw := handoverWorker{
			PID: e.p.pid(), FD: h.add(fd), Spec: e.p.spec, Ready: e.p.info(), Started: e.p.started, Draining: e.draining,
		}
		if e.p.dgram != nil {
			dfd, err := inheritable(e.p.dgram)
			if err != nil {
				return fmt.Errorf("worker %s (pid %d): QUIC socket: %w", e.p.name, e.p.pid(), err)
			}
			hw.DgramFD = h.add(dfd)
		}
		h.state.Workers = append(h.state.Workers, hw)
	}
	return nil
}

// passControlListener passes the control socket, so `mcpgate status` and
// `reload` work throughout the upgrade.
func (s *Supervisor) passControlListener(h *handover) error {
	ul, ok := s.control.(*net.UnixListener)
	if !ok {
		return fmt.Errorf("control socket is a %T, not a unix listener", s.control)
	}
	fd, err := inheritable(ul)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	h.state.ControlListener = h.add(fd)
	return nil
}

// passControlCaller passes the connection of the first `mcpgate upgrade`
// caller, which the next binary answers. Callers by signal have none.
func passControlCaller(h *handover, reqs []reloadRequest) error {
	for _, r := range reqs {
		if r.conn == nil {
			continue
		}
		sc, ok := r.conn.(syscall.Conn)
		if !ok {
			return fmt.Errorf("control connection is a %T, not a socket", r.conn)
		}
		fd, err := inheritable(sc)
		if err != nil {
			return fmt.Errorf("control connection: %w", err)
		}
		h.state.Control = h.add(fd)
		return nil
	}
	return nil
}

// execNext is the upgrade's last phase: it replaces this process with exe,
// describing the handover in the environment. It returns only on failure.
func execNext(exe string, st handoverState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	env := append(workerEnvKeepNotify(os.Environ()), upgradeEnv+"="+string(b))
	return syscall.Exec(exe, os.Args, env)
}

func (s *Supervisor) resume(all []net.Listener) {
	s.disp.Resume(all)
	s.startAccepting()
}

// workerEnvKeepNotify drops an earlier handover description but keeps
// NOTIFY_SOCKET: the next binary is still the service's main process.
func workerEnvKeepNotify(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if len(kv) > len(upgradeEnv) && kv[:len(upgradeEnv)+1] == upgradeEnv+"=" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// takeHandover reads what a previous binary handed over, if anything.
func takeHandover() (*handoverState, error) {
	v, ok := os.LookupEnv(upgradeEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(upgradeEnv)
	st, err := parseHandover([]byte(v))
	if err != nil {
		return nil, err
	}
	st.sockets = &activation.Sockets{Activated: st.Activated, Stream: map[string][]net.Listener{}, Packet: map[string][]net.PacketConn{}}
	for _, hl := range st.Listeners {
		f := os.NewFile(uintptr(hl.FD), hl.Name)
		if hl.Packet {
			pc, err := net.FilePacketConn(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("upgrade handover: socket %s: %w", hl.Name, err)
			}
			st.sockets.Packet[hl.Name] = append(st.sockets.Packet[hl.Name], pc)
			continue
		}
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("upgrade handover: listener %s: %w", hl.Name, err)
		}
		st.sockets.Stream[hl.Name] = append(st.sockets.Stream[hl.Name], activation.Wrap(l))
	}
	if len(st.sockets.Stream) == 0 {
		return nil, errors.New("upgrade handover: no listeners")
	}
	return st, nil
}

// parseHandover decodes a handover description, written by this build or
// by the previous one.
func parseHandover(b []byte) (*handoverState, error) {
	var st handoverState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("upgrade handover: %w", err)
	}
	if err := wire.CheckProtocol(st.Protocol); err != nil {
		return nil, fmt.Errorf("upgrade handover: %w", err)
	}
	return &st, nil
}

// controlListener returns the control listener handed over, if any.
func (st *handoverState) controlListener() net.Listener {
	if st == nil || st.ControlListener == 0 {
		return nil
	}
	f := os.NewFile(uintptr(st.ControlListener), "control-listener")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil
	}
	return l
}

// adopt serves with the workers the previous binary left running.
func (s *Supervisor) adopt(st *handoverState) {
	s.started = st.Started
	for _, hw := range st.Workers {
		f := os.NewFile(uintptr(hw.FD), "handoff")
		hc, err := handoff.FromFile(f)
		f.Close()
		if err != nil {
			s.log.Error("upgrade: cannot adopt worker", "proxy", hw.Spec.Proxy.Name, "pid", hw.PID, "err", err)
			continue
		}
		process, err := os.FindProcess(hw.PID)
		if err != nil {
			hc.Close()
			continue
		}
		p := newProc(hw.Spec.Proxy.Name, osProcess{process}, hw.Spec, hc, hw.Started, s.log)
		p.ready = hw.Ready
		close(p.readyCh)
		if hw.DgramFD != 0 && hw.Spec.QUIC != nil {
			df := os.NewFile(uintptr(hw.DgramFD), "dgram")
			dc, err := net.FileConn(df)
			df.Close()
			if uc, ok := dc.(*net.UnixConn); err == nil && ok {
				wid := hw.Spec.QUIC.WorkerID
				p.dgram = uc
				p.onExit = func() {
					s.quicWorkers.setWID(wid, nil)
					uc.Close()
				}
				s.quicWorkers.setWID(wid, p)
			}
		}
		p.metrics = s.metrics
		s.metrics.add(p)
		// A worker of the previous build may not know KindRevoked: it
		// ignores it, and polls or watches the store itself.
		p.follow(s.relay)
		p.watch()
		sl := newSlot(hw.Spec, s.spawner, s.log)
		sl.adopted = p
		if hw.Draining {
			sl.settleFirst(true, "")
			// The drain request was sent by the previous binary; shutdown
			// repeats it, harmlessly, and waits for the exit.
			s.retire(sl)
			continue
		}
		go sl.run()
		<-sl.first
		s.mu.Lock()
		s.slots[sl.Name()] = sl
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.disp.SetTable(buildTable(s.slots, nil))
	s.disp.SetTrustedProxies(s.cfg.Server.ProxyProtocolFrom)
	s.mu.Unlock()
	s.log.Info("upgrade: serving with inherited workers", "workers", len(st.Workers))
}

// reply answers the `mcpgate upgrade` caller, if any, with the result of
// the reload that followed the upgrade.
func (st *handoverState) reply(res ReloadResult) {
	if st.Control == 0 {
		return
	}
	f := os.NewFile(uintptr(st.Control), "control")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return
	}
	res.Trigger = "upgrade"
	replyConn(c, res)
}
