// Command mcpgate is an OAuth 2.1 gateway for MCP servers: a supervisor
// (`mcpgate serve`) that owns the listening sockets and one worker process
// per proxy.
package main

import (
	"context"
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
	run                 func(fs *flag.FlagSet, args []string) int // nil for a group (subcommands)
}

var commands []command

// subcommands are the commands of each group: a command whose run is nil.
var subcommands map[string][]command

// hiddenCommands are internal: not in help, completion or man pages.
var hiddenCommands = map[string]bool{"worker": true, "docs": true}

func (c *command) subs() []command {
	if c.run != nil {
		return nil
	}
	return subcommands[c.name]
}

func (c *command) hidden() bool { return hiddenCommands[c.name] }

func init() {
	// Set here, not in the declarations: the commands refer back to the
	// tables (help), which would be an initialization cycle.
	subcommands = map[string][]command{
		"grants":     grantsCommands,
		"clients":    clientsCommands,
		"keys":       keysCommands,
		"certs":      certsCommands,
		"store":      storeCommands,
		"completion": completionCommands,
	}
	commands = []command{
		{"serve", "[--config-dir DIR]", "run the gateway: supervisor plus one worker per proxy", cmdServe},
		{"check", "[--config-dir DIR]", "validate the configuration; print one line per proxy, or every error", cmdCheck},
		{"reload", "[--config-dir DIR]", "apply the configuration and the binary on disk to the running gateway; print the verdict", cmdReload},
		{"status", "[--config-dir DIR] [--json]", "show the supervisor and every worker: pid, state, build, config hash, connections", cmdStatus},
		{"certs", "", "list the certificates proxies get with ACME, or renew one now", nil},
		{"upgrade", "[--config-dir DIR]", "re-execute the supervisor from the binary on disk without closing a socket, then reload", cmdUpgrade},
		{"grants", "", "list and revoke users' grants (refresh token families)", nil},
		{"clients", "", "list, show and delete OAuth clients", nil},
		{"keys", "", "list and rotate the token signing keys", nil},
		{"store", "", "the OAuth store: schema migrations, export and import between SQLite and PostgreSQL", nil},
		{"version", "", "print version and build id (also --version, -V)", cmdVersion},
		{"help", "[COMMAND [SUBCOMMAND]]", "print the help of mcpgate or of one command", cmdHelp},
		{"completion", "", "print a shell completion script", nil},
		{"devidp", "[--listen 127.0.0.1:9000] [--auto-login NAME]", "development only: GitHub-compatible login on loopback where anyone can log in as anyone", cmdDevIDP},
		{"worker", "PROXY [--config-dir DIR]", "internal: serve one proxy (started by serve)", cmdWorker},
		{"docs", "--out DIR [--toml FILE]", "internal: write the man pages (packaging)", cmdDocs},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// stdout and stderr are where commands write: the process's streams, or a
// test's buffers (run sets them).
var stdout, stderr io.Writer = os.Stdout, os.Stderr

func run(args []string, out, errOut io.Writer) int {
	stdout, stderr = out, errOut
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help":
		usage(stdout)
		return 0
	case "-V", "--version", "-version":
		return cmdVersion(flag.NewFlagSet("mcpgate version", flag.ContinueOnError), args[1:])
	}
	c, path, rest, code := lookup(args)
	if c == nil {
		return code
	}
	return c.run(newFlagSet(c, path), rest)
}

// lookup finds the command args name (a group's subcommand included) and
// returns it with its path ("grants list") and the remaining arguments.
// A group without a valid subcommand prints the group's help (on stdout
// when asked for with --help) and returns nil with the exit code.
func lookup(args []string) (c *command, path string, rest []string, code int) {
	c = find(commands, args[0])
	if c == nil {
		fmt.Fprintf(stderr, "mcpgate: unknown command %q\n\n", args[0])
		usage(stderr)
		return nil, "", nil, 2
	}
	if c.subs() == nil {
		return c, c.name, args[1:], 0
	}
	switch {
	case len(args) > 1 && (args[1] == "-h" || args[1] == "--help" || args[1] == "-help"):
		groupUsage(stdout, c)
		return nil, "", nil, 0
	case len(args) == 1:
		groupUsage(stderr, c)
		return nil, "", nil, 2
	}
	sub := find(c.subs(), args[1])
	if sub == nil {
		fmt.Fprintf(stderr, "mcpgate %s: unknown command %q\n\n", c.name, args[1])
		groupUsage(stderr, c)
		return nil, "", nil, 2
	}
	return sub, c.name + " " + sub.name, args[2:], 0
}

func find(cs []command, name string) *command {
	for i := range cs {
		if cs[i].name == name {
			return &cs[i]
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "mcpgate %s — OAuth 2.1 gateway for MCP servers\n\nusage: mcpgate COMMAND [flags]\n\ncommands:\n", buildinfo.Version())
	for _, c := range commands {
		if !c.hidden() {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintf(w, "\nRun 'mcpgate help COMMAND' (or 'mcpgate COMMAND --help') for a command's flags.\n")
}

// configDirFlag registers --config-dir: flag, then $MCPGATE_CONFIG_DIR,
// then /etc/mcpgate.
func configDirFlag(fs *flag.FlagSet) *string {
	def := defaultConfigDir
	if v := os.Getenv("MCPGATE_CONFIG_DIR"); v != "" {
		def = v
	}
	return fs.String("config-dir", def, "configuration `DIR` (env MCPGATE_CONFIG_DIR)")
}

// parse parses args, which must hold flags only. --help prints the
// command's help on stdout (exit 0); a bad flag or a positional argument
// is an error (exit 2).
func parse(fs *flag.FlagSet, args []string) (ok bool, code int) {
	pos, ok, code := parseArgs(fs, args)
	if ok && len(pos) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), pos[0])
		fs.Usage()
		return false, 2
	}
	return ok, code
}

// parseArgs parses flags anywhere among positional arguments ("revoke ID
// --json" as well as "revoke --json ID"; after "--" everything is
// positional) and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) (pos []string, ok bool, code int) {
	for {
		if err := parseQuiet(fs, args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printHelp(stdout, fs)
				return nil, false, 0
			}
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
			fs.Usage()
			return nil, false, 2
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, true, 0
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), true, 0
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseQuiet is fs.Parse without the flag package's own printing: parse
// words errors and help itself.
func parseQuiet(fs *flag.FlagSet, args []string) error {
	out, u := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defer func() { fs.SetOutput(out); fs.Usage = u }()
	return fs.Parse(args)
}

func cmdServe(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: [server] log_level, else info)")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	// The flag stays as lenient as it always was ("warning" works, an
	// unknown level means info): a unit override must not stop the service
	// from starting after an upgrade.
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	log := logging.New(os.Stderr, serveLogLevel(*dir, *level))
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

// serveLogLevel is the supervisor's own log level: the flag, else
// [server] log_level as the supervisor starts (a reload applies a new
// level to the new workers, not to the running supervisor; `mcpgate
// upgrade` re-executes it and so reads it again). A broken mcpgate.toml
// means the default here; Run reports it.
func serveLogLevel(dir, flagLevel string) string {
	if flagLevel != "" {
		return flagLevel
	}
	if srv, err := config.LoadGlobal(dir); err == nil {
		return srv.LogLevel
	}
	return config.DefaultLogLevel
}

func cmdCheck(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	if ok, code := parse(fs, args); !ok {
		return code
	}
	return check(*dir)
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

// fetchStatus asks the supervisor configured in dir for its status, for
// status and certs list.
func fetchStatus(dir string) (*supervisor.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return supervisor.GetStatus(ctx, dir)
}

func cmdStatus(fs *flag.FlagSet, args []string) int {
	dir := configDirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	st, err := fetchStatus(*dir)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		return printJSON(st)
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
	if certs := managedCerts(st); len(certs) > 0 {
		fmt.Println("\ncertificates (ACME):")
		printCerts(os.Stdout, certs)
	}
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
	fmt.Fprintf(stdout, "mcpgate %s (build %s)\n", buildinfo.Version(), buildinfo.ID())
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
	// Access lines are batched (logging.Deferred): the last ones go out
	// before the worker exits.
	defer logging.Flush(log)
	if err := worker.Run(name, log); err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}
