#!/usr/bin/env bash
# Runs the demo: the demo MCP server on 127.0.0.1:3001 and mcpgate on
# https://localhost:8443 in front of it, from etc/demo copied to .demo/.
set -euo pipefail
bin=${1:-bin}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rm -rf .demo
mkdir -p .demo
cp etc/demo/*.toml .demo/

"$bin/mcpdemo" -listen 127.0.0.1:3001 &
backend=$!
"$bin/mcpgate" serve --config-dir .demo &
gate=$!
trap 'kill $gate $backend 2>/dev/null; wait $gate $backend 2>/dev/null' EXIT
trap 'exit 0' INT TERM

for _ in $(seq 1 100); do
  if curl -fsS --cacert .demo/state/tls/demo.crt https://localhost:8443/.well-known/mcpgate/health >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 $gate 2>/dev/null; then echo "mcpgate exited; see the log above" >&2; exit 1; fi
  sleep 0.1
done

cat <<MSG

  mcpgate demo is running.

  MCP endpoint:  https://localhost:8443/mcp   (Streamable HTTP, HTTP/2 or HTTP/1.1)
  Health:        curl --cacert .demo/state/tls/demo.crt https://localhost:8443/.well-known/mcpgate/health
  Certificate:   .demo/state/tls/demo.crt (self-signed; trust it in your client, e.g.
                 NODE_EXTRA_CA_CERTS=.demo/state/tls/demo.crt npx @modelcontextprotocol/inspector)
  Plain HTTP:    http://localhost:8080/ redirects to HTTPS

  Press Ctrl-C to stop.

MSG
wait $gate
