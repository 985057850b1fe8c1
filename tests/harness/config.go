package harness

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Proxy describes one proxy file, <Name>.toml.
type Proxy struct {
	Name      string
	Hostnames []string // the first one without a wildcard is used for health checks
	Target    string
	// Keys is raw TOML placed at top level after hostnames and target,
	// e.g. `preserve_host = true`.
	Keys string
	// Tables is raw TOML appended after the [tls] table, e.g. "[timeouts]\n
	// response_header = \"1s\"" or [[routes]] entries.
	Tables string
	// ACME writes [tls] acme = true instead of certificate files from the
	// test PKI; WaitReady does not wait for such a proxy (it has no
	// certificate until the CA issued one).
	ACME bool
	// Auth is the body of the proxy's [auth] table, e.g. "scopes = [\"mcp\"]".
	// Empty means "required = false": authentication is required by
	// default, and a proxy requiring it without [oauth] in mcpgate.toml is
	// a configuration error. Nothing is added when Tables has its own
	// [auth] table.
	Auth string
}

// Options configure Start and WriteConfig.
type Options struct {
	Proxies []Proxy
	// DrainTimeout is [server] drain_timeout; "2s" when empty so that
	// shutdown at cleanup is quick.
	DrainTimeout string
	// ServerTOML is raw TOML appended inside [server].
	ServerTOML string
	// GlobalTOML is raw TOML appended to mcpgate.toml after [server], e.g.
	// an [acme] table.
	GlobalTOML string
	// HTTPSListener and HTTPListener, when set, are the loopback listeners
	// handed to the gateway (a test that must know the ports before the
	// gateway starts opens them); Start closes its copies.
	HTTPSListener, HTTPListener *net.TCPListener
	// Env is added to the gateway's environment.
	Env []string
	// QUIC passes a UDP socket named "quic" too, for HTTP/3.
	QUIC bool
	// Binary is the mcpgate binary to run; Binary(t) when empty. A test
	// that replaces the binary on disk (reload, upgrade) passes its own
	// copy, see PrivateBinary.
	Binary string
}

// HealthHost is the hostname used to reach p: its first plain hostname, or
// a name under its first wildcard.
func (p Proxy) HealthHost() string {
	for _, h := range p.Hostnames {
		if !strings.HasPrefix(h, "*.") {
			return h
		}
	}
	if len(p.Hostnames) > 0 {
		return "health." + strings.TrimPrefix(p.Hostnames[0], "*.")
	}
	return ""
}

// WriteConfig writes mcpgate.toml and one <name>.toml per proxy into dir,
// issuing each proxy a certificate for its hostnames from pki. stateDir
// becomes [server] state_dir.
func WriteConfig(t testing.TB, dir, stateDir string, pki *PKI, o Options) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	drain := o.DrainTimeout
	if drain == "" {
		drain = "2s"
	}
	// No https/http keys: under socket activation they are not used, and
	// leaving them out is what a systemd deployment would do.
	global := fmt.Sprintf("[server]\nstate_dir = %s\ndrain_timeout = %s\n%s\n%s\n",
		quote(stateDir), quote(drain), o.ServerTOML, o.GlobalTOML)
	writeFile(t, filepath.Join(dir, "mcpgate.toml"), global)

	for _, p := range o.Proxies {
		WriteProxyFile(t, dir, pki, p)
	}
}

// WriteProxyFile writes <dir>/<p.Name>.toml, issuing p a certificate for
// its hostnames from pki. The file is replaced atomically (written under
// another name, then renamed), so a reload running meanwhile reads the old
// file or the new one, never half of one.
func WriteProxyFile(t testing.TB, dir string, pki *PKI, p Proxy) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "hostnames = [")
	for i, h := range p.Hostnames {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(h))
	}
	fmt.Fprintf(&b, "]\ntarget = %s\n", quote(p.Target))
	if p.Keys != "" {
		fmt.Fprintf(&b, "%s\n", p.Keys)
	}
	if p.ACME {
		b.WriteString("\n[tls]\nacme = true\n")
	} else {
		cert, key := pki.Leaf(t, p.Name, p.Hostnames...)
		fmt.Fprintf(&b, "\n[tls]\ncert_file = %s\nkey_file = %s\n", quote(cert), quote(key))
	}
	if p.Tables != "" {
		fmt.Fprintf(&b, "\n%s\n", p.Tables)
	}
	switch {
	case p.Auth != "":
		fmt.Fprintf(&b, "\n[auth]\n%s\n", p.Auth)
	case !hasAuthTable(p.Tables):
		b.WriteString("\n[auth]\nrequired = false\n")
	}
	writeFile(t, filepath.Join(dir, p.Name+".toml"), b.String())
}

// hasAuthTable reports whether raw TOML has an [auth] table header.
func hasAuthTable(tables string) bool {
	for line := range strings.Lines(tables) {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "[auth]") || strings.HasPrefix(l, "[auth.") {
			return true
		}
	}
	return false
}

// quote renders s as a TOML basic string. Go's %q escapes are valid TOML
// for the printable ASCII paths and names used here.
func quote(s string) string { return fmt.Sprintf("%q", s) }

// writeFile replaces path atomically. The temporary name does not end in
// .toml, so the config loader never sees it as a proxy.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
