package config

import (
	"maps"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// oauthGlobal is a minimal valid [oauth]; authProxy serves its callback.
const oauthGlobal = `[oauth]
callback_url = "https://auth.example.com/oauth/callback"
allowed_users = ["*"]

[idp.github]
client_id = "Iv1.0123"
client_secret_file = "github.secret"
`

const authProxy = `hostnames = ["auth.example.com"]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
`

// oauthFiles are the files every TestOAuthErrors case starts from; a case
// replaces some, and removes one by mapping it to "-".
var oauthFiles = map[string]string{
	"mcpgate.toml":  oauthGlobal,
	"auth.toml":     authProxy,
	"github.secret": "s3cret\n",
}

func TestOAuthErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		creds string // CREDENTIALS_DIRECTORY; $DIR stands for the directory
		want  string // $DIR stands for the directory
	}{
		{
			name: "missing callback_url",
			files: map[string]string{"mcpgate.toml": `[oauth]
allowed_users = ["*"]
[idp.github]
client_id = "x"
client_secret_file = "github.secret"
`},
			want: `$DIR/mcpgate.toml:1: oauth.callback_url: required: the redirect URL registered at the identity provider, as in "https://auth.example.com/oauth/callback"`,
		},
		{
			name:  "callback host not served by any proxy",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "auth.example.com", "login.example.com", 1)},
			want:  `$DIR/mcpgate.toml:2: oauth.callback_url: host "login.example.com" is not a hostname of any enabled proxy; the proxy with that hostname serves the callback`,
		},
		{
			name:  "callback host served by a disabled proxy only",
			files: map[string]string{"auth.toml": "enabled = false\n" + authProxy},
			want:  `$DIR/mcpgate.toml:2: oauth.callback_url: host "auth.example.com" belongs to proxy "auth", which is disabled`,
		},
		{
			name:  "http callback to a non-loopback host",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "https://", "http://", 1)},
			want:  `$DIR/mcpgate.toml:2: oauth.callback_url: http is only allowed for loopback hosts (localhost, 127.0.0.0/8, ::1); use https`,
		},
		{
			name:  "callback URL without a path",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "/oauth/callback", "/", 1)},
			want:  `$DIR/mcpgate.toml:2: oauth.callback_url: needs a path, as in https://auth.example.com/oauth/callback`,
		},
		{
			name:  "callback URL with a query",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "/callback", "/callback?x=1", 1)},
			want:  `$DIR/mcpgate.toml:2: oauth.callback_url: must not contain a query`,
		},
		{
			name: "inline client_secret",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[idp.github]
client_id = "x"
client_secret = "hunter2"
`},
			want: `$DIR/mcpgate.toml:6: idp.github.client_secret: secrets are never written inline: put the secret in a file and set client_secret_file, or name a systemd credential with client_secret_credential`,
		},
		{
			name: "missing, empty and unnamed secret files",
			files: map[string]string{
				"mcpgate.toml": strings.Replace(oauthGlobal, "github.secret", "missing.secret", 1) + `
[[oauth.clients]]
client_id = "empty"
client_secret_file = "empty.secret"
redirect_uris = ["https://app.example.com/cb"]

[[oauth.clients]]
client_id = "dir"
client_secret_file = "/"
redirect_uris = ["https://app.example.com/cb"]

[[oauth.clients]]
client_id = "blank"
client_secret_file = ""
redirect_uris = ["https://app.example.com/cb"]
`,
				"empty.secret": "\n",
			},
			want: `$DIR/mcpgate.toml:7: idp.github.client_secret_file: $DIR/missing.secret: no such file or directory
$DIR/mcpgate.toml:11: oauth.clients[0].client_secret_file: $DIR/empty.secret is empty
$DIR/mcpgate.toml:16: oauth.clients[1].client_secret_file: / is not a regular file
$DIR/mcpgate.toml:21: oauth.clients[2].client_secret_file: must not be empty`,
		},
		{
			name:  "credential without CREDENTIALS_DIRECTORY",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, `client_secret_file = "github.secret"`, `client_secret_credential = "github.secret"`, 1)},
			want:  `$DIR/mcpgate.toml:7: idp.github.client_secret_credential: $CREDENTIALS_DIRECTORY is not set: credentials exist only in a service started by systemd with LoadCredential=; elsewhere use client_secret_file`,
		},
		{
			name: "missing credential, with a hint for the shipped unit's prefix",
			files: map[string]string{
				"mcpgate.toml": strings.Replace(oauthGlobal, `client_secret_file = "github.secret"`, `client_secret_credential = "github.secret"`, 1) + `
[[oauth.clients]]
client_id = "cli"
client_secret_credential = "nope"
redirect_uris = ["https://app.example.com/cb"]

[[oauth.clients]]
client_id = "cli2"
client_secret_credential = "../github.secret"
redirect_uris = ["https://app.example.com/cb"]
`,
				"creds/mcpgate_github.secret": "s3cret",
			},
			creds: "$DIR/creds",
			want: `$DIR/mcpgate.toml:7: idp.github.client_secret_credential: credential "github.secret": $DIR/creds/github.secret: no such file or directory (did you mean "mcpgate_github.secret"?)
$DIR/mcpgate.toml:11: oauth.clients[0].client_secret_credential: credential "nope": $DIR/creds/nope: no such file or directory
$DIR/mcpgate.toml:16: oauth.clients[1].client_secret_credential: "../github.secret" is not a credential name (a file name in $CREDENTIALS_DIRECTORY, without "/")`,
		},
		{
			name: "secret file and credential together, or neither",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[[oauth.clients]]
client_id = "cli"
client_secret_file = "github.secret"
client_secret_credential = "github.secret"
redirect_uris = ["https://app.example.com/cb"]
[idp.github]
client_id = "x"
`},
			want: `$DIR/mcpgate.toml:7: oauth.clients[0].client_secret_credential: cannot be combined with client_secret_file
$DIR/mcpgate.toml:9: idp.github: set client_secret_file or client_secret_credential`,
		},
		{
			name: "two idp sections",
			files: map[string]string{"mcpgate.toml": oauthGlobal + `
[idp.oidc]
issuer = "https://login.example.com"
client_id = "mcpgate"
client_secret_file = "github.secret"
`},
			want: `$DIR/mcpgate.toml:9: idp: set only one of [idp.github] and [idp.oidc]`,
		},
		{
			name:  "no idp",
			files: map[string]string{"mcpgate.toml": "[oauth]\ncallback_url = \"https://auth.example.com/cb\"\nallowed_users = [\"*\"]\n"},
			want:  `$DIR/mcpgate.toml:1: idp: [oauth] needs an identity provider: add [idp.github] or [idp.oidc]`,
		},
		{
			name:  "unknown idp",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "[idp.github]", "[idp.gitlab]", 1)},
			want: `$DIR/mcpgate.toml:5: idp: [oauth] needs an identity provider: add [idp.github] or [idp.oidc]
$DIR/mcpgate.toml:5: idp.gitlab: unknown key`,
		},
		{
			name: "idp without oauth",
			files: map[string]string{
				"mcpgate.toml": "[idp.github]\nclient_id = \"x\"\n",
				"auth.toml":    authProxy + authOff,
			},
			want: `$DIR/mcpgate.toml:1: idp: only used with [oauth]: add [oauth] or remove [idp]`,
		},
		{
			name: "bad redirect URIs",
			files: map[string]string{"mcpgate.toml": oauthGlobal + `
[[oauth.clients]]
client_id = "cli"
redirect_uris = [
  "javascript:alert(1)",
  "http://app.example.com/cb",
  "https://app.example.com/cb#frag",
  "data:text/html,hi",
  "https://user:pw@app.example.com/cb",
  "/relative/cb",
  "https:///cb",
  "http://localhost.evil.example/cb",
  "FILE:///etc/passwd",
  "cursor:",
  "https://app.example.com/c b",
  "http://127.0.0.1/cb",
  "http://127.0.0.1/cb",
]

[[oauth.clients]]
client_id = "none"
redirect_uris = []

[[oauth.clients]]
client_id = "omitted"
`},
			want: `$DIR/mcpgate.toml:12: oauth.clients[0].redirect_uris[0]: "javascript:alert(1)": scheme "javascript" is not allowed
$DIR/mcpgate.toml:13: oauth.clients[0].redirect_uris[1]: "http://app.example.com/cb": http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1]); use https
$DIR/mcpgate.toml:14: oauth.clients[0].redirect_uris[2]: "https://app.example.com/cb#frag": must not contain a fragment
$DIR/mcpgate.toml:15: oauth.clients[0].redirect_uris[3]: "data:text/html,hi": scheme "data" is not allowed
$DIR/mcpgate.toml:16: oauth.clients[0].redirect_uris[4]: "https://user:pw@app.example.com/cb": must not contain user info
$DIR/mcpgate.toml:17: oauth.clients[0].redirect_uris[5]: "/relative/cb": not an absolute URI: use https://…, http://127.0.0.1/… or a private-use scheme such as cursor://…
$DIR/mcpgate.toml:18: oauth.clients[0].redirect_uris[6]: "https:///cb": missing host
$DIR/mcpgate.toml:19: oauth.clients[0].redirect_uris[7]: "http://localhost.evil.example/cb": http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1]); use https
$DIR/mcpgate.toml:20: oauth.clients[0].redirect_uris[8]: "FILE:///etc/passwd": scheme "file" is not allowed
$DIR/mcpgate.toml:21: oauth.clients[0].redirect_uris[9]: "cursor:": nothing after the scheme "cursor:"
$DIR/mcpgate.toml:22: oauth.clients[0].redirect_uris[10]: "https://app.example.com/c b": must not contain spaces or control characters
$DIR/mcpgate.toml:24: oauth.clients[0].redirect_uris: "http://127.0.0.1/cb" is listed more than once
$DIR/mcpgate.toml:29: oauth.clients[1].redirect_uris: at least one redirect URI is required
$DIR/mcpgate.toml:31: oauth.clients[2].redirect_uris: at least one redirect URI is required`,
		},
		{
			name: "bad and duplicate static client ids",
			files: map[string]string{"mcpgate.toml": oauthGlobal + `
[[oauth.clients]]
client_id = "cli"
redirect_uris = ["http://127.0.0.1/cb"]

[[oauth.clients]]
client_id = "cli"
redirect_uris = ["http://127.0.0.1/cb"]

[[oauth.clients]]
client_id = "https://app.example.com/client.json"
redirect_uris = ["http://127.0.0.1/cb"]

[[oauth.clients]]
client_id = "my cli"
name = ""
redirect_uris = ["http://127.0.0.1/cb"]

[[oauth.clients]]
redirect_uris = ["http://127.0.0.1/cb"]
client_secret = { file = "x" }
`},
			want: `$DIR/mcpgate.toml:14: oauth.clients[1].client_id: "cli" is already used by oauth.clients[0]
$DIR/mcpgate.toml:18: oauth.clients[2].client_id: "https://app.example.com/client.json": a URL client_id names a Client ID Metadata Document; use a plain name
$DIR/mcpgate.toml:22: oauth.clients[3].client_id: "my cli": use printable ASCII without spaces
$DIR/mcpgate.toml:23: oauth.clients[3].name: must not be empty
$DIR/mcpgate.toml:26: oauth.clients[4].client_id: required
$DIR/mcpgate.toml:28: oauth.clients[4].client_secret: secrets are never written inline: put the secret in a file and set client_secret_file, or name a systemd credential with client_secret_credential`,
		},
		{
			name: "bad token lifetimes",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "[idp.github]", `access_token_ttl = "2h"
refresh_token_ttl = "2h"
refresh_reuse_grace = "11s"
[idp.github]`, 1)},
			want: `$DIR/mcpgate.toml:6: oauth.refresh_token_ttl: must be longer than access_token_ttl (2h)
$DIR/mcpgate.toml:7: oauth.refresh_reuse_grace: must be at most 10s: a longer window lets a stolen refresh token be used unnoticed`,
		},
		{
			name: "fractional access token lifetime",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "[idp.github]", `access_token_ttl = "1500ms"
[idp.github]`, 1)},
			want: `$DIR/mcpgate.toml:5: oauth.access_token_ttl: must be a whole number of seconds`,
		},
		{
			name: "out-of-range token lifetimes",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "[idp.github]", `access_token_ttl = "25h"
refresh_token_ttl = "0s"
refresh_reuse_grace = "-1s"
[idp.github]`, 1)},
			want: `$DIR/mcpgate.toml:5: oauth.access_token_ttl: must be at most 24h
$DIR/mcpgate.toml:6: oauth.refresh_token_ttl: must be greater than zero
$DIR/mcpgate.toml:7: oauth.refresh_reuse_grace: must not be negative`,
		},
		{
			name: "open allowed_users rule (GitHub)",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "allowed_users = [\"*\"]\n", "admin_users = [\"alice\"]\n", 1) +
				"allowed_orgs = []\n"},
			want: `$DIR/mcpgate.toml:1: oauth.allowed_users: set allowed_users ("*" for everyone the provider authenticates) or allowed_orgs / allowed_teams in [idp.github]`,
		},
		{
			name: "open allowed_users rule (OIDC)",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
[idp.oidc]
issuer = "https://login.example.com"
client_id = "mcpgate"
client_secret_file = "github.secret"
`},
			want: `$DIR/mcpgate.toml:1: oauth.allowed_users: set allowed_users ("*" for everyone the provider authenticates) or allowed_groups in [idp.oidc]`,
		},
		{
			name: "bad OIDC settings",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[idp.oidc]
issuer = "http://login.example.com"
client_id = ""
client_secret_file = "github.secret"
scopes = ["profile", "e mail"]
groups_claim = ""
allowed_groups = ["admins", "admins", " "]
`},
			want: `$DIR/mcpgate.toml:5: idp.oidc.issuer: http is only allowed for loopback hosts (localhost, 127.0.0.0/8, ::1); use https
$DIR/mcpgate.toml:6: idp.oidc.client_id: must not be empty
$DIR/mcpgate.toml:8: idp.oidc.scopes: must include "openid"
$DIR/mcpgate.toml:8: idp.oidc.scopes[1]: "e mail" is not a valid scope token (printable ASCII except space, '"' and '\')
$DIR/mcpgate.toml:9: idp.oidc.groups_claim: must not be empty
$DIR/mcpgate.toml:10: idp.oidc.allowed_groups: "admins" is listed more than once
$DIR/mcpgate.toml:10: idp.oidc.allowed_groups[2]: " ": must not be empty`,
		},
		{
			name: "bad OIDC username_claim",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[idp.oidc]
issuer = "https://login.example.com"
client_id = "mcpgate"
client_secret_file = "github.secret"
username_claim = "preferred_username"
`},
			want: `$DIR/mcpgate.toml:8: idp.oidc.username_claim: "preferred_username" is chosen by the user at many providers and may name someone else; use "sub" (the default), "email" (verified only) or a claim the provider controls`,
		},
		{
			name: "empty OIDC username_claim",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[idp.oidc]
issuer = "https://login.example.com"
client_id = "mcpgate"
client_secret_file = "github.secret"
username_claim = ""
`},
			want: `$DIR/mcpgate.toml:8: idp.oidc.username_claim: must not be empty (the default is "sub")`,
		},
		{
			name: "OIDC username_claim that names no user",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[idp.oidc]
issuer = "https://login.example.com"
client_id = "mcpgate"
client_secret_file = "github.secret"
username_claim = "aud"
`},
			want: `$DIR/mcpgate.toml:8: idp.oidc.username_claim: "aud" does not identify the user; use "sub" (the default), "email" or another claim naming the user`,
		},
		{
			name: "OIDC issuer and client_id missing",
			files: map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://auth.example.com/cb"
allowed_users = ["*"]
[idp.oidc]
client_secret_file = "github.secret"
`},
			want: `$DIR/mcpgate.toml:4: idp.oidc.client_id: required: the client ID of mcpgate's app at the identity provider
$DIR/mcpgate.toml:4: idp.oidc.issuer: required: the provider's issuer URL, as in "https://login.example.com"`,
		},
		{
			name: "bad GitHub settings",
			files: map[string]string{"mcpgate.toml": oauthGlobal + `authorize_url = "http://github.example.com/login/oauth/authorize"
token_url = "https://github.example.com/token#x"
api_url = "github.example.com/api/v3"
allowed_orgs = ["Acme", "acme", "-bad", "a_b"]
allowed_teams = ["acme", "acme/core/x", "acme/Core Team"]
`},
			want: `$DIR/mcpgate.toml:8: idp.github.authorize_url: http is only allowed for loopback hosts (localhost, 127.0.0.0/8, ::1); use https
$DIR/mcpgate.toml:9: idp.github.token_url: must not contain a fragment
$DIR/mcpgate.toml:10: idp.github.api_url: "github.example.com/api/v3" is not an absolute URL (use https://host/path)
$DIR/mcpgate.toml:11: idp.github.allowed_orgs: "acme" is listed more than once
$DIR/mcpgate.toml:11: idp.github.allowed_orgs[2]: "-bad": not a GitHub organization name (letters, digits and '-')
$DIR/mcpgate.toml:11: idp.github.allowed_orgs[3]: "a_b": not a GitHub organization name (letters, digits and '-')
$DIR/mcpgate.toml:12: idp.github.allowed_teams[0]: "acme": use "org/team-slug"
$DIR/mcpgate.toml:12: idp.github.allowed_teams[1]: "acme/core/x": use "org/team-slug"
$DIR/mcpgate.toml:12: idp.github.allowed_teams[2]: "acme/Core Team": not a team slug: use the slug from the team's URL, as in "acme/platform-team"`,
		},
		{
			name: "bad allowed_origins and user lists",
			files: map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, "allowed_users = [\"*\"]\n", `allowed_users = ["alice", "bob smith", "alice"]
mcp_users = [""]
allowed_origins = [
  "https://app.example.com/",
  "app.example.com",
  "https://APP.example.com:443",
  "https://app.example.com",
  "https://u@app.example.com",
  "null",
]
`, 1)},
			want: `$DIR/mcpgate.toml:3: oauth.allowed_users: "alice" is listed more than once
$DIR/mcpgate.toml:3: oauth.allowed_users[1]: "bob smith": must not contain spaces or control characters
$DIR/mcpgate.toml:4: oauth.mcp_users[0]: "": must not be empty
$DIR/mcpgate.toml:6: oauth.allowed_origins[0]: "https://app.example.com/": an origin has no path, query or fragment: write scheme://host[:port], as in "https://app.example.com"
$DIR/mcpgate.toml:7: oauth.allowed_origins[1]: "app.example.com": not an origin: write scheme://host[:port], as in "https://app.example.com"
$DIR/mcpgate.toml:9: oauth.allowed_origins: "https://app.example.com" is listed more than once
$DIR/mcpgate.toml:10: oauth.allowed_origins[4]: "https://u@app.example.com": must not contain user info
$DIR/mcpgate.toml:11: oauth.allowed_origins[5]: "null": not an origin: write scheme://host[:port], as in "https://app.example.com"`,
		},
		{
			name: "auth required without oauth",
			files: map[string]string{
				"mcpgate.toml": "-",
				"auth.toml":    authProxy,
				"a.toml":       "hostnames = [\"a.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n[auth]\nscopes = [\"mcp\"]\n",
				"b.toml":       "hostnames = [\"b.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n[auth]\nrequired = true\n",
				"c.toml":       "enabled = false\nhostnames = [\"c.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n",
				"d.toml":       "hostnames = [\"d.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n[auth]\nrequired = false\n",
			},
			want: `$DIR/a.toml:5: auth: authentication is required (the default) but mcpgate.toml has no [oauth] section: configure [oauth] and an [idp.*], or set [auth] required = false
$DIR/auth.toml: auth: authentication is required (the default) but mcpgate.toml has no [oauth] section: configure [oauth] and an [idp.*], or set [auth] required = false
$DIR/b.toml:6: auth.required: authentication is required (the default) but mcpgate.toml has no [oauth] section: configure [oauth] and an [idp.*], or set [auth] required = false`,
		},
		{
			name: "auth required with an mcpgate.toml without [oauth]",
			files: map[string]string{
				"mcpgate.toml": "[server]\nstate_dir = \"state\"\n",
			},
			want: `$DIR/auth.toml: auth: authentication is required (the default) but mcpgate.toml has no [oauth] section: configure [oauth] and an [idp.*], or set [auth] required = false`,
		},
		{
			name: "broken mcpgate.toml does not blame proxies",
			files: map[string]string{
				"mcpgate.toml": "[server\n",
			},
			want: `$DIR/mcpgate.toml:2: expected '.' or ']' to end table name, but got '\n' instead`,
		},
		{
			name: "bad [auth] values",
			files: map[string]string{"auth.toml": authProxy + `[auth]
required = "yes"
scopes = ["mcp", "a b", "mcp", "quo\"te", ""]
resource_path = "mcp/"
public_paths = ["/", "/docs/", "/docs", "docs", "/a//b"]
admin_users = ["alice", "alice"]
colour = "red"
`, "x.toml": "hostnames = [\"x.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n" + `[auth]
resource_path = "/api/mcp/"
public_paths = ["/api", "/api/mcp/docs", "/mcp"]
`},
			want: `$DIR/auth.toml:6: auth.required: expected a boolean, got string
$DIR/auth.toml:7: auth.scopes: "mcp" is listed more than once
$DIR/auth.toml:7: auth.scopes[1]: "a b" is not a valid scope token (printable ASCII except space, '"' and '\')
$DIR/auth.toml:7: auth.scopes[3]: "quo\"te" is not a valid scope token (printable ASCII except space, '"' and '\')
$DIR/auth.toml:7: auth.scopes[4]: "" is not a valid scope token (printable ASCII except space, '"' and '\')
$DIR/auth.toml:8: auth.resource_path: "mcp/": must start with "/"
$DIR/auth.toml:9: auth.public_paths: "/docs" is listed more than once
$DIR/auth.toml:9: auth.public_paths[0]: "/": would make every path public; set required = false instead
$DIR/auth.toml:9: auth.public_paths[3]: "docs": must start with "/"
$DIR/auth.toml:9: auth.public_paths[4]: "/a//b": must not contain "//"
$DIR/auth.toml:10: auth.admin_users: "alice" is listed more than once
$DIR/auth.toml:11: auth.colour: unknown key
$DIR/x.toml:7: auth.public_paths[0]: "/api" covers resource_path "/api/mcp", which would make the MCP endpoint public`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noEnv(t)
			dir := t.TempDir()
			if tt.creds != "" {
				t.Setenv("CREDENTIALS_DIRECTORY", strings.ReplaceAll(tt.creds, "$DIR", dir))
			}
			files := maps.Clone(oauthFiles)
			maps.Copy(files, tt.files)
			maps.DeleteFunc(files, func(_, v string) bool { return v == "-" })
			writeFiles(t, dir, files)
			cfg, err := Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded with %d proxies, want errors", len(cfg.Proxies))
			}
			want := strings.ReplaceAll(tt.want, "$DIR", dir)
			if got := err.Error(); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestLoadOAuth sets every key of [oauth], [idp.github], [[oauth.clients]]
