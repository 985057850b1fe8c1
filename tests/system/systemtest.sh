#!/usr/bin/env bash
# tests/system/systemtest.sh — the appliance, tested with systemd as PID 1
# (`make systemtest`; root; no TTY needed).
#
# Builds the .deb twice (the checkout's version, then a newer one with
# another build id), boots a Debian 12 root with `systemd-nspawn -b` on a
# throwaway overlay of a cached debootstrap, and drives it through nsenter:
#   units  systemd-analyze verify; systemd-analyze security <= 2.0 (printed)
#   a      proxy file for a backend in the container, start mcpgate.socket,
#          200 over TLS with HTTP/2 (socket activation starts the service)
#   b      second proxy file, systemctl reload mcpgate -> 0, it serves
#   c      broken file, systemctl reload mcpgate -> non-zero, the journal
#          shows file:line, once at -p warning (no info lines there: those,
#          the access log among them, are at -p info); both hostnames serve
#   d      apt install of the newer package while a request loop runs: every
#          worker reports the new build id, the loop saw no failure
#   e      systemctl stop mcpgate.service mcpgate.socket -> no mcpgate
#          process; apt remove keeps config and state, apt purge removes the
#          state and the shipped mcpgate.toml, not the administrator's files
#   rpm    the .rpm's scriptlets with the same systemd: install enables and
#          starts the sockets, upgrade reloads to the new build, erase stops
#          and disables, keeping config and state
# Every step prints PASS or FAIL; the first failure ends the test.
#
# Environment:
#   MCPGATE_SYSTEMTEST_CACHE   cache directory (default .cache/systemtest)
#   MCPGATE_SYSTEMTEST_MIRROR  Debian mirror (default: the host's apt source)
#   MCPGATE_SYSTEMTEST_KEEP=1  keep the work directory (packages, log,
#                              the container's journal)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

SUITE=bookworm
# Changing this list or its version rebuilds the cached root.
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,curl,ca-certificates,procps,man-db,rpm
ROOTFS_RECIPE="$SUITE minbase $ROOTFS_PACKAGES recipe-2"
CACHE=${MCPGATE_SYSTEMTEST_CACHE:-$ROOT/.cache/systemtest}
ROOTFS=$CACHE/$SUITE-rootfs
MARKER=.mcpgate-systemtest-rootfs
MACHINE=mcpgate-systest-$$
GO=${GO:-go}
MAKE=${MAKE:-make}
PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

WORK=$(mktemp -d /tmp/mcpgate-systest.XXXXXX)
LOG=$WORK/log
: >"$LOG"
NSPAWN= PID1=
passed=0 failed=0
t_start=$SECONDS

# --- reporting -------------------------------------------------------------

step_start=$SECONDS
begin() { step_start=$SECONDS; printf -- '--- %s\n' "$*"; }
pass() {
	passed=$((passed + 1))
	printf 'PASS  %s (%ds)\n' "$*" $((SECONDS - step_start))
}
fail() {
	failed=$((failed + 1))
	printf 'FAIL  %s (%ds)\n' "$*" $((SECONDS - step_start))
	diagnostics
	exit 1
}
note() { printf '      %s\n' "$*"; }

diagnostics() {
	echo "=== diagnostics"
	echo "--- last lines of $LOG"
	tail -n 40 "$LOG" || true
	if [ -n "$PID1" ] && kill -0 "$PID1" 2>/dev/null; then
		echo "--- systemctl status mcpgate.service mcpgate.socket"
		cx systemctl --no-pager status mcpgate.service mcpgate.socket 2>&1 | tail -n 30 || true
		echo "--- journalctl -u mcpgate"
		cx journalctl --no-pager -u mcpgate -n 60 2>&1 || true
	fi
}

