#!/bin/sh
# mcpgate %postun (rpm). $1: 0 on erase. rpm has no purge: /etc/mcpgate
# (rpm keeps an edited mcpgate.toml as .rpmsave) and /var/lib/mcpgate stay.

if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