// and [auth].
func TestLoadOAuth(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	writeFiles(t, dir, map[string]string{
		"mcpgate.toml": `[oauth]
callback_url = "https://Auth.Example.com:8443/oauth/callback"
access_token_ttl = "30m"
refresh_token_ttl = "168h"
refresh_reuse_grace = "0s"
allowed_users = ["*"]
admin_users = ["alice"]
user_users = ["*"]
mcp_users = ["alice", "charlie"]
allowed_origins = ["https://App.Example.com:443", "http://localhost:5173"]
dynamic_registration = false
client_metadata_documents = false
metadata_document_private_addresses = true

[[oauth.clients]]
client_id = "cli"
name = "Internal CLI"
client_secret_file = "secrets/cli.secret"
redirect_uris = ["http://127.0.0.1/callback", "https://app.example.com/cb", "cursor://anysphere.cursor-retrieval/oauth/callback", "com.example.app:/oauth2redirect", "http://[::1]:33418/cb"]
require_consent = true

[[oauth.clients]]
client_id = "public"
redirect_uris = ["http://localhost/cb"]

[idp.github]
client_id = "Iv1.0123"
client_secret_credential = "github.secret"
authorize_url = "http://127.0.0.1:9999/login/oauth/authorize"
token_url = "http://127.0.0.1:9999/login/oauth/access_token"
api_url = "http://127.0.0.1:9999/api/v3/"
allowed_orgs = ["Acme"]
allowed_teams = ["Acme/Platform-Team"]
`,
		"secrets/cli.secret":  "cli-secret\n",
		"creds/github.secret": "gh-secret",
		"notes.toml": `hostnames = ["notes.example.com"]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
[auth]
required = true
scopes = ["mcp", "admin"]
resource_path = "/api/mcp/"
public_paths = ["/docs/", "/health"]
allowed_users = ["alice"]
admin_users = []
`,
		// Defaults everywhere; serves the callback through its wildcard.
		"auth.toml": `hostnames = ["*.example.com"]
target = "http://127.0.0.1:3001"
[tls]
self_signed = true
`,
		"root.toml": `hostnames = ["root.test"]
target = "http://127.0.0.1:3002"
[tls]
self_signed = true
[auth]
scopes = []
resource_path = "/"
`,
	})
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantOAuth := &OAuth{
		CallbackURL:       "https://Auth.Example.com:8443/oauth/callback",
		AccessTokenTTL:    30 * time.Minute,
		RefreshTokenTTL:   168 * time.Hour,
		RefreshReuseGrace: 0,
		Users: Users{
			Allowed: []string{"*"},
			Admin:   []string{"alice"},
			User:    []string{"*"},
			MCP:     []string{"alice", "charlie"},
		},
		AllowedOrigins:               []string{"https://app.example.com", "http://localhost:5173"},
		DynamicRegistration:          false,
		ClientMetadataDocuments:      false,
		MetadataDocumentPrivateAddrs: true,
		Clients: []StaticClient{
			{
				ID:         "cli",
				Name:       "Internal CLI",
				SecretFile: filepath.Join(dir, "secrets/cli.secret"),
				RedirectURIs: []string{"http://127.0.0.1/callback", "https://app.example.com/cb",
					"cursor://anysphere.cursor-retrieval/oauth/callback", "com.example.app:/oauth2redirect", "http://[::1]:33418/cb"},
				RequireConsent: true,
			},
			{ID: "public", Name: "public", RedirectURIs: []string{"http://localhost/cb"}},
		},
		GitHub: &GitHubIDP{
			ClientID:     "Iv1.0123",
			SecretFile:   filepath.Join(creds, "github.secret"),
			AuthorizeURL: "http://127.0.0.1:9999/login/oauth/authorize",
			TokenURL:     "http://127.0.0.1:9999/login/oauth/access_token",
			APIURL:       "http://127.0.0.1:9999/api/v3",
			AllowedOrgs:  []string{"acme"},
			AllowedTeams: []string{"acme/platform-team"},
		},
	}
	if !reflect.DeepEqual(cfg.OAuth, wantOAuth) {
		t.Errorf("OAuth:\n%s\nwant:\n%s", dump(t, cfg.OAuth), dump(t, wantOAuth))
	}
	wantAuth := map[string]Auth{
		"auth": {Required: true, Scopes: []string{"mcp"}, ResourcePath: "/mcp"},
		"notes": {
			Required:     true,
			Scopes:       []string{"mcp", "admin"},
			ResourcePath: "/api/mcp",
			PublicPaths:  []string{"/docs", "/health"},
			Users:        Users{Allowed: []string{"alice"}, Admin: []string{}},
		},
		"root": {Required: true, Scopes: []string{}, ResourcePath: "/"},
	}
	for name, want := range wantAuth {
		if got := cfg.Proxy(name).Auth; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Auth:\n%s\nwant:\n%s", name, dump(t, got), dump(t, want))
		}
	}

	// Per-proxy lists override the global ones, an empty one included.
	wantUsers := Users{Allowed: []string{"alice"}, Admin: []string{}, User: []string{"*"}, MCP: []string{"alice", "charlie"}}
	if got := cfg.EffectiveUsers(cfg.Proxy("notes")); !reflect.DeepEqual(got, wantUsers) {
		t.Errorf("EffectiveUsers(notes) = %+v, want %+v", got, wantUsers)
	}
	if got := cfg.EffectiveUsers(cfg.Proxy("auth")); !reflect.DeepEqual(got, cfg.OAuth.Users) {
		t.Errorf("EffectiveUsers(auth) = %+v, want the global %+v", got, cfg.OAuth.Users)
	}

	for _, c := range []struct{ proxy, host, want string }{
		{"notes", "Notes.Example.COM", "https://notes.example.com/api/mcp"},
		{"notes", "notes.example.com:443", "https://notes.example.com/api/mcp"},
		{"notes", "notes.example.com.:8443", "https://notes.example.com.:8443/api/mcp"},
		{"auth", "x.example.com", "https://x.example.com/mcp"},
		{"root", "root.test.", "https://root.test/"},
	} {
		if got := cfg.Proxy(c.proxy).ResourceURL(c.host); got != c.want {
			t.Errorf("%s.ResourceURL(%q) = %q, want %q", c.proxy, c.host, got, c.want)
		}
	}

	wantSummaries := map[string]string{
		"auth":  "auth: *.example.com -> http://127.0.0.1:3001 (routes: 0, tls: self-signed, auth: mcp)",
		"notes": "notes: notes.example.com -> http://127.0.0.1:3000 (routes: 0, tls: self-signed, auth: mcp admin)",
		"root":  "root: root.test -> http://127.0.0.1:3002 (routes: 0, tls: self-signed, auth: any scope)",
	}
	for name, want := range wantSummaries {
		if got := cfg.Proxy(name).Summary(); got != want {
			t.Errorf("Summary() = %q, want %q", got, want)
		}
	}
}