finish() {
	local rc=$?
	if [ -n "$PID1" ] && kill -0 "$PID1" 2>/dev/null; then
		cx journalctl --no-pager -b >"$WORK/journal.txt" 2>&1 || true
	fi
	teardown
	if [ "${MCPGATE_SYSTEMTEST_KEEP:-}" = 1 ]; then
		echo "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
		failed=1
		echo "FAIL  aborted (exit $rc)"
	fi
	printf 'systemtest: %d passed, %d failed (%ds)\n' "$passed" "$failed" $((SECONDS - t_start))
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM HUP

# --- the container ---------------------------------------------------------

# cx CMD...: run CMD inside the booted container (all of PID 1's namespaces,
# a clean environment).
cx() {
	nsenter --target "$PID1" --all -- /usr/bin/env -i PATH="$PATH_IN" LANG=C.UTF-8 HOME=/root TERM=dumb "$@"
}
# put HOSTFILE PATH [MODE]: copy a host file into the container.
put() {
	cx /bin/sh -c 'cat >"$1" && chmod "$2" "$1"' sh "$2" "${3:-0644}" <"$1"
}
# write PATH [MODE] <<EOF: write stdin to a file in the container.
write() {
	cx /bin/sh -c 'cat >"$1" && chmod "$2" "$1"' sh "$1" "${2:-0644}"
}

teardown() {
	[ -n "$NSPAWN" ] || return 0
	if kill -0 "$NSPAWN" 2>/dev/null; then
		# systemd-nspawn turns SIGTERM into an orderly poweroff of the container.
		kill -TERM "$NSPAWN" 2>/dev/null || true
		for _ in $(seq 1 60); do
			kill -0 "$NSPAWN" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$NSPAWN" 2>/dev/null; then
			echo "container did not power off in 30s: killing it"
			[ -n "$PID1" ] && kill -KILL "$PID1" 2>/dev/null || true
			kill -KILL "$NSPAWN" 2>/dev/null || true
		fi
	fi
	wait "$NSPAWN" 2>/dev/null || true
	if [ -n "$PID1" ] && kill -0 "$PID1" 2>/dev/null; then
		kill -KILL "$PID1" 2>/dev/null || true
	fi
	rm -rf "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null || true
	echo "container $MACHINE torn down"
	NSPAWN=
}

# --- host tools ------------------------------------------------------------

host_tools() {
	begin "host tools"
	[ "$(id -u)" = 0 ] || fail "host tools: the system test needs root (debootstrap, systemd-nspawn)"
	local missing=
	command -v systemd-nspawn >/dev/null || missing="$missing systemd-container"
	command -v debootstrap >/dev/null || missing="$missing debootstrap"
	command -v nsenter >/dev/null || missing="$missing util-linux"
	command -v dpkg-deb >/dev/null || missing="$missing dpkg"
	command -v jq >/dev/null || missing="$missing jq"
	if [ -n "$missing" ]; then
		note "installing:$missing"
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; } >>"$LOG" 2>&1 ||
			fail "host tools: apt-get install$missing"
	fi
	pass "host tools: $(systemd-nspawn --version | head -n1), debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '?')"
}

