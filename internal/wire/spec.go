package wire

import (
	"time"

	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/config"
)

// Spec is everything a worker needs, written by the supervisor to FdSpec
// after it validated the whole configuration. The worker does not read the
// config files itself, so it always runs exactly the config the supervisor
// accepted.
type Spec struct {
	// Protocol is the wire version the supervisor speaks (0: before
	// versioning).
	Protocol     int           `json:"protocol,omitempty"`
	Proxy        *config.Proxy `json:"proxy"`
	StateDir     string        `json:"state_dir"`
	DrainTimeout time.Duration `json:"drain_timeout"`
	// HTTPSPort is the port plain-HTTP requests are redirected to; 0 or 443
	// means the default port.
	HTTPSPort int `json:"https_port,omitempty"`
	// Generation counts the workers started for this proxy; for logs.
	Generation uint64 `json:"generation"`
	// OAuth is the gateway's authorization server configuration, nil when
	// there is none. Gateway lists every enabled proxy: any host may issue
	// tokens for any of the gateway's resources.
	OAuth   *config.OAuth   `json:"oauth,omitempty"`
	Gateway []*config.Proxy `json:"gateway,omitempty"`
	// Store is the shared OAuth store ([store]); nil: SQLite in StateDir.
	Store *config.Store `json:"store,omitempty"`
	// PprofDir, if set, is where the worker serves Go's profiler.
	PprofDir string `json:"pprof_dir,omitempty"`
	// QUIC is set when this worker serves HTTP/3.
	QUIC *QUICSpec `json:"quic,omitempty"`
	// The zero values of these three are the defaults, also for a spec
	// from an older supervisor (a package upgrade reloads before the
	// supervisor itself is replaced).
	//
	// AccessLogOff is [server] access_log = false.
	AccessLogOff bool `json:"access_log_off,omitempty"`
	// HealthDetails is [server] health_details; "" is the default,
	// config.HealthDetailsLoopback.
	HealthDetails string `json:"health_details,omitempty"`
	// LogLevel is [server] log_level; the supervisor passes it as the
	// worker's --log-level unless serve was given one itself.
	LogLevel string `json:"log_level,omitempty"`
	// ACME is the CA, set when the proxy sets [tls] acme = true.
	ACME *config.ACME `json:"acme,omitempty"`
	// RevocationRelay says the supervisor relays KindRevoked: a worker on
	// the SQLite store then announces each revocation it commits and
	// reads the revocation log when told, instead of polling it four
	// times a second. A field rather than a raised Protocol, as WideCIDs:
	// a previous supervisor's spec lacks it, and its workers poll.
	RevocationRelay bool `json:"revocation_relay,omitempty"`
}

// GatewayMember is how the supervisor appends Spec.Gateway to the encoded
// spec, as its last member, so a worker can cut the table off unread and
// decode it at its first request.
const GatewayMember = `,"gateway":`

// Drain is the drain schedule of a worker of this spec.
func (s *Spec) Drain() DrainSchedule { return NewDrainSchedule(s.DrainTimeout) }

// QUICSpec is what a worker needs for HTTP/3.
type QUICSpec struct {
	// WorkerID is encoded in the connection ids this worker chooses, so the
	// supervisor routes later packets to it; CIDKey keys that encoding.
	// 16 bits wide; a previous build's supervisor gives ids below 256.
	WorkerID uint16   `json:"worker_id"`
	CIDKey   [16]byte `json:"cid_key"`
	// WideCIDs says the supervisor decodes quicroute's wide (16-bit worker
	// id) connection ids; without it the worker writes the narrow layout,
	// the only one a previous build's supervisor decodes. A field rather
	// than a raised Protocol: a previous supervisor reloading onto the
	// upgraded binary on disk must still accept the new worker's messages,
	// and it sends a spec without this field.
	WideCIDs bool `json:"wide_cids,omitempty"`
	// Port is the UDP port clients reach, for Alt-Svc.
	Port int `json:"port"`
}

// Ready is the worker's first message (KindReady): it serves from now on.
type Ready struct {
	// Protocol is the wire version the worker speaks (0: before
	// versioning). An upgraded supervisor keeps talking to workers of the
	// previous build, so it needs to know.
	Protocol   int       `json:"protocol,omitempty"`
	PID        int       `json:"pid"`
	Proxy      string    `json:"proxy"`
	Version    string    `json:"version"` // the build's version, not the protocol's
	BuildID    string    `json:"build_id"`
	ConfigHash string    `json:"config_hash"`
	Started    time.Time `json:"started"`
}

// Stats is what a worker reports while it runs (KindStats).
type Stats struct {
	Protocol    int   `json:"protocol,omitempty"`
	Connections int64 `json:"connections"`
	// Certificates: with [tls] acme = true, one per hostname.
	Certificates []certstatus.Cert `json:"certificates,omitempty"`
	// Metrics: the worker's counters for /metrics; absent from workers
	// of a build before metrics.
	Metrics *Metrics `json:"metrics,omitempty"`
}
