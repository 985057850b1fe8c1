package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/keys"
	"github.com/mcpgate/mcpgate/internal/policy"
	"github.com/mcpgate/mcpgate/internal/revocation"
	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/sqlite"
	"github.com/mcpgate/mcpgate/internal/supervisor"
)

// The admin commands open the OAuth store and the key directory in
// state_dir themselves, as the workers do: SQLite's locking makes that
// safe next to a running gateway. A command that revoked something tells
// the supervisor over the control socket, which has every worker read the
// revocation log at once (they would otherwise find it within
// revocation.NotifiedPoll); workers look at the key directory at most
// every 200 ms. They need the rights the service has on state_dir (0700, owned
// by the service user): root, or the service user itself. Files root
// creates there (SQLite's -wal and -shm, a key file) take the owner of the
// database or directory, so the service can still open them.

var grantsCommands = []command{
	{name: "list", args: "[--user U] [--proxy P] [--client C] [--config-dir DIR] [--json]",
		summary: "who has access to what: one line per grant, with since and last used", run: cmdGrantsList},
	{name: "revoke", args: "ID | --user U [--proxy P] [--config-dir DIR] [--json]",
		summary: "revoke grants: their refresh tokens die at once, their access tokens within a second", run: cmdGrantsRevoke},
}

var clientsCommands = []command{
	{name: "list", args: "[--config-dir DIR] [--json]", summary: "every client: dynamic, metadata-document and static ones", run: cmdClientsList},
	{name: "show", args: "ID [--config-dir DIR] [--json]", summary: "one client's registration and grants", run: cmdClientsShow},
	{name: "delete", args: "ID [--config-dir DIR] [--json]", summary: "delete a dynamic client, or revoke a metadata-document client's grants and consents", run: cmdClientsDelete},
}

var keysCommands = []command{
	{name: "list", args: "[--config-dir DIR] [--json]", summary: "the signing keys: kid, created, active or retiring, when each leaves the JWKS", run: cmdKeysList},
	{name: "rotate", args: "[--config-dir DIR] [--json]", summary: "make a new signing key active now; older keys stay in the JWKS until their tokens expired", run: cmdKeysRotate},
}

// revocationTTL is how long the CLI's revocations stay in the log: the
// longest access token lifetime mcpgate allows, so no token of a revoked
// grant or client outlives its entry whatever access_token_ttl is set to
// (the entries are a few bytes; the configuration may not load).
var revocationTTL = config.MaxAccessTokenTTL

// adminFlags are the flags every admin command has.
type adminFlags struct {
	dir    *string
	asJSON *bool
}

func newAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{dir: configDirFlag(fs), asJSON: fs.Bool("json", false, "print JSON")}
}

// adminEnv is what an admin command knows about the installation.
type adminEnv struct {
	stateDir string
	cfg      *config.Config // nil when the configuration does not load
	policy   *policy.Table  // nil with cfg
}

// loadAdmin reads the configuration. The state directory comes from
// [server] state_dir; when the proxy files or [oauth] do not load (a
// broken file, or a secret this shell cannot read), the commands still
// work on the store, without proxy names, and say so.
func loadAdmin(dir string) (*adminEnv, error) {
	cfg, err := loadConfig(dir)
	if err == nil {
		return &adminEnv{stateDir: cfg.Server.StateDir, cfg: cfg, policy: policy.New(cfg.Proxies, cfg.OAuth)}, nil
	}
	srv, gerr := config.LoadGlobal(dir)
	if gerr != nil {
		return nil, gerr
	}
	fmt.Fprintf(stderr, "mcpgate: warning: the configuration does not load ('mcpgate check' says why); proxy names and static clients are unknown\n")
	return &adminEnv{stateDir: srv.StateDir}, nil
}

// proxyOf names the proxy owning a grant's resource ("" if none does).
func (e *adminEnv) proxyOf(resource string) string {
	if e.policy == nil {
		return ""
	}
	site, err := e.policy.Resource(resource)
	if err != nil || site.Proxy == nil {
		return ""
	}
	return site.Proxy.Name
}

// adminStore is the store as an admin command has it: when it is closed
// after a revocation, the running gateway is told, so every worker refuses
// the revoked tokens at once.
type adminStore struct {
	*sqlite.Store
	stateDir string
	revoked  atomic.Bool
}

