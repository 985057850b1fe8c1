package worker

import (
	"runtime"
	"testing"
)

// TestKeepHeapProfile: a worker samples allocations for a heap profile
// only when pprof_dir lets someone read it.
func TestKeepHeapProfile(t *testing.T) {
	saved := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = saved })
	const rate = 512 * 1024 // Go's default

	runtime.MemProfileRate = rate
	keepHeapProfile("/run/mcpgate/pprof")
	if runtime.MemProfileRate != rate {
		t.Errorf("with pprof_dir: MemProfileRate = %d, want %d", runtime.MemProfileRate, rate)
	}
	keepHeapProfile("")
	if runtime.MemProfileRate != 0 {
		t.Errorf("without pprof_dir: MemProfileRate = %d, want 0 (no sampling)", runtime.MemProfileRate)
	}
}