# The Debian mirror the host's apt uses, so that debootstrap and apt in the
# root reach the same one.
mirror() {
	if [ -n "${MCPGATE_SYSTEMTEST_MIRROR:-}" ]; then
		echo "$MCPGATE_SYSTEMTEST_MIRROR"
		return
	fi
	local uri
	uri=$(awk '
		/^URIs:/ { uri = $2 }
		/^Suites:/ && uri != "" { for (i = 2; i <= NF; i++) if ($i == "'$SUITE'") { print uri; exit } }
		/^$/ { uri = "" }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
	if [ -z "$uri" ]; then
		uri=$(awk '$1 == "deb" && $3 == "'$SUITE'" { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
	fi
	echo "${uri:-http://deb.debian.org/debian}"
}

# --- the cached root -------------------------------------------------------

rootfs() {
	begin "debian $SUITE root"
	mkdir -p "$CACHE"
	exec 9>"$CACHE/lock"
	flock -w 1800 9 || fail "rootfs: cache lock $CACHE/lock"
	if [ -f "$ROOTFS/$MARKER" ] && [ "$(cat "$ROOTFS/$MARKER")" = "$ROOTFS_RECIPE" ]; then
		flock -u 9
		pass "debian $SUITE root: cached in ${ROOTFS#"$ROOT"/} ($(du -sh "$ROOTFS" | cut -f1))"
		return
	fi
	local url tmp
	url=$(mirror)
	tmp=$ROOTFS.tmp.$$
	rm -rf "$ROOTFS" "$CACHE/$SUITE-rootfs.tmp."*
	note "debootstrap $SUITE from $url (once; cached afterwards)"
	debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$SUITE" "$tmp" "$url" >>"$LOG" 2>&1 ||
		fail "rootfs: debootstrap $SUITE from $url"
	cat >"$tmp/etc/apt/sources.list" <<-EOF
		deb $url $SUITE main
		deb $url $SUITE-updates main
	EOF
	echo systest >"$tmp/etc/hostname"
	# Package lists, so apt in the container resolves against the mirror.
	chroot "$tmp" /usr/bin/env -i PATH="$PATH_IN" apt-get update -q >>"$LOG" 2>&1 ||
		fail "rootfs: apt-get update in the root ($url)"
	chroot "$tmp" /usr/bin/env -i PATH="$PATH_IN" apt-get clean >>"$LOG" 2>&1 || true
	# A machine id per boot (the overlay is thrown away anyway).
	: >"$tmp/etc/machine-id"
	echo "$ROOTFS_RECIPE" >"$tmp/$MARKER"
	mv "$tmp" "$ROOTFS"
	flock -u 9
	pass "debian $SUITE root: debootstrapped into ${ROOTFS#"$ROOT"/} ($(du -sh "$ROOTFS" | cut -f1))"
}

# --- packages and the backend ----------------------------------------------

V1= V2= BID2= DEB1= DEB2= RPM1= RPM2=
build() {
	begin "build packages"
	V1=$(packaging/version.sh)
	V2="$V1+systest"
	BID2="systest2-$(date +%s)-$$"
	local arch
	arch=$($GO env GOARCH)
	$MAKE --no-print-directory package DIST="$WORK/v1" PKG_VERSION="$V1" >>"$LOG" 2>&1 ||
		fail "build: make package (version $V1)"
	$MAKE --no-print-directory package DIST="$WORK/v2" PKG_VERSION="$V2" BUILD_ID="$BID2" >>"$LOG" 2>&1 ||
		fail "build: make package (version $V2, build id $BID2)"
	DEB1=$WORK/v1/mcpgate_${V1}_${arch}.deb
	DEB2=$WORK/v2/mcpgate_${V2}_${arch}.deb
	[ -f "$DEB1" ] && [ -f "$DEB2" ] || fail "build: expected $DEB1 and $DEB2"
	RPM1=$(ls "$WORK"/v1/mcpgate_*.rpm)
	RPM2=$(ls "$WORK"/v2/mcpgate_*.rpm)
	CGO_ENABLED=0 $GO build -trimpath -o "$WORK/backend" ./tests/system/backend >>"$LOG" 2>&1 ||
		fail "build: the test backend"
	pass "build packages: $(basename "$DEB1"), $(basename "$DEB2") (build id $BID2)"
}

# --- boot ------------------------------------------------------------------

boot() {
	begin "boot"
	# --volatile=overlay: the cached root is the read-only lower layer of an
	# overlay whose upper layer is a tmpfs, so every run starts clean and the
	# cache stays untouched. --private-network: only loopback, so the
	# container's ports 443/80 are its own. --register=no --keep-unit: no
	# machined or D-Bus needed on the host.
	systemd-nspawn --quiet --directory="$ROOTFS" --volatile=overlay --private-network \
		--register=no --keep-unit --machine="$MACHINE" --console=passive --boot \
		>"$WORK/console.log" 2>&1 </dev/null &
	NSPAWN=$!
	# The container's init: the child of systemd-nspawn that is PID 1 in
	# its own PID namespace, once it runs systemd.
	local p
	for _ in $(seq 1 150); do
		kill -0 "$NSPAWN" 2>/dev/null || break
		for p in $(pgrep -P "$NSPAWN" || true); do
			if grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null &&
				[ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ]; then
				PID1=$p
			fi
		done
		[ -n "$PID1" ] && break
		sleep 0.2
	done
	if [ -z "$PID1" ]; then
		cat "$WORK/console.log"
		fail "boot: systemd-nspawn did not start systemd in a container"
	fi
	local state=
	for _ in $(seq 1 60); do
		state=$(timeout 120 nsenter --target "$PID1" --all -- /usr/bin/env -i PATH="$PATH_IN" \
			systemctl is-system-running --wait 2>&1 </dev/null || true)
		case "$state" in running | degraded) break ;; esac
		sleep 0.5
	done
	case "$state" in
	running) ;;
	degraded) note "failed units: $(cx systemctl --failed --no-legend --plain | awk '{print $1}' | xargs)" ;;
	*)
		cat "$WORK/console.log"
		fail "boot: system state '$state'"
		;;
	esac
	pass "boot: $(cx systemctl --version | head -n1) is PID 1 of $MACHINE ($state)"
}

# --- install ---------------------------------------------------------------

