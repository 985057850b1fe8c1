// Package config reads mcpgate's TOML files and turns them into immutable
// runtime values. The file schema (schema.go) is kept apart from the runtime
// types here, so the rest of mcpgate never sees TOML details.
package config

import (
	"net/netip"
	"time"
)

// Defaults applied when a key is omitted. An explicit empty list is kept as
// "none"; only an omitted key takes these.
var (
	DefaultHTTPS          = []string{"127.0.0.1:8443"}
	DefaultHTTP           = []string{"127.0.0.1:8080"}
	DefaultStateDir       = "/var/lib/mcpgate"
	DefaultDrainTimeout   = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	// MCP tool calls answered with application/json send their headers only
	// when the tool finishes, so the header timeout must be generous.
	DefaultResponseHeaderTimeout = 5 * time.Minute
	DefaultLogLevel              = "info"
	DefaultHealthDetails         = HealthDetailsLoopback
)

// LogLevels are the values of [server] log_level, most verbose first.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Values of [server] health_details.
const (
	HealthDetailsLoopback = "loopback" // version and build only for loopback clients
	HealthDetailsAll      = "all"
)

// GlobalFile is the name of the global settings file in the config
// directory; every other *.toml file there is one proxy.
const GlobalFile = "mcpgate.toml"

// Config is a validated configuration: the global settings and every proxy.
type Config struct {
	Dir    string `json:"dir"`
	Server Server `json:"server"`
	OAuth  *OAuth `json:"oauth,omitempty"` // nil when mcpgate.toml has no [oauth]
	Store  *Store `json:"store,omitempty"` // nil: SQLite in state_dir
	// ACME is [acme] with its defaults filled in; never nil, since a proxy
	// may set acme = true without an [acme] table (Let's Encrypt, no email).
	ACME    *ACME    `json:"acme"`
	Proxies []*Proxy `json:"proxies"` // sorted by Name; includes disabled ones
}

// ACME defaults.
var (
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
	// DefaultACMEChallenges: both challenges that reach mcpgate's own
	// sockets; the CA picks one it can use.
	DefaultACMEChallenges = []string{ChallengeTLSALPN, ChallengeHTTP}
)

// The ACME challenges mcpgate answers. DNS-01 is not among them, which is
// why wildcard hostnames need certificate files.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
)

// ACME is [acme]: where proxies with [tls] acme = true get certificates.
type ACME struct {
	Email        string `json:"email,omitempty"`
	DirectoryURL string `json:"directory_url"`
	// CARootFile is an extra trusted root (absolute path, PEM) for talking
	// to a private ACME server; "" = the system roots only.
	CARootFile string   `json:"ca_root_file,omitempty"`
	Challenges []string `json:"challenges"` // a subset of DefaultACMEChallenges, in order
	// EABKeyID and EABHMACFile are the external account binding some CAs
	// require; the file (eab_hmac_file, or the eab_hmac_credential in
	// $CREDENTIALS_DIRECTORY) holds the base64url HMAC key and is read by
	// the worker, never copied into the configuration.
	EABKeyID    string `json:"eab_kid,omitempty"`
	EABHMACFile string `json:"eab_hmac_file,omitempty"`
}

// OAuth defaults.
var (
	DefaultAccessTokenTTL    = time.Hour
	DefaultRefreshTokenTTL   = 720 * time.Hour
	DefaultRefreshReuseGrace = 5 * time.Second
	MaxRefreshReuseGrace     = 10 * time.Second
	DefaultDynamicClientTTL  = 720 * time.Hour
	// MinDynamicClientTTL bounds dynamic_client_ttl from below: a client's
	// last use is recorded about once an hour.
	MinDynamicClientTTL = time.Hour
	DefaultAuthScopes   = []string{"mcp"}
	DefaultResourcePath = "/mcp"
	// MaxAccessTokenTTL bounds access_token_ttl: an access token cannot be
	// called back from a client, so it must not live long.
	MaxAccessTokenTTL = 24 * time.Hour

	DefaultGitHubAuthorizeURL = "https://github.com/login/oauth/authorize"
	DefaultGitHubTokenURL     = "https://github.com/login/oauth/access_token"
	DefaultGitHubAPIURL       = "https://api.github.com"
	DefaultOIDCScopes         = []string{"openid", "profile", "email"}
	DefaultOIDCGroupsClaim    = "groups"
	// DefaultOIDCUsernameClaim: the allow lists and X-MCPGate-User use the
	// provider's stable subject identifier unless configured otherwise.
	DefaultOIDCUsernameClaim = "sub"
)

