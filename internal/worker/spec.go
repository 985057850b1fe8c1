package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

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
	b, err := readAll(f, 16<<20)
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
