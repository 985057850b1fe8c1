// Command mcpgate is an OAuth 2.1 gateway for MCP servers: a supervisor
// (`mcpgate serve`) that owns the listening sockets and one worker process
// per proxy.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpgate/mcpgate/internal/buildinfo"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/logging"
	"github.com/mcpgate/mcpgate/internal/supervisor"
	"github.com/mcpgate/mcpgate/internal/worker"
)

const defaultConfigDir = "/etc/mcpgate"

type command struct {
	name, args, summary string
	run                 func(fs *flag.FlagSet, args []string) int
}

var commands []command

func init() {
	commands = []command{
		{"serve", "[--config-dir DIR]", "run the gateway: supervisor plus one worker per proxy", cmdServe},
		{"check", "[--config-dir DIR]", "validate the configuration; print one line per proxy, or every error", cmdCheck},
		{"reload", "[--config-dir DIR]", "apply the configuration and the binary on disk to the running gateway; print the verdict", cmdReload},
		{"status", "[--config-dir DIR] [--json]", "show the supervisor and every worker: pid, state, build, config hash, connections", cmdStatus},
		{"upgrade", "[--config-dir DIR]", "re-execute the supervisor from the binary on disk without closing a socket, then reload", cmdUpgrade},
		{"store", "migrate|export|import [flags]", "the OAuth store: schema migrations, export and import between SQLite and PostgreSQL", cmdStore},
		{"version", "", "print version and build id", cmdVersion},
		{"devidp", "[--listen 127.0.0.1:9000] [--auto-login NAME]", "development only: GitHub-compatible login on loopback where anyone can log in as anyone", cmdDevIDP},
		{"worker", "PROXY [--config-dir DIR]", "internal: serve one proxy (started by serve)", cmdWorker},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		fs := flag.NewFlagSet("mcpgate "+c.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "usage: mcpgate %s %s\n\n%s\n\n", c.name, c.args, c.summary)
			fs.PrintDefaults()
		}
		return c.run(fs, args[1:])
	}
	fmt.Fprintf(stderr, "mcpgate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "mcpgate %s — OAuth 2.1 gateway for MCP servers\n\nusage: mcpgate COMMAND [flags]\n\ncommands:\n", buildinfo.Version())
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'mcpgate COMMAND --help' for a command's flags.\n")
}

// configDirFlag registers --config-dir: flag, then $MCPGATE_CONFIG_DIR,
// then /etc/mcpgate.
func configDirFlag(fs *flag.FlagSet) *string {
	def := defaultConfigDir
	if v := os.Getenv("MCPGATE_CONFIG_DIR"); v != "" {
		def = v
	}
	return fs.String("config-dir", def, "configuration directory (env MCPGATE_CONFIG_DIR)")
}

func parse(fs *flag.FlagSet, args []string) (ok bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, 0
		}
		return false, 2
	}
	return true, 0
}

func cmdServe(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	log := logging.New(os.Stderr, *level)
	if err := supervisor.Run(context.Background(), supervisor.Options{ConfigDir: *dir, Log: log, LogLevel: *level}); err != nil {
		var el config.ErrorList
		if errors.As(err, &el) {
			for _, e := range el {
				log.Error("configuration error", "error", e.Error())
			}
			fmt.Fprintf(os.Stderr, "mcpgate: configuration is invalid:\n%s\n", el.Error())
			return 1
		}
		log.Error("mcpgate failed", "err", err)
		return 1
	}
	return 0
}

func cmdCheck(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	if ok, code := parse(fs, args); !ok {
		return code
	}
	cfg, err := config.Load(*dir)
	if err != nil {
		fmt.Fprintln(fs.Output(), err)
		return 1
	}
	if len(cfg.Proxies) == 0 {
		fmt.Printf("%s: configuration is valid; no proxies configured\n", *dir)
		return 0
	}
	for _, p := range cfg.Proxies {
		fmt.Println(p.Summary())
	}
	return 0
}

