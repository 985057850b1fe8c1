package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/policy/host"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// The control socket lives in the state directory, which the config names,
// so `mcpgate reload --config-dir X` finds the supervisor serving X and
// several instances on one machine never collide.
const controlSocketName = "mcpgate.sock"

// ControlSocketPath returns the control socket of the instance configured
// in dir. It reads only mcpgate.toml, so a broken proxy file does not stop
// a reload from reaching the supervisor and reporting it.
func ControlSocketPath(dir string) (string, error) {
	srv, err := config.LoadGlobal(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(srv.StateDir, controlSocketName), nil
}

// listenControl binds the control socket, refusing to take over the socket
// of another live instance.
func listenControl(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another mcpgate is already running with control socket %s (same state_dir)", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Only the service's own user may reload or upgrade it.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return l, nil
}

func (s *Supervisor) serveControl(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handleControl(c)
	}
}

func (s *Supervisor) handleControl(c net.Conn) {
	keep := false
	defer func() {
		if !keep {
			c.Close()
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req wire.ControlRequest
	if err := json.NewDecoder(io.LimitReader(c, 4096)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(wire.ControlResponse{Protocol: wire.Protocol, Error: "bad request: " + err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	var resp wire.ControlResponse
	switch req.Command {
	case wire.CmdReload:
		r := s.requestReload("control socket")
		resp.Reload = &r
	case wire.CmdStatus:
		st := s.Status()
		resp.Status = &st
	case wire.CmdRenewCert:
		r, err := s.renewCert(req.Name)
		if err != nil {
			resp.Error = err.Error()
		}
		resp.Renew = r
	case wire.CmdRevoked:
		s.relay.announce()
	case wire.CmdUpgrade:
		// The answer comes from the next binary, over this same connection,
		// which the upgrade hands over.
		keep = true
		s.enqueueUpgrade("control socket", c)
		return
	default:
		resp.Error = unknownCommand + strconv.Quote(req.Command)
	}
	resp.Protocol = wire.Protocol
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(c).Encode(resp)
}

// Control sends one command to the supervisor at socket path and returns
// its answer. ctx bounds the whole exchange.
func Control(ctx context.Context, path, command string) (*wire.ControlResponse, error) {
	return control(ctx, path, wire.ControlRequest{Command: command})
}

func control(ctx context.Context, path string, req wire.ControlRequest) (*wire.ControlResponse, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cannot reach mcpgate at %s (is it running?): %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req.Protocol = wire.Protocol
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp wire.ControlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("reading answer from mcpgate: %w", err)
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp, nil
}

// unknownCommand begins the answer to a command this build does not know;
// every build since the control socket existed wrote it so, and
// AnnounceRevocations recognises an older supervisor by it.
const unknownCommand = "unknown command "

// AnnounceRevocations tells the supervisor serving stateDir that the
// caller committed revocations to its SQLite store, for it to relay them
// to every worker (the admin commands). No supervisor running is not an
// error: there is no worker to tell. Neither is one of a build before the
// relay: its workers read the log by themselves.
func AnnounceRevocations(ctx context.Context, stateDir string) error {
	path := filepath.Join(stateDir, controlSocketName)
	_, err := control(ctx, path, wire.ControlRequest{Command: wire.CmdRevoked})
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil
	case strings.HasPrefix(err.Error(), unknownCommand):
		return nil
	}
	return err
}

// Reload asks the supervisor configured in dir to reload and returns its
// verdict.
func Reload(ctx context.Context, dir string) (*ReloadResult, error) {
	return controlReload(ctx, dir, wire.CmdReload)
}

// Upgrade asks the supervisor configured in dir to re-execute itself from
// the binary on disk, then reload its workers.
func Upgrade(ctx context.Context, dir string) (*ReloadResult, error) {
	return controlReload(ctx, dir, wire.CmdUpgrade)
}

func controlReload(ctx context.Context, dir, cmd string) (*ReloadResult, error) {
	path, err := ControlSocketPath(dir)
	if err != nil {
		return nil, err
	}
	resp, err := Control(ctx, path, cmd)
	if err != nil {
		return nil, err
	}
	if resp.Reload == nil {
		return nil, errors.New("mcpgate sent no reload result")
	}
	return resp.Reload, nil
}

// GetStatus asks the supervisor configured in dir for its status.
func GetStatus(ctx context.Context, dir string) (*Status, error) {
	path, err := ControlSocketPath(dir)
	if err != nil {
		return nil, err
	}
	resp, err := Control(ctx, path, wire.CmdStatus)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, errors.New("mcpgate sent no status")
	}
	return resp.Status, nil
}

// RenewCert asks the supervisor configured in dir to have the worker that
// manages the ACME certificate of hostname renew it now.
func RenewCert(ctx context.Context, dir, hostname string) (*wire.RenewResult, error) {
	path, err := ControlSocketPath(dir)
	if err != nil {
		return nil, err
	}
	resp, err := control(ctx, path, wire.ControlRequest{Command: wire.CmdRenewCert, Name: hostname})
	if err != nil {
		return nil, err
	}
	if resp.Renew == nil {
		return nil, errors.New("mcpgate sent no renewal result")
	}
	return resp.Renew, nil
}

// renewCert sends a renewal request to the ready worker of the proxy that
// manages hostname's certificate.
func (s *Supervisor) renewCert(hostname string) (*wire.RenewResult, error) {
	name, err := host.Name([]byte(hostname))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", hostname, err)
	}
	s.mu.Lock()
	var owner *slot
	for _, sl := range s.slots {
		if sl.spec.Proxy.TLS.ACME && slices.Contains(sl.spec.Proxy.Hostnames, name) {
			owner = sl
		}
	}
	s.mu.Unlock()
	if owner == nil {
		return nil, fmt.Errorf("no proxy gets a certificate for %q with ACME", hostname)
	}
	p := owner.current()
	if p == nil {
		return nil, fmt.Errorf("the worker of proxy %s is not running", owner.Name())
	}
	if err := p.hc.Send(wire.KindRenew, []byte(name)); err != nil {
		return nil, fmt.Errorf("asking the worker of proxy %s: %w", owner.Name(), err)
	}
	s.log.Info("certificate renewal requested", "name", name, "proxy", owner.Name(), "pid", p.pid())
	return &wire.RenewResult{Name: name, Proxy: owner.Name(), PID: p.pid()}, nil
}

func replyConn(c net.Conn, res ReloadResult) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(c).Encode(wire.ControlResponse{Protocol: wire.Protocol, Reload: &res})
}
