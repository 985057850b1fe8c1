// Package supervisor is `mcpgate serve`: it owns the listening sockets,
// starts one worker process per enabled proxy, routes connections to them,
// restarts workers that die, reloads (new workers from the binary on disk,
// then drain the old ones) and drains everything on shutdown.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
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
	"github.com/mcpgate/mcpgate/internal/wire"
)

// Options configure a supervisor.
type Options struct {
	ConfigDir string
	// Executable is the binary workers are started from; default: this
	// process's executable as it is on disk now (os.Executable follows a
	// replaced file, so after a package upgrade it is the new version).
	Executable string
	Log        *slog.Logger
	// LogLevel is passed on to workers; "" = [server] log_level of the
	// configuration each worker runs.
	LogLevel string
	// Notify sends a systemd notification; default: sd_notify.
	Notify func(state string)
}

// Supervisor is a running `mcpgate serve`.
type Supervisor struct {
	opts      Options
	log       *slog.Logger
	notify    func(string)
	sockets   *activation.Sockets
	activated bool
	disp      *dispatch.Dispatcher
	spawner   spawner
	// quicWorkers are the workers serving HTTP/3, for the QUIC path and
	// the spawner.
	quicWorkers *quicWorkers
	started     time.Time
	control     net.Listener
	metrics     *workerMetrics
	relay       *revocationRelay

	mu         sync.Mutex
	cfg        *config.Config     // guarded by mu; the configuration being served
	slots      map[string]*slot   // guarded by mu; the proxies being served
	draining   map[*slot]struct{} // guarded by mu; retired slots still draining
	lastReload *ReloadResult      // guarded by mu

	reqMu   sync.Mutex
	pending []reloadRequest // guarded by reqMu; requests not yet taken by a reload
	wake    chan struct{}   // capacity 1: "pending is not empty"

	accepting sync.WaitGroup // the accept loops
	quic      *quicPath      // nil without a quic socket

	// runReload performs one reload; s.reload, replaceable in tests.
	runReload func(trigger string) ReloadResult
	// runUpgrade performs an upgrade (returning only if it failed);
	// s.upgrade, replaceable in tests.
	runUpgrade func([]reloadRequest) ReloadResult
}

// Run starts the supervisor and blocks until ctx is done or SIGTERM/SIGINT
// arrives, then drains the workers. Its phases: acquire what it serves
// with (handover, sockets, configuration, control socket), build the
// supervisor, start serving, serve signals until told to stop.
func Run(ctx context.Context, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	res, err := acquire(opts)
	if err != nil {
		return err
	}
	defer res.close()
	s := newSupervisor(opts, res)
	// The metrics listener is the configuration's at start; a reload
	// cannot move it (warnUnappliable).
	mctx, stopMetrics := context.WithCancel(ctx)
	defer stopMetrics()
	go s.serveMetrics(mctx, res.cfg.Server.Metrics)
	s.log.Info("mcpgate starting", "version", buildinfo.Version(), "build_id", buildinfo.ID(), "pid", os.Getpid(),
		"socket_activated", res.activated, "upgraded", res.handover != nil, "config_dir", opts.ConfigDir, "listeners", s.describeListeners())

	// Signals are caught from here on, before any worker starts.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	s.start(ctx, res.handover)
	return s.serve(ctx, sigs)
}

func (opts Options) withDefaults() (Options, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = func(state string) { daemon.SdNotify(false, state) }
	}
	if opts.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return opts, fmt.Errorf("finding own executable: %w", err)
		}
		opts.Executable = exe
	}
	return opts, nil
}

// resources are what Run acquires before serving, and releases at the end.
type resources struct {
	handover  *handoverState // nil unless this process is an upgrade
	sockets   *activation.Sockets
	activated bool
	cfg       *config.Config
	control   net.Listener
}

func (r *resources) close() {
	r.control.Close()
	r.sockets.Close()
}

