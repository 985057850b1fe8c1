package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/buildinfo"
)

// descriptions are the longer help of commands, by path: shown by --help
// and in the man pages.
var descriptions = map[string]string{
	"check": `Loads every file as serve would and prints one line per proxy, or every
error as file:line: key: message (exit 1). Run from a shell, a
client_secret_credential is looked up where the service would get it:
mcpgate_FILE in <config-dir>/credentials (the shipped unit loads that
directory with the prefix mcpgate_), then /etc/credstore, /run/credstore
and /usr/lib/credstore. An encrypted credential (credstore.encrypted) or
a file this user may not read is a warning: "cannot verify here".
Warnings (on stderr, exit 0): a certificate that does not cover a
hostname of its proxy, and a TLS file that user mcpgate cannot read or
that the unit's sandbox hides (ProtectHome=, PrivateTmp=).`,
	"grants": `A grant is what one login gave one client for one proxy: a family of
refresh tokens (rotated at every refresh) and the access tokens issued
from them. These commands open the OAuth store in state_dir directly, so
they need the rights the service has there: run them as root or as user
mcpgate.`,
	"grants list": `One line per live grant: its id, the user, the client, the proxy, the
scope, since (the login), last used (the last refresh) and when the
refresh token expires. Filters combine.`,
	"grants revoke": `Revokes one grant by id, or every grant of a user (on one proxy with
--proxy). The refresh tokens stop working at once; every worker refuses
the grants' access tokens within a second (the running gateway is told,
and every worker reads the revocation log at once). The user can log in
again.`,
	"clients": `Dynamic clients registered themselves (RFC 7591) and are stored;
metadata-document clients are named by an https URL and not stored (they
are listed while they hold grants); static clients come from
[[oauth.clients]] in mcpgate.toml and are changed there.`,
	"clients delete": `A dynamic client is deleted with its consents, codes and refresh tokens,
and its access tokens are refused within a second; its id is never valid
again. For a metadata-document client, its grants are revoked and its
consents forgotten: it may sign in again, and the user is asked again.
A static client must be removed from the configuration.`,
	"keys": `Access tokens are RS256 JWTs signed with the newest key in
state_dir/keys; older keys stay in the JWKS, and verify, until every
token they signed has expired (access_token_ttl plus two minutes after
they were replaced). Keys rotate by themselves every 30 days.`,
	"keys rotate": `Creates a new key, which is active at once: every worker notices the
change of the key directory and signs with the new key within a second
(a worker looks at most every 200 ms, when it signs or serves the JWKS,
and refreshes every minute regardless). Tokens signed with the previous
key stay valid until they expire.`,
	"completion bash": `Prints a bash completion script for the commands and flags. The
package installs it as /usr/share/bash-completion/completions/mcpgate;
elsewhere: source <(mcpgate completion bash)`,
}

func description(path string) string { return descriptions[path] }

// cmdDocs writes the man pages: mcpgate-COMMAND.8 for every visible
// command and, from the shipped mcpgate.toml, mcpgate.toml.5, gzipped.
func cmdDocs(fs *flag.FlagSet, args []string) int {
	out := fs.String("out", "", "write the pages to `DIR`")
	tomlFile := fs.String("toml", "", "the shipped mcpgate.toml `FILE`, for mcpgate.toml(5)")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	if *out == "" {
		fmt.Fprintln(stderr, "mcpgate docs: --out is required")
		return 2
	}
	if err := writeDocs(*out, *tomlFile, docDate()); err != nil {
		return fail(err)
	}
	return 0
}

// docDate honours SOURCE_DATE_EPOCH, for reproducible packages.
func docDate() string {
	t := time.Now()
	if v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		t = time.Unix(v, 0)
	}
	return t.UTC().Format(time.DateOnly)
}

func writeDocs(dir, tomlFile, date string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := range commands {
		c := &commands[i]
		if c.hidden() {
			continue
		}
		if err := writeGz(filepath.Join(dir, "mcpgate-"+c.name+".8.gz"), commandPage(c, date)); err != nil {
			return err
		}
	}
	if tomlFile != "" {
		src, err := os.ReadFile(tomlFile)
		if err != nil {
			return err
		}
		if err := writeGz(filepath.Join(dir, "mcpgate.toml.5.gz"), tomlPage(src, date)); err != nil {
			return err
		}
	}
	return nil
}

