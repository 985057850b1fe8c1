// Command mcpdemo is a small MCP server (Streamable HTTP at /mcp) to put
// behind mcpgate when trying it out by hand. It is built with the official
// Go SDK and offers four tools:
//
//   - echo: returns its text argument
//   - add: returns a+b
//   - whoami: returns the X-MCPGate-User header it received, or "anonymous"
//   - countdown: sends one progress notification per
//     second, then returns; shows that streaming passes the gateway unbuffered
//
// Usage:
//
//	mcpdemo -listen 127.0.0.1:3001 -name demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxCountdown bounds the countdown tool so a client cannot pin a handler
// for long.
const maxCountdown = 30

// userHeader is the header the gateway sets to the authenticated user.
const userHeader = "X-MCPGate-User"

func main() {
	listen := flag.String("listen", "127.0.0.1:3001", "address to listen on")
	name := flag.String("name", "mcpdemo", "server name reported in initialize and by tools")
	anyHost := flag.Bool("allow-any-host", false,
		"accept any Host header on a loopback listener (disables the SDK's DNS-rebinding protection; "+
			"needed only when the gateway forwards the client's Host)")
	connect := flag.String("connect", "", "instead of serving, connect to this MCP endpoint through mcpgate's OAuth flow")
	caFile := flag.String("ca", "", "with -connect: PEM file of a CA or certificate to trust")
	login := flag.String("login", "alice", "with -connect: the user name to sign in as at the development identity provider")
	flag.Parse()

	if *connect != "" {
		fmt.Printf("connecting to %s as %s\n", *connect, *login)
		if err := runClient(*connect, *caFile, *login); err != nil {
			fmt.Fprintln(os.Stderr, "mcpdemo:", err)
			os.Exit(1)
		}
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*listen, *name, *anyHost, log); err != nil {
		log.Error("mcpdemo failed", "err", err)
		os.Exit(1)
	}
}

func run(addr, name string, anyHost bool, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newHandler(name, anyHost, log),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("mcpdemo listening", "addr", ln.Addr().String(), "endpoint", "/mcp", "name", name)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Open SSE streams never go idle, so Shutdown needs its own deadline.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// newHandler serves the MCP endpoint at /mcp and a plain-text hint at /.
func newHandler(name string, anyHost bool, log *slog.Logger) http.Handler {
	server := newServer(name)
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{
			DisableLocalhostProtection: anyHost,
			Logger:                     log,
		})
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcpHandler)
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s: MCP server, Streamable HTTP at /mcp\n", name)
	})
	return mux
}

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to return"`
}

type echoOut struct {
	Text string `json:"text"`
}

type addIn struct {
	A float64 `json:"a" jsonschema:"first addend"`
	B float64 `json:"b" jsonschema:"second addend"`
}

type addOut struct {
	Sum float64 `json:"sum"`
}

type whoamiOut struct {
	User   string `json:"user"`
	Server string `json:"server"`
}

type countdownIn struct {
	From int `json:"from,omitempty" jsonschema:"seconds to count down from (default 3, at most 30)"`
}

type countdownOut struct {
	Ticks int `json:"ticks"`
}

// newServer builds the MCP server with the demo tools.
func newServer(name string) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: name, Version: "v0.1.0"}, nil)

	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Return the given text."},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			return textResult(in.Text), echoOut(in), nil
		})

	mcp.AddTool(server, &mcp.Tool{Name: "add", Description: "Add two numbers."},
		func(_ context.Context, _ *mcp.CallToolRequest, in addIn) (*mcp.CallToolResult, addOut, error) {
			sum := in.A + in.B
			return textResult(fmt.Sprint(sum)), addOut{Sum: sum}, nil
		})

	mcp.AddTool(server, &mcp.Tool{Name: "whoami",
		Description: "Return the user the gateway authenticated (the " + userHeader + " header), or \"anonymous\"."},
		func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, whoamiOut, error) {
			user := "anonymous"
			// Extra.Header is the HTTP header of the request that carried
			// this call; nil for non-HTTP transports.
			if req.Extra != nil {
				if u := req.Extra.Header.Get(userHeader); u != "" {
					user = u
				}
			}
			return textResult(user), whoamiOut{User: user, Server: name}, nil
		})

	mcp.AddTool(server, &mcp.Tool{Name: "countdown",
		Description: "Count down one step per second, sending a progress notification each step."},
		func(ctx context.Context, req *mcp.CallToolRequest, in countdownIn) (*mcp.CallToolResult, countdownOut, error) {
			from := in.From
			if from <= 0 {
				from = 3
			}
			if from > maxCountdown {
				return nil, countdownOut{}, fmt.Errorf("from must be at most %d", maxCountdown)
			}
			token := req.Params.GetProgressToken()
			for i := range from {
				left := from - i
				msg := fmt.Sprintf("%d...", left)
				if token != nil {
					// Errors mean the client went away; the ctx check below ends the loop.
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: token, Progress: float64(i + 1), Total: float64(from), Message: msg,
					})
				}
				select {
				case <-ctx.Done():
					return nil, countdownOut{}, ctx.Err()
				case <-time.After(time.Second):
				}
			}
			return textResult("liftoff"), countdownOut{Ticks: from}, nil
		})
	return server
}

func textResult(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
