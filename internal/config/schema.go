package config

import (
	"fmt"
	"time"
)

// This file mirrors the TOML files key for key. The types are only ever
// filled by bind (decode.go) and then turned into the runtime types of
// config.go, which is where defaults are applied.
//
// Conventions understood by bind:
//   - `toml:"name"` names the key; a key without a field is an unknown key.
//   - A pointer is nil when the key is omitted. Use one wherever omitted and
//     explicitly set must differ (an omitted list inherits a default, an
//     explicit [] means none).
//   - Supported: string, bool, int64, slices, map[string]T, structs, and
//     types implementing encoding.TextUnmarshaler from a TOML string.
//   - A field of type any takes whatever value is written; it is used for
//     keys that are errors whatever their value (client_secret), so the
//     message can say why instead of "expected a string".
//
// To add a table to mcpgate.toml, add a field to globalFile and convert it
// in global.go (or oauth.go for [oauth] and [idp]).

// globalFile is mcpgate.toml.
type globalFile struct {
	Server *serverTable `toml:"server"`
	OAuth  *oauthTable  `toml:"oauth"`
	IdP    *idpTable    `toml:"idp"`
	Store  *storeTable  `toml:"store"`
	ACME   *acmeTable   `toml:"acme"`
}

// acmeTable is [acme]: the CA that proxies with [tls] acme = true get their
// certificates from.
type acmeTable struct {
	Email        *string   `toml:"email"`
	DirectoryURL *string   `toml:"directory_url"`
	CARootFile   *string   `toml:"ca_root_file"`
	Challenges   *[]string `toml:"challenges"`
	EABKeyID     *string   `toml:"eab_kid"`
	EABHMACFile  *string   `toml:"eab_hmac_file"`
	// EABHMACCredential names a systemd credential instead of a file.
	EABHMACCredential *string `toml:"eab_hmac_credential"`
	EABHMAC           any     `toml:"eab_hmac"` // always an error
}

type serverTable struct {
	HTTPS        *[]string `toml:"https"`
	HTTP         *[]string `toml:"http"`
	QUIC         *[]string `toml:"quic"`
	StateDir     *string   `toml:"state_dir"`
	DrainTimeout *duration `toml:"drain_timeout"`
	// ProxyProtocolFrom lists the load balancers (CIDR prefixes or single
	// addresses) whose connections start with a PROXY protocol header.
	ProxyProtocolFrom []string `toml:"proxy_protocol_from"`
	// PprofDir, when set, makes every worker serve Go's profiler on a
	// unix socket there (for operators and make bench).
	PprofDir *string `toml:"pprof_dir"`
	// AccessLog, LogLevel and HealthDetails: see Server.
	AccessLog     *bool   `toml:"access_log"`
	LogLevel      *string `toml:"log_level"`
	HealthDetails *string `toml:"health_details"`
	// Metrics: see Server.
	Metrics *string `toml:"metrics"`
}

// oauthTable is [oauth]: the authorization server every proxy host runs.
type oauthTable struct {
	CallbackURL       *string   `toml:"callback_url"`
	AccessTokenTTL    *duration `toml:"access_token_ttl"`
	RefreshTokenTTL   *duration `toml:"refresh_token_ttl"`
	RefreshReuseGrace *duration `toml:"refresh_reuse_grace"`
	DynamicClientTTL  *duration `toml:"dynamic_client_ttl"`

	AllowedUsers *[]string `toml:"allowed_users"`
	AdminUsers   *[]string `toml:"admin_users"`
	UserUsers    *[]string `toml:"user_users"`
	MCPUsers     *[]string `toml:"mcp_users"`

	AllowedOrigins                   []string      `toml:"allowed_origins"`
	DynamicRegistration              *bool         `toml:"dynamic_registration"`
	ClientMetadataDocuments          *bool         `toml:"client_metadata_documents"`
	MetadataDocumentPrivateAddresses bool          `toml:"metadata_document_private_addresses"`
	Clients                          []clientTable `toml:"clients"`
}

func (t *oauthTable) users() userKeys {
	return userKeys{t.AllowedUsers, t.AdminUsers, t.UserUsers, t.MCPUsers}
}

// clientTable is one [[oauth.clients]]: a pre-registered client.
type clientTable struct {
	ClientID               *string   `toml:"client_id"`
	Name                   *string   `toml:"name"`
	ClientSecretFile       *string   `toml:"client_secret_file"`
	ClientSecretCredential *string   `toml:"client_secret_credential"`
	ClientSecret           any       `toml:"client_secret"` // always an error
	RedirectURIs           *[]string `toml:"redirect_uris"`
	RequireConsent         bool      `toml:"require_consent"`
	Introspect             bool      `toml:"introspect"`
}