// TestOAuthDefaults: a minimal [oauth] with an OIDC provider, and GitHub
// with only an organization restriction.
func TestOAuthDefaults(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"mcpgate.toml": `[oauth]
callback_url = "http://localhost:8443/cb"
[idp.oidc]
issuer = "https://login.example.com/realms/x/"
client_id = "mcpgate"
client_secret_file = "oidc.secret"
allowed_groups = ["MCP Users"]
`,
		"oidc.secret": "x",
		"demo.toml":   "hostnames = [\"localhost\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nself_signed = true\n",
	})
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &OAuth{
		CallbackURL:             "http://localhost:8443/cb",
		AccessTokenTTL:          DefaultAccessTokenTTL,
		RefreshTokenTTL:         DefaultRefreshTokenTTL,
		RefreshReuseGrace:       DefaultRefreshReuseGrace,
		Users:                   Users{Allowed: []string{"*"}, Admin: []string{}, User: []string{}, MCP: []string{}},
		DynamicRegistration:     true,
		ClientMetadataDocuments: true,
		OIDC: &OIDCIDP{
			Issuer:        "https://login.example.com/realms/x/",
			ClientID:      "mcpgate",
			SecretFile:    filepath.Join(dir, "oidc.secret"),
			Scopes:        DefaultOIDCScopes,
			GroupsClaim:   "groups",
			UsernameClaim: "sub",
			AllowedGroups: []string{"MCP Users"},
		},
	}
	if !reflect.DeepEqual(cfg.OAuth, want) {
		t.Errorf("OAuth:\n%s\nwant:\n%s", dump(t, cfg.OAuth), dump(t, want))
	}
	wantAuth := Auth{Required: true, Scopes: DefaultAuthScopes, ResourcePath: DefaultResourcePath}
	if got := cfg.Proxy("demo").Auth; !reflect.DeepEqual(got, wantAuth) {
		t.Errorf("Auth = %+v, want %+v", got, wantAuth)
	}

	// GitHub restricted to an organization: allowed_users may be omitted.
	writeFiles(t, dir, map[string]string{"mcpgate.toml": `[oauth]
callback_url = "https://localhost/cb"
[idp.github]
client_id = "x"
client_secret_file = "oidc.secret"
allowed_orgs = ["acme"]
`})
	cfg, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.OAuth.Users.Allowed; !reflect.DeepEqual(got, []string{"*"}) {
		t.Errorf("Allowed = %q, want [*] (the organization restricts)", got)
	}
	g := cfg.OAuth.GitHub
	if g.AuthorizeURL != DefaultGitHubAuthorizeURL || g.TokenURL != DefaultGitHubTokenURL || g.APIURL != DefaultGitHubAPIURL {
		t.Errorf("GitHub URLs not defaulted: %+v", g)
	}
}