// acquire is Run's first phase: the previous binary's handover, the
// listening sockets (inherited, from systemd, or bound), the configuration,
// the state directory and the control socket.
func acquire(opts Options) (*resources, error) {
	handover, err := takeHandover()
	if err != nil {
		return nil, err
	}
	// Take the sockets before anything can fail: go-systemd reads the
	// activation variables once.
	var sockets *activation.Sockets
	activated := false
	if handover != nil {
		sockets, activated = handover.sockets, handover.Activated
	} else if sockets, activated, err = activation.FromSystemd(); err != nil {
		return nil, err
	}
	cfg, err := config.Load(opts.ConfigDir)
	if err != nil {
		if sockets != nil {
			sockets.Close()
		}
		return nil, err
	}
	if sockets == nil {
		sockets, err = activation.Bind(cfg.Server.HTTPS, cfg.Server.HTTP, cfg.Server.QUIC)
		if err != nil {
			return nil, fmt.Errorf("binding listeners: %w", err)
		}
	}
	fail := func(err error) (*resources, error) {
		sockets.Close()
		return nil, err
	}
	if len(sockets.Stream[activation.HTTPS]) == 0 && len(sockets.Stream[activation.HTTP]) == 0 {
		return fail(errors.New("no listening sockets: configure [server] https/http or use socket activation"))
	}
	if err := os.MkdirAll(cfg.Server.StateDir, 0o700); err != nil {
		return fail(fmt.Errorf("state directory: %w", err))
	}
	control := handover.controlListener()
	if control == nil {
		if control, err = listenControl(filepath.Join(cfg.Server.StateDir, controlSocketName)); err != nil {
			return fail(err)
		}
	}
	return &resources{handover: handover, sockets: sockets, activated: activated, cfg: cfg, control: control}, nil
}

// newSupervisor is Run's second phase: the supervisor, not serving yet.
func newSupervisor(opts Options, res *resources) *Supervisor {
	qw := &quicWorkers{}
	wm := newWorkerMetrics()
	relay := newRevocationRelay()
	s := &Supervisor{
		metrics:     wm,
		relay:       relay,
		opts:        opts,
		log:         opts.Log,
		notify:      opts.Notify,
		sockets:     res.sockets,
		activated:   res.activated,
		disp:        &dispatch.Dispatcher{Log: opts.Log.With("component", "dispatch")},
		quicWorkers: qw,
		spawner:     &execSpawner{exe: opts.Executable, configDir: opts.ConfigDir, logLevel: opts.LogLevel, stderr: os.Stderr, log: opts.Log, quic: qw, metrics: wm, relay: relay},
		started:     time.Now(),
		control:     res.control,
		cfg:         res.cfg,
		slots:       map[string]*slot{},
		draining:    map[*slot]struct{}{},
		wake:        make(chan struct{}, 1),
	}
	s.runReload = s.reload
	s.runUpgrade = s.upgrade
	var quicKey *[16]byte
	if res.handover != nil && res.handover.QUICKey != nil {
		quicKey = res.handover.QUICKey
	}
	s.setupQUIC(quicKey)
	return s
}

// start is Run's third phase: workers (adopted after an upgrade, else
// started for the configuration), accepting, the control socket, the
// reloader, and READY=1.
func (s *Supervisor) start(ctx context.Context, handover *handoverState) {
	go s.relay.run(ctx.Done())
	if handover != nil {
		// Serve at once with the workers the previous binary left running,
		// then replace them with workers of this binary.
		s.adopt(handover)
		s.startAccepting()
		go s.serveControl(s.control)
		res := s.reload("upgrade")
		handover.reply(res)
	} else {
		res := s.apply(s.cfg)
		s.setLastReload(&res)
		s.startAccepting()
		go s.serveControl(s.control)
	}
	go s.reloader(ctx)
	// READY=1 once every worker has started or failed its first start, so
	// systemd's start job finishes with the proxies actually serving.
	s.notify("READY=1\nSTATUS=" + s.status())
	s.log.Info("mcpgate ready", "status", s.status())
}

