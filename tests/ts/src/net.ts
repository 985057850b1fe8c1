// How the client reaches the gateway without DNS: every https connection to
// a host name (alpha.test, …) goes to the gateway's loopback listener, with
// the name as SNI and Host, and trusts only the test CA; connections to IP
// literals (the fake GitHub on 127.0.0.1) go where their URL says. The
// fetch returned here is the one passed to the SDK (transport `fetch`,
// `auth()`'s `fetchFn`) and used by the headless user agent.
import { isIP } from "node:net";
import { readFileSync } from "node:fs";
import { Agent, buildConnector, fetch as undiciFetch } from "undici";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";

export interface GatewayNet {
  fetch: FetchLike;
  agent: Agent;
}

// onError hears of every error answer except those of the MCP endpoint
// itself, with its body (OAuth errors are small JSON documents).
export function gatewayNet(gateway: string, caFile: string, h2 = false, onError?: (line: string) => void): GatewayNet {
  const i = gateway.lastIndexOf(":");
  const gwHost = gateway.slice(0, i);
  const gwPort = gateway.slice(i + 1);
  if (!gwHost || !/^\d+$/.test(gwPort)) throw new Error(`gateway address ${gateway}: want host:port`);
  const ca = readFileSync(caFile);
  const direct = buildConnector({ timeout: 5_000 });
  const tls = buildConnector({ ca, timeout: 5_000, allowH2: h2 });
  const agent = new Agent({
    allowH2: h2,
    connect(opts, cb) {
      if (isIP(opts.hostname)) {
        direct(opts, cb);
        return;
      }
      if (opts.protocol !== "https:") {
        cb(new Error(`refusing plain ${opts.protocol}//${opts.hostname}: only the gateway's https listener is reachable by name`), null);
        return;
      }
      // host (not hostname) still names alpha.test, so the SNI and the
      // certificate check use it; only the socket goes elsewhere.
      tls({ ...opts, hostname: gwHost, port: gwPort, servername: opts.hostname }, cb);
    },
  });
  // The npm undici's Response is not the global Response the SDK checks
  // with instanceof (parseErrorResponse would turn every OAuth error into a
  // generic ServerError), so the answer is handed over as a global one.
  const f: FetchLike = async (url, init) => {
    const r = await undiciFetch(url, { ...(init as object), dispatcher: agent } as Parameters<typeof undiciFetch>[1]);
    const res = new Response(r.body as ReadableStream | null, { status: r.status, statusText: r.statusText, headers: r.headers as unknown as Headers });
    Object.defineProperty(res, "url", { value: r.url });
    const path = new URL(r.url || String(url)).pathname;
    if (res.status >= 400 && path !== "/mcp" && onError) {
      onError(`${init?.method ?? "GET"} ${path}: HTTP ${res.status} ${await res.clone().text()}`);
    }
    return res;
  };
  return { fetch: f, agent };
}

// forbidGlobalFetch makes any use of the global fetch fail loudly: every
// request of the SDK must go through the fetch given to it.
export function forbidGlobalFetch(): void {
  globalThis.fetch = ((input: unknown) => {
    throw new Error(`global fetch used for ${String(input instanceof Request ? input.url : input)}: the SDK ignored the fetch it was given`);
  }) as typeof fetch;
}