func (t *clientTable) secret() secretKeys {
	return secretKeys{t.ClientSecretFile, t.ClientSecretCredential, t.ClientSecret}
}

// idpTable is [idp]; exactly one provider is set when [oauth] is. Any
// other [idp.x] is an unknown key.
type idpTable struct {
	GitHub *githubTable `toml:"github"`
	OIDC   *oidcTable   `toml:"oidc"`
}

type githubTable struct {
	ClientID               *string  `toml:"client_id"`
	ClientSecretFile       *string  `toml:"client_secret_file"`
	ClientSecretCredential *string  `toml:"client_secret_credential"`
	ClientSecret           any      `toml:"client_secret"` // always an error
	AuthorizeURL           *string  `toml:"authorize_url"`
	TokenURL               *string  `toml:"token_url"`
	APIURL                 *string  `toml:"api_url"`
	AllowedOrgs            []string `toml:"allowed_orgs"`
	AllowedTeams           []string `toml:"allowed_teams"`
}

func (t *githubTable) secret() secretKeys {
	return secretKeys{t.ClientSecretFile, t.ClientSecretCredential, t.ClientSecret}
}

type oidcTable struct {
	Issuer                 *string   `toml:"issuer"`
	ClientID               *string   `toml:"client_id"`
	ClientSecretFile       *string   `toml:"client_secret_file"`
	ClientSecretCredential *string   `toml:"client_secret_credential"`
	ClientSecret           any       `toml:"client_secret"` // always an error
	Scopes                 *[]string `toml:"scopes"`
	GroupsClaim            *string   `toml:"groups_claim"`
	UsernameClaim          *string   `toml:"username_claim"`
	AllowedGroups          []string  `toml:"allowed_groups"`
}

func (t *oidcTable) secret() secretKeys {
	return secretKeys{t.ClientSecretFile, t.ClientSecretCredential, t.ClientSecret}
}

// secretKeys are the ways a table names a secret: a file, a systemd
// credential, or (always rejected) the secret itself.
type secretKeys struct {
	File       *string
	Credential *string
	Inline     any
}

// userKeys are the user lists of [oauth] and of a proxy's [auth]; nil
// where the key is omitted.
type userKeys struct {
	Allowed, Admin, User, MCP *[]string
}

// proxyFile is <name>.toml.
type proxyFile struct {
	Enabled      *bool         `toml:"enabled"`
	Hostnames    []string      `toml:"hostnames"`
	Target       *string       `toml:"target"`
	PreserveHost bool          `toml:"preserve_host"`
	HTTP3        *bool         `toml:"http3"`
	TLS          *tlsTable     `toml:"tls"`
	Timeouts     timeoutsTable `toml:"timeouts"`
	Headers      headersTable  `toml:"headers"`
	Routes       []routeTable  `toml:"routes"`
	Auth         *authTable    `toml:"auth"`
}

// authTable is a proxy's [auth].
type authTable struct {
	Required     *bool     `toml:"required"`
	Scopes       *[]string `toml:"scopes"`
	ResourcePath *string   `toml:"resource_path"`
	PublicPaths  []string  `toml:"public_paths"`

	AllowedUsers *[]string `toml:"allowed_users"`
	AdminUsers   *[]string `toml:"admin_users"`
	UserUsers    *[]string `toml:"user_users"`
	MCPUsers     *[]string `toml:"mcp_users"`
}

func (t *authTable) users() userKeys {
	return userKeys{t.AllowedUsers, t.AdminUsers, t.UserUsers, t.MCPUsers}
}

type tlsTable struct {
	CertFile   string `toml:"cert_file"`
	KeyFile    string `toml:"key_file"`
	SelfSigned bool   `toml:"self_signed"`
	ACME       bool   `toml:"acme"`
}

type timeoutsTable struct {
	Connect        *duration `toml:"connect"`
	ResponseHeader *duration `toml:"response_header"`
}

type headersTable struct {
	Request        map[string]string `toml:"request"`
	Response       map[string]string `toml:"response"`
	RemoveRequest  []string          `toml:"remove_request"`
	RemoveResponse []string          `toml:"remove_response"`
}

type routeTable struct {
	Path   *string `toml:"path"`
	Target *string `toml:"target"`
}

// duration is a Go duration string such as "30s"; TOML has no duration type
// and a bare number would leave the unit to guesswork.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a number with a unit, such as \"30s\" or \"5m\")", b)
	}
	d.Duration = v
	return nil
}

func (*duration) describe() string { return `a duration string such as "30s"` }
