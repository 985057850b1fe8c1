// An OAuthClientProvider the way a desktop MCP client implements one, with
// the browser replaced by the headless agent: it keeps what the SDK hands
// it in memory (unchanged, as the SDK asks), and its
// redirectToAuthorization walks the authorization page to the redirect URI
// and keeps the code for transport.finishAuth.
import type { OAuthClientProvider, OAuthDiscoveryState } from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import { randomBytes } from "node:crypto";
import { HeadlessAgent, type Redirect } from "./headless.js";

export interface ProviderOptions {
  fetch: FetchLike;
  login: string;
  deny?: boolean;
  clientName: string;
  log?: (line: string) => void;
  // client is a pre-registered client (no dynamic registration).
  client?: OAuthClientInformationMixed;
}

export class HeadlessProvider implements OAuthClientProvider {
  // Nothing listens here: the agent stops at the redirect, like a browser
  // handing the URL to a desktop client's loopback listener.
  readonly redirect = `http://127.0.0.1:${20000 + Math.floor(Math.random() * 40000)}/callback`;
  readonly agent: HeadlessAgent;

  client?: OAuthClientInformationMixed;
  tokenSet?: OAuthTokens;
  verifier?: string;
  discovery?: OAuthDiscoveryState;
  lastState?: string;

  // What happened, for the assertions.
  authorizationURLs: URL[] = [];
  redirects: Redirect[] = [];
  savedTokens: OAuthTokens[] = [];
  registrations = 0; // saveClientInformation calls
  invalidations: string[] = [];

  constructor(private readonly o: ProviderOptions) {
    this.agent = new HeadlessAgent({ fetch: o.fetch, login: o.login, deny: o.deny, log: o.log });
    this.client = o.client;
  }

  get redirectUrl(): string {
    return this.redirect;
  }

  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: this.o.clientName,
      redirect_uris: [this.redirect],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }

  state(): string {
    this.lastState = randomBytes(16).toString("base64url");
    return this.lastState;
  }

  clientInformation() {
    return this.client;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.registrations++;
    this.client = info;
  }
  tokens() {
    return this.tokenSet;
  }
  saveTokens(tokens: OAuthTokens) {
    this.tokenSet = tokens;
    this.savedTokens.push(tokens);
  }
  saveCodeVerifier(v: string) {
    this.verifier = v;
  }
  codeVerifier(): string {
    if (!this.verifier) throw new Error("no code verifier saved");
    return this.verifier;
  }
  saveDiscoveryState(s: OAuthDiscoveryState) {
    this.discovery = s;
  }
  discoveryState() {
    return this.discovery;
  }
  invalidateCredentials(scope: "all" | "client" | "tokens" | "verifier" | "discovery") {
    this.invalidations.push(scope);
    if (scope === "all" || scope === "client") this.client = undefined;
    if (scope === "all" || scope === "tokens") this.tokenSet = undefined;
    if (scope === "all" || scope === "verifier") this.verifier = undefined;
    if (scope === "all" || scope === "discovery") this.discovery = undefined;
  }

  async redirectToAuthorization(url: URL): Promise<void> {
    this.authorizationURLs.push(url);
    this.o.log?.(`authorization request to ${url.origin}${url.pathname}`);
    this.redirects.push(await this.agent.authorize(url, this.redirect));
  }

  // The code of the last redirect, after checking what came with it.
  takeCode(): string {
    const r = this.redirects.at(-1);
    if (!r) throw new Error("redirectToAuthorization was not called");
    if (r.error) throw new Error(`authorization failed: ${r.error}: ${r.errorDescription ?? ""}`);
    if (!r.code) throw new Error("the redirect carries no code");
    if (r.state !== this.lastState) throw new Error(`state ${r.state} != ${this.lastState}`);
    return r.code;
  }
}
