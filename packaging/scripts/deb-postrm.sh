#!/bin/sh
# mcpgate postrm (deb). $1: remove, purge, upgrade, ...
# Purge removes /var/lib/mcpgate and the shipped /etc/mcpgate/mcpgate.toml;
# files the administrator created under /etc/mcpgate (proxy files,
# credentials) stay. The mcpgate user stays: files it owned may remain
# elsewhere.
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
	# The state is the package's own: signing keys, the OAuth store,
	# self-signed certificates.
	rm -rf /var/lib/mcpgate /run/mcpgate
	# dpkg has deleted the one file shipped here (mcpgate.toml). Proxy files
	# and credentials are the administrator's: they stay, and with them
	# their directories.
	rmdir /etc/mcpgate/credentials /etc/mcpgate 2>/dev/null || true
fi
exit 0
