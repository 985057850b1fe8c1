package wire

import (
	"time"

	"github.com/mcpgate/mcpgate/internal/certstatus"
)

// The control socket (<state_dir>/mcpgate.sock) takes one JSON
// ControlRequest and answers one JSON ControlResponse. For "upgrade" the
// answer comes from the next binary, over the same connection.

// Control commands.
const (
	CmdReload  = "reload"
	CmdStatus  = "status"
	CmdUpgrade = "upgrade"
	// CmdRenewCert asks the worker serving ControlRequest.Name to renew
	// that ACME certificate now.
	CmdRenewCert = "renew-cert"
	// CmdRevoked tells the supervisor that the sender committed a
	// revocation to the SQLite store (the admin commands do); it relays
	// KindRevoked to every worker.
	CmdRevoked = "revoked"
)

// ControlRequest is a command to the supervisor.
type ControlRequest struct {
	Protocol int    `json:"protocol,omitempty"`
	Command  string `json:"command"`
	Name     string `json:"name,omitempty"` // renew-cert: the certificate's hostname
}

// ControlResponse is the supervisor's answer: Error, or the result of the
// command.
type ControlResponse struct {
	Protocol int           `json:"protocol,omitempty"`
	Error    string        `json:"error,omitempty"`
	Reload   *ReloadResult `json:"reload,omitempty"`
	Status   *Status       `json:"status,omitempty"`
	Renew    *RenewResult  `json:"renew,omitempty"`
}

// RenewResult says which worker was asked to renew a certificate; the
// outcome shows in its status.
type RenewResult struct {
	Name  string `json:"name"`
	Proxy string `json:"proxy"`
	PID   int    `json:"pid"`
}

// ReloadResult is the verdict of one reload.
type ReloadResult struct {
	OK bool `json:"ok"`
	// Errors are configuration errors ("file:line: key: message"); when
	// present nothing changed.
	Errors []string `json:"errors,omitempty"`
	// Failed lists proxies whose new worker did not become ready.
	Failed  []string `json:"failed,omitempty"`
	Started []string `json:"started,omitempty"` // proxies now on fresh workers
	Removed []string `json:"removed,omitempty"` // proxies drained and gone
	BuildID string   `json:"build_id,omitempty"`
	// Trigger and timing, for status.
	Trigger  string    `json:"trigger,omitempty"`
	At       time.Time `json:"at"`
	Duration string    `json:"duration,omitempty"`
}

// Status is what `mcpgate status` shows.
type Status struct {
	PID        int            `json:"pid"`
	Version    string         `json:"version"`
	BuildID    string         `json:"build_id"`
	Started    time.Time      `json:"started"`
	ConfigDir  string         `json:"config_dir"`
	Activated  bool           `json:"socket_activated"`
	Listeners  string         `json:"listeners"`
	Workers    []WorkerStatus `json:"workers"`
	LastReload *ReloadResult  `json:"last_reload,omitempty"`
}

// Worker states in WorkerStatus.
const (
	StateStarting   = "starting"
	StateReady      = "ready"
	StateRestarting = "restarting"
	StateDraining   = "draining"
)

// WorkerStatus describes one worker process.
type WorkerStatus struct {
	Proxy       string    `json:"proxy"`
	PID         int       `json:"pid"`
	State       string    `json:"state"` // StateStarting, StateReady, StateRestarting, StateDraining
	Version     string    `json:"version,omitempty"`
	BuildID     string    `json:"build_id,omitempty"`
	ConfigHash  string    `json:"config_hash"`
	Started     time.Time `json:"started"`
	Connections int64     `json:"connections"`
	// Certificates: with [tls] acme = true, each hostname's certificate.
	Certificates []certstatus.Cert `json:"certificates,omitempty"`
}
