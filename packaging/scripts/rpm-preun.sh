#!/bin/sh
# mcpgate %preun (rpm). $1: 0 on erase, 1 or more on upgrade (then nothing
# happens here: %post of the new package reloads mcpgate).

if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now mcpgate.socket mcpgate-http.socket mcpgate-quic.socket mcpgate.service >/dev/null 2>&1 || :
fi
exit 0
