package supervisor

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// A worker decodes the compact spec to exactly the spec the supervisor
// meant: its own proxy in full, the others as gatewayView cut them (an
// empty user list stays empty: it is not "inherit").
func TestEncodeSpecRoundTrip(t *testing.T) {
	full := []*config.Proxy{
		{Name: "a", File: "/etc/mcpgate/a.toml", Enabled: true, Hostnames: []string{"a.example", "*.a.example"},
			Target: config.Upstream{Raw: "http://127.0.0.1:1", Scheme: "http", Host: "127.0.0.1:1"}, HTTP3: true,
			TLS:  config.TLS{CertFile: "/c", KeyFile: "/k"},
			Auth: config.Auth{Required: true, Scopes: []string{"mcp"}, ResourcePath: "/mcp", PublicPaths: []string{"/pub"}}, Hash: "ab"},
		{Name: "b", Enabled: true, Hostnames: []string{"b.example"},
			Auth: config.Auth{Required: false, Scopes: []string{}, ResourcePath: "/",
				Users: config.Users{Allowed: []string{}, Admin: []string{"root"}, MCP: []string{"*"}}}},
	}
	view := gatewayView(full)
	spec := wire.Spec{Protocol: wire.Protocol, Proxy: full[0], StateDir: "/s", Gateway: view}
	b := encodeSpec(spec)
	if n := bytes.Count(b, []byte(`"gateway"`)); n != 1 {
		t.Fatalf("%d gateway keys in %s", n, b)
	}
	// Last, where a worker cuts it off without reading it (worker's
	// decodeSpec).
	if i := bytes.LastIndex(b, []byte(wire.GatewayMember)); i < 0 || !bytes.HasSuffix(b, []byte("]}")) ||
		!json.Valid(b[i+len(wire.GatewayMember):len(b)-1]) {
		t.Errorf("the gateway table is not the spec's last member: %s", b)
	}
	var got wire.Spec
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Proxy, full[0]) {
		t.Errorf("proxy: got %+v, want %+v", got.Proxy, full[0])
	}
	if !reflect.DeepEqual(got.Gateway, view) {
		t.Errorf("gateway: got %+v, want %+v", got.Gateway, view)
	}
	if got.Gateway[1].Auth.Users.Allowed == nil || got.Gateway[1].Auth.Scopes == nil {
		t.Error("an empty list came back as nil")
	}
	// The same view is encoded once.
	if c := encodeGateway(view); &c[0] != &encodeGateway(view)[0] {
		t.Error("gateway encoded again for the same view")
	}
}

// gatewayEntry must carry every field gatewayView keeps.
func TestGatewayEntryCoversView(t *testing.T) {
	v := gatewayView([]*config.Proxy{{Name: "n", Enabled: true, Hostnames: []string{"h"},
		Auth: config.Auth{Required: true, Scopes: []string{"s"}, ResourcePath: "/r", PublicPaths: []string{"/p"},
			Users: config.Users{Allowed: []string{"a"}, Admin: []string{"b"}, User: []string{"c"}, MCP: []string{"d"}}}}})[0]
	full, _ := json.Marshal(v)
	var a, b config.Proxy
	json.Unmarshal(full, &a)
	json.Unmarshal(encodeGateway([]*config.Proxy{v})[1:len(encodeGateway([]*config.Proxy{v}))-1], &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("compact entry decodes to %+v, the view to %+v", b, a)
	}
}

// gatewayAuth carries every field of config.Auth: a field added there and
// not here would reach workers as its zero value for the other proxies.
func TestGatewayAuthFields(t *testing.T) {
	want := reflect.TypeFor[config.Auth]()
	got := reflect.TypeFor[gatewayAuth]()
	if want.NumField() != got.NumField() {
		t.Fatalf("config.Auth has %d fields, gatewayAuth %d", want.NumField(), got.NumField())
	}
	for i := range want.NumField() {
		w, g := want.Field(i), got.Field(i)
		if w.Name != g.Name || w.Tag.Get("json") != g.Tag.Get("json") && w.Name != "Users" {
			t.Errorf("field %d: config.Auth %s %q, gatewayAuth %s %q", i, w.Name, w.Tag, g.Name, g.Tag)
		}
	}
}

// The hand-written exposition: families and samples sorted, label values
// and help escaped, a histogram's buckets cumulative with +Inf, _sum and
// _count.
func TestExposition(t *testing.T) {
	var e exposition
	g := newDesc("z_gauge", "A gauge\\with \"quotes\"\nand lines.", "gauge", "name")
	h := newDesc("a_seconds", "A histogram.", "histogram", "proxy")
	e.add(g, 2, "b")
	e.add(g, 1.5, "a\"\\\n")
	e.addHistogram(h, histSample{bounds: []float64{0.1, 1}, counts: []uint64{1, 3}, count: 4, sum: 2.5}, "p")
	var b bytes.Buffer
	e.write(&b)
	want := `# HELP a_seconds A histogram.
# TYPE a_seconds histogram
a_seconds_bucket{proxy="p",le="0.1"} 1
a_seconds_bucket{proxy="p",le="1"} 3
a_seconds_bucket{proxy="p",le="+Inf"} 4
a_seconds_sum{proxy="p"} 2.5
a_seconds_count{proxy="p"} 4
# HELP z_gauge A gauge\\with "quotes"\nand lines.
# TYPE z_gauge gauge
z_gauge{name="a\"\\\n"} 1.5
z_gauge{name="b"} 2
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
