package worker

import (
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
	b, err := json.Marshal(wire.Spec{Protocol: wire.Protocol, Proxy: own, StateDir: "/s", Gateway: []*config.Proxy{cut, beta}})
	if err != nil {
		t.Fatal(err)
	}
	spec, raw, err := decodeSpec(b)
	if err != nil {
		t.Fatal(err)
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