// writeGz writes gzip without a name or time in the header, so equal pages
// give equal files.
func writeGz(path string, page string) error {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	io.WriteString(zw, page)
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// roff escapes text for a roff line: backslashes, hyphens (so they stay
// ASCII minus signs in options), non-ASCII characters (troff reads
// bytes), and a leading . or '.
func roff(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > 0x7f:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	s = b.String()
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func roffText(s string) string {
	var lines []string
	for l := range strings.SplitSeq(s, "\n") {
		lines = append(lines, roff(l))
	}
	return strings.Join(lines, "\n")
}

func commandPage(c *command, date string) string {
	var b strings.Builder
	name := "mcpgate-" + c.name
	fmt.Fprintf(&b, ".TH %s 8 \"%s\" \"mcpgate %s\" \"System Administration\"\n", strings.ToUpper(roff(name)), date, roff(buildinfo.Version()))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n.SH SYNOPSIS\n.nf\n", roff(name), roff(c.summary))
	subs := []*command{c}
	paths := []string{c.name}
	if c.subs() != nil {
		subs, paths = nil, nil
		for i := range c.subs() {
			subs, paths = append(subs, &c.subs()[i]), append(paths, c.name+" "+c.subs()[i].name)
		}
	}
	for i, s := range subs {
		fmt.Fprintf(&b, ".B mcpgate %s\n", roff(synopsis(s, paths[i])))
	}
	b.WriteString(".fi\n")
	if d := description(c.name); d != "" {
		fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", roffText(d))
	}
	section := "OPTIONS"
	if c.subs() != nil {
		section = "COMMANDS"
	}
	fmt.Fprintf(&b, ".SH %s\n", section)
	for i, s := range subs {
		if c.subs() != nil {
			fmt.Fprintf(&b, ".SS %s\n%s\n", roff(paths[i]), roff(capitalize(s.summary)))
			if d := description(paths[i]); d != "" {
				fmt.Fprintf(&b, ".PP\n%s\n", roffText(d))
			}
		}
		for _, f := range flagsOf(s, paths[i]) {
			arg, text := flag.UnquoteUsage(f)
			head := `\fB\-\-` + roff(f.Name) + `\fR`
			if arg != "" {
				head += ` \fI` + roff(arg) + `\fR`
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				def = " (default " + roff(f.DefValue) + ")"
			}
			fmt.Fprintf(&b, ".TP\n%s\n%s%s\n", head, roff(text), def)
		}
	}
	b.WriteString(".SH SEE ALSO\n.BR mcpgate (8),\n.BR mcpgate.toml (5)\n")
	return b.String()
}

// Compiled on first use: only `mcpgate docs` needs them, and every worker
// is this binary too.
var (
	tomlSection = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^#?(\[\[?[a-z0-9_.]+\]\]?)\s*$`) })
	tomlKey     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^#?[a-z0-9_]+\s*=`) })
)

// tomlPage renders the shipped mcpgate.toml as mcpgate.toml(5): its
// comments are the prose, its (commented) settings the examples, in file
// order, so the page and the file cannot disagree.
func tomlPage(src []byte, date string) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH MCPGATE.TOML 5 \"%s\" \"mcpgate %s\" \"File Formats\"\n", date, roff(buildinfo.Version()))
	b.WriteString(".SH NAME\nmcpgate.toml \\- global settings of mcpgate\n.SH SYNOPSIS\n.I /etc/mcpgate/mcpgate.toml\n.SH DESCRIPTION\n")
	var prose, example []string
	flush := func() {
		if len(prose) > 0 {
			fmt.Fprintf(&b, ".PP\n%s\n", roffText(strings.Join(prose, "\n")))
			prose = nil
		}
		if len(example) > 0 {
			fmt.Fprintf(&b, ".PP\n.RS\n.nf\n%s\n.fi\n.RE\n", roffText(strings.Join(example, "\n")))
			example = nil
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t")
		switch {
		case strings.HasPrefix(line, "# ---"):
			flush()
		case tomlSection().MatchString(line):
			flush()
			fmt.Fprintf(&b, ".SH \"%s\"\n", roff(tomlSection().FindStringSubmatch(line)[1]))
		case tomlKey().MatchString(line):
			if len(example) == 0 && len(prose) > 0 {
				fmt.Fprintf(&b, ".PP\n%s\n", roffText(strings.Join(prose, "\n")))
				prose = nil
			}
			example = append(example, strings.TrimPrefix(line, "#"))
		case line == "" || line == "#":
			flush()
		case strings.HasPrefix(line, "#"):
			if len(example) > 0 {
				flush()
			}
			prose = append(prose, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
		default:
			flush()
			example = append(example, line)
		}
	}
	flush()
	b.WriteString(".SH SEE ALSO\n.BR mcpgate (8),\n.BR mcpgate\\-check (8)\n")
	return b.String()
}
