// Package supervisor is `mcpgate serve`: it owns the listening sockets,
// starts one worker process per enabled proxy, routes connections to them,
// restarts workers that die and drains them on shutdown.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mcpgate/mcpgate/internal/activation"
	"github.com/mcpgate/mcpgate/internal/buildinfo"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/dispatch"
	"github.com/mcpgate/mcpgate/internal/worker"
)

// Options configure a supervisor.
type Options struct {
	ConfigDir string
	// Executable is the binary workers are started from; default: this
	// process's executable as it is on disk now.
	Executable string
	Log        *slog.Logger
	// Notify sends a systemd notification; default: sd_notify.
	Notify func(state string)
}

// Supervisor is a running `mcpgate serve`.
type Supervisor struct {
	opts    Options
	log     *slog.Logger
	notify  func(string)
	sockets *activation.Sockets
	disp    *dispatch.Dispatcher
	spawner *spawner

	mu    sync.Mutex
	cfg   *config.Config   // guarded by mu
	slots map[string]*slot // guarded by mu
}

// Run starts the supervisor and blocks until ctx is done or SIGTERM/SIGINT
// arrives, then drains the workers.
func Run(ctx context.Context, opts Options) error {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = func(state string) { daemon.SdNotify(false, state) }
	}
	if opts.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding own executable: %w", err)
		}
		opts.Executable = exe
	}
	log := opts.Log

	// Take the sockets before anything can fail: go-systemd reads the
	// activation variables once.
	sockets, activated, err := activation.FromSystemd()
	if err != nil {
		return err
	}
	cfg, err := config.Load(opts.ConfigDir)
	if err != nil {
		if sockets != nil {
			sockets.Close()
		}
		return err
	}
	if !activated {
		sockets, err = activation.Bind(cfg.Server.HTTPS, cfg.Server.HTTP)
		if err != nil {
			return fmt.Errorf("binding listeners: %w", err)
		}
	}
	defer sockets.Close()
	if len(sockets.Stream[activation.HTTPS]) == 0 && len(sockets.Stream[activation.HTTP]) == 0 {
		return errors.New("no listening sockets: configure [server] https/http or use socket activation")
	}

	s := &Supervisor{
		opts:    opts,
		log:     log,
		notify:  opts.Notify,
		sockets: sockets,
		disp:    &dispatch.Dispatcher{Log: log.With("component", "dispatch")},
		spawner: &spawner{exe: opts.Executable, configDir: opts.ConfigDir, stderr: os.Stderr, log: log},
		cfg:     cfg,
	}
	log.Info("mcpgate starting", "version", buildinfo.Version(), "build_id", buildinfo.ID(), "pid", os.Getpid(),
		"socket_activated", activated, "config_dir", opts.ConfigDir, "listeners", s.describeListeners())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	s.startSlots(cfg)
	var serveWG sync.WaitGroup
	for name, ls := range sockets.Stream {
		for _, l := range ls {
			serveWG.Add(1)
			go func() {
				defer serveWG.Done()
				if name == activation.HTTPS {
					s.disp.ServeTLS(l)
				} else {
					s.disp.ServeHTTP(l)
				}
			}()
		}
	}

	// READY=1 once every worker has started or failed its first start, so
	// systemd's start job finishes with the proxies actually serving.
	s.awaitFirstStarts(ctx)
	s.notify("READY=1\nSTATUS=" + s.status())
	log.Info("mcpgate ready", "status", s.status())

	statusTick := time.NewTicker(5 * time.Second)
	defer statusTick.Stop()
	lastStatus := s.status()
	for {
		select {
		case <-ctx.Done():
			return s.shutdown(&serveWG)
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				log.Warn("SIGHUP received: configuration reload is not available in this version; restart the service to apply changes")
			default:
				log.Info("signal received; shutting down", "signal", sig.String())
				return s.shutdown(&serveWG)
			}
		case <-statusTick.C:
			if st := s.status(); st != lastStatus {
				lastStatus = st
				s.notify("STATUS=" + st)
			}
		}
	}
}

func (s *Supervisor) startSlots(cfg *config.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slots = map[string]*slot{}
	table := dispatch.NewTable()
	for _, p := range cfg.Enabled() {
		sl := newSlot(worker.Spec{
			Proxy:        p,
			StateDir:     cfg.Server.StateDir,
			DrainTimeout: cfg.Server.DrainTimeout,
			HTTPSPort:    s.httpsPort(),
		}, s.spawner, s.log)
		s.slots[p.Name] = sl
		for _, h := range p.Hostnames {
			table.Add(h, sl)
		}
		go sl.run()
	}
	s.disp.SetTable(table)
}

func (s *Supervisor) awaitFirstStarts(ctx context.Context) {
	s.mu.Lock()
	slots := make([]*slot, 0, len(s.slots))
	for _, sl := range s.slots {
		slots = append(slots, sl)
	}
	s.mu.Unlock()
	for _, sl := range slots {
		select {
		case <-sl.first:
		case <-ctx.Done():
			return
		}
	}
}

// status is the one-line STATUS= text.
func (s *Supervisor) status() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var up, down []string
	for name, sl := range s.slots {
		if sl.current() != nil {
			up = append(up, name)
		} else {
			down = append(down, name)
		}
	}
	sort.Strings(up)
	sort.Strings(down)
	if len(up) == 0 && len(down) == 0 {
		return "no proxies configured"
	}
	st := fmt.Sprintf("serving %d proxies", len(up))
	if len(up) > 0 {
		st += ": " + strings.Join(up, ", ")
	}
	if len(down) > 0 {
		st += fmt.Sprintf("; %d not running: %s", len(down), strings.Join(down, ", "))
	}
	return st
}

func (s *Supervisor) shutdown(serveWG *sync.WaitGroup) error {
	s.notify("STOPPING=1\nSTATUS=draining")
	// Stop accepting. Under socket activation systemd keeps its own copy of
	// the sockets, so new connections wait in the backlog for the next start.
	s.sockets.Close()
	serveWG.Wait()
	s.disp.Wait()
	s.mu.Lock()
	slots := s.slots
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sl := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sl.shutdown()
		}()
	}
	wg.Wait()
	s.log.Info("mcpgate stopped")
	return nil
}

// httpsPort is the port of the first HTTPS listener, for redirects.
func (s *Supervisor) httpsPort() int {
	for _, l := range s.sockets.Stream[activation.HTTPS] {
		if ta, ok := l.Addr().(*net.TCPAddr); ok {
			return ta.Port
		}
	}
	return 0
}

func (s *Supervisor) describeListeners() string {
	var parts []string
	for name, ls := range s.sockets.Stream {
		for _, l := range ls {
			parts = append(parts, name+"="+l.Addr().String())
		}
	}
	for name, ps := range s.sockets.Packet {
		for _, p := range ps {
			parts = append(parts, name+"="+p.LocalAddr().String())
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
