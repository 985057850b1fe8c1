#!/usr/bin/env bash
# Runs the demo: the demo MCP server on 127.0.0.1:3001, mcpgate's development
# identity provider on 127.0.0.1:9000, and mcpgate on https://localhost:8443
# in front of the MCP server with OAuth, from etc/demo copied to .demo/.
# Then it runs one client through the whole OAuth flow to show it works.
set -euo pipefail
bin=${1:-bin}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rm -rf .demo
mkdir -p .demo
cp etc/demo/*.toml .demo/
umask 077
head -c 32 /dev/urandom | base64 > .demo/devidp.secret

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

"$bin/mcpdemo" -listen 127.0.0.1:3001 & pids+=($!)
"$bin/mcpgate" devidp --listen 127.0.0.1:9000 --client-id mcpgate-demo --client-secret-file .demo/devidp.secret & pids+=($!)
"$bin/mcpgate" serve --config-dir .demo & gate=$!; pids+=($gate)

ready=
for _ in $(seq 1 150); do
  if curl -fsS --cacert .demo/state/tls/demo.crt https://localhost:8443/.well-known/mcpgate/health >/dev/null 2>&1; then
    ready=1
    break
  fi
  if ! kill -0 "$gate" 2>/dev/null; then echo "mcpgate exited; see the log above" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "mcpgate did not become ready" >&2; exit 1; }

echo
echo "== A client through the whole flow (Go MCP SDK: discovery, registration, sign-in, consent, token, tool call):"
"$bin/mcpdemo" -connect https://localhost:8443/mcp -ca .demo/state/tls/demo.crt -login alice

cat <<MSG

  mcpgate demo is running.

  MCP endpoint:  https://localhost:8443/mcp   (OAuth 2.1; Streamable HTTP over HTTP/1.1, HTTP/2 or HTTP/3)
  Sign-in:       the development identity provider at http://127.0.0.1:9000 asks for a
                 user name and accepts any (never use it in production)
  Certificate:   .demo/state/tls/demo.crt (self-signed; trust it in your client)

  Connect a client through the full flow:
    $bin/mcpdemo -connect https://localhost:8443/mcp -ca .demo/state/tls/demo.crt -login bob
    NODE_EXTRA_CA_CERTS=.demo/state/tls/demo.crt npx @modelcontextprotocol/inspector
      (transport "Streamable HTTP", URL https://localhost:8443/mcp; the browser opens the sign-in)

  Health:        curl --cacert .demo/state/tls/demo.crt https://localhost:8443/.well-known/mcpgate/health
  Status:        $bin/mcpgate status --config-dir .demo
  Press Ctrl-C to stop.

MSG
wait "$gate"
