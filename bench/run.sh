#!/usr/bin/env bash
# bench/run.sh full|quick|scale — what `make bench`, `make bench-quick` and
# `make bench-scale` run.
#
# Installs the Debian packages the bench needs, builds the backend, the
# baseline proxy, mcpbench and two builds of mcpgate (different build ids,
# for the reload figure), then runs mcpbench pinned to the load core. Every
# process the bench starts is recorded in a pid file; the exit trap stops
# them all, whatever happened.
set -euo pipefail

MODE=${1:-full}
case "$MODE" in full | quick | scale) ;; *) echo "usage: $0 full|quick|scale" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
ROOT=$PWD
GO=${GO:-go}
APT_PACKAGES="nginx caddy wrk nghttp2-client gnuplot-nox"
LOAD_CORE=1

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- packages ---------------------------------------------------------------
missing=
for p in $APT_PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing:$missing"
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
if ! command -v perf >/dev/null; then
	log "perf not found: the worker CPU profile will be skipped (apt-get install linux-perf to get it)"
fi
# The packages may start system services; the bench runs its own
# unprivileged instances and wants the cores to itself.
for s in nginx caddy; do
	service "$s" stop >/dev/null 2>&1 || true
done
if [ -s /run/nginx.pid ] && [ "$(cat /proc/"$(cat /run/nginx.pid)"/comm 2>/dev/null)" = nginx ]; then
	kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

if [ "$(nproc)" -lt 2 ]; then
	log "only $(nproc) CPU: servers and load generators share core 0"
	LOAD_CORE=0
fi

# --- build ------------------------------------------------------------------
WORK=$(mktemp -d /tmp/mcpbench-run-XXXXXX)
BIN=$WORK/bin
PIDFILE=$WORK/pids
BENCH_PID=
cleanup() {
	status=$?
	trap - EXIT INT TERM
	if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
		kill -TERM "$BENCH_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$BENCH_PID" 2>/dev/null || true
	fi
	# Every process group mcpbench started (servers run in their own
	# groups): kill what is left of them.
	if [ -f "$PIDFILE" ]; then
		while read -r pid name; do
			if kill -0 -- "-$pid" 2>/dev/null; then
				log "cleanup: stopping $name (process group $pid)"
				kill -KILL -- "-$pid" 2>/dev/null || true
			fi
		done <"$PIDFILE"
	fi
	rm -rf "$WORK"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BIN" bench/results
VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
PKG=github.com/mcpgate/mcpgate
log "building (mcpgate $VERSION, twice: build ids bench-a and bench-b)"
$GO build -trimpath -o "$BIN/backend" ./bench/cmd/backend
$GO build -trimpath -o "$BIN/goproxy" ./bench/cmd/goproxy
$GO build -trimpath -o "$BIN/h1floor" ./bench/cmd/h1floor
$GO build -trimpath -o "$BIN/mcpbench" ./bench/cmd/mcpbench
# Static, as the packages build it (Makefile `package`): a cgo build maps
# libc and gives every thread a pthread stack and a malloc arena, which
# the shipped binary does not have.
for id in bench-a bench-b; do
	CGO_ENABLED=0 $GO build -trimpath -ldflags "-X $PKG/internal/buildinfo.version=$VERSION -X $PKG/internal/buildinfo.buildID=$id" \
		-o "$BIN/mcpgate-$id" ./cmd/mcpgate
done
mv "$BIN/mcpgate-bench-a" "$BIN/mcpgate-a"
mv "$BIN/mcpgate-bench-b" "$BIN/mcpgate-b"

# --- run --------------------------------------------------------------------
# BENCH_STAMP names the results files instead of the date (a second run
# on one day keeps the first).
STAMP=${BENCH_STAMP:-$(date +%F)}
EXTRA=()
BENCH_MODE=$MODE
case "$MODE" in
full) LIMIT=20m ;;
quick) LIMIT=5m STAMP=$STAMP-quick ;;
# The many-proxies row alone (500 proxies, HTTP/3 on; a few minutes).
scale) LIMIT=8m STAMP=$STAMP-scale BENCH_MODE=quick EXTRA=(-only scale -scale 500) ;;
esac
log "running mcpbench ($MODE) on core $LOAD_CORE; servers on core 0; hard limit $LIMIT"
MCPBENCH_PIDFILE=$PIDFILE MCPBENCH_LOAD_CORE=$LOAD_CORE timeout --signal=TERM --kill-after=30s "$LIMIT" \
	taskset -c "$LOAD_CORE" "$BIN/mcpbench" -mode "$BENCH_MODE" -bin "$BIN" -out "$ROOT/bench/results" \
	-stamp "$STAMP" -work "$WORK/run" "${EXTRA[@]}" > >(trap '' INT TERM; tee "$ROOT/bench/results/$STAMP.log") 2>&1 &
BENCH_PID=$!
wait "$BENCH_PID"
