package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// userTransport adds the header the gateway would set.
type userTransport struct{ user string }

func (u userTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(userHeader, u.user)
	return http.DefaultTransport.RoundTrip(r)
}

func TestTools(t *testing.T) {
	srv := httptest.NewServer(newHandler("demo", false, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	defer srv.CloseClientConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var progress atomic.Int32
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "test"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { progress.Add(1) },
	})
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   srv.URL + "/mcp",
		HTTPClient: &http.Client{Transport: userTransport{"alice"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if got := session.InitializeResult().ServerInfo.Name; got != "demo" {
		t.Errorf("server name %q", got)
	}

	for _, c := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"echo", map[string]any{"text": "hi"}, "hi"},
		{"add", map[string]any{"a": 2, "b": 40}, "42"},
		{"whoami", nil, "alice"},
		{"countdown", map[string]any{"from": 1}, "liftoff"},
	} {
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: c.tool, Arguments: c.args, Meta: mcp.Meta{"progressToken": c.tool}})
		if err != nil {
			t.Fatalf("%s: %v", c.tool, err)
		}
		if res.IsError || len(res.Content) == 0 {
			t.Fatalf("%s: %+v", c.tool, res)
		}
		if got := res.Content[0].(*mcp.TextContent).Text; got != c.want {
			t.Errorf("%s = %q, want %q", c.tool, got, c.want)
		}
	}
	// Notifications may be handled concurrently with the result: wait briefly.
	for i := 0; i < 50 && progress.Load() == 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if n := progress.Load(); n != 1 {
		t.Errorf("countdown from 1 sent %d progress notifications, want 1", n)
	}
}
