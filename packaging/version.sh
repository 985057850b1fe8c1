#!/bin/sh
# version.sh — the package version of the checkout, valid for deb and rpm
# (digits first, no '-'; '~' sorts before, '+' after):
#   tag v1.2.3, clean            1.2.3
#   tag v1.2.3-rc1               1.2.3~rc1
#   4 commits after v1.2.3       1.2.3+git4.abc1234
#   no tag                       0.0.0~git20251126173012.abc1234  (commit time, UTC)
#   uncommitted changes          ... plus ".dirty" (or "+dirty")
#   not a git checkout           0.0.0~unknown
set -eu
cd "$(dirname "$0")/.."

if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	echo 0.0.0~unknown
	exit 0
fi
sha=$(git rev-parse --short=7 HEAD)
dirty=
if ! git diff --quiet HEAD -- 2>/dev/null; then
	dirty=dirty
fi

if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	# v1.2.3[-pre]-N-gSHA
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	v=$(printf '%s' "${tag#v}" | tr - '~')
	if [ "$n" != 0 ]; then
		v="$v+git$n.$sha"
		[ -n "$dirty" ] && v="$v.$dirty"
	elif [ -n "$dirty" ]; then
		v="$v+$dirty"
	fi
else
	when=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
	v="0.0.0~git$when.$sha"
	[ -n "$dirty" ] && v="$v.$dirty"
fi
printf '%s\n' "$v"
