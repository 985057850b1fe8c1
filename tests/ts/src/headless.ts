// A small user agent for the authorization step, standing in for the
// browser a desktop MCP client would open: it follows redirects with a
// cookie jar (mcpgate's consent cookies are `__Host-` Secure cookies, kept
// and sent over https only), signs in if the identity provider shows a
// sign-in form, answers mcpgate's consent form, and stops at the client's
// redirect URI without fetching it. The Go twin is internal/headless.
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";

export interface Redirect {
  code?: string;
  state?: string;
  iss?: string;
  error?: string;
  errorDescription?: string;
}

export interface AgentOptions {
  fetch: FetchLike;
  login?: string; // typed into a sign-in form, if one is shown
  deny?: boolean; // answer the consent form with "deny"
  log?: (line: string) => void;
  maxSteps?: number;
}

export class HeadlessAgent {
  readonly jar = new CookieJar();
  readonly steps: string[] = []; // what happened, for assertions and logs
  constructor(private readonly o: AgentOptions) {}

  async authorize(authURL: URL, redirectURI: string): Promise<Redirect> {
    let url = new URL(authURL);
    let method = "GET";
    let body: string | undefined;
    let origin: string | undefined; // the page that submitted a form
    for (let i = 0; i < (this.o.maxSteps ?? 20); i++) {
      const headers: Record<string, string> = { accept: "text/html,application/xhtml+xml" };
      const cookie = this.jar.header(url);
      if (cookie) headers.cookie = cookie;
      if (body !== undefined) headers["content-type"] = "application/x-www-form-urlencoded";
      if (method === "POST" && origin) headers.origin = origin; // as a browser does
      const res = await this.o.fetch(url, { method, headers, body, redirect: "manual" });
      this.jar.store(url, res.headers.getSetCookie());
      const text = await res.text();
      if (res.status >= 300 && res.status < 400) {
        const loc = res.headers.get("location");
        if (!loc) throw new Error(`redirect without Location from ${url.host}`);
        const next = new URL(loc, url);
        if (next.href.startsWith(redirectURI)) {
          this.step(`redirect to the client's redirect URI ${next.origin}${next.pathname}`);
          const q = next.searchParams;
          return {
            code: q.get("code") ?? undefined,
            state: q.get("state") ?? undefined,
            iss: q.get("iss") ?? undefined,
            error: q.get("error") ?? undefined,
            errorDescription: q.get("error_description") ?? undefined,
          };
        }
        this.step(`${res.status} redirect to ${next.origin}${next.pathname}`);
        url = next;
        method = "GET";
        body = undefined;
        continue;
      }
      const ctype = res.headers.get("content-type") ?? "";
      if (res.status !== 200 || !ctype.startsWith("text/html")) {
        throw new Error(`HTTP ${res.status} (${ctype}) at ${url.origin}${url.pathname}: ${title(text)}`);
      }
      const form = findForm(text);
      if (!form) throw new Error(`page without a form at ${url.origin}${url.pathname}: ${title(text)}`);
      const values = new URLSearchParams(form.hidden);
      if (form.decision) {
        const d = this.o.deny ? "deny" : "approve";
        values.set("decision", d);
        this.step(`consent page at ${url.origin}${url.pathname} "${title(text)}": ${d}`);
      } else if (form.textField) {
        if (!this.o.login) throw new Error(`a sign-in form was shown at ${url.origin}${url.pathname} but no login name was given`);
        values.set(form.textField, this.o.login);
        this.step(`sign-in form at ${url.origin}${url.pathname}: ${this.o.login}`);
      } else {
        throw new Error(`unexpected form at ${url.origin}${url.pathname}: ${title(text)}`);
      }
      origin = url.origin;
      const target = new URL(form.action || url.href, url);
      if (form.method === "get") {
        target.search = values.toString();
        method = "GET";
        body = undefined;
      } else {
        method = "POST";
        body = values.toString();
      }
      url = target;
    }
    throw new Error("too many steps in the authorization flow");
  }

  private step(s: string) {
    this.steps.push(s);
    this.o.log?.(s);
  }
}

// ---- a cookie jar: enough of RFC 6265 for one flow -----------------------

interface Cookie {
  name: string;
  value: string;
  domain: string; // lower case, no leading dot
  hostOnly: boolean;
  path: string;
  secure: boolean;
}

