package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// ownInitBudget bounds what any one mcpgate package allocates in its
// package initialisers. Every process of the binary runs them, each
// worker included, and an idle worker never collects garbage (its heap
// stays under Go's 4 MiB minimum), so what they allocate stays resident
// in every worker: templates, regexps and tables are built on first use
// instead (sync.OnceValue). internal/config's 3.4 KB was the largest
// when recorded.
const ownInitBudget = 4 << 10

// TestOwnPackageInitCheap runs this test binary, which links what
// mcpgate links, with GODEBUG=inittrace=1 and checks the bytes each of
// our packages allocates at init (tests/ packages, linked only into
// the test, are left out).
func TestOwnPackageInitCheap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.Bytes())
	}
	seen := 0
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		// init PKG @T ms, C ms clock, N bytes, M allocs
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != "init" || !strings.HasPrefix(f[1], "github.com/mcpgate/mcpgate/internal/") {
			continue
		}
		seen++
		n, err := strconv.Atoi(f[7])
		if err != nil || f[8] != "bytes," {
			t.Fatalf("unexpected inittrace line %q", sc.Text())
		}
		if n > ownInitBudget {
			t.Errorf("%s allocates %d bytes at init, more than %d: build it on first use", f[1], n, ownInitBudget)
		}
	}
	if seen == 0 {
		t.Fatalf("no inittrace lines for mcpgate packages in:\n%s", stderr.Bytes())
	}
}
