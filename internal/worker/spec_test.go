package worker

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/logging/logtest"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// TestDecodeSpecLeavesGateway: the spec decodes without its gateway table,
// which comes back as raw JSON and decodes to the same proxies, this
// worker's own entry in full.
func TestDecodeSpecLeavesGateway(t *testing.T) {
	own := &config.Proxy{Name: "alpha", Enabled: true, Hostnames: []string{"alpha.test"}, Target: config.Upstream{Raw: "http://127.0.0.1:9", Scheme: "http", Host: "127.0.0.1:9"},
		Auth: config.Auth{Required: true, ResourcePath: "/mcp"}}
	cut := &config.Proxy{Name: "alpha", Enabled: true, Hostnames: []string{"alpha.test"}, Auth: own.Auth}
	beta := &config.Proxy{Name: "beta", Enabled: true, Hostnames: []string{"*.beta.test"},
		Auth: config.Auth{Required: true, ResourcePath: "/", Users: config.Users{Allowed: []string{"bob"}}}}
	// As the supervisor writes it (encodeSpec: the table spliced in as
	// the last member), and as json.Marshal would, with members after it.
	quic := &wire.QUICSpec{WorkerID: 3, Port: 8443}
	withoutGW, err := json.Marshal(wire.Spec{Protocol: wire.Protocol, Proxy: own, StateDir: "/s", QUIC: quic})
	if err != nil {
		t.Fatal(err)
	}
	gwJSON, _ := json.Marshal([]*config.Proxy{cut, beta})
	spliced := append(append(append(withoutGW[:len(withoutGW)-1:len(withoutGW)-1], wire.GatewayMember...), gwJSON...), '}')
	marshalled, err := json.Marshal(wire.Spec{Protocol: wire.Protocol, Proxy: own, StateDir: "/s", Gateway: []*config.Proxy{cut, beta}, QUIC: quic})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasSuffix(marshalled, []byte("]}")) {
		t.Fatal("the marshalled layout ends with the gateway table: it does not test the other path")
	}
	for name, b := range map[string][]byte{"spliced": spliced, "marshalled": marshalled} {
		t.Run(name, func(t *testing.T) { checkDecodedSpec(t, b, own, beta, name == "spliced") })
	}
}

func checkDecodedSpec(t *testing.T, b []byte, own, beta *config.Proxy, cut bool) {
	spec, raw, err := decodeSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	// The spliced table is cut off unread: raw is the end of b itself.
	if got := len(raw) > 0 && &raw[0] == &b[len(b)-1-len(raw)]; got != cut {
		t.Errorf("table cut off from the input: %v, want %v", got, cut)
	}
	if spec.QUIC == nil || spec.QUIC.WorkerID != 3 {
		t.Errorf("QUIC %+v", spec.QUIC)
	}
	if spec.Gateway != nil {
		t.Errorf("the spec's Gateway was decoded: %+v", spec.Gateway)
	}
	if spec.Proxy.Name != "alpha" || spec.Proxy.Target != own.Target || spec.StateDir != "/s" {
		t.Errorf("spec %+v, proxy %+v", spec, spec.Proxy)
	}
	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	gw := decodeGateway(raw, spec.Proxy, log)
	if len(gw) != 2 || gw[0] != spec.Proxy || !reflect.DeepEqual(gw[1], beta) {
		t.Errorf("gateway %+v, want [own entry, %+v]", gw, beta)
	}

	// Fail closed: a table that does not decode is no table, and says so.
	if gw := decodeGateway(json.RawMessage(`[{"name": 7}]`), spec.Proxy, log); gw != nil {
		t.Errorf("undecodable table gave %+v", gw)
	}
	if !strings.Contains(logs.String(), "does not decode") {
		t.Errorf("no error logged: %s", logs.String())
	}
	if gw := decodeGateway(nil, spec.Proxy, log); gw != nil {
		t.Errorf("no table gave %+v", gw)
	}
}