export class CookieJar {
  private cookies: Cookie[] = [];
  readonly accepted = new Set<string>(); // every cookie name ever stored

  store(url: URL, setCookies: string[]): void {
    const host = url.hostname.toLowerCase();
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(";");
      const eq = pair.indexOf("=");
      if (eq <= 0) continue;
      const c: Cookie = { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), domain: host, hostOnly: true, path: "/", secure: false };
      let expired = false;
      for (const a of attrs) {
        const [k, ...v] = a.split("=");
        const key = k.trim().toLowerCase();
        const val = v.join("=").trim();
        if (key === "secure") c.secure = true;
        else if (key === "path" && val.startsWith("/")) c.path = val;
        else if (key === "domain" && val) {
          const d = val.replace(/^\./, "").toLowerCase();
          if (host !== d && !host.endsWith("." + d)) { expired = true; continue; } // not ours to set
          c.domain = d;
          c.hostOnly = false;
        } else if (key === "max-age" && Number(val) <= 0) expired = true;
        else if (key === "expires" && Date.parse(val) <= Date.now()) expired = true;
      }
      if (c.secure && url.protocol !== "https:") continue;
      // RFC 6265bis prefixes: __Host- is Secure, host-only, Path=/.
      if (c.name.startsWith("__Host-") && (!c.secure || !c.hostOnly || c.path !== "/")) continue;
      if (c.name.startsWith("__Secure-") && !c.secure) continue;
      this.cookies = this.cookies.filter((o) => !(o.name === c.name && o.domain === c.domain && o.path === c.path));
      if (!expired) {
        this.cookies.push(c);
        this.accepted.add(c.name);
      }
    }
  }

  header(url: URL): string {
    const host = url.hostname.toLowerCase();
    return this.cookies
      .filter((c) => (c.hostOnly ? host === c.domain : host === c.domain || host.endsWith("." + c.domain)))
      .filter((c) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith("/") ? c.path : c.path + "/"))
      .filter((c) => !c.secure || url.protocol === "https:")
      .map((c) => `${c.name}=${c.value}`)
      .join("; ");
  }

  names(): string[] {
    return this.cookies.map((c) => c.name);
  }
}

// ---- the first form of a page ---------------------------------------------

interface Form {
  action: string;
  method: string;
  hidden: [string, string][];
  decision: boolean; // a <button name="decision">
  textField?: string; // the name of a text input (a sign-in form)
}

function findForm(html: string): Form | undefined {
  const start = html.search(/<form\b/i);
  if (start < 0) return undefined;
  const end = html.slice(start).search(/<\/form\s*>/i);
  const body = end < 0 ? html.slice(start) : html.slice(start, start + end);
  const tags = [...body.matchAll(/<(form|input|button)\b([^>]*)>/gi)];
  const formAttrs = attrs(tags[0][2]);
  const f: Form = { action: formAttrs.action ?? "", method: (formAttrs.method ?? "get").toLowerCase(), hidden: [], decision: false };
  for (const [, tag, raw] of tags.slice(1)) {
    const a = attrs(raw);
    if (tag.toLowerCase() === "button") {
      if (a.name === "decision") f.decision = true;
      continue;
    }
    const type = (a.type ?? "text").toLowerCase();
    if (type === "hidden" && a.name) f.hidden.push([a.name, a.value ?? ""]);
    else if ((type === "text" || type === "email") && a.name && !f.textField) f.textField = a.name;
  }
  return f;
}

function attrs(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of raw.matchAll(/([^\s"'=<>/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? "");
  }
  return out;
}

function decodeEntities(s: string): string {
  const named: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === "#") {
      const n = e[1] === "x" || e[1] === "X" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return Number.isFinite(n) ? String.fromCodePoint(n) : m;
    }
    return named[e.toLowerCase()] ?? m;
  });
}

function title(html: string): string {
  const m = /<h1[^>]*>([\s\S]*?)<\/h1>/i.exec(html) ?? /<title[^>]*>([\s\S]*?)<\/title>/i.exec(html);
  return (m ? m[1] : html.slice(0, 200)).replace(/<[^>]+>/g, "").replace(/\s+/g, " ").trim();
}
