#!/bin/sh
# mcpgate prerm (deb). $1: remove, upgrade, deconfigure or failed-upgrade.
# Only a removal stops mcpgate; an upgrade reloads it in postinst.
set -e

if [ "$1" = remove ] && [ -d /run/systemd/system ] && [ -z "${DPKG_ROOT:-}" ]; then
	deb-systemd-invoke stop mcpgate.socket mcpgate-http.socket mcpgate-quic.socket mcpgate.service >/dev/null || true
fi
exit 0