install_v1() {
	begin "install"
	cx mkdir -p /tmp/pkgs
	put "$DEB1" "/tmp/pkgs/$(basename "$DEB1")"
	put "$DEB2" "/tmp/pkgs/$(basename "$DEB2")"
	put "$RPM1" /tmp/pkgs/v1.rpm
	put "$RPM2" /tmp/pkgs/v2.rpm
	put "$WORK/backend" /usr/local/bin/systest-backend 0755
	cx /bin/sh -c "cd /tmp/pkgs && DEBIAN_FRONTEND=noninteractive apt install -y ./$(basename "$DEB1")" >>"$LOG" 2>&1 </dev/null ||
		fail "install: apt install ./$(basename "$DEB1")"
	local v
	v=$(cx dpkg-query -W -f='${Version}' mcpgate)
	[ "$v" = "$V1" ] || fail "install: dpkg says version '$v', want '$V1'"
	cx getent passwd mcpgate >/dev/null || fail "install: no user mcpgate (sysusers)"
	local st
	st=$(cx stat -c '%U:%G %a' /var/lib/mcpgate)
	[ "$st" = "mcpgate:mcpgate 700" ] || fail "install: /var/lib/mcpgate is '$st', want 'mcpgate:mcpgate 700' (tmpfiles)"
	st=$(cx stat -c '%U:%G %a' /etc/mcpgate/credentials)
	[ "$st" = "root:root 700" ] || fail "install: /etc/mcpgate/credentials is '$st', want 'root:root 700'"
	for u in mcpgate.socket mcpgate-http.socket mcpgate-quic.socket; do
		[ "$(cx systemctl is-enabled "$u" || true)" = enabled ] || fail "install: $u is not enabled"
		[ "$(cx systemctl is-active "$u" || true)" = active ] || fail "install: $u is not active"
	done
	[ "$(cx systemctl is-active mcpgate.service || true)" = inactive ] ||
		fail "install: mcpgate.service runs before any connection"
	cx man -w mcpgate >/dev/null 2>&1 || fail "install: man mcpgate finds no page"
	cx test -s /usr/share/doc/mcpgate/mcpgate-help.txt || fail "install: no /usr/share/doc/mcpgate/mcpgate-help.txt"
	cx test -f /usr/share/doc/mcpgate/examples/notes.toml || fail "install: no example proxy file"
	cx grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' /usr/share/doc/mcpgate/copyright ||
		fail "install: /usr/share/doc/mcpgate/copyright is not a machine-readable copyright file"
	cx grep -qx 'License: Apache-2.0' /usr/share/doc/mcpgate/copyright || fail "install: the copyright file names no Apache-2.0 license"
	cx test -s /usr/share/common-licenses/Apache-2.0 || fail "install: the copyright file points to a missing /usr/share/common-licenses/Apache-2.0"
	cx mcpgate check >>"$LOG" 2>&1 || fail "install: mcpgate check of the shipped /etc/mcpgate"
	# README, "Running it in production": a secret in a credential is
	# checked the way the service sees it, through systemd-run.
	cx mkdir -p /tmp/cred-conf
	printf '[oauth]\ncallback_url = "https://probe.test/oauth/callback"\nallowed_users = ["*"]\n[idp.github]\nclient_id = "probe"\nclient_secret_credential = "mcpgate_probe.secret"\n' |
		write /tmp/cred-conf/mcpgate.toml
	printf 'hostnames = ["probe.test"]\ntarget = "http://127.0.0.1:9"\n[tls]\nself_signed = true\n' | write /tmp/cred-conf/probe.toml
	echo probe-secret | write /etc/mcpgate/credentials/probe.secret 0600
	cx mcpgate check --config-dir /tmp/cred-conf >>"$LOG" 2>&1 &&
		fail "install: mcpgate check in a shell resolved a credential it cannot see"
	cx systemd-run --quiet --pipe --wait -p LoadCredential=mcpgate:/etc/mcpgate/credentials \
		/usr/bin/mcpgate check --config-dir /tmp/cred-conf >>"$LOG" 2>&1 </dev/null ||
		fail "install: the README's systemd-run ... mcpgate check does not see the credential"
	cx rm -rf /tmp/cred-conf /etc/mcpgate/credentials/probe.secret
	pass "install: apt install ./$(basename "$DEB1"): user, directories, sockets enabled and listening, service idle"
}

units() {
	begin "units"
	local out
	out=$(cx systemd-analyze verify /usr/lib/systemd/system/mcpgate.service /usr/lib/systemd/system/mcpgate.socket \
		/usr/lib/systemd/system/mcpgate-http.socket /usr/lib/systemd/system/mcpgate-quic.socket 2>&1) ||
		fail "units: systemd-analyze verify: $out"
	[ -z "$out" ] || fail "units: systemd-analyze verify said: $out"
	cx systemd-analyze security --no-pager mcpgate.service >"$WORK/security.txt" 2>&1 || true
	local exposure
	exposure=$(sed -n 's/.*Overall exposure level for mcpgate.service: \([0-9.]*\).*/\1/p' "$WORK/security.txt")
	[ -n "$exposure" ] || {
		cat "$WORK/security.txt"
		fail "units: no exposure level in systemd-analyze security"
	}
	note "systemd-analyze security mcpgate.service: exposure $exposure"
	awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' ||
		fail "units: exposure $exposure > 2.0"
	pass "units: systemd-analyze verify clean; security exposure $exposure (<= 2.0)"
}

# --- requests --------------------------------------------------------------

# req HOST PATH: one HTTPS request from inside the container to HOST
# (resolved to 127.0.0.1), its certificate checked against the proxy's
# self-signed one. Prints "CODE HTTPVERSION", then the first body line.
req() {
	local out
	out=$(cx curl -sS --http2 --max-time 15 --resolve "$1:443:127.0.0.1" \
		--cacert "/var/lib/mcpgate/tls/${1%%.*}.crt" -w '%{http_code} %{http_version}\n' "https://$1$2" 2>&1 || true)
	tail -n1 <<<"$out"
	head -n1 <<<"$out"
}
# expect_200 HOST BACKEND LABEL: a request to HOST answers 200 over HTTP/2
# from BACKEND.
expect_200() {
	local out status body
	out=$(req "$1" /systest)
	status=$(head -n1 <<<"$out")
	body=$(sed -n 2p <<<"$out")
	[ "$status" = "200 2" ] || fail "$3 https://$1/systest: '$status' (want '200 2'): $body"
	[[ $body == "backend $2: GET /systest"* ]] || fail "$3 https://$1/systest answered '$body', not backend $2"
}
# health HOST: the health JSON of HOST's worker.
health() {
	cx curl -sS --http2 --max-time 15 --resolve "$1:443:127.0.0.1" --cacert "/var/lib/mcpgate/tls/${1%%.*}.crt" \
		"https://$1/.well-known/mcpgate/health" 2>&1 || true
}
json_field() { jq -r ".$1 // empty" 2>/dev/null || true; }

