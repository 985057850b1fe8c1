#!/bin/sh
# mcpgate %post (rpm). $1: 1 on installation, 2 or more on upgrade.

units="mcpgate.socket mcpgate-http.socket mcpgate-quic.socket"

if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/mcpgate.conf || :
elif ! getent passwd mcpgate >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/mcpgate --no-create-home \
		--shell /sbin/nologin --comment "mcpgate MCP gateway" mcpgate || :
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/mcpgate.conf || :
fi

if [ "$1" -eq 1 ]; then
	# Installation: enable the sockets (the first connection starts the
	# service).
	systemctl --no-reload enable $units >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 2 ]; then
		# Upgrade: fresh workers from the new binary, without closing a
		# socket. Does nothing when the service is not running.
		systemctl try-reload-or-restart mcpgate.service ||
			echo "mcpgate: reloading mcpgate.service failed; see journalctl -u mcpgate" >&2
	else
		systemctl start $units ||
			echo "mcpgate: could not start mcpgate.socket (are ports 443 and 80 free?); see systemctl status mcpgate.socket" >&2
	fi
fi
exit 0
