#!/usr/bin/env bash
# gen-docs.sh BINARY OUTDIR — write the command reference of the mcpgate
# BINARY: OUTDIR/mcpgate-help.txt (every `--help`), OUTDIR/mcpgate.8.gz
# (the man page, whose COMMANDS section is the same help text), one page
# per command OUTDIR/man8/mcpgate-COMMAND.8.gz and OUTDIR/man5/
# mcpgate.toml.5.gz (both by the hidden `mcpgate docs`, the latter from the
# shipped etc/mcpgate.toml) and the bash completion OUTDIR/mcpgate.bash.
# Run by `make package`, so the reference always matches the packaged
# binary.
set -euo pipefail

bin=$1 out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out" "$out/man8" "$out/man5"
"$bin" docs --out "$out/man8" --toml "$here/etc/mcpgate.toml"
mv "$out/man8/mcpgate.toml.5.gz" "$out/man5/"
"$bin" completion bash >"$out/mcpgate.bash"

# The subcommands, as `mcpgate --help` lists them ("  NAME  summary").
mapfile -t cmds < <("$bin" --help | awk '/^commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {exit}')
if [ "${#cmds[@]}" -eq 0 ]; then
	echo "gen-docs: no commands in '$bin --help'" >&2
	exit 1
fi
help_of() { "$bin" "$1" --help 2>&1; }
version=$("$bin" version | awk '{print $2}')

{
	echo "mcpgate command reference (mcpgate $version)"
	echo "Generated from 'mcpgate --help' and 'mcpgate COMMAND --help'."
	echo
	echo "$ mcpgate --help"
	"$bin" --help
	for c in "${cmds[@]}"; do
		echo
		echo "$ mcpgate $c --help"
		help_of "$c"
	done
} >"$out/mcpgate-help.txt"

# roff: escape backslashes and leading dots/quotes of help text.
roff() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)
{
	cat <<MAN
.TH MCPGATE 8 "$date" "mcpgate $version" "System Administration"
.SH NAME
mcpgate \\- OAuth 2.1 gateway for MCP (Model Context Protocol) servers
.SH SYNOPSIS
.B mcpgate
.I COMMAND
.RI [ flags ]
.SH DESCRIPTION
.B mcpgate
puts a TLS endpoint (HTTP/2 and HTTP/1.1) with OAuth 2.1 in front of MCP
servers. Under systemd,
.B mcpgate serve
is the supervisor of
.BR mcpgate.service :
it takes its listening sockets from
.B mcpgate.socket
(TCP 443, with
.B mcpgate\\-http.socket
on TCP 80 and
.B mcpgate\\-quic.socket
on UDP 443), and runs one worker process per proxy.
.PP
Every
.I *.toml
file in
.I /etc/mcpgate
other than
.I mcpgate.toml
is one proxy, named after its file.
.B systemctl reload mcpgate
validates the configuration, starts fresh workers from the binary on disk,
switches to them and drains the old ones; a rejected configuration leaves the
running one serving, and the reload fails with every error as
.IR file : line ": " key ": " message .
.SH COMMANDS
MAN
	for c in "${cmds[@]}"; do
		echo ".SS $c"
		echo ".nf"
		help_of "$c" | roff
		echo ".fi"
	done
	cat <<'MAN'
.SH FILES
.TP
.I /etc/mcpgate/mcpgate.toml
global settings; valid as shipped
.TP
.I /etc/mcpgate/NAME.toml
the proxy NAME; a documented example is in
.I /usr/share/doc/mcpgate/examples/
.TP
.I /etc/mcpgate/credentials/
root-only secrets, passed to the service as credentials
.RI ( $CREDENTIALS_DIRECTORY/mcpgate_NAME )
.TP
.I /var/lib/mcpgate/
state: self-signed certificates, signing keys, the OAuth store, the control socket
.I mcpgate.sock
.TP
.I /usr/share/doc/mcpgate/mcpgate-help.txt
this command reference as plain text
.SH SIGNALS
.B SIGHUP
reloads like
.BR "mcpgate reload" ;
.B SIGUSR2
upgrades like
.BR "mcpgate upgrade" ;
.B SIGTERM
drains the workers and stops.
.SH LOGS
.B journalctl \-u mcpgate
.SH SEE ALSO
MAN
	for c in "${cmds[@]}"; do
		echo ".BR mcpgate\\-$c (8),"
	done
	cat <<'MAN'
.BR mcpgate.toml (5),
.BR systemctl (1),
.BR systemd.socket (5),
.BR journalctl (1)
MAN
} | gzip -9n >"$out/mcpgate.8.gz"
