package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// The spec and the messages a worker sends are defined in internal/wire,
// which the supervisor shares; these names keep the worker's code short.
type (
	Spec     = wire.Spec
	QUICSpec = wire.QUICSpec
	Ready    = wire.Ready
	Stats    = wire.Stats
)

// Descriptors a worker inherits from the supervisor; see internal/wire.
const (
	FdSpec     = wire.FdSpec
	FdHandoff  = wire.FdHandoff
	FdQUICIn   = wire.FdQUICIn
	FdQUICConn = wire.FdQUICConn
)

// ReadSpec reads the spec the supervisor wrote to fd FdSpec. Its gateway
// table is returned undecoded (Spec.Gateway is nil), for decodeGateway at
// the policy's first question.
func ReadSpec() (*Spec, json.RawMessage, error) {
	f := os.NewFile(FdSpec, "spec")
	if f == nil {
		return nil, nil, errors.New("worker: no spec descriptor (workers are started by `mcpgate serve`)")
	}
	defer f.Close()
	b, err := readAll(f, 16<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: reading spec: %w", err)
	}
	return decodeSpec(b)
}

// decodeSpec is ReadSpec's decoding of the bytes read. The gateway table
// is cut off unread when it is the last member, as the supervisor writes
// it: encoding/json reads every byte of a json.RawMessage twice (once to
// check the whole input, once to find the value's end), a millisecond per
// worker at 500 proxies. A quote inside a JSON string is escaped, so the
// member's key cannot appear elsewhere; any other layout is decoded in
// full.
func decodeSpec(b []byte) (*Spec, json.RawMessage, error) {
	if i := bytes.LastIndex(b, []byte(wire.GatewayMember)); i > 0 && bytes.HasSuffix(b, []byte("]}")) {
		var s Spec
		head := append(b[:i:i], '}')
		if err := json.Unmarshal(head, &s); err == nil && s.Gateway == nil {
			return checkSpec(&s, json.RawMessage(b[i+len(wire.GatewayMember):len(b)-1]))
		}
	}
	// The outer Gateway, shallower, takes the member from Spec.Gateway.
	var s struct {
		Spec
		Gateway json.RawMessage `json:"gateway"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, fmt.Errorf("worker: decoding spec: %w", err)
	}
	return checkSpec(&s.Spec, s.Gateway)
}

func checkSpec(s *Spec, gateway json.RawMessage) (*Spec, json.RawMessage, error) {
	if err := wire.CheckProtocol(s.Protocol); err != nil {
		return nil, nil, fmt.Errorf("worker: spec: %w", err)
	}
	if s.Proxy == nil {
		return nil, nil, errors.New("worker: spec has no proxy")
	}
	return s, gateway, nil
}

// decodeGateway is the gateway table of a spec, with this worker's own
// entry in full (the supervisor sends the others cut down to what the
// policy reads). A table that does not decode is logged and answered as
// empty: the worker then owns no host and accepts no issuer.
func decodeGateway(raw json.RawMessage, own *config.Proxy, log *slog.Logger) []*config.Proxy {
	if len(raw) == 0 {
		return nil
	}
	var gw []*config.Proxy
	if err := json.Unmarshal(raw, &gw); err != nil {
		log.Error("the spec's gateway table does not decode; serving nothing", "err", err)
		return nil
	}
	for i, q := range gw {
		if q != nil && q.Name == own.Name {
			gw[i] = own
		}
	}
	return gw
}

// readAll reads f to EOF, at most limit bytes, into one buffer of the
// size the supervisor already wrote to the pipe (TIOCINQ, alias FIONREAD;
// usually all of it by now): io.ReadAll's doubling allocated twice the
// spec, garbage that stays in an idle worker's heap (no collection below
// 4 MiB).
func readAll(f *os.File, limit int64) ([]byte, error) {
	size := 512
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if n, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil && n > 0 {
				size = n + bytes.MinRead // room for ReadFrom to see EOF without growing
			}
		})
	}
	var buf bytes.Buffer
	buf.Grow(size)
	_, err := buf.ReadFrom(io.LimitReader(f, limit))
	return buf.Bytes(), err
}