func (s *adminStore) Close() error {
	err := s.Store.Close()
	if s.revoked.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if aerr := supervisor.AnnounceRevocations(ctx, s.stateDir); aerr != nil {
			fmt.Fprintf(stderr, "mcpgate: warning: the running gateway was not told of the revocation (%v); its workers refuse the tokens within %v\n",
				aerr, revocation.NotifiedPoll)
		}
	}
	return err
}

// openStore opens state_dir/oauth.db, never creating it: a store the CLI
// created would belong to whoever ran it.
func (e *adminEnv) openStore() (*adminStore, error) {
	path := filepath.Join(e.stateDir, "oauth.db")
	if err := e.accessible(path, unix.R_OK|unix.W_OK); err != nil {
		return nil, err
	}
	// SQLite creates -wal and -shm next to the database.
	if err := e.accessible(e.stateDir, unix.W_OK|unix.X_OK); err != nil {
		return nil, err
	}
	st, err := sqlite.Open(path)
	if err != nil {
		return nil, err
	}
	as := &adminStore{Store: st, stateDir: e.stateDir}
	st.OnRevoke(func() { as.revoked.Store(true) })
	return as, nil
}

// keyDir checks that the signing keys exist and may be changed.
func (e *adminEnv) keyDir(write bool) error {
	dir := filepath.Join(e.stateDir, "keys")
	mode := uint32(unix.R_OK | unix.X_OK)
	if write {
		mode |= unix.W_OK
	}
	return e.accessible(dir, mode)
}

// accessible explains, before anything is opened, why path cannot be used:
// missing (the gateway never ran with OAuth here) or not permitted (the
// state directory is the service user's).
func (e *adminEnv) accessible(path string, mode uint32) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s does not exist: the gateway has not run with [oauth] and state_dir %s yet", path, e.stateDir)
		}
		if errors.Is(err, fs.ErrPermission) {
			return e.denied(path)
		}
		return err
	}
	if err := unix.Access(path, mode); err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS) {
			return e.denied(path)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (e *adminEnv) denied(path string) error {
	who := "root or as the service user"
	var st syscall.Stat_t
	if syscall.Stat(e.stateDir, &st) == nil {
		if st.Uid == 0 {
			who = "root"
		} else if u, err := user.LookupId(strconv.Itoa(int(st.Uid))); err == nil {
			who = "root or as user " + u.Username
		}
	}
	return fmt.Errorf("run as %s: cannot open %s: permission denied", who, path)
}

// adminSetup parses the flags, allowing at most maxPos positional
// arguments, and loads the configuration. code is -1 to go on.
func adminSetup(fs *flag.FlagSet, args []string, af adminFlags, maxPos int) (pos []string, env *adminEnv, code int) {
	pos, ok, code := parseArgs(fs, args)
	if !ok {
		return nil, nil, code
	}
	if len(pos) > maxPos {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), pos[maxPos])
		fs.Usage()
		return nil, nil, 2
	}
	env, err := loadAdmin(*af.dir)
	if err != nil {
		fmt.Fprintln(stderr, "mcpgate:", err)
		return nil, nil, 1
	}
	return pos, env, -1
}

func fail(err error) int {
	fmt.Fprintln(stderr, "mcpgate:", err)
	return 1
}

func printJSON(v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fail(err)
	}
	return 0
}

