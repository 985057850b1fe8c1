package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/mcpgate/mcpgate/internal/headless"
)

// demoRedirect is where the authorization server sends the code; the
// headless agent stops there, so nothing needs to listen on it.
const demoRedirect = "http://127.0.0.1:33418/callback"

// runClient connects to an MCP endpoint through the full OAuth flow with the
// official Go SDK: discovery, dynamic registration, sign-in, consent, token,
// then initialize, tools/list and a tool call.
func runClient(endpoint, caFile, login string) error {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	agent := &headless.Agent{
		Transport: tr,
		Login:     login,
		Logf:      func(f string, a ...any) { fmt.Printf("  oauth: "+f+"\n", a...) },
	}
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				RedirectURIs:            []string{demoRedirect},
				TokenEndpointAuthMethod: "none",
				GrantTypes:              []string{"authorization_code", "refresh_token"},
				ClientName:              "mcpdemo client",
			},
		},
		RedirectURL: demoRedirect,
		Client:      hc,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			res, err := agent.Authorize(ctx, args.URL, demoRedirect)
			if err != nil {
				return nil, err
			}
			return &auth.AuthorizationResult{Code: res.Code, State: res.State, Iss: res.Iss}, nil
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "mcpdemo-client", Version: "v0.1.0"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, OAuthHandler: handler}, nil)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer session.Close()
	fmt.Printf("  initialize: ok (server %s)\n", session.InitializeResult().ServerInfo.Name)
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		return fmt.Errorf("tools/list: %w", err)
	}
	var names []string
	for _, t := range tools.Tools {
		names = append(names, t.Name)
	}
	fmt.Printf("  tools/list: %s\n", strings.Join(names, ", "))
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	if err != nil {
		return fmt.Errorf("tools/call whoami: %w", err)
	}
	if res.IsError || len(res.Content) == 0 {
		return errors.New("tools/call whoami: error result")
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); ok {
		fmt.Printf("  tools/call whoami: %s\n", tc.Text)
	}
	return nil
}