backend() { # NAME PORT
	cx systemd-run --quiet --unit="systest-backend-$1" --property=DynamicUser=yes \
		/usr/local/bin/systest-backend -listen "127.0.0.1:$2" -name "$1" >>"$LOG" 2>&1 ||
		fail "backend $1: systemd-run"
	for _ in $(seq 1 50); do
		cx curl -fsS --max-time 2 "http://127.0.0.1:$2/" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	fail "backend $1: not answering on 127.0.0.1:$2"
}

# proxy_file NAME PORT: /etc/mcpgate/NAME.toml, hostname NAME.test, for the
# backend on PORT, with a self-signed certificate and, where this mcpgate
# has OAuth (authentication required by default), authentication off: the
# system test is about the appliance, not about tokens.
AUTH_OFF=unset
proxy_file() {
	local body
	body=$(printf '# system test: proxy "%s"\nhostnames = ["%s.test"]\ntarget = "http://127.0.0.1:%s"\n\n[tls]\nself_signed = true\n' "$1" "$1" "$2")
	if [ "$AUTH_OFF" = unset ]; then
		AUTH_OFF=
		cx mkdir -p /tmp/probe-conf
		printf '%s\n\n[auth]\nrequired = false\n' "$body" | write /tmp/probe-conf/probe.toml
		if cx mcpgate check --config-dir /tmp/probe-conf >>"$LOG" 2>&1; then
			AUTH_OFF=$'\n[auth]\nrequired = false'
			note "this mcpgate has [auth]: proxies get required = false"
		fi
		cx rm -rf /tmp/probe-conf
	fi
	printf '%s\n%s\n' "$body" "$AUTH_OFF" | write "/etc/mcpgate/$1.toml"
	cx mcpgate check >>"$LOG" 2>&1 || fail "proxy file $1: mcpgate check: $(cx mcpgate check 2>&1 | head -n 5)"
}

main_pid() { cx systemctl show -p MainPID --value mcpgate.service; }

# --- a: first proxy, socket activation --------------------------------------