func timeCell(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Grants.

// grantJSON is one grant in --json output.
type grantJSON struct {
	ID        string    `json:"grant_id"`
	User      string    `json:"user"` // the login
	Subject   string    `json:"subject"`
	ClientID  string    `json:"client_id"`
	Proxy     string    `json:"proxy,omitempty"`
	Resource  string    `json:"resource"`
	Scope     string    `json:"scope"`
	Since     time.Time `json:"since"`
	LastUsed  time.Time `json:"last_used"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (e *adminEnv) grantJSON(g store.Grant) grantJSON {
	return grantJSON{ID: g.ID, User: g.Login, Subject: g.Subject, ClientID: g.ClientID, Proxy: e.proxyOf(g.Resource),
		Resource: g.Resource, Scope: g.Scope, Since: g.AuthTime, LastUsed: g.LastUsed, ExpiresAt: g.ExpiresAt}
}

// grants lists the live grants the filter and proxy select.
func (e *adminEnv) grants(ctx context.Context, st store.Store, f store.GrantFilter, proxy string) ([]store.Grant, error) {
	if proxy != "" {
		if e.cfg == nil {
			return nil, errors.New("--proxy needs a configuration that loads")
		}
		if !e.hasProxy(proxy) {
			return nil, fmt.Errorf("no proxy %q in %s", proxy, e.cfg.Dir)
		}
	}
	all, err := st.ListGrants(ctx, f, time.Now())
	if err != nil {
		return nil, err
	}
	if proxy == "" {
		return all, nil
	}
	var out []store.Grant
	for _, g := range all {
		if e.proxyOf(g.Resource) == proxy {
			out = append(out, g)
		}
	}
	return out, nil
}

func (e *adminEnv) hasProxy(name string) bool {
	for _, p := range e.cfg.Proxies {
		if p.Name == name {
			return true
		}
	}
	return false
}

func cmdGrantsList(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	userF := fs.String("user", "", "only grants of `USER` (login, or the provider's subject id)")
	proxyF := fs.String("proxy", "", "only grants for `PROXY` (its file name without .toml)")
	clientF := fs.String("client", "", "only grants of client `ID`")
	_, env, code := adminSetup(fs, args, af, 0)
	if code >= 0 {
		return code
	}
	st, err := env.openStore()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	gs, err := env.grants(context.Background(), st, store.GrantFilter{User: *userF, ClientID: *clientF}, *proxyF)
	if err != nil {
		return fail(err)
	}
	if *af.asJSON {
		out := make([]grantJSON, 0, len(gs))
		for _, g := range gs {
			out = append(out, env.grantJSON(g))
		}
		return printJSON(out)
	}
	if len(gs) == 0 {
		fmt.Fprintln(stdout, "no grants")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GRANT\tUSER\tCLIENT\tPROXY\tSCOPE\tSINCE\tLAST USED\tEXPIRES")
	for _, g := range gs {
		proxy := env.proxyOf(g.Resource)
		if proxy == "" {
			proxy = g.Resource
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, g.Login, g.ClientID, proxy, g.Scope,
			timeCell(g.AuthTime), timeCell(g.LastUsed), timeCell(g.ExpiresAt))
	}
	tw.Flush()
	return 0
}

func cmdGrantsRevoke(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	userF := fs.String("user", "", "revoke every grant of `USER` (login, or the provider's subject id)")
	proxyF := fs.String("proxy", "", "with --user: only the grants for `PROXY`")
	pos, env, code := adminSetup(fs, args, af, 1)
	if code >= 0 {
		return code
	}
	switch {
	case len(pos) == 1 && *userF != "":
		fmt.Fprintln(stderr, "mcpgate grants revoke: give a grant ID or --user, not both")
		return 2
	case len(pos) == 0 && *userF == "":
		fmt.Fprintln(stderr, "mcpgate grants revoke: give a grant ID or --user")
		fs.Usage()
		return 2
	case *proxyF != "" && *userF == "":
		fmt.Fprintln(stderr, "mcpgate grants revoke: --proxy goes with --user")
		return 2
	}
	st, err := env.openStore()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	ctx := context.Background()
	var targets []store.Grant
	if len(pos) == 1 {
		all, err := st.ListGrants(ctx, store.GrantFilter{}, time.Now())
		if err != nil {
			return fail(err)
		}
		targets = []store.Grant{{ID: pos[0]}}
		for _, g := range all {
			if g.ID == pos[0] {
				targets[0] = g
			}
		}
		if targets[0].ClientID == "" {
			// Revoked anyway: the grant's access tokens (or a code not
			// redeemed yet) may be live without a refresh token.
			fmt.Fprintf(stderr, "mcpgate: grant %s has no live refresh token; revoking it anyway\n", pos[0])
		}
	} else if targets, err = env.grants(ctx, st, store.GrantFilter{User: *userF}, *proxyF); err != nil {
		return fail(err)
	}
	until := time.Now().Add(revocationTTL)
	revoked := make([]grantJSON, 0, len(targets))
	for _, g := range targets {
		if err := st.RevokeGrant(ctx, g.ID, until); err != nil {
			return fail(err)
		}
		revoked = append(revoked, env.grantJSON(g))
	}
	if *af.asJSON {
		return printJSON(struct {
			Revoked []grantJSON `json:"revoked"`
		}{revoked})
	}
	if len(revoked) == 0 {
		fmt.Fprintf(stdout, "no grants of %s to revoke\n", *userF)
		return 0
	}
	for _, g := range revoked {
		if g.ClientID == "" {
			fmt.Fprintf(stdout, "revoked grant %s\n", g.ID)
			continue
		}
		fmt.Fprintf(stdout, "revoked grant %s (%s, client %s, %s)\n", g.ID, g.User, g.ClientID, orDash(g.Proxy, g.Resource))
	}
	fmt.Fprintln(stdout, "refresh tokens are dead; every worker refuses the access tokens within a second")
	return 0
}

func grantCount(n int) string {
	if n == 1 {
		return "1 grant"
	}
	return strconv.Itoa(n) + " grants"
}

func orDash(a, b string) string {
	if a != "" {
		return a
	}
	if b != "" {
		return b
	}
	return "-"
}

// Clients.

// Kinds of client.
const (
	kindDynamic  = "dynamic"           // RFC 7591 registration, stored
	kindDocument = "metadata-document" // an https client_id, not stored
	kindStatic   = "static"            // [[oauth.clients]] in mcpgate.toml
)

// clientJSON is one client in --json output. Secret and registration
// token hashes are never shown; HasSecret says whether there is one.
type clientJSON struct {
	ID              string     `json:"client_id"`
	Kind            string     `json:"kind"`
	Name            string     `json:"name,omitempty"`
	RedirectURIs    []string   `json:"redirect_uris,omitempty"`
	HasSecret       bool       `json:"has_secret"`
	SecretExpiresAt *time.Time `json:"secret_expires_at,omitempty"`
	GrantTypes      []string   `json:"grant_types,omitempty"`
	Scope           string     `json:"scope,omitempty"`
	AuthMethod      string     `json:"token_endpoint_auth_method,omitempty"`
	ApplicationType string     `json:"application_type,omitempty"`
	Created         *time.Time `json:"created,omitempty"`
	LastUsed        *time.Time `json:"last_used,omitempty"`
	Source          string     `json:"source,omitempty"` // static: the configuration file
	Grants          int        `json:"grants"`
}

func dynamicJSON(c *store.Client) clientJSON {
	return clientJSON{ID: c.ID, Kind: kindDynamic, Name: c.Name, RedirectURIs: c.RedirectURIs,
		HasSecret: c.SecretHash != "", SecretExpiresAt: timePtr(c.SecretExpiresAt), GrantTypes: c.GrantTypes,
		Scope: c.Scope, AuthMethod: c.TokenEndpointAuthMethod, ApplicationType: c.ApplicationType,
		Created: timePtr(c.CreatedAt), LastUsed: timePtr(c.LastUsedAt)}
}

func (e *adminEnv) staticClient(id string) *clientJSON {
	if e.cfg == nil || e.cfg.OAuth == nil {
		return nil
	}
	for _, c := range e.cfg.OAuth.Clients {
		if c.ID == id {
			return &clientJSON{ID: c.ID, Kind: kindStatic, Name: c.Name, RedirectURIs: c.RedirectURIs,
				HasSecret: c.SecretFile != "", Source: e.cfg.Server.File}
		}
	}
	return nil
}

// isDocumentClient: metadata-document clients are named by their https
// document URL; dynamic client ids are random tokens.
func isDocumentClient(id string) bool { return strings.HasPrefix(id, "https://") }

// clients lists every client mcpgate knows, with its live grant count:
// static ones from the configuration, dynamic ones from the store, and
// metadata-document clients that hold grants (they are not stored).
func (e *adminEnv) clients(ctx context.Context, st store.Store) ([]clientJSON, error) {
	grants, err := st.ListGrants(ctx, store.GrantFilter{}, time.Now())
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, g := range grants {
		count[g.ClientID]++
	}
	var out []clientJSON
	seen := map[string]bool{}
	if e.cfg != nil && e.cfg.OAuth != nil {
		for _, c := range e.cfg.OAuth.Clients {
			cj := *e.staticClient(c.ID)
			cj.Grants = count[c.ID]
			out, seen[c.ID] = append(out, cj), true
		}
	}
	stored, err := st.ListClients(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range stored {
		cj := dynamicJSON(c)
		cj.Grants = count[c.ID]
		out, seen[c.ID] = append(out, cj), true
	}
	for _, g := range grants {
		if !seen[g.ClientID] {
			seen[g.ClientID] = true
			kind := kindDocument
			if !isDocumentClient(g.ClientID) {
				kind = "unknown" // a deleted static client's grants, until they expire
			}
			out = append(out, clientJSON{ID: g.ClientID, Kind: kind, Grants: count[g.ClientID]})
		}
	}
	return out, nil
}

func cmdClientsList(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	_, env, code := adminSetup(fs, args, af, 0)
	if code >= 0 {
		return code
	}
	st, err := env.openStore()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	cs, err := env.clients(context.Background(), st)
	if err != nil {
		return fail(err)
	}
	if *af.asJSON {
		if cs == nil {
			cs = []clientJSON{}
		}
		return printJSON(cs)
	}
	if len(cs) == 0 {
		fmt.Fprintln(stdout, "no clients")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tKIND\tNAME\tGRANTS\tCREATED\tLAST USED")
	for _, c := range cs {
		created, used := "-", "-"
		if c.Created != nil {
			created = timeCell(*c.Created)
		}
		if c.LastUsed != nil {
			used = timeCell(*c.LastUsed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", c.ID, c.Kind, orDash(c.Name, ""), c.Grants, created, used)
	}
	tw.Flush()
	return 0
}

// clientArg takes the one positional argument, a client id.
func clientArg(fs *flag.FlagSet, pos []string) (string, int) {
	if len(pos) == 0 {
		fmt.Fprintf(stderr, "%s: give a client ID\n", fs.Name())
		fs.Usage()
		return "", 2
	}
	return pos[0], -1
}

func cmdClientsShow(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	pos, env, code := adminSetup(fs, args, af, 1)
	if code >= 0 {
		return code
	}
	id, code := clientArg(fs, pos)
	if code >= 0 {
		return code
	}
	st, err := env.openStore()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	ctx := context.Background()
	var cj clientJSON
	if sc := env.staticClient(id); sc != nil {
		cj = *sc
	} else if c, err := st.GetClient(ctx, id); err == nil {
		cj = dynamicJSON(c)
	} else if !errors.Is(err, store.ErrNotFound) {
		return fail(err)
	} else {
		cj = clientJSON{ID: id, Kind: kindDocument}
	}
	gs, err := st.ListGrants(ctx, store.GrantFilter{ClientID: id}, time.Now())
	if err != nil {
		return fail(err)
	}
	cj.Grants = len(gs)
	if cj.Kind == kindDocument && (len(gs) == 0 || !isDocumentClient(id)) {
		return fail(fmt.Errorf("no client %q: not in the configuration, not registered, no grants", id))
	}
	if *af.asJSON {
		return printJSON(cj)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("client_id", cj.ID)
	row("kind", cj.Kind)
	if cj.Kind == kindStatic {
		row("source", orDash(cj.Source, env.cfg.Dir)+" (static: change or remove it in the configuration, then reload)")
	}
	row("name", cj.Name)
	row("redirect_uris", strings.Join(cj.RedirectURIs, " "))
	secret := "no (public client)"
	if cj.HasSecret {
		secret = "yes"
		if cj.SecretExpiresAt != nil {
			secret += ", expires " + timeCell(*cj.SecretExpiresAt)
		}
	}
	if cj.Kind != kindDocument {
		row("secret", secret)
	}
	row("grant_types", strings.Join(cj.GrantTypes, " "))
	row("scope", cj.Scope)
	row("auth_method", cj.AuthMethod)
	row("application_type", cj.ApplicationType)
	if cj.Created != nil {
		row("created", timeCell(*cj.Created))
	}
	if cj.LastUsed != nil {
		row("last_used", timeCell(*cj.LastUsed))
	}
	row("grants", strconv.Itoa(cj.Grants))
	tw.Flush()
	for _, g := range gs {
		fmt.Fprintf(stdout, "  grant %s: %s, %s, since %s\n", g.ID, g.Login, orDash(env.proxyOf(g.Resource), g.Resource), timeCell(g.AuthTime))
	}
	return 0
}

func cmdClientsDelete(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	pos, env, code := adminSetup(fs, args, af, 1)
	if code >= 0 {
		return code
	}
	id, code := clientArg(fs, pos)
	if code >= 0 {
		return code
	}
	if sc := env.staticClient(id); sc != nil {
		return fail(fmt.Errorf("client %q is static: it comes from the configuration (%s); remove it there and reload", id, orDash(sc.Source, env.cfg.Dir)))
	}
	st, err := env.openStore()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	ctx := context.Background()
	until := time.Now().Add(revocationTTL)
	result := struct {
		ClientID string   `json:"client_id"`
		Kind     string   `json:"kind"`
		Revoked  []string `json:"revoked_grants,omitempty"`
	}{ClientID: id}
	gs, err := st.ListGrants(ctx, store.GrantFilter{ClientID: id}, time.Now())
	if err != nil {
		return fail(err)
	}
	for _, g := range gs {
		result.Revoked = append(result.Revoked, g.ID)
	}
	switch err := st.DeleteClient(ctx, id, until); {
	case err == nil:
		result.Kind = kindDynamic
	case !errors.Is(err, store.ErrNotFound):
		return fail(err)
	case isDocumentClient(id):
		// Not stored: revoke what it holds, and forget the consents, so
		// its next login asks again. Its id stays usable, unlike a
		// deleted dynamic client's: the document is the client's.
		result.Kind = kindDocument
		if result.Revoked, err = st.RevokeClientGrants(ctx, id, until); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("no client %q: not registered, not a metadata document URL, not in the configuration", id))
	}
	if *af.asJSON {
		return printJSON(result)
	}
	if result.Kind == kindDynamic {
		fmt.Fprintf(stdout, "deleted dynamic client %s with its consents and %s; its access tokens are refused within a second\n", id, grantCount(len(result.Revoked)))
	} else {
		fmt.Fprintf(stdout, "revoked %s and the consents of metadata-document client %s; it may sign in again, with consent\n", grantCount(len(result.Revoked)), id)
	}
	return 0
}

// Keys.

// keyJSON is one signing key in --json output.
type keyJSON struct {
	Kid     string     `json:"kid"`
	Created time.Time  `json:"created"`
	State   string     `json:"state"`             // "active" or "retiring"
	Retires *time.Time `json:"retires,omitempty"` // leaves the JWKS
}

// openKeys opens the key set with the workers' retention, so that its
// Refresh deletes nothing the workers would keep.
func (e *adminEnv) openKeys(write bool) (*keys.Set, error) {
	if err := e.keyDir(write); err != nil {
		return nil, err
	}
	ttl := revocationTTL // the longest the configuration allows
	if e.cfg != nil && e.cfg.OAuth != nil {
		ttl = e.cfg.OAuth.AccessTokenTTL
	}
	return keys.Open(e.stateDir, keys.Options{RetainFor: keys.RetainFor(ttl)})
}

func keyList(ks *keys.Set) []keyJSON {
	var out []keyJSON
	for _, k := range ks.Keys() {
		kj := keyJSON{Kid: k.Kid, Created: k.Created, State: "retiring", Retires: timePtr(k.Retires)}
		if k.Active {
			kj.State = "active"
		}
		out = append(out, kj)
	}
	return out
}

func cmdKeysList(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	_, env, code := adminSetup(fs, args, af, 0)
	if code >= 0 {
		return code
	}
	ks, err := env.openKeys(false)
	if err != nil {
		return fail(err)
	}
	list := keyList(ks)
	if *af.asJSON {
		return printJSON(list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tCREATED\tSTATE\tLEAVES JWKS")
	for _, k := range list {
		retires := "-"
		if k.Retires != nil {
			retires = timeCell(*k.Retires)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Kid, timeCell(k.Created), k.State, retires)
	}
	tw.Flush()
	return 0
}

func cmdKeysRotate(fs *flag.FlagSet, args []string) int {
	af := newAdminFlags(fs)
	_, env, code := adminSetup(fs, args, af, 0)
	if code >= 0 {
		return code
	}
	ks, err := env.openKeys(true)
	if err != nil {
		return fail(err)
	}
	prev, _ := ks.Signer()
	kid, err := ks.Rotate()
	if err != nil {
		return fail(err)
	}
	list := keyList(ks)
	if *af.asJSON {
		return printJSON(struct {
			Active   string    `json:"active"`
			Previous string    `json:"previous"`
			Keys     []keyJSON `json:"keys"`
		}{kid, prev, list})
	}
	fmt.Fprintf(stdout, "new signing key %s is active; every worker signs with it within a second\n", kid)
	for _, k := range list {
		if k.Kid == prev && k.Retires != nil {
			fmt.Fprintf(stdout, "previous key %s verifies its tokens and stays in the JWKS until %s\n", prev, timeCell(*k.Retires))
		}
	}
	return 0
}