// serve is Run's last phase: signals and status updates until ctx ends or
// a stop signal arrives, then the shutdown.
func (s *Supervisor) serve(ctx context.Context, sigs <-chan os.Signal) error {
	statusTick := time.NewTicker(5 * time.Second)
	defer statusTick.Stop()
	lastStatus := s.status()
	for {
		select {
		case <-ctx.Done():
			return s.shutdown()
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				s.enqueueReload("SIGHUP", nil)
			case syscall.SIGUSR2:
				s.enqueueUpgrade("SIGUSR2", nil)
			default:
				s.log.Info("signal received; shutting down", "signal", sig.String())
				return s.shutdown()
			}
		case <-statusTick.C:
			if st := s.status(); st != lastStatus {
				lastStatus = st
				s.notify("STATUS=" + st)
			}
		}
	}
}

// spec is the worker spec of proxy p; gateway is gatewayView of cfg.
func (s *Supervisor) spec(cfg *config.Config, p *config.Proxy, gateway []*config.Proxy) wire.Spec {
	return wire.Spec{
		Proxy:         p,
		StateDir:      cfg.Server.StateDir,
		DrainTimeout:  cfg.Server.DrainTimeout,
		HTTPSPort:     s.httpsPort(),
		OAuth:         cfg.OAuth,
		Store:         cfg.Store,
		Gateway:       gateway,
		QUIC:          s.quic.spec(p.HTTP3),
		PprofDir:      cfg.Server.PprofDir,
		AccessLogOff:  !cfg.Server.AccessLog,
		HealthDetails: cfg.Server.HealthDetails,
		LogLevel:      cfg.Server.LogLevel,
		ACME:          acmeFor(p, cfg.ACME),
	}
}

// acmeFor is the CA a worker needs: only for a proxy using ACME, so no
// other worker starts an ACME client.
func acmeFor(p *config.Proxy, a *config.ACME) *config.ACME {
	if !p.TLS.ACME {
		return nil
	}
	return a
}

// apply starts fresh workers for every enabled proxy of cfg, waits for
// them, switches routing to the ready ones and drains the workers they
// replace. A proxy whose new worker fails keeps its old wire.
func (s *Supervisor) apply(cfg *config.Config) ReloadResult {
	s.mu.Lock()
	old := s.slots
	s.mu.Unlock()

	fresh := map[string]*slot{}
	enabled := cfg.Enabled()
	gateway := gatewayView(enabled)
	for _, p := range enabled {
		fresh[p.Name] = newSlot(s.spec(cfg, p, gateway), s.spawner, s.log)
	}
	startAll(fresh)

	var res ReloadResult
	final := map[string]*slot{}
	var kept []*slot
	for _, name := range sortedNames(fresh) {
		sl := fresh[name]
		if sl.firstOK {
			final[name] = sl
			res.Started = append(res.Started, name)
			if p := sl.current(); p != nil && res.BuildID == "" {
				// The build the fresh workers run: after a package upgrade
				// it differs from the supervisor's own.
				res.BuildID = p.info().BuildID
			}
			continue
		}
		if o, ok := old[name]; ok {
			sl.shutdown()
			final[name] = o
			kept = append(kept, o)
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %s; the previous worker keeps serving", name, sl.firstErr))
			continue
		}
		// A new proxy has nothing to fall back to: its slot keeps retrying.
		final[name] = sl
		res.Failed = append(res.Failed, fmt.Sprintf("%s: %s; retrying in the background", name, sl.firstErr))
	}
	table := buildTable(final, kept)
	s.disp.SetTrustedProxies(cfg.Server.ProxyProtocolFrom)
	s.disp.SetTable(table)

	s.mu.Lock()
	s.slots = final
	s.cfg = cfg
	s.mu.Unlock()
	for _, name := range sortedNames(old) {
		o := old[name]
		if final[name] == o {
			continue
		}
		if _, still := final[name]; !still {
			res.Removed = append(res.Removed, name)
		}
		s.retire(o)
	}
	res.OK = len(res.Failed) == 0
	if res.BuildID == "" {
		res.BuildID = buildinfo.ID()
	}
	return res
}