BID1= MAINPID=
step_a() {
	begin "(a) first proxy through the socket"
	backend notes 3001
	proxy_file notes 3001
	cx systemctl start mcpgate.socket >>"$LOG" 2>&1 || fail "(a) systemctl start mcpgate.socket"
	[ "$(cx systemctl is-active mcpgate.service || true)" = inactive ] ||
		fail "(a) mcpgate.service already running before the first connection"
	# The first connection starts mcpgate.service; the certificate to check
	# against exists only once its worker runs, so this one is unchecked.
	local out
	out=$(cx curl -sS --http2 --insecure --max-time 60 --resolve notes.test:443:127.0.0.1 \
		-o /dev/null -w '%{http_code} %{http_version}' https://notes.test/systest 2>&1 || true)
	[ "$out" = "200 2" ] || fail "(a) first request (socket activation): '$out', want '200 2'"
	[ "$(cx systemctl is-active mcpgate.service || true)" = active ] ||
		fail "(a) mcpgate.service is not active after the first connection"
	expect_200 notes.test notes "(a)"
	# Both address families on the one socket (BindIPv6Only=both).
	if cx grep -q ' lo$' /proc/net/if_inet6 2>/dev/null; then
		out=$(cx curl -sS --http2 --max-time 15 --resolve 'notes.test:443:[::1]' \
			--cacert /var/lib/mcpgate/tls/notes.crt -o /dev/null -w '%{http_code} %{http_version}' \
			https://notes.test/systest 2>&1 || true)
		[ "$out" = "200 2" ] || fail "(a) request over [::1]: '$out'"
		note "IPv4 and IPv6 loopback both served"
	fi
	local h
	h=$(health notes.test)
	BID1=$(json_field build_id <<<"$h")
	[ -n "$BID1" ] || fail "(a) health of notes.test: $h"
	[ "$(json_field version <<<"$h")" = "$V1" ] || fail "(a) health of notes.test reports version $(json_field version <<<"$h"), want $V1"
	MAINPID=$(main_pid)
	note "mcpgate.service: pid $MAINPID, status: $(cx systemctl show -p StatusText --value mcpgate.service)"
	pass "(a) https://notes.test: 200 over HTTP/2, TLS checked; service socket-activated (build $BID1)"
}

# --- b: second proxy, reload -----------------------------------------------

step_b() {
	begin "(b) second proxy, systemctl reload"
	backend docs 3002
	proxy_file docs 3002
	local out
	out=$(cx systemctl reload mcpgate 2>&1) || fail "(b) systemctl reload mcpgate: exit $?: $out"
	expect_200 docs.test docs "(b)"
	expect_200 notes.test notes "(b)"
	[ "$(main_pid)" = "$MAINPID" ] || fail "(b) the supervisor was restarted (pid $(main_pid), was $MAINPID)"
	note "journal: $(cx journalctl -u mcpgate -o cat --no-pager | grep -m1 'reload ok' || true)"
	pass "(b) systemctl reload mcpgate: exit 0; https://docs.test serves, notes.test still does"
}

# --- c: broken file, rejected reload ---------------------------------------

step_c() {
	begin "(c) broken proxy file, rejected reload"
	local line rc=0 out
	# One request to find in the access log below.
	cx curl -sS --http2 --max-time 15 --resolve notes.test:443:127.0.0.1 --cacert /var/lib/mcpgate/tls/notes.crt \
		-H 'X-Request-Id: systest-c' -o /dev/null https://notes.test/systest >>"$LOG" 2>&1 || fail "(c) request with an id"
	cx cp /etc/mcpgate/docs.toml /root/docs.toml.good
	cx /bin/sh -c 'echo "bogus_key = true" >>/etc/mcpgate/docs.toml'
	line=$(cx wc -l </dev/null /etc/mcpgate/docs.toml | awk '{print $1}')
	out=$(cx systemctl reload mcpgate 2>&1) || rc=$?
	[ "$rc" -ne 0 ] || fail "(c) systemctl reload mcpgate accepted a broken file"
	note "systemctl reload mcpgate: exit $rc"
	local want="/etc/mcpgate/docs.toml:$line:" found=
	for _ in $(seq 1 25); do
		found=$(cx journalctl -u mcpgate -o cat --no-pager | grep -F -m1 "$want" || true)
		[ -n "$found" ] && break
		sleep 0.2
	done
	[ -n "$found" ] || fail "(c) journalctl -u mcpgate has no '$want'"
	note "journal: $found"
	# Priorities: the error once at warning or above, and none of the info
	# lines (worker start, access log) there; at info they all are.
	local warn info n
	warn=$(cx journalctl -u mcpgate -p warning -o cat --no-pager)
	n=$(grep -cF "$want" <<<"$warn" || true)
	[ "$n" = 1 ] || fail "(c) journalctl -u mcpgate -p warning shows '$want' $n times, want once: $(grep -F "$want" <<<"$warn")"
	if grep -E '"msg":"(worker serving|request)"' <<<"$warn" >/dev/null; then
		fail "(c) journalctl -p warning shows info lines: $(grep -m2 -E '"msg":"(worker serving|request)"' <<<"$warn")"
	fi
	info=$(cx journalctl -u mcpgate -p info -o cat --no-pager)
	grep -q '"msg":"worker serving"' <<<"$info" || fail "(c) journalctl -p info has no 'worker serving' line"
	grep -q '"request_id":"systest-c"' <<<"$info" || fail "(c) journalctl -p info has no access-log line for request id systest-c"
	note "journalctl -p warning: the error once, no info lines; -p info: $(grep -m1 '"request_id":"systest-c"' <<<"$info")"
	expect_200 notes.test notes "(c)"
	expect_200 docs.test docs "(c)"
	[ "$(cx systemctl is-active mcpgate.service || true)" = active ] || fail "(c) mcpgate.service is no longer active"
	[ "$(main_pid)" = "$MAINPID" ] || fail "(c) the supervisor was restarted"
	# Repair, so that the upgrade in (d) reloads a valid configuration.
	cx cp /root/docs.toml.good /etc/mcpgate/docs.toml
	out=$(cx systemctl reload mcpgate 2>&1) || fail "(c) reload after the repair: $out"
	pass "(c) reload rejected (exit $rc), journal shows $want once at -p warning, both hostnames still serve"
}

# --- d: upgrade under load -------------------------------------------------

step_d() {
	begin "(d) apt install of a newer package under a request loop"
	# The loop: new TLS connections to both hostnames, one after the other,
	# until /run/systest-loop.stop appears; bounded to 3000 rounds and 180s.
	write /usr/local/bin/systest-loop 0755 <<-'EOF'
		#!/bin/bash
		ok=0 bad=0
		for ((i = 0; i < 3000 && SECONDS < 180; i++)); do
			[ -e /run/systest-loop.stop ] && break
			for h in notes docs; do
				out=$(curl -sS -v --http2 --max-time 10 --resolve "$h.test:443:127.0.0.1" \
					--cacert "/var/lib/mcpgate/tls/$h.crt" -o /dev/null -w '%{http_code} %{http_version}' \
					"https://$h.test/loop/$i" 2>/run/systest-loop.trace)
				if [ "$out" = "200 2" ]; then
					ok=$((ok + 1))
				else
					bad=$((bad + 1))
					{
						echo "round $i $h at $(date +%T.%N): $out $(grep '^curl: ' /run/systest-loop.trace)"
						sed 's/^/    /' /run/systest-loop.trace
					} >>/run/systest-loop.failures
				fi
			done
			echo "$ok $bad" >/run/systest-loop.count
		done
		echo "$ok $bad" >/run/systest-loop.result
	EOF
	cx rm -f /run/systest-loop.stop /run/systest-loop.result /run/systest-loop.failures /run/systest-loop.count
	cx systemd-run --quiet --unit=systest-loop --service-type=exec /usr/local/bin/systest-loop >>"$LOG" 2>&1 ||
		fail "(d) systemd-run the request loop"
	local n=0
	for _ in $(seq 1 100); do
		n=$(cx cat /run/systest-loop.count 2>/dev/null | awk '{print $1}' || true)
		[ "${n:-0}" -ge 20 ] && break
		sleep 0.1
	done
	[ "${n:-0}" -ge 20 ] || fail "(d) the request loop does not get going ($n ok)"

	local sock_since
	sock_since=$(cx systemctl show -p ActiveEnterTimestampMonotonic --value mcpgate.socket)
	cx /bin/sh -c "cd /tmp/pkgs && DEBIAN_FRONTEND=noninteractive apt install -y ./$(basename "$DEB2")" >>"$LOG" 2>&1 </dev/null ||
		fail "(d) apt install ./$(basename "$DEB2")"
	local v
	v=$(cx dpkg-query -W -f='${Version}' mcpgate)
	[ "$v" = "$V2" ] || fail "(d) dpkg says version '$v', want '$V2'"
	note "apt install ./$(basename "$DEB2"): installed $v"

	# Every worker, as the supervisor lists them, and every hostname's
	# health answer carry the new build id (old workers may still drain).
	local st ids hn hd ok=
	for _ in $(seq 1 120); do
		st=$(cx mcpgate status --json 2>/dev/null || true)
		ids=$(jq -r '[.workers[] | "\(.proxy)=\(.build_id)/\(.state)"] | join(" ")' <<<"$st" 2>/dev/null || true)
		hn=$(health notes.test | json_field build_id)
		hd=$(health docs.test | json_field build_id)
		if [ "$hn" = "$BID2" ] && [ "$hd" = "$BID2" ] &&
			jq -e --arg id "$BID2" '(.workers | length) == 2 and all(.workers[]; .build_id == $id)' <<<"$st" >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.5
	done
	[ -n "$ok" ] || fail "(d) workers do not all report build id $BID2: health notes=$hn docs=$hd; mcpgate status: $ids"
	note "mcpgate status: $ids (was build $BID1); supervisor still build $(jq -r .build_id <<<"$st")"
	note "health version: $(health notes.test | json_field version)"

	# A little more traffic on the new workers, then stop the loop.
	sleep 2
	cx touch /run/systest-loop.stop
	local res=
	for _ in $(seq 1 150); do
		res=$(cx cat /run/systest-loop.result 2>/dev/null || true)
		[ -n "$res" ] && break
		sleep 0.2
	done
	[ -n "$res" ] || fail "(d) the request loop did not finish"
	local good bad
	read -r good bad <<<"$res"
	if [ "$bad" != 0 ]; then
		cx cat /run/systest-loop.failures || true
		fail "(d) the request loop saw $bad failures ($good ok)"
	fi
	[ "$good" -ge 40 ] || fail "(d) the request loop made only $good requests"
	[ "$(main_pid)" = "$MAINPID" ] || fail "(d) the supervisor was restarted, not reloaded (pid $(main_pid), was $MAINPID)"
	[ "$(cx systemctl show -p ActiveEnterTimestampMonotonic --value mcpgate.socket)" = "$sock_since" ] ||
		fail "(d) mcpgate.socket was restarted during the upgrade"
	pass "(d) upgraded to $V2 under load: every worker on build $BID2, loop $good requests, 0 failures, supervisor pid and sockets kept"
}

# --- e: stop, remove, purge ------------------------------------------------

step_e() {
	begin "(e) stop, remove, purge"
	cx systemctl stop mcpgate.service mcpgate.socket >>"$LOG" 2>&1 || fail "(e) systemctl stop mcpgate.service mcpgate.socket"
	local left
	left=$(cx pgrep -a -x mcpgate || true)
	[ -z "$left" ] || fail "(e) mcpgate processes left after stop: $left"
	for u in mcpgate.service mcpgate.socket mcpgate-http.socket mcpgate-quic.socket; do
		[ "$(cx systemctl is-active "$u" || true)" = inactive ] || fail "(e) $u still $(cx systemctl is-active "$u" || true)"
	done
	pass "(e) systemctl stop mcpgate.service mcpgate.socket: no mcpgate process, all three sockets closed"

	begin "(e) apt remove keeps configuration and state"
	cx /bin/sh -c 'DEBIAN_FRONTEND=noninteractive apt remove -y mcpgate' >>"$LOG" 2>&1 </dev/null ||
		fail "(e) apt remove mcpgate"
	cx test ! -e /usr/bin/mcpgate || fail "(e) /usr/bin/mcpgate still there after apt remove"
	cx test -f /etc/mcpgate/notes.toml || fail "(e) apt remove deleted /etc/mcpgate/notes.toml"
	cx test -f /etc/mcpgate/mcpgate.toml || fail "(e) apt remove deleted /etc/mcpgate/mcpgate.toml"
	cx test -d /var/lib/mcpgate/tls || fail "(e) apt remove deleted /var/lib/mcpgate"
	pass "(e) apt remove: binary gone; /etc/mcpgate and /var/lib/mcpgate kept"

	begin "(e) apt purge"
	echo '# the administrator'"'"'s own file' | write /etc/mcpgate/extra.toml
	cx /bin/sh -c 'DEBIAN_FRONTEND=noninteractive apt purge -y mcpgate' >>"$LOG" 2>&1 </dev/null ||
		fail "(e) apt purge mcpgate"
	cx test ! -e /var/lib/mcpgate || fail "(e) /var/lib/mcpgate still there after apt purge"
	cx test ! -e /etc/mcpgate/mcpgate.toml || fail "(e) the shipped /etc/mcpgate/mcpgate.toml is still there after apt purge"
	cx test ! -e /etc/mcpgate/credentials || fail "(e) the empty /etc/mcpgate/credentials is still there after apt purge"
	for f in extra.toml notes.toml docs.toml; do
		cx test -f "/etc/mcpgate/$f" || fail "(e) apt purge deleted the administrator's /etc/mcpgate/$f"
	done
	# As an administrator would, before the rpm step installs afresh.
	cx rm -rf /etc/mcpgate
	left=$(cx /bin/sh -c 'ls /etc/systemd/system/*/mcpgate* 2>/dev/null' || true)
	[ -z "$left" ] || fail "(e) unit links left after purge: $left"
	cx dpkg-query -W -f='${Status}' mcpgate 2>/dev/null | grep -q installed &&
		fail "(e) dpkg still knows mcpgate after purge"
	pass "(e) apt purge: /var/lib/mcpgate and the shipped mcpgate.toml removed; the administrator's files in /etc/mcpgate kept"
}

# --- rpm: the scriptlets ----------------------------------------------------

step_rpm() {
	begin "rpm scriptlets"
	# Debian's rpm wants --force-debian; its database knows no other package.
	local rpm="rpm --force-debian"
	cx $rpm -i /tmp/pkgs/v1.rpm >>"$LOG" 2>&1 || fail "rpm: rpm -i $(basename "$RPM1")"
	for u in mcpgate.socket mcpgate-http.socket mcpgate-quic.socket; do
		[ "$(cx systemctl is-enabled "$u" || true)" = enabled ] || fail "rpm: %post did not enable $u"
		[ "$(cx systemctl is-active "$u" || true)" = active ] || fail "rpm: %post did not start $u"
	done
	[ "$(cx stat -c '%U %a' /var/lib/mcpgate)" = "mcpgate 700" ] || fail "rpm: /var/lib/mcpgate not set up"
	proxy_file notes 3001
	local out
	out=$(cx curl -sS --http2 --insecure --max-time 60 --resolve notes.test:443:127.0.0.1 \
		-o /dev/null -w '%{http_code} %{http_version}' https://notes.test/systest 2>&1 || true)
	[ "$out" = "200 2" ] || fail "rpm: first request after rpm -i: '$out'"
	local pid
	pid=$(main_pid)
	cx $rpm -U /tmp/pkgs/v2.rpm >>"$LOG" 2>&1 || fail "rpm: rpm -U $(basename "$RPM2")"
	local id=
	for _ in $(seq 1 60); do
		id=$(health notes.test | json_field build_id)
		[ "$id" = "$BID2" ] && break
		sleep 0.5
	done
	[ "$id" = "$BID2" ] || fail "rpm: after rpm -U the worker reports build '$id', want $BID2"
	[ "$(main_pid)" = "$pid" ] || fail "rpm: rpm -U restarted the supervisor instead of reloading it"
	note "rpm -U: worker on build $BID2, supervisor pid $pid kept"
	cx $rpm -e mcpgate >>"$LOG" 2>&1 || fail "rpm: rpm -e mcpgate"
	local left
	left=$(cx pgrep -a -x mcpgate || true)
	[ -z "$left" ] || fail "rpm: mcpgate processes left after rpm -e: $left"
	for u in mcpgate.socket mcpgate-http.socket mcpgate-quic.socket; do
		cx test ! -e "/etc/systemd/system/sockets.target.wants/$u" || fail "rpm: $u still enabled after rpm -e"
	done
	cx test -f /etc/mcpgate/notes.toml || fail "rpm: rpm -e deleted /etc/mcpgate/notes.toml"
	cx test -d /var/lib/mcpgate/tls || fail "rpm: rpm -e deleted /var/lib/mcpgate"
	pass "rpm scriptlets: rpm -i enables and starts the sockets, rpm -U reloads to the new build, rpm -e stops and disables, keeps config and state"
}

host_tools
rootfs
build
boot
install_v1
units
step_a
step_b
step_c
step_d
step_e
step_rpm
