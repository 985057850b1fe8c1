package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
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
	case wire.CmdUpgrade:
		// The answer comes from the next binary, over this same connection,
		// which the upgrade hands over.
		keep = true
		s.enqueueUpgrade("control socket", c)
		return
	default:
		resp.Error = fmt.Sprintf("unknown command %q", req.Command)
	}
	resp.Protocol = wire.Protocol
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(c).Encode(resp)
}

// Control sends one command to the supervisor at socket path and returns
// its answer. ctx bounds the whole exchange.
func Control(ctx context.Context, path, command string) (*wire.ControlResponse, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cannot reach mcpgate at %s (is it running?): %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(wire.ControlRequest{Protocol: wire.Protocol, Command: command}); err != nil {
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

func replyConn(c net.Conn, res ReloadResult) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(c).Encode(wire.ControlResponse{Protocol: wire.Protocol, Reload: &res})
}
