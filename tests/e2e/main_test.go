// Package e2e runs the real mcpgate binary (built once, or $MCPGATE_BIN)
// under socket activation against in-process backends and checks the
// gateway's contract from the outside: routing by SNI and Host, HTTP/2,
// streaming without buffering, header policy, error statuses, worker
// restarts and `mcpgate check`. Every test starts its own gateway on its own
// loopback ports, so most run in parallel.
package e2e

import (
	"testing"

	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
	"github.com/mcpgate/mcpgate/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m, pgtest.Shutdown) }