// OAuth is [oauth] with its identity provider: the authorization server
// that every proxy host runs (issuer https://<hostname>).
type OAuth struct {
	// CallbackURL is the one redirect URL registered at the identity
	// provider; the proxy owning its host serves it.
	CallbackURL     string        `json:"callback_url"`
	AccessTokenTTL  time.Duration `json:"access_token_ttl"`  // > 0, <= MaxAccessTokenTTL
	RefreshTokenTTL time.Duration `json:"refresh_token_ttl"` // > AccessTokenTTL
	// RefreshReuseGrace is how long a just-rotated refresh token is still
	// accepted (concurrent refreshes); 0..MaxRefreshReuseGrace.
	RefreshReuseGrace time.Duration `json:"refresh_reuse_grace"`
	// DynamicClientTTL: a dynamically registered client unused (at
	// /authorize or /token) for this long is deleted with its grants.
	DynamicClientTTL time.Duration `json:"dynamic_client_ttl"`
	// Users are the global lists, never nil. Allowed has no default that
	// lets everyone in: it is ["*"] when omitted only if the provider
	// restricts logins (allowed_orgs, allowed_teams or allowed_groups).
	Users Users `json:"users"`
	// AllowedOrigins are browser origins, besides each proxy's own, that
	// may call the MCP endpoints and the OAuth endpoints. Each is
	// scheme://host[:port], lower-case, without a default port.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// DynamicRegistration enables RFC 7591 registration (default true).
	DynamicRegistration bool `json:"dynamic_registration"`
	// ClientMetadataDocuments enables https client_id URLs (default true).
	ClientMetadataDocuments bool `json:"client_metadata_documents"`
	// MetadataDocumentPrivateAddrs lets metadata documents be fetched from
	// private and loopback addresses (tests and labs only; default false).
	MetadataDocumentPrivateAddrs bool           `json:"metadata_document_private_addresses,omitempty"`
	Clients                      []StaticClient `json:"clients,omitempty"`
	GitHub                       *GitHubIDP     `json:"github,omitempty"` // exactly one of GitHub, OIDC
	OIDC                         *OIDCIDP       `json:"oidc,omitempty"`
}

// Users are the user lists deciding who may log in and which scopes they
// get. "*" matches everyone the provider authenticated. In a proxy's
// [auth], a nil list inherits the global one (Config.EffectiveUsers); an
// empty one means nobody. Names are kept as written (no spaces, no
// duplicates); GitHub logins are case-insensitive, so compare them with
// strings.EqualFold.
type Users struct {
	Allowed []string `json:"allowed_users"`
	Admin   []string `json:"admin_users"`
	User    []string `json:"user_users"`
	MCP     []string `json:"mcp_users"`
}

// GitHubIDP is [idp.github].
type GitHubIDP struct {
	ClientID string `json:"client_id"`
	// SecretFile is the absolute path of the file holding the client
	// secret: client_secret_file, or $CREDENTIALS_DIRECTORY/<credential>.
	SecretFile   string `json:"secret_file"`
	AuthorizeURL string `json:"authorize_url"`
	TokenURL     string `json:"token_url"`
	// APIURL has no trailing slash, so "/user" can be appended.
	APIURL       string   `json:"api_url"`
	AllowedOrgs  []string `json:"allowed_orgs,omitempty"`  // lower-case
	AllowedTeams []string `json:"allowed_teams,omitempty"` // "org/team", lower-case
}

// OIDCIDP is [idp.oidc].
type OIDCIDP struct {
	// Issuer is kept exactly as written (a trailing slash included): the
	// provider's discovery document must name the same string.
	Issuer        string   `json:"issuer"`
	ClientID      string   `json:"client_id"`
	SecretFile    string   `json:"secret_file"`
	Scopes        []string `json:"scopes"`
	GroupsClaim   string   `json:"groups_claim"`
	UsernameClaim string   `json:"username_claim"`
	AllowedGroups []string `json:"allowed_groups,omitempty"`
}

// StaticClient is one [[oauth.clients]]: a pre-registered client.
type StaticClient struct {
	ID   string `json:"client_id"`
	Name string `json:"name"` // the client_id when not set

	// SecretFile holds the client secret of a confidential client; "" for
	// a public client.
	SecretFile string `json:"secret_file,omitempty"`
	// RedirectURIs are as written; each passed CheckRedirectURI.
	RedirectURIs []string `json:"redirect_uris"`
	// Consent: static clients are trusted by the operator, so no consent
	// page unless this is set.
	RequireConsent bool `json:"require_consent,omitempty"`
	// Introspect marks a resource server: it may introspect any token
	// (RFC 7662). Only confidential clients may have it.
	Introspect bool `json:"introspect,omitempty"`
}

