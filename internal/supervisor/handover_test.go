package supervisor

import (
	"os"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// TestParsePreviousHandover: the description of listeners and live workers
// that the previous build (before internal/wire, protocol 0) passes across
// the re-exec decodes with every descriptor and worker intact.
func TestParsePreviousHandover(t *testing.T) {
	b, err := os.ReadFile("testdata/handover.v0.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseHandover(b)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if st.Protocol != 0 || !st.Activated || st.Control != 11 || st.ControlListener != 12 || !st.Started.Equal(at) || st.QUICKey == nil || st.QUICKey[0] != 9 {
		t.Errorf("handover header = %+v", st)
	}
	if len(st.Listeners) != 2 || st.Listeners[0] != (handoverListener{Name: "https", FD: 7}) || st.Listeners[1] != (handoverListener{Name: "quic", FD: 8, Packet: true}) {
		t.Errorf("listeners = %+v", st.Listeners)
	}
	if len(st.Workers) != 1 {
		t.Fatalf("workers = %+v", st.Workers)
	}
	w := st.Workers[0]
	if w.PID != 4242 || w.FD != 9 || w.DgramFD != 10 || w.Draining || w.Spec.Proxy == nil || w.Spec.Proxy.Name != "alpha" ||
		w.Spec.QUIC == nil || w.Spec.QUIC.WorkerID != 7 || w.Spec.DrainTimeout != 30*time.Second || w.Spec.Protocol != 0 {
		t.Errorf("worker = %+v, spec %+v", w, w.Spec)
	}
	if w.Ready.PID != 4242 || w.Ready.BuildID != "prev-build" || w.Ready.Protocol != 0 {
		t.Errorf("ready = %+v", w.Ready)
	}
}

// TestParseHandoverRefusesNewerProtocol: a handover from a build newer
// than this one (a downgrade) fails loudly instead of misreading it.
func TestParseHandoverRefusesNewerProtocol(t *testing.T) {
	_, err := parseHandover([]byte(`{"protocol": 99, "listeners": []}`))
	if err == nil {
		t.Fatal("accepted protocol 99")
	}
	if want := "upgrade handover: " + wire.CheckProtocol(99).Error(); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}
