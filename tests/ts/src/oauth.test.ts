// mcpgate end to end with the official TypeScript MCP SDK client: a
// StreamableHTTPClientTransport with an authProvider runs RFC 9728 and RFC
// 8414 discovery, dynamic client registration, PKCE and the resource
// indicator against the gateway; the headless agent signs in at the fake
// GitHub and approves mcpgate's consent page; then the session lists and
// calls the backend's tools, and expired access tokens are refreshed by the
// SDK's own refresh path. Run by tests/tsdriver (make e2e), which starts the
// gateway and sets the MCPGATE_E2E_* variables.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { auth, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { forbidGlobalFetch, gatewayNet, type GatewayNet } from "./net.js";
import { HeadlessProvider } from "./provider.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through tests/tsdriver (make e2e)`);
  return v;
}

const endpoint = new URL(env("MCPGATE_E2E_URL")); // https://alpha.test/mcp
const login = env("MCPGATE_E2E_LOGIN");
const ttl = Number(env("MCPGATE_E2E_TOKEN_TTL")); // access_token_ttl, seconds
const issuer = endpoint.origin;
const log = (s: string) => console.log(`  ${s}`);

let net: GatewayNet;
const open: Client[] = [];

before(() => {
  // undici speaks HTTP/1.1 unless allowed h2 (MCPGATE_E2E_H2=1).
  net = gatewayNet(env("MCPGATE_E2E_GATEWAY"), env("MCPGATE_E2E_CA"), process.env.MCPGATE_E2E_H2 === "1", (s) => log(`error answer: ${s}`));
  forbidGlobalFetch();
});

after(async () => {
  for (const c of open) await c.close().catch(() => {});
  await net.agent.close();
});