// Server holds the [server] table of mcpgate.toml.
type Server struct {
	File  string   `json:"file,omitempty"` // "" when mcpgate.toml is absent
	HTTPS []string `json:"https"`          // used only without socket activation
	HTTP  []string `json:"http"`
	// QUIC are UDP addresses for HTTP/3, used only when not
	// socket-activated; none by default.
	QUIC         []string      `json:"quic,omitempty"`
	StateDir     string        `json:"state_dir"` // absolute
	DrainTimeout time.Duration `json:"drain_timeout"`
	// ProxyProtocolFrom: connections from these load balancers must start
	// with a PROXY protocol (v1 or v2) header; from elsewhere one is refused.
	ProxyProtocolFrom []netip.Prefix `json:"proxy_protocol_from,omitempty"`
	// PprofDir: workers serve net/http/pprof on <dir>/<proxy>-<pid>.sock;
	// "" (the default) = off.
	PprofDir string `json:"pprof_dir,omitempty"`
	// AccessLog: one log line per request (default true).
	AccessLog bool `json:"access_log"`
	// LogLevel is one of LogLevels; `--log-level` given to serve overrides it.
	LogLevel string `json:"log_level"`
	// HealthDetails says who sees the health endpoint's version, build,
	// pid and config hash: HealthDetailsLoopback (the default) or
	// HealthDetailsAll. Others get the status and the proxy name.
	HealthDetails string `json:"health_details"`
	// Metrics is where the supervisor serves Prometheus /metrics:
	// "host:port", or MetricsUnixPrefix and an absolute socket path; ""
	// (the default) = off. It has no authentication.
	Metrics string `json:"metrics,omitempty"`
}

// MetricsUnixPrefix marks a unix socket in [server] metrics.
const MetricsUnixPrefix = "unix:"

// Proxy is one proxied MCP server, from one <name>.toml file.
type Proxy struct {
	Name      string   `json:"name"`
	File      string   `json:"file"`
	Enabled   bool     `json:"enabled"`
	Hostnames []string `json:"hostnames"` // lower-case; "*.example.com" wildcards allowed
	Target    Upstream `json:"target"`
	// Routes send path prefixes to other upstreams; sorted longest prefix first.
	Routes       []Route `json:"routes,omitempty"`
	PreserveHost bool    `json:"preserve_host,omitempty"`
	// HTTP3: serve HTTP/3 when the gateway has a QUIC socket (default true).
	HTTP3    bool     `json:"http3"`
	TLS      TLS      `json:"tls"`
	Headers  Headers  `json:"headers"`
	Timeouts Timeouts `json:"timeouts"`
	Auth     Auth     `json:"auth"`
	// Hash identifies this proxy's effective configuration (hex sha256).
	Hash string `json:"hash"`
}

// Upstream is where requests go.
type Upstream struct {
	Raw    string `json:"raw"`              // as written in the file
	Scheme string `json:"scheme"`           // "http" or "https" ("http" for unix sockets)
	Host   string `json:"host"`             // host[:port]; the proxy name for unix sockets
	Path   string `json:"path,omitempty"`   // base path prefixed to every request path
	Socket string `json:"socket,omitempty"` // absolute unix socket path, or ""
}

// Route sends requests whose path is Path or below it (segment boundary:
// "/token" matches "/token" and "/token/x", never "/tokens") to Target.
type Route struct {
	Path   string   `json:"path"`
	Target Upstream `json:"target"`
}

// TLS says where a proxy's certificate comes from.
type TLS struct {
	CertFile   string `json:"cert_file,omitempty"` // absolute
	KeyFile    string `json:"key_file,omitempty"`  // absolute
	SelfSigned bool   `json:"self_signed,omitempty"`
	// ACME: certificates for every hostname (all exact names) come from
	// the CA of Config.ACME.
	ACME bool `json:"acme,omitempty"`
}

// Headers are added to requests to the backend and to responses to clients.
type Headers struct {
	Request        map[string]string `json:"request,omitempty"`  // canonical names; set (replace)
	Response       map[string]string `json:"response,omitempty"` // canonical names; set (replace)
	RemoveRequest  []string          `json:"remove_request,omitempty"`
	RemoveResponse []string          `json:"remove_response,omitempty"`
}

// Auth is a proxy's [auth]: what a request needs to reach the backend.
type Auth struct {
	// Required: a valid bearer token is needed (default true). A proxy
	// that requires auth while mcpgate.toml has no [oauth] is an error.
	Required bool `json:"required"`
	// Scopes a token must carry to reach the backend (default ["mcp"]).
	Scopes []string `json:"scopes"`
	// ResourcePath: the protected resource is https://<hostname><path>
	// (default "/mcp"; no trailing slash except for "/"). See policy.Site.
	ResourcePath string `json:"resource_path"`
	// PublicPaths are reachable without a token (segment-boundary prefixes,
	// without a trailing slash, never "/" and never covering ResourcePath).
	PublicPaths []string `json:"public_paths,omitempty"`
	// Users override the global lists where set (nil: inherit).
	Users Users `json:"users"`
}

// Timeouts bound the upstream connection. Streams have no read timeout.
type Timeouts struct {
	Connect        time.Duration `json:"connect"`
	ResponseHeader time.Duration `json:"response_header"`
}

// Enabled returns the enabled proxies.
func (c *Config) Enabled() []*Proxy {
	var out []*Proxy
	for _, p := range c.Proxies {
		if p.Enabled {
			out = append(out, p)
		}
	}
	return out
}

// Proxy returns the proxy with the given name, or nil.
func (c *Config) Proxy(name string) *Proxy {
	for _, p := range c.Proxies {
		if p.Name == name {
			return p
		}
	}
	return nil
}