func cmdReload(fs *flag.FlagSet, args []string) int {
	return reloadLike(fs, args, supervisor.Reload)
}

func cmdUpgrade(fs *flag.FlagSet, args []string) int {
	return reloadLike(fs, args, supervisor.Upgrade)
}

func reloadLike(fs *flag.FlagSet, args []string, do func(context.Context, string) (*supervisor.ReloadResult, error)) int {
	dir := configDirFlag(fs)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the verdict")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := do(ctx, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcpgate:", err)
		return 1
	}
	// Under systemctl reload (ExecReload=) this stderr is the journal, where
	// the supervisor has already logged each error: log them once.
	if !logging.ToJournal(os.Stderr) {
		for _, e := range res.Errors {
			fmt.Fprintln(os.Stderr, e)
		}
		for _, f := range res.Failed {
			fmt.Fprintln(os.Stderr, "failed:", f)
		}
	}
	switch {
	case len(res.Errors) > 0:
		fmt.Fprintf(os.Stderr, "reload rejected (%d errors): mcpgate keeps serving the previous configuration\n", len(res.Errors))
		return 1
	case !res.OK:
		fmt.Fprintf(os.Stderr, "reload partly failed: %d proxies kept their previous worker or are retrying\n", len(res.Failed))
		return 1
	}
	fmt.Printf("reload ok in %s: %d proxies on fresh workers (build %s)", res.Duration, len(res.Started), res.BuildID)
	if len(res.Removed) > 0 {
		fmt.Printf("; removed: %s", strings.Join(res.Removed, ", "))
	}
	fmt.Println()
	return 0
}

func cmdStatus(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := supervisor.GetStatus(ctx, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcpgate:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	act := ""
	if st.Activated {
		act = ", socket-activated"
	}
	fmt.Printf("mcpgate %s (build %s), pid %d, up since %s%s\nlisteners: %s\n\n", st.Version, st.BuildID, st.PID,
		st.Started.Local().Format(time.DateTime), act, st.Listeners)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tPID\tSTATE\tBUILD\tVERSION\tCONFIG\tSTARTED\tCONNS")
	for _, w := range st.Workers {
		hash := w.ConfigHash
		if len(hash) > 12 {
			hash = hash[:12]
		}
		started := "-"
		if !w.Started.IsZero() {
			started = w.Started.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n", w.Proxy, w.PID, w.State, w.BuildID, w.Version, hash, started, w.Connections)
	}
	tw.Flush()
	if r := st.LastReload; r != nil {
		verdict := "ok"
		if len(r.Errors) > 0 {
			verdict = fmt.Sprintf("rejected (%d config errors)", len(r.Errors))
		} else if !r.OK {
			verdict = fmt.Sprintf("partly failed (%d proxies)", len(r.Failed))
		}
		trigger := r.Trigger
		if trigger == "" {
			trigger = "start"
		}
		fmt.Printf("\nlast reload: %s at %s (%s)\n", verdict, r.At.Local().Format(time.DateTime), trigger)
	}
	return 0
}

func cmdVersion(fs *flag.FlagSet, args []string) int {
	if ok, code := parse(fs, args); !ok {
		return code
	}
	fmt.Printf("mcpgate %s (build %s)\n", buildinfo.Version(), buildinfo.ID())
	return 0
}

func cmdWorker(fs *flag.FlagSet, args []string) int {
	// The proxy name comes first so `ps` shows it right after "worker".
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		if ok, code := parse(fs, args); !ok {
			return code
		}
		fs.Usage()
		return 2
	}
	name := args[0]
	configDirFlag(fs) // accepted for ps readability; the spec comes from the supervisor
	level := fs.String("log-level", "info", "log level")
	if ok, code := parse(fs, args[1:]); !ok {
		return code
	}
	log := logging.New(os.Stderr, *level).With("proxy", name, "pid", os.Getpid())
	if err := worker.Run(name, log); err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}