// startConcurrency bounds how many fresh workers start at once. Started
// all together, hundreds of workers (a reload of 500 proxies beside their
// 500 old workers) share the CPUs so thinly that many miss readyTimeout,
// are killed and start again, and the reload never settles (make
// bench-scale); a few at a time, each gets ready in its own share of time
// and readyTimeout keeps its meaning.
func startConcurrency() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// startAll runs every slot, at most startConcurrency of them in their
// first start attempt at a time, and returns when each first attempt has
// settled.
func startAll(slots map[string]*slot) {
	sem := make(chan struct{}, startConcurrency())
	for _, name := range sortedNames(slots) {
		sl := slots[name]
		sem <- struct{}{}
		go sl.run()
		go func() { <-sl.first; <-sem }()
	}
	for _, sl := range slots {
		<-sl.first
	}
}

// buildTable routes every hostname of the slots. Kept old workers serve
// their old hostnames, unless a fresh proxy took one over: Add keeps the
// first owner, and the kept ones come last.
func buildTable(slots map[string]*slot, kept []*slot) *dispatch.Table {
	table := dispatch.NewTable()
	for _, name := range sortedNames(slots) {
		if sl := slots[name]; !slices.Contains(kept, sl) {
			for _, h := range sl.spec.Proxy.Hostnames {
				table.Add(h, sl)
			}
		}
	}
	for _, sl := range kept {
		for _, h := range sl.spec.Proxy.Hostnames {
			table.Add(h, sl)
		}
	}
	return table
}

// retire drains a replaced slot in the background, visible in status until
// its worker has exited.
func (s *Supervisor) retire(sl *slot) {
	s.mu.Lock()
	s.draining[sl] = struct{}{}
	s.mu.Unlock()
	go func() {
		sl.shutdown()
		s.mu.Lock()
		delete(s.draining, sl)
		s.mu.Unlock()
	}()
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *Supervisor) startAccepting() {
	if s.quic != nil {
		s.accepting.Add(1)
		go func() {
			defer s.accepting.Done()
			s.quic.serve()
		}()
	}
	for name, ls := range s.sockets.Stream {
		for _, l := range ls {
			s.accepting.Add(1)
			go func() {
				defer s.accepting.Done()
				if name == activation.HTTPS {
					s.disp.ServeTLS(l)
				} else {
					s.disp.ServeHTTP(l)
				}
			}()
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
	var st string
	switch {
	case len(up) == 0 && len(down) == 0:
		st = "no proxies configured"
	default:
		st = fmt.Sprintf("serving %d proxies", len(up))
		if len(up) > 0 {
			st += ": " + strings.Join(up, ", ")
		}
		if len(down) > 0 {
			st += fmt.Sprintf("; %d not running: %s", len(down), strings.Join(down, ", "))
		}
	}
	if len(s.draining) > 0 {
		st += fmt.Sprintf("; %d draining", len(s.draining))
	}
	if r := s.lastReload; r != nil && len(r.Errors) > 0 {
		st += fmt.Sprintf("; last reload rejected (%d config errors, see journal), serving the previous configuration", len(r.Errors))
	}
	return st
}

func (s *Supervisor) shutdown() error {
	s.notify("STOPPING=1\nSTATUS=draining")
	s.control.Close()
	// Stop accepting. Under socket activation systemd keeps its own copy of
	// the sockets, so new connections wait in the backlog for the next start.
	s.sockets.Close()
	s.accepting.Wait()
	s.disp.Wait()
	s.mu.Lock()
	var all []*slot
	for _, sl := range s.slots {
		all = append(all, sl)
	}
	for sl := range s.draining {
		all = append(all, sl)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sl := range all {
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
