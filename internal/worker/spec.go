package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

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

// ReadSpec reads the spec the supervisor wrote to fd FdSpec.
func ReadSpec() (*Spec, error) {
	f := os.NewFile(FdSpec, "spec")
	if f == nil {
		return nil, errors.New("worker: no spec descriptor (workers are started by `mcpgate serve`)")
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("worker: reading spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("worker: decoding spec: %w", err)
	}
	if err := wire.CheckProtocol(s.Protocol); err != nil {
		return nil, fmt.Errorf("worker: spec: %w", err)
	}
	if s.Proxy == nil {
		return nil, errors.New("worker: spec has no proxy")
	}
	return &s, nil
}
