#!/bin/sh
# mcpgate postrm (deb). $1: remove, purge, upgrade, ...
# /etc/mcpgate (with every proxy file) and /var/lib/mcpgate are removed on
# purge only. The mcpgate user stays: files it owned may remain elsewhere.
set -e

units="mcpgate.socket mcpgate-http.socket mcpgate-quic.socket"

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi

if [ -x /usr/bin/deb-systemd-helper ]; then
	case "$1" in
	remove)
		# Remembers that the sockets were enabled, for a reinstallation.
		for unit in $units; do
			deb-systemd-helper mask "$unit" >/dev/null || true
		done
		;;
	purge)
		for unit in $units; do
			deb-systemd-helper purge "$unit" >/dev/null || true
			deb-systemd-helper unmask "$unit" >/dev/null || true
		done
		;;
	esac
fi

if [ "$1" = purge ]; then
	rm -rf /etc/mcpgate /var/lib/mcpgate /run/mcpgate
fi
exit 0
