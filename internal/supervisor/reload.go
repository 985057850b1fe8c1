package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mcpgate/mcpgate/internal/buildinfo"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// The control socket's messages, defined in internal/wire so that the
// commands of another build read them too.
type (
	ReloadResult = wire.ReloadResult
	Status       = wire.Status
	WorkerStatus = wire.WorkerStatus
)

type reloadRequest struct {
	trigger string
	upgrade bool              // re-execute the supervisor first
	reply   chan ReloadResult // nil for signals
	conn    net.Conn          // upgrade via the control socket: answered by the next binary
}

// enqueueReload records a request. Requests that arrive while a reload
// runs are all answered by the one reload that follows it: coalesced,
// never dropped.
func (s *Supervisor) enqueueReload(trigger string, reply chan ReloadResult) {
	s.enqueue(reloadRequest{trigger: trigger, reply: reply})
}

func (s *Supervisor) enqueue(r reloadRequest) {
	s.reqMu.Lock()
	s.pending = append(s.pending, r)
	s.reqMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending; the reloader takes all requests
	}
}

// requestReload enqueues a reload and waits for its verdict.
func (s *Supervisor) requestReload(trigger string) ReloadResult {
	reply := make(chan ReloadResult, 1)
	s.enqueueReload(trigger, reply)
	return <-reply
}

// reloader runs reloads one at a time, for as long as the supervisor runs.
// It starts before any request can be sent, and requests wait in pending
// until it takes them, so none is lost to a consumer not yet running.
func (s *Supervisor) reloader(ctx context.Context) {
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
		s.reqMu.Lock()
		batch := s.pending
		s.pending = nil
		s.reqMu.Unlock()
		if len(batch) == 0 {
			continue
		}
		var upgrades, reloads []reloadRequest
		var triggers []string
		for _, r := range batch {
			if r.upgrade {
				upgrades = append(upgrades, r)
				continue
			}
			reloads = append(reloads, r)
			if !slices.Contains(triggers, r.trigger) {
				triggers = append(triggers, r.trigger)
			}
		}
		if len(reloads) > 0 {
			res := s.runReload(strings.Join(triggers, ", "))
			for _, r := range reloads {
				if r.reply != nil {
					r.reply <- res
				}
			}
		}
		if len(upgrades) > 0 {
			// Only returns if the upgrade failed; on success this process
			// now runs the new binary.
			res := s.runUpgrade(upgrades)
			for _, r := range upgrades {
				if r.conn != nil {
					replyConn(r.conn, res)
				}
			}
		}
	}
}

// reload validates the whole configuration and, if it is valid, applies it
// with workers started from the binary on disk now.
func (s *Supervisor) reload(trigger string) ReloadResult {
	start := time.Now()
	s.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading (" + trigger + ")")
	s.log.Info("reloading", "trigger", trigger)
	var res ReloadResult
	cfg, err := config.Load(s.opts.ConfigDir)
	if err != nil {
		var el config.ErrorList
		if errors.As(err, &el) {
			for _, e := range el {
				res.Errors = append(res.Errors, e.Error())
			}
		} else {
			res.Errors = []string{err.Error()}
		}
		for _, e := range res.Errors {
			s.log.Error("configuration error", "error", e)
		}
		s.log.Error("reload rejected; still serving the previous configuration", "errors", len(res.Errors))
	} else {
		s.warnUnappliable(cfg)
		res = s.apply(cfg)
		for _, f := range res.Failed {
			s.log.Error("reload: proxy failed", "detail", f)
		}
		s.log.Info("reload finished", "ok", res.OK, "started", strings.Join(res.Started, ","),
			"removed", strings.Join(res.Removed, ","), "build_id", res.BuildID, "took", time.Since(start).Round(time.Millisecond).String())
	}
	res.Trigger = trigger
	res.At = start
	res.Duration = time.Since(start).Round(time.Millisecond).String()
	s.metrics.reloaded(res, time.Since(start))
	s.setLastReload(&res)
	s.notify("READY=1\nSTATUS=" + s.status())
	return res
}

// warnUnappliable logs changes a reload cannot apply.
func (s *Supervisor) warnUnappliable(cfg *config.Config) {
	s.mu.Lock()
	old := s.cfg.Server
	s.mu.Unlock()
	if !s.activated && (!slices.Equal(old.HTTPS, cfg.Server.HTTPS) || !slices.Equal(old.HTTP, cfg.Server.HTTP)) {
		s.log.Warn("listen addresses changed; they apply at the next restart")
	}
	if old.StateDir != cfg.Server.StateDir {
		s.log.Warn("state_dir changed; it applies at the next restart", "running", old.StateDir)
	}
	if old.Metrics != cfg.Server.Metrics {
		s.log.Warn("metrics address changed; it applies at the next restart", "running", old.Metrics)
	}
	if s.opts.LogLevel == "" && old.LogLevel != cfg.Server.LogLevel {
		s.log.Warn("log_level changed; the new workers use it, the supervisor at its next restart", "supervisor", old.LogLevel)
	}
}

func (s *Supervisor) setLastReload(r *ReloadResult) {
	if r.At.IsZero() {
		r.At = time.Now()
	}
	s.mu.Lock()
	s.lastReload = r
	s.mu.Unlock()
}

// Status reports the supervisor and every worker.
func (s *Supervisor) Status() Status {
	st := Status{
		PID: os.Getpid(), Version: buildinfo.Version(), BuildID: buildinfo.ID(),
		Started: s.started, ConfigDir: s.opts.ConfigDir, Activated: s.activated,
		Listeners: s.describeListeners(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	add := func(sl *slot, state string) {
		p := sl.latest()
		if p == nil {
			st.Workers = append(st.Workers, WorkerStatus{Proxy: sl.Name(), State: wire.StateStarting, ConfigHash: sl.spec.Proxy.Hash})
			return
		}
		select {
		case <-p.exited:
			if state != wire.StateDraining {
				state = wire.StateRestarting
			} else {
				return
			}
		default:
		}
		info := p.info()
		st.Workers = append(st.Workers, WorkerStatus{
			Proxy: sl.Name(), PID: p.pid(), State: state, Version: info.Version, BuildID: info.BuildID,
			ConfigHash: sl.spec.Proxy.Hash, Started: p.started, Connections: p.connections(),
			Certificates: p.certificates(),
		})
	}
	for _, name := range sortedNames(s.slots) {
		sl := s.slots[name]
		state := wire.StateReady
		if sl.current() == nil {
			state = wire.StateStarting
		}
		add(sl, state)
	}
	for sl := range s.draining {
		add(sl, wire.StateDraining)
	}
	st.LastReload = s.lastReload
	return st
}
