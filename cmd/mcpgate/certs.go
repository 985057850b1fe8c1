package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/supervisor"

	"github.com/mcpgate/mcpgate/internal/policy/host"
)

// cmdCerts is `mcpgate certs list` and `mcpgate certs renew NAME`: the
// certificates proxies get with ACME, as their workers report them.
var certsCommands = []command{
	{name: "list", args: "[--config-dir DIR] [--json]",
		summary: "every certificate proxies get with ACME: state, expiry, next renewal", run: certsList},
	{name: "renew", args: "NAME [--config-dir DIR] [--timeout 5m]",
		summary: "renew one certificate now, through the worker serving it", run: certsRenew},
}

// acmeSummary is `mcpgate check`'s line about the CA, when an enabled
// proxy uses it ("" otherwise). The CA is not contacted.
func acmeSummary(cfg *config.Config) string {
	for _, p := range cfg.Enabled() {
		if !p.TLS.ACME {
			continue
		}
		a := cfg.ACME
		email := a.Email
		if email == "" {
			email = "none"
		}
		return fmt.Sprintf("acme: %s (email: %s, challenges: %s)", a.DirectoryURL, email, strings.Join(a.Challenges, ", "))
	}
	return ""
}

// managedCert is one certificate with the proxy whose worker manages it.
type managedCert struct {
	Proxy string `json:"proxy"`
	certstatus.Cert
}

// managedCerts lists the certificates of the serving workers (a draining
// worker's are the same names, about to go).
func managedCerts(st *supervisor.Status) []managedCert {
	var out []managedCert
	for _, w := range st.Workers {
		if w.State == "draining" {
			continue
		}
		for _, c := range w.Certificates {
			out = append(out, managedCert{Proxy: w.Proxy, Cert: c})
		}
	}
	return out
}

func certsList(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	st, err := fetchStatus(*dir)
	if err != nil {
		return fail(err)
	}
	certs := managedCerts(st)
	if *asJSON {
		if certs == nil {
			certs = []managedCert{}
		}
		return printJSON(certs)
	}
	if len(certs) == 0 {
		fmt.Println("no proxy gets its certificates with ACME")
		return 0
	}
	printCerts(os.Stdout, certs)
	return 0
}

// printCerts is the certificate table of `certs list` and `status`.
func printCerts(w io.Writer, certs []managedCert) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPROXY\tSTATE\tEXPIRES\tRENEWS\tISSUER\tLAST ERROR")
	for _, c := range certs {
		expires, renews := "-", "-"
		if !c.NotAfter.IsZero() {
			expires = c.NotAfter.Local().Format(time.DateTime)
		}
		if !c.RenewAt.IsZero() {
			renews = c.RenewAt.Local().Format(time.DateTime)
		}
		state := c.State
		if c.State == certstatus.Obtaining && !c.NextTry.IsZero() {
			state += " (next try " + c.NextTry.Local().Format(time.TimeOnly) + ")"
		}
		lastErr := "-"
		if c.Error != "" {
			lastErr = c.ErrorAt.Local().Format(time.DateTime) + ": " + c.Error
		}
		issuer := c.Issuer
		if issuer == "" {
			issuer = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Proxy, state, expires, renews, issuer, lastErr)
	}
	tw.Flush()
}

// certsRenew asks for a renewal and waits for its outcome: a new serial
// number, or an error reported after the request.
func certsRenew(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the new certificate")
	pos, ok, code := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: mcpgate certs renew NAME [--config-dir DIR] [--timeout 5m]")
		return 2
	}
	name := pos[0]
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	before, err := supervisor.GetStatus(ctx, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcpgate:", err)
		return 1
	}
	old := findCert(before, name)
	asked := time.Now()
	res, err := supervisor.RenewCert(ctx, *dir, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcpgate:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "renewing %s (proxy %s, worker %d)...\n", res.Name, res.Proxy, res.PID)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "mcpgate: no new certificate for %s within %s; see mcpgate certs list and the journal\n", res.Name, *timeout)
			return 1
		case <-time.After(500 * time.Millisecond):
		}
		st, err := supervisor.GetStatus(ctx, *dir)
		if err != nil {
			continue
		}
		c := findCert(st, res.Name)
		switch {
		case c == nil:
		case c.Serial != "" && (old == nil || c.Serial != old.Serial) && c.State != certstatus.Renewing:
			fmt.Printf("%s: new certificate, serial %s, expires %s\n", c.Name, c.Serial, c.NotAfter.Local().Format(time.DateTime))
			return 0
		case c.Error != "" && c.ErrorAt.After(asked) && c.State != certstatus.Renewing:
			fmt.Fprintf(os.Stderr, "mcpgate: renewing %s failed: %s\n", c.Name, c.Error)
			return 1
		}
	}
}

func findCert(st *supervisor.Status, name string) *certstatus.Cert {
	if n, err := host.Name([]byte(name)); err == nil {
		name = n
	}
	for _, c := range managedCerts(st) {
		if c.Name == name {
			return &c.Cert
		}
	}
	return nil
}