// TestHashCoversOAuth: every proxy host runs the authorization server, so
// a change to [oauth] changes every proxy's hash; [auth] only its own.
func TestHashCoversOAuth(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeFiles(t, dir, oauthFiles)
	writeFiles(t, dir, map[string]string{"other.toml": strings.Replace(okProxy, "ok.", "other.", 1)})
	load := func() (auth, other string) {
		t.Helper()
		cfg, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Proxy("auth").Hash, cfg.Proxy("other").Hash
	}
	a1, o1 := load()
	writeFiles(t, dir, map[string]string{"auth.toml": authProxy + "[auth]\nscopes = [\"admin\"]\n"})
	a2, o2 := load()
	if a2 == a1 || o2 != o1 {
		t.Errorf("[auth] change: auth hash changed %v (want true), other changed %v (want false)", a2 != a1, o2 != o1)
	}
	writeFiles(t, dir, map[string]string{"mcpgate.toml": strings.Replace(oauthGlobal, `["*"]`, `["alice"]`, 1)})
	a3, o3 := load()
	if a3 == a2 || o3 == o2 {
		t.Errorf("[oauth] change: hashes changed auth=%v other=%v, want both", a3 != a2, o3 != o2)
	}
}

func TestCheckRedirectURI(t *testing.T) {
	good := []string{
		"https://app.example.com/cb",
		"https://app.example.com:8443/cb?x=1",
		"http://127.0.0.1/callback",
		"http://127.0.0.2:33418/callback",
		"http://[::1]:33418/",
		"http://localhost:8080/cb",
		"cursor://anysphere.cursor-retrieval/oauth/callback",
		"vscode://vscode.github-authentication/did-authenticate",
		"com.example.app:/oauth2redirect/example-provider",
		"myapp:callback",
	}
	for _, u := range good {
		if err := CheckRedirectURI(u); err != nil {
			t.Errorf("CheckRedirectURI(%q) = %v, want nil", u, err)
		}
	}
	bad := map[string]string{
		"":                              "must not be empty",
		"javascript:alert(1)":           `scheme "javascript" is not allowed`,
		"JavaScript://%0aalert(1)":      `scheme "javascript" is not allowed`,
		"vbscript:x":                    `scheme "vbscript" is not allowed`,
		"about:blank":                   `scheme "about" is not allowed`,
		"blob:https://a.example/x":      `scheme "blob" is not allowed`,
		"http://10.0.0.1/cb":            "http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1]); use https",
		"http://[::ffff:10.0.0.1]/cb":   "http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1]); use https",
		"http:/cb":                      "missing host",
		"https://app.example.com:0/cb":  `invalid port "0"`,
		"https://app.example.com/cb#":   "must not contain a fragment",
		"cursor://x/cb\n":               "must not contain spaces or control characters",
		"1http://x":                     "invalid URI: first path segment in URL cannot contain colon",
		"//app.example.com/cb":          "not an absolute URI: use https://…, http://127.0.0.1/… or a private-use scheme such as cursor://…",
		"https://u@app.example.com/cb":  "must not contain user info",
		"myapp://user@host/cb":          "must not contain user info",
		"https://app.example.com%zz/cb": `invalid URI: invalid URL escape "%zz"`,
	}
	for u, want := range bad {
		err := CheckRedirectURI(u)
		if err == nil || err.Error() != want {
			t.Errorf("CheckRedirectURI(%q) = %v, want %s", u, err, want)
		}
	}
}

// TestLoadGlobalSkipsOAuthChecks: `mcpgate reload` finds the control
// socket from a shell without the service's credentials.
func TestLoadGlobalSkipsOAuthChecks(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"mcpgate.toml": "[server]\nstate_dir = \"/srv/state\"\n" +
		strings.Replace(oauthGlobal, `client_secret_file = "github.secret"`, `client_secret_credential = "github.secret"`, 1)})
	srv, err := LoadGlobal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if srv.StateDir != "/srv/state" {
		t.Errorf("StateDir = %q", srv.StateDir)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "$CREDENTIALS_DIRECTORY is not set") {
		t.Errorf("Load = %v, want the credential error", err)
	}
}
