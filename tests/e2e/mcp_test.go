package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestMCPTwoProxies runs a real go-sdk MCP client through the gateway to two
// real go-sdk MCP servers behind two hostnames: initialize, tools/list and
// tool calls must reach the right backend, over HTTP/2 (and HTTP/1.1).
func TestMCPTwoProxies(t *testing.T) {
	t.Parallel()
	backendFor := map[string]string{"alpha.test": "alpha-backend", "beta.test": "beta-backend"}
	alpha := backends.NewMCP(t, backendFor["alpha.test"])
	beta := backends.NewMCP(t, backendFor["beta.test"])
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alpha.URL},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL},
	}})

	for _, pc := range protoCases {
		for _, host := range []string{"alpha.test", "beta.test"} {
			t.Run(pc.name+"/"+host, func(t *testing.T) {
				httpClient := g.Client(pc.cfg)
				rec := &harness.ProtoRecorder{Base: httpClient.Transport}
				httpClient.Transport = rec
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()

				client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "test"}, nil)
				session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
					Endpoint:   "https://" + host + "/mcp",
					HTTPClient: httpClient,
					MaxRetries: -1, // a failure is a failure, not a reason to retry
				}, nil)
				if err != nil {
					t.Fatalf("initialize via %s: %v", host, err)
				}
				defer session.Close()

				if got, want := session.InitializeResult().ServerInfo.Name, backendFor[host]; got != want {
					t.Errorf("initialize: serverInfo.name = %q, want %q", got, want)
				}

				tools, err := session.ListTools(ctx, nil)
				if err != nil {
					t.Fatalf("tools/list: %v", err)
				}
				var names []string
				for _, tool := range tools.Tools {
					names = append(names, tool.Name)
				}
				slices.Sort(names)
				if want := []string{"echo", "server_name", "whoami"}; !slices.Equal(names, want) {
					t.Errorf("tools/list = %v, want %v", names, want)
				}

				msg := "hello " + host
				if got := callText(ctx, t, session, "echo", map[string]any{"text": msg}); got != msg {
					t.Errorf("echo = %q, want %q", got, msg)
				}
				if got := callText(ctx, t, session, "server_name", nil); got != backendFor[host] {
					t.Errorf("server_name via %s = %q, want %q", host, got, backendFor[host])
				}
				if got := callText(ctx, t, session, "whoami", nil); got != "anonymous" {
					t.Errorf("whoami = %q, want anonymous (no auth configured)", got)
				}

				protos := rec.Protos()
				if len(protos) == 0 {
					t.Fatal("no HTTP responses recorded")
				}
				for _, p := range protos {
					if !strings.HasSuffix(p, " "+pc.proto) {
						t.Errorf("response %q, want protocol %s for all", p, pc.proto)
					}
				}
			})
		}
	}
}

// callText calls a tool and returns its first text content.
func callText(ctx context.Context, t *testing.T, s *mcp.ClientSession, name string, args map[string]any) string {
	t.Helper()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	if res.IsError || len(res.Content) == 0 {
		t.Fatalf("tools/call %s: error result %+v", name, res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("tools/call %s: content %T, want text", name, res.Content[0])
	}
	return tc.Text
}
