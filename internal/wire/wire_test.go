package wire

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.v<Protocol>.json from the current types")

var goldenAt = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

const goldenHash = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

// goldenMessages are the values every testdata/<name>.v<N>.json holds, in
// the format of protocol version N.
func goldenMessages() map[string]any {
	p := &config.Proxy{Name: "alpha", File: "/etc/mcpgate/alpha.toml", Enabled: true, Hostnames: []string{"alpha.example.com"},
		HTTP3: true, Hash: goldenHash,
		Target: config.Upstream{Raw: "http://127.0.0.1:9001", Scheme: "http", Host: "127.0.0.1:9001"}}
	p.TLS.SelfSigned = true
	rr := &ReloadResult{Errors: []string{"e"}, Failed: []string{"beta: worker exited before it was ready: exit status 1; the previous worker keeps serving"},
		Started: []string{"alpha"}, Removed: []string{"gamma"}, BuildID: "prev-build", Trigger: "SIGHUP", At: goldenAt, Duration: "1.5s"}
	return map[string]any{
		"spec": &Spec{Proxy: p, StateDir: "/var/lib/mcpgate", DrainTimeout: 30 * time.Second, HTTPSPort: 8443, Generation: 3,
			Gateway: []*config.Proxy{p}, QUIC: &QUICSpec{WorkerID: 7, CIDKey: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Port: 8443}},
		"ready": &Ready{PID: 4242, Proxy: "alpha", Version: "v1.2.3", BuildID: "prev-build", ConfigHash: goldenHash, Started: goldenAt},
		"stats": &Stats{Connections: 12},
		"control-status": &ControlResponse{Status: &Status{PID: 100, Version: "v1.2.3", BuildID: "prev-build", Started: goldenAt,
			ConfigDir: "/etc/mcpgate", Activated: true, Listeners: "https=127.0.0.1:8443",
			Workers: []WorkerStatus{{Proxy: "alpha", PID: 4242, State: StateReady, Version: "v1.2.3", BuildID: "prev-build",
				ConfigHash: goldenHash, Started: goldenAt, Connections: 12}}, LastReload: rr}},
		"control-reload":  &ControlResponse{Reload: rr},
		"control-request": &ControlRequest{Command: CmdStatus},
	}
}

// setProtocol sets the Protocol field of a message, as its writer would.
func setProtocol(m any, v int) {
	reflect.ValueOf(m).Elem().FieldByName("Protocol").SetInt(int64(v))
}

// TestDecodePreviousFormats: messages written by every older build, kept
// as golden files, decode strictly (no unknown field) into this build's
// types with the same meaning, and report their version. This is what an
// upgraded supervisor relies on to keep talking to the previous build's
// workers and commands.
func TestDecodePreviousFormats(t *testing.T) {
	for v := MinProtocol; v <= Protocol; v++ {
		for name, want := range goldenMessages() {
			path := filepath.Join("testdata", name+".v"+strconv.Itoa(v)+".json")
			if v == Protocol && *update {
				setProtocol(want, v)
				b, err := json.MarshalIndent(want, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/wire -update after raising Protocol)", err)
			}
			got := reflect.New(reflect.TypeOf(want).Elem()).Interface()
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(got); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			setProtocol(want, v)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s decodes to\n%+v\nwant\n%+v", path, got, want)
			}
			if err := CheckProtocol(int(reflect.ValueOf(got).Elem().FieldByName("Protocol").Int())); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
	}
}

func TestCheckProtocol(t *testing.T) {
	for v, ok := range map[int]bool{-1: false, MinProtocol: true, Protocol: true, Protocol + 1: false} {
		if err := CheckProtocol(v); (err == nil) != ok {
			t.Errorf("CheckProtocol(%d) = %v", v, err)
		}
	}
}

// TestKindBytes pins the byte of every kind: they are the wire format of
// both builds during an upgrade.
func TestKindBytes(t *testing.T) {
	want := map[Kind]string{KindTLS: "T", KindHTTP: "H", KindDrain: "D", KindReady: "R", KindStats: "S", KindRenew: "N", KindRevoked: "V"}
	for k, b := range want {
		if string(rune(k)) != b {
			t.Errorf("%v is %q, want %q", k, string(rune(k)), b)
		}
	}
	if !KindTLS.CarriesConn() || !KindHTTP.CarriesConn() || KindDrain.CarriesConn() {
		t.Error("CarriesConn wrong")
	}
	if got := Kind(0x7f).String(); got != "kind(0x7f)" {
		t.Errorf("unknown kind prints %q", got)
	}
}

// TestDrainSchedule pins the table documented in etc/mcpgate.toml, and
// the ordering the steps rely on at any drain_timeout.
func TestDrainSchedule(t *testing.T) {
	s := time.Second
	cases := []struct {
		timeout time.Duration
		want    DrainSchedule
	}{
		{30 * s, DrainSchedule{Timeout: 30 * s, FreshWait: s, H1Grace: s, GoAway: 15 * s, EndStreams: 30 * s, Close: 32 * s, Kill: 35 * s}},
		{2 * s, DrainSchedule{Timeout: 2 * s, FreshWait: s / 2, H1Grace: s / 2, GoAway: s, EndStreams: 2 * s, Close: 4 * s, Kill: 7 * s}},
	}
	for _, c := range cases {
		if got := NewDrainSchedule(c.timeout); got != c.want {
			t.Errorf("NewDrainSchedule(%v) = %+v, want %+v", c.timeout, got, c.want)
		}
	}
	for _, T := range []time.Duration{time.Millisecond, 100 * time.Millisecond, s, 4 * s, 30 * s, time.Hour} {
		d := NewDrainSchedule(T)
		steps := []time.Duration{0, d.FreshWait, d.GoAway, d.EndStreams, d.Close, d.Kill}
		for i := 1; i < len(steps); i++ {
			if steps[i] < steps[i-1] {
				t.Errorf("T=%v: step %d at %v comes before step %d at %v: %v", T, i, steps[i], i-1, steps[i-1], d)
			}
		}
		if d.Kill-d.Close < killMargin {
			t.Errorf("T=%v: the kill leaves the worker %v after Close", T, d.Kill-d.Close)
		}
	}
}

// TestQUICSpecWide: a worker id past the previous build's 8 bits crosses
// with the wide-id flag; the previous build's spec (golden v1) has no flag,
// so a worker it starts writes the narrow ids that supervisor decodes.
func TestQUICSpecWide(t *testing.T) {
	b, err := json.Marshal(&QUICSpec{WorkerID: 4097, WideCIDs: true, Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	var got QUICSpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil || got.WorkerID != 4097 || !got.WideCIDs {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "spec.v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s Spec
	if err := json.Unmarshal(old, &s); err != nil || s.QUIC == nil || s.QUIC.WideCIDs || s.QUIC.WorkerID != 7 {
		t.Fatalf("previous build's spec decoded to %+v, %v", s.QUIC, err)
	}
}