// connect runs client.connect on a new transport. The first attempt of a
// client without tokens ends in UnauthorizedError after the provider's
// redirectToAuthorization; as a desktop client does, it then hands the code
// to finishAuth and connects again with a new transport.
async function connect(provider: HeadlessProvider): Promise<{ client: Client; interactive: boolean }> {
  const attempt = async (transport: StreamableHTTPClientTransport) => {
    const client = new Client({ name: "mcpgate-ts-e2e", version: "1.0.0" });
    await client.connect(transport);
    open.push(client);
    return client;
  };
  const newTransport = () => new StreamableHTTPClientTransport(endpoint, { authProvider: provider, fetch: net.fetch });
  const first = newTransport();
  try {
    return { client: await attempt(first), interactive: false };
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  await first.finishAuth(provider.takeCode());
  log("finishAuth: code exchanged for tokens");
  return { client: await attempt(newTransport()), interactive: true };
}

function jwtParts(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [h, p] = token.split(".");
  const dec = (s: string) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
  return { header: dec(h), claims: dec(p) };
}

// waitForExpiry sleeps until the provider's access token has expired (its
// exp has passed by a margin; the gateway allows no leeway).
async function waitForExpiry(provider: HeadlessProvider): Promise<void> {
  const exp = Number(jwtParts(provider.tokenSet!.access_token).claims.exp);
  const ms = exp * 1000 + 1100 - Date.now();
  log(`waiting ${(Math.max(ms, 0) / 1000).toFixed(1)}s for the access token to expire`);
  if (ms > 0) await sleep(ms);
}

async function whoami(client: Client): Promise<string> {
  const res = await client.callTool({ name: "whoami", arguments: {} });
  assert.ok(!res.isError, `whoami returned an error: ${JSON.stringify(res)}`);
  const content = res.content as { type: string; text?: string }[];
  assert.equal(content[0]?.type, "text");
  return content[0].text!;
}

const provider = () =>
  new HeadlessProvider({ fetch: (...a) => net.fetch(...a), login, clientName: "mcpgate TypeScript SDK e2e", log: (s) => log(`oauth: ${s}`) });

let alice: HeadlessProvider;
let session: Client;

test("connects through discovery, dynamic registration, sign-in, consent and token", async () => {
  alice = provider();
  const { client, interactive } = await connect(alice);
  session = client;
  assert.ok(interactive, "the first connection must go through the authorization flow");

  // Registration (RFC 7591) and the authorization request the SDK built.
  assert.equal(alice.registrations, 1, "one dynamic client registration");
  const clientID = alice.client?.client_id;
  assert.ok(clientID, "a client_id was registered");
  assert.equal(alice.authorizationURLs.length, 1);
  const az = alice.authorizationURLs[0];
  assert.equal(az.origin + az.pathname, `${issuer}/authorize`);
  assert.equal(az.searchParams.get("client_id"), clientID);
  assert.equal(az.searchParams.get("response_type"), "code");
  assert.equal(az.searchParams.get("code_challenge_method"), "S256");
  assert.ok(az.searchParams.get("code_challenge"));
  assert.equal(az.searchParams.get("resource"), endpoint.href, "RFC 8707 resource from the RFC 9728 metadata");
  assert.equal(az.searchParams.get("redirect_uri"), alice.redirect);

  // The walk: upstream sign-in at the fake GitHub, back through the
  // callback, mcpgate's consent page, then the redirect with the code.
  const steps = alice.agent.steps.join("\n");
  assert.match(steps, /redirect to http:\/\/127\.0\.0\.1:\d+\/login\/oauth\/authorize/, "sent to the identity provider");
  assert.match(steps, /\/oauth\/callback/, "back through the callback URL");
  assert.match(steps, /consent page at https:\/\/alpha\.test.*: approve/, "mcpgate's consent page");
  const cookies = [...alice.agent.jar.accepted];
  assert.ok(cookies.some((n) => n.startsWith("__Host-")), `__Host- cookies were set and kept over https (got ${cookies})`);
  log(`cookies set during the flow: ${cookies.join(", ")}; left after it: ${alice.agent.jar.names().join(", ") || "none"}`);
  const r = alice.redirects[0];
  assert.equal(r.iss, issuer, "RFC 9207 iss in the authorization response");

  // Tokens: an RFC 9068 JWT for this resource, and a refresh token.
  const tok = alice.tokenSet!;
  assert.equal(tok.token_type.toLowerCase(), "bearer");
  assert.ok(tok.refresh_token, "a refresh token was issued");
  assert.ok(tok.expires_in && tok.expires_in <= ttl, `expires_in ${tok.expires_in} <= access_token_ttl ${ttl}`);
  const { header, claims } = jwtParts(tok.access_token);
  assert.equal(header.typ, "at+jwt");
  assert.equal(claims.iss, issuer);
  assert.deepEqual([claims.aud].flat(), [endpoint.href], "aud is exactly this proxy's resource");
  assert.equal(claims.client_id, clientID);
  assert.ok(String(claims.scope).split(" ").includes("mcp"), `scope ${claims.scope} includes mcp`);

  // The MCP session through the gateway.
  const server = client.getServerVersion();
  log(`initialize: ok (server ${server?.name})`);
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  log(`tools/list: ${names.join(", ")}`);
  for (const want of ["echo", "server_name", "whoami"]) assert.ok(names.includes(want), `tools/list has ${want}`);
  const echo = await client.callTool({ name: "echo", arguments: { text: "hello through mcpgate" } });
  assert.deepEqual(echo.content, [{ type: "text", text: "hello through mcpgate" }]);
  const user = await whoami(client);
  log(`tools/call whoami: ${user}`);
  assert.equal(user, login, "the backend sees the signed-in login in X-MCPGate-User");
});

test("refreshes an expired access token within the same session", async () => {
  assert.ok(session, "needs the session of the first test");
  const before = alice.tokenSet!;
  const saved = alice.savedTokens.length;
  await waitForExpiry(alice);
  assert.equal(await whoami(session), login);
  assert.equal(alice.savedTokens.length, saved + 1, "the SDK refreshed once (401 invalid_token, refresh_token grant)");
  const now = alice.tokenSet!;
  assert.notEqual(now.access_token, before.access_token, "a new access token");
  assert.ok(now.refresh_token, "a refresh token came with it");
  assert.notEqual(now.refresh_token, before.refresh_token, "the refresh token rotated (public client)");
  assert.equal(alice.redirects.length, 1, "no new sign-in");
  assert.equal(alice.registrations, 1, "no new registration");
  log(`refresh: new access token, rotated refresh token; tools/call whoami: ${login}`);
});

test("parallel refreshes of one refresh token all succeed, and the family lives on", async () => {
  // A client that refreshes from several places at once (several sessions
  // or tabs sharing one token store) posts the same refresh token more
  // than once; within refresh_reuse_grace the gateway must answer each
  // with a successor and revoke nothing. Three auth() calls of the SDK run
  // the refresh_token grant at the same time. (Three tool calls at once on
  // one transport would not do: the transport's "401 after successful
  // authentication" flag is shared by its requests, so the SDK itself
  // fails the later ones; see tests/ts/README.md.)
  assert.ok(session, "needs the session of the first test");
  const saved = alice.savedTokens.length;
  const used = alice.tokenSet!.refresh_token;
  const results = await Promise.all([1, 2, 3].map(() => auth(alice, { serverUrl: endpoint, fetchFn: net.fetch })));
  assert.deepEqual(results, ["AUTHORIZED", "AUTHORIZED", "AUTHORIZED"]);
  const fresh = alice.savedTokens.slice(saved);
  assert.equal(fresh.length, 3, "three refreshes");
  assert.ok(fresh.every((t) => t.refresh_token && t.refresh_token !== used), "each answer carries a new refresh token");
  assert.equal(new Set(fresh.map((t) => jwtParts(t.access_token).claims.jti)).size, 3, "three distinct access tokens");
  log("3 parallel refreshes of one refresh token accepted");
  // Whichever answer the provider kept last serves the session, and once
  // it expires its refresh token still refreshes: the family was not
  // revoked.
  assert.equal(await whoami(session), login);
  await waitForExpiry(alice);
  const before = alice.savedTokens.length;
  assert.equal(await whoami(session), login);
  assert.equal(alice.savedTokens.length, before + 1, "refreshed again");
  assert.equal(alice.redirects.length, 1, "no new sign-in");
});

test("a new session reuses the stored registration and refreshes without signing in", async () => {
  assert.ok(alice?.tokenSet, "needs the tokens of the first test");
  const saved = alice.savedTokens.length;
  await waitForExpiry(alice);
  const { client, interactive } = await connect(alice);
  assert.ok(!interactive, "no authorization flow for a client with a refresh token");
  assert.equal(alice.savedTokens.length, saved + 1, "refreshed on initialize");
  assert.equal(alice.redirects.length, 1);
  assert.equal(alice.registrations, 1);
  assert.equal(await whoami(client), login);
  // DELETE of the session, with the bearer token, through the gateway.
  const transport = client.transport as StreamableHTTPClientTransport;
  assert.ok(transport.sessionId, "the backend gave the session an id");
  await transport.terminateSession();
  assert.equal(transport.sessionId, undefined, "session terminated");
  await client.close();
});

test("a user who denies consent gets access_denied at the redirect URI", async () => {
  const bob = new HeadlessProvider({ fetch: net.fetch, login, deny: true, clientName: "mcpgate TypeScript SDK e2e (deny)", log: (s) => log(`oauth: ${s}`) });
  const transport = new StreamableHTTPClientTransport(endpoint, { authProvider: bob, fetch: net.fetch });
  const client = new Client({ name: "mcpgate-ts-e2e", version: "1.0.0" });
  await assert.rejects(client.connect(transport), UnauthorizedError);
  assert.equal(bob.redirects.length, 1);
  const r = bob.redirects[0];
  assert.equal(r.error, "access_denied");
  assert.equal(r.state, bob.lastState, "state round-trips on errors too");
  assert.equal(r.iss, issuer);
  assert.equal(r.code, undefined);
  assert.equal(bob.tokenSet, undefined, "no tokens");
  await client.close().catch(() => {});
});

// staticClient runs a pre-registered confidential client ([[oauth.clients]]
// in mcpgate.toml) through sign-in and a refresh; the SDK authenticates it
// at the token endpoint with client_secret_basic, the first method the
// gateway's metadata lists.
async function staticClient(id: string, secret: string) {
  const carol = new HeadlessProvider({
    fetch: net.fetch,
    login,
    clientName: "unused: pre-registered",
    client: { client_id: id, client_secret: secret },
    log: (s) => log(`oauth: ${s}`),
  });
  const { client, interactive } = await connect(carol);
  assert.ok(interactive);
  assert.equal(carol.client?.client_id, id, "no dynamic registration replaced the configured client");
  assert.ok(!carol.agent.steps.some((s) => s.startsWith("consent page")), "no consent page for a static client without require_consent");
  assert.equal(jwtParts(carol.tokenSet!.access_token).claims.client_id, id);
  assert.equal(await whoami(client), login);
  const saved = carol.savedTokens.length;
  await waitForExpiry(carol);
  assert.equal(await whoami(client), login);
  assert.equal(carol.savedTokens.length, saved + 1, "refreshed with client_secret_basic");
  assert.equal(carol.redirects.length, 1);
}

test("a pre-registered confidential client: client_secret_basic, sign-in without consent, refresh", async () => {
  await staticClient(env("MCPGATE_E2E_STATIC_CLIENT_ID"), env("MCPGATE_E2E_STATIC_CLIENT_SECRET"));
});

// The SDK sends client_secret_basic credentials as they are
// (btoa(`${id}:${secret}`)), not form-encoded first as RFC 6749 2.3.1 asks;
// so do curl -u and many HTTP libraries. A secret made by
// `openssl rand -base64` often holds "+", which a strict server decodes to
// a space. mcpgate accepts both forms.
test(
  'a pre-registered client whose secret holds "+" (openssl rand -base64): client_secret_basic as the SDK sends it',
  async () => {
    await staticClient(env("MCPGATE_E2E_PLUS_CLIENT_ID"), env("MCPGATE_E2E_PLUS_CLIENT_SECRET"));
  },
);
