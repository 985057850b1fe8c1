#!/bin/sh
# mcpgate postinst (deb). $1: configure; $2: the version configured before,
# empty on a first installation.
set -e

units="mcpgate.socket mcpgate-http.socket mcpgate-quic.socket"

case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove) ;;
*) exit 0 ;;
esac

# The service user, then its directories.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/mcpgate.conf
elif ! getent passwd mcpgate >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/mcpgate --no-create-home \
		--shell /usr/sbin/nologin --comment "mcpgate MCP gateway" mcpgate
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/mcpgate.conf || true
fi

# Enable the sockets on a first installation (and again after a removal
# that was not a purge), keep the administrator's choice on upgrades.
for unit in $units; do
	deb-systemd-helper unmask "$unit" >/dev/null || true
	if deb-systemd-helper --quiet was-enabled "$unit"; then
		deb-systemd-helper enable "$unit" >/dev/null || true
	else
		deb-systemd-helper update-state "$unit" >/dev/null || true
	fi
done

if [ -d /run/systemd/system ] && [ -z "${DPKG_ROOT:-}" ]; then
	systemctl --system daemon-reload >/dev/null || true
	if [ -n "$2" ]; then
		# Upgrade: fresh workers from the new binary, without closing a
		# socket. Does nothing when the service is not running.
		deb-systemd-invoke try-reload-or-restart mcpgate.service ||
			echo "mcpgate: reloading mcpgate.service failed; see journalctl -u mcpgate" >&2
	fi
	# Listening does not start the service: the first connection does.
	deb-systemd-invoke start $units ||
		echo "mcpgate: could not start mcpgate.socket (are ports 443 and 80 free?); see systemctl status mcpgate.socket" >&2
fi
exit 0
