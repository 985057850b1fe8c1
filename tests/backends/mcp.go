// Package backends holds in-process upstream servers for mcpgate's
// end-to-end tests: a real MCP server built with the official Go SDK, an SSE
// server whose second event waits for the test, an SSE ticker that resumes
// after Last-Event-ID, an echo server that reports the request it received,
// a slow server, a server that holds requests until the test releases
// them, and a closed port. Each listens on 127.0.0.1:0 and is closed at
// test cleanup.
package backends

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// UserHeader is the header through which the gateway names the
// authenticated user to the backend.
const UserHeader = "X-MCPGate-User"

type textIn struct {
	Text string `json:"text" jsonschema:"text to return"`
}

// NewMCP starts a go-sdk MCP server (Streamable HTTP at /mcp) named name
// with the tools:
//
//   - echo {text}: returns text
//   - server_name: returns name, so a test can tell which backend answered
//   - whoami: returns the X-MCPGate-User header of the request, or "anonymous"
//
// The handler keeps the SDK defaults, including its DNS-rebinding check
// (a loopback listener rejects non-loopback Host headers): a gateway that
// forwards the client's Host instead of the target's fails against it, as
// it would against a real server.
func NewMCP(t testing.TB, name string) *httptest.Server {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: name, Version: "test"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Return the text."},
		func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "server_name", Description: "Return this backend's name."},
		func(context.Context, *mcp.CallToolRequest, any) (*mcp.CallToolResult, any, error) {
			return text(name), nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Return the " + UserHeader + " header, or anonymous."},
		func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			user := "anonymous"
			if req.Extra != nil && req.Extra.Header.Get(UserHeader) != "" {
				user = req.Extra.Header.Get(UserHeader)
			}
			return text(user), nil, nil
		})

	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		// Session GET streams stay open until the client goes; Close would
		// wait for them.
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
