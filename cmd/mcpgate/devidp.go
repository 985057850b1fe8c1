package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mcpgate/mcpgate/internal/devidp"
	"github.com/mcpgate/mcpgate/internal/logging"
)

// listFlag is a repeatable string flag that also splits on commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// cmdDevIDP runs the development identity provider: GitHub's OAuth and
// REST endpoints on loopback, where anyone can log in as anyone.
func cmdDevIDP(fs *flag.FlagSet, args []string) int {
	listen := fs.String("listen", "127.0.0.1:9000", "loopback address to listen on (127.0.0.0/8, [::1] or localhost)")
	autoLogin := fs.String("auto-login", "", "skip the login form and log everyone in as `NAME` (scripted demos)")
	clientID := fs.String("client-id", "", "require this OAuth client_id (default: accept any)")
	secretFile := fs.String("client-secret-file", "", "require the client secret read from `FILE` (default: accept any)")
	var orgs, teams listFlag
	fs.Var(&orgs, "org", "every user is a member of organization `ORG` (repeatable; comma-separated allowed)")
	fs.Var(&teams, "team", "team every user belongs to, as `ORG/SLUG` (repeatable)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *autoLogin != "" && !devidp.ValidLogin(*autoLogin) {
		fmt.Fprintf(os.Stderr, "mcpgate devidp: --auto-login %q is not a valid user name (letters, digits, single hyphens, up to 39)\n", *autoLogin)
		return 2
	}
	for _, t := range teams {
		if org, slug, ok := strings.Cut(t, "/"); !ok || org == "" || slug == "" {
			fmt.Fprintf(os.Stderr, "mcpgate devidp: --team %q: want ORG/SLUG\n", t)
			return 2
		}
	}
	opts := devidp.Options{ClientID: *clientID, AutoLogin: *autoLogin, Orgs: orgs, Teams: teams}
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mcpgate devidp:", err)
			return 1
		}
		opts.ClientSecret = strings.TrimSpace(string(b))
		if opts.ClientSecret == "" {
			fmt.Fprintf(os.Stderr, "mcpgate devidp: %s is empty\n", *secretFile)
			return 1
		}
	}
	log := logging.New(os.Stderr, *level).With("component", "devidp")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := devidp.Run(ctx, *listen, opts, log); err != nil {
		if errors.Is(err, devidp.ErrNotLoopback) {
			fmt.Fprintln(os.Stderr, "mcpgate:", err)
			return 2
		}
		log.Error("devidp failed", "err", err)
		return 1
	}
	return 0
}
