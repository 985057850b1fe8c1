package supervisor

import (
	"errors"
	"testing"
)

// TestAllocWIDWide: more than 4,096 live HTTP/3 workers (500 proxies and a
// reload's second generation, many times over) get distinct non-zero ids;
// ids of adopted previous-build workers are never given again; a freed id
// comes back only after the rest of the space; the space ends with an
// error, not a reused id.
func TestAllocWIDWide(t *testing.T) {
	var s quicWorkers
	s.setWID(7, &proc{}) // adopted from the previous build
	seen := map[uint16]bool{}
	for range 5000 {
		wid, err := s.allocWID()
		if err != nil {
			t.Fatal(err)
		}
		if wid == 0 || wid == 7 || seen[wid] {
			t.Fatalf("id %d given twice, zero or the adopted worker's", wid)
		}
		seen[wid] = true
	}
	s.setWID(3, nil) // worker 3 exited
	next, _ := s.allocWID()
	if next == 3 {
		t.Fatal("a just-freed id was given again before the rest of the space")
	}
	for {
		_, err := s.allocWID()
		if errors.Is(err, errNoWorkerID) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(s.byWID) > 65535 {
			t.Fatal("more ids than the space holds")
		}
	}
	if len(s.byWID) != 65535 {
		t.Fatalf("%d ids before exhaustion, want 65535", len(s.byWID))
	}
}
