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

// inheritable returns a descriptor for f that survives exec.
func inheritable(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var fd int
	var derr error
	rc.Control(func(orig uintptr) {
		// A dup without close-on-exec; the original stays as it is, so a
		// failed exec leaves this process unchanged.
		fd, derr = unix.Dup(int(orig))
	})
	if derr != nil {
		return -1, derr
	}
	return fd, nil
}

// upgrade replaces this process with the binary on disk. It returns only
// on failure, with the supervisor serving as before.
func (s *Supervisor) upgrade(reqs []reloadRequest) ReloadResult {
	fail := func(err error) ReloadResult {
		s.log.Error("supervisor upgrade failed; continuing with the running binary", "err", err)
		return ReloadResult{Errors: []string{"upgrade failed: " + err.Error()}, Trigger: "upgrade", At: time.Now()}
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	if _, err := os.Stat(exe); err != nil {
		return fail(err)
	}
	s.log.Info("upgrading supervisor", "executable", exe)
	s.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=upgrading supervisor")

	// Stop accepting and finish routing what was accepted; new connections
	// wait in the backlog of the sockets the next binary inherits.
	var all []net.Listener
	for _, ls := range s.sockets.Stream {
		all = append(all, ls...)
	}
	s.disp.Pause(all)
	s.accepting.Wait()
	s.disp.Wait()

	var fds []int
	closeFDs := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	st := handoverState{Protocol: wire.Protocol, Activated: s.activated, Started: s.started}
	var ferr error
	pass := func(name string, sock any, packet bool) {
		sc, ok := sock.(syscall.Conn)
		if !ok {
			ferr = fmt.Errorf("socket %s is not a socket", name)
			return
		}
		fd, err := inheritable(sc)
		if err != nil {
			ferr = err
			return
		}
		fds = append(fds, fd)
		st.Listeners = append(st.Listeners, handoverListener{Name: name, FD: fd, Packet: packet})
	}
	for name, ls := range s.sockets.Stream {
		for _, l := range ls {
			pass(name, l, false)
		}
	}
	for name, pcs := range s.sockets.Packet {
		for _, pc := range pcs {
			pass(name, pc, true)
		}
	}
	if s.quic != nil {
		k := s.quic.key
		st.QUICKey = &k
	}
	s.mu.Lock()
	type entry struct {
		p        *proc
		draining bool
	}
	var procs []entry
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
			ferr = err
			continue
		}
		fds = append(fds, fd)
		hw := handoverWorker{
			PID: e.p.pid(), FD: fd, Spec: e.p.spec, Ready: e.p.info(), Started: e.p.started, Draining: e.draining,
		}
		if e.p.dgram != nil {
			dfd, err := inheritable(e.p.dgram)
			if err != nil {
				ferr = err
				continue
			}
			fds = append(fds, dfd)
			hw.DgramFD = dfd
		}
		st.Workers = append(st.Workers, hw)
	}
	if ul, ok := s.control.(*net.UnixListener); ok {
		if fd, err := inheritable(ul); err == nil {
			fds = append(fds, fd)
			st.ControlListener = fd
		}
	}
	for _, r := range reqs {
		if r.conn == nil || st.Control != 0 {
			continue
		}
		if sc, ok := r.conn.(syscall.Conn); ok {
			if fd, err := inheritable(sc); err == nil {
				fds = append(fds, fd)
				st.Control = fd
			}
		}
	}
	if ferr != nil {
		closeFDs()
		s.resume(all)
		return fail(ferr)
	}
	b, err := json.Marshal(st)
	if err != nil {
		closeFDs()
		s.resume(all)
		return fail(err)
	}
	env := append(workerEnvKeepNotify(os.Environ()), upgradeEnv+"="+string(b))
	err = syscall.Exec(exe, os.Args, env)
	// Still here: the exec failed; the control socket never stopped.
	closeFDs()
	s.resume(all)
	s.notify("READY=1\nSTATUS=" + s.status())
	return fail(err)
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
		st.sockets.Stream[hl.Name] = append(st.sockets.Stream[hl.Name], l)
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
