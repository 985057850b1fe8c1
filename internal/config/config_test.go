package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// okProxy is a minimal proxy file. It requires authentication (the
// default), so it is valid only with [oauth]; openProxy is valid without.
const okProxy = `hostnames = ["ok.example.com"]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
`

// authOff is the [auth] table of a proxy open to everyone.
const authOff = "\n[auth]\nrequired = false\n"

// openProxy is okProxy without authentication.
const openProxy = okProxy + authOff

// withAuthOff returns files with authOff appended to every proxy file that
// parses and has no [auth], so that tests about other things need not
// mention authentication. Appending keeps the line numbers.
func withAuthOff(files map[string]string) map[string]string {
	out := make(map[string]string, len(files))
	for name, content := range files {
		out[name] = content
		if !strings.HasSuffix(name, ".toml") || name == GlobalFile || strings.Contains(name, "/") {
			continue
		}
		var doc map[string]any
		if _, err := toml.Decode(content, &doc); err != nil {
			continue
		}
		if _, ok := doc["auth"]; !ok {
			out[name] = content + authOff
		}
	}
	return out
}

// writeFiles creates files (relative names) below dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// testCert returns a PEM certificate and key, made once per test binary.
var testCert = sync.OnceValues(func() (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "notes.example.com"},
		DNSNames:     []string{"notes.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
})

// writeCert puts a valid pair at dir/tls/notes.crt and dir/tls/notes.key.
// The tls subdirectory is not scanned for proxies.
func writeCert(t *testing.T, dir string) {
	t.Helper()
	cert, key := testCert()
	writeFiles(t, dir, map[string]string{"tls/notes.crt": string(cert), "tls/notes.key": string(key)})
}

// noEnv keeps the caller's STATE_DIRECTORY and CREDENTIALS_DIRECTORY from
// leaking into expectations.
func noEnv(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // $DIR stands for the directory
	}{
		{
			name:  "syntax error",
			files: map[string]string{"notes.toml": "hostnames = [\"a.example.com\"\ntarget = \"x\"\n"},
			want:  `$DIR/notes.toml:2: expected a comma (',') or array terminator (']'), but got 't'`,
		},
		{
			name:  "duplicate key is a syntax error",
			files: map[string]string{"notes.toml": okProxy + "[tls]\n"},
			want:  `$DIR/notes.toml:5: Key 'tls' has already been defined.`,
		},
		{
			name:  "unknown top-level key",
			files: map[string]string{"notes.toml": "colour = \"red\"\n" + okProxy},
			want:  `$DIR/notes.toml:1: colour: unknown key`,
		},
		{
			name:  "unknown nested keys all reported",
			files: map[string]string{"notes.toml": okProxy + "cert = \"x\"\n[timeouts]\nread = \"1s\"\n[headers]\nrequest = { \"X-Env\" = \"prod\" }\nadd = { \"X-A\" = \"b\" }\n"},
			want: `$DIR/notes.toml:5: tls.cert: unknown key
$DIR/notes.toml:7: timeouts.read: unknown key
$DIR/notes.toml:10: headers.add: unknown key`,
		},
		{
			name: "unknown key inside routes",
			files: map[string]string{"notes.toml": okProxy + `[[routes]]
path = "/a"
target = "http://127.0.0.1:1"
[[routes]]
path = "/b"
target = "http://127.0.0.1:2"
strip = true
`},
			want: `$DIR/notes.toml:11: routes[1].strip: unknown key`,
		},
		{
			name:  "unknown global tables and keys",
			files: map[string]string{"mcpgate.toml": "[server]\nport = 8443\n\n[oauth]\nissuer = \"x\"\n\n[idp.gitlab]\nclient_id = \"x\"\n\n[logging]\n"},
			want: `$DIR/mcpgate.toml:2: server.port: unknown key
$DIR/mcpgate.toml:4: oauth.callback_url: required: the redirect URL registered at the identity provider, as in "https://auth.example.com/oauth/callback"
$DIR/mcpgate.toml:5: oauth.issuer: unknown key
$DIR/mcpgate.toml:7: idp: [oauth] needs an identity provider: add [idp.github] or [idp.oidc]
$DIR/mcpgate.toml:7: idp.gitlab: unknown key
$DIR/mcpgate.toml:10: logging: unknown key`,
		},
		{
			name: "wrong types",
			files: map[string]string{"notes.toml": `enabled = "yes"
hostnames = "a.example.com"
target = 3000
preserve_host = 1
tls = "self"
routes = "x"
[timeouts]
connect = 10
[headers]
request = ["X-Env"]
remove_request = [1]
`},
			want: `$DIR/notes.toml:1: enabled: expected a boolean, got string
$DIR/notes.toml:2: hostnames: expected a list of strings, got string
$DIR/notes.toml:3: target: expected a string, got integer
$DIR/notes.toml:4: preserve_host: expected a boolean, got integer
$DIR/notes.toml:5: tls: expected a table, got string
$DIR/notes.toml:6: routes: expected a list of tables, got string
$DIR/notes.toml:8: timeouts.connect: expected a duration string such as "30s", got integer
$DIR/notes.toml:10: headers.request: expected a table of strings, got list
$DIR/notes.toml:11: headers.remove_request[0]: expected a string, got integer`,
		},
		{
			name: "wrong element types in a multi-line array",
			files: map[string]string{"notes.toml": `hostnames = [
  "a.example.com",
  2,
  1979-05-27,
]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
`},
			want: `$DIR/notes.toml:3: hostnames[1]: expected a string, got integer
$DIR/notes.toml:4: hostnames[2]: expected a string, got datetime`,
		},
		{
			name:  "wrong global types",
			files: map[string]string{"mcpgate.toml": "server = { https = \"127.0.0.1:443\", drain_timeout = 5 }\n"},
			want: `$DIR/mcpgate.toml:1: server.drain_timeout: expected a duration string such as "30s", got integer
$DIR/mcpgate.toml:1: server.https: expected a list of strings, got string`,
		},
		{
			name: "bad targets",
			files: map[string]string{
				"a.toml": "hostnames = [\"a.example.com\"]\ntarget = \"ftp://files.example.com\"\n[tls]\nself_signed = true\n",
				"b.toml": "hostnames = [\"b.example.com\"]\ntarget = \"127.0.0.1:3000\"\n[tls]\nself_signed = true\n",
				"c.toml": "hostnames = [\"c.example.com\"]\ntarget = \"http://user:pw@127.0.0.1:3000\"\n[tls]\nself_signed = true\n",
				"d.toml": "hostnames = [\"d.example.com\"]\ntarget = \"http://127.0.0.1:3000/?x=1\"\n[tls]\nself_signed = true\n",
				"e.toml": "hostnames = [\"e.example.com\"]\ntarget = \"http://127.0.0.1:3000/#top\"\n[tls]\nself_signed = true\n",
				"f.toml": "hostnames = [\"f.example.com\"]\ntarget = \"unix:\"\n[tls]\nself_signed = true\n",
				"g.toml": "hostnames = [\"g.example.com\"]\ntarget = \"https://\"\n[tls]\nself_signed = true\n",
				"h.toml": "hostnames = [\"h.example.com\"]\ntarget = \"http://127.0.0.1:99999\"\n[tls]\nself_signed = true\n",
				"i.toml": "hostnames = [\"i.example.com\"]\n[tls]\nself_signed = true\n",
				"j.toml": "hostnames = [\"j.example.com\"]\ntarget = \"http://[::1\"\n[tls]\nself_signed = true\n",
			},
			want: `$DIR/a.toml:2: target: scheme "ftp" is not supported (use http, https or unix:/path.sock)
$DIR/b.toml:2: target: "127.0.0.1:3000" is not a URL (use http, https or unix:/path.sock, as in http://127.0.0.1:3000)
$DIR/c.toml:2: target: must not contain user info; set credentials with [headers] instead
$DIR/d.toml:2: target: must not contain a query
$DIR/e.toml:2: target: must not contain a fragment
$DIR/f.toml:2: target: unix: needs a socket path, as in unix:/run/app.sock
$DIR/g.toml:2: target: missing host
$DIR/h.toml:2: target: invalid port "99999"
$DIR/i.toml: target: required, e.g. target = "http://127.0.0.1:3000"
$DIR/j.toml:2: target: invalid URL: missing ']' in host`,
		},
		{
			name: "missing and broken cert files",
			files: map[string]string{
				"a.toml":      "hostnames = [\"a.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\ncert_file = \"missing.crt\"\nkey_file = \"tls/notes.key\"\n",
				"b.toml":      "hostnames = [\"b.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\ncert_file = \"garbage.pem\"\nkey_file = \"garbage.pem\"\n",
				"c.toml":      "hostnames = [\"c.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\ncert_file = \"tls/notes.crt\"\n",
				"d.toml":      "hostnames = [\"d.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nself_signed = true\nkey_file = \"tls/notes.key\"\n",
				"e.toml":      "hostnames = [\"e.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n[tls]\nself_signed = false\n",
				"f.toml":      "hostnames = [\"f.example.com\"]\ntarget = \"http://127.0.0.1:3000\"\n",
				"garbage.pem": "not PEM\n",
			},
			want: `$DIR/a.toml:4: tls.cert_file: open $DIR/missing.crt: no such file or directory
$DIR/b.toml:4: tls.cert_file: tls: failed to find any PEM data in certificate input
$DIR/c.toml:3: tls.key_file: required with cert_file
$DIR/d.toml:4: tls.self_signed: cannot be combined with cert_file and key_file
$DIR/e.toml:3: tls: set acme = true, or cert_file and key_file (self_signed = true for development)
$DIR/f.toml: tls: set acme = true, or cert_file and key_file (self_signed = true for development)`,
		},
		{
			name: "bad hostnames",
			files: map[string]string{"notes.toml": `hostnames = [
  "bad_host.example.com",
  "127.0.0.1",
  "[::1]",
  "notes.example.com:443",
  "-a.example.com",
  "a..example.com",
  "",
  "` + strings.Repeat("a", 64) + `.example.com",
]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
`},
			want: `$DIR/notes.toml:2: hostnames[0]: "bad_host.example.com": label "bad_host" may only contain letters, digits and '-'
$DIR/notes.toml:3: hostnames[1]: "127.0.0.1": IP addresses cannot be used: TLS SNI cannot carry IP addresses
$DIR/notes.toml:4: hostnames[2]: "[::1]": IP addresses cannot be used: TLS SNI cannot carry IP addresses
$DIR/notes.toml:5: hostnames[3]: "notes.example.com:443": a port is not allowed here
$DIR/notes.toml:6: hostnames[4]: "-a.example.com": label "-a" must not start or end with '-'
$DIR/notes.toml:7: hostnames[5]: "a..example.com": empty label
$DIR/notes.toml:8: hostnames[6]: "": must not be empty
$DIR/notes.toml:9: hostnames[7]: "` + strings.Repeat("a", 64) + `.example.com": label "` + strings.Repeat("a", 64) + `" is longer than 63 characters`,
		},
		{
			name:  "empty hostnames",
			files: map[string]string{"notes.toml": "hostnames = []\n" + strings.SplitN(okProxy, "\n", 2)[1]},
			want:  `$DIR/notes.toml:1: hostnames: at least one hostname is required`,
		},
		{
			name: "wildcard misuse",
			files: map[string]string{"notes.toml": `hostnames = ["*.com", "a.*.example.com", "*a.example.com", "*", "*.*.example.com"]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
`},
			want: `$DIR/notes.toml:1: hostnames[0]: "*.com": a wildcard must be followed by at least two labels, as in "*.example.com"
$DIR/notes.toml:1: hostnames[1]: "a.*.example.com": "*" is only allowed as the whole leftmost label, as in "*.example.com"
$DIR/notes.toml:1: hostnames[2]: "*a.example.com": "*" is only allowed as the whole leftmost label, as in "*.example.com"
$DIR/notes.toml:1: hostnames[3]: "*": "*" is only allowed as the whole leftmost label, as in "*.example.com"
$DIR/notes.toml:1: hostnames[4]: "*.*.example.com": "*" is only allowed once, as the whole leftmost label`,
		},
		{
			name: "duplicate hostname within a file",
			files: map[string]string{"notes.toml": `hostnames = [
  "notes.example.com",
  "Notes.Example.COM.",
]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
`},
			want: `$DIR/notes.toml:3: hostnames: "notes.example.com" is listed more than once`,
		},
		{
			name: "duplicate hostname across files",
			files: map[string]string{
				"a.toml": "# first\nhostnames = [\"x.example.com\", \"shared.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n",
				"b.toml": "hostnames = [\n  \"y.example.com\",\n  \"SHARED.example.com\",\n]\ntarget = \"http://127.0.0.1:2\"\n[tls]\nself_signed = true\n",
				"c.toml": "enabled = false\nhostnames = [\"shared.example.com\"]\ntarget = \"http://127.0.0.1:3\"\n[tls]\nself_signed = true\n",
				"d.toml": "hostnames = [\"*.example.com\"]\ntarget = \"http://127.0.0.1:4\"\n[tls]\nself_signed = true\n",
				"e.toml": "hostnames = [\"y.example.com\"]\ntarget = \"http://127.0.0.1:5\"\n[tls]\nself_signed = true\n",
			},
			want: `$DIR/b.toml:3: hostnames: "shared.example.com" is also claimed by $DIR/a.toml:2
$DIR/e.toml:1: hostnames: "y.example.com" is also claimed by $DIR/b.toml:2`,
		},
		{
			name: "bad proxy_protocol_from",
			files: map[string]string{
				"mcpgate.toml": "[server]\nproxy_protocol_from = [\n  \"10.0.0.0/8\",\n  \"10.0.0.1/8\",\n  \"lb.example.com\",\n  \"2001:db8::/32\",\n  \"10.0.0.0/8\",\n]\n",
			},
			want: `$DIR/mcpgate.toml:4: server.proxy_protocol_from[1]: "10.0.0.1/8": has host bits set; did you mean 10.0.0.0/8?
$DIR/mcpgate.toml:5: server.proxy_protocol_from[2]: "lb.example.com": not an IP address or CIDR prefix
$DIR/mcpgate.toml:7: server.proxy_protocol_from[4]: "10.0.0.0/8" is listed more than once`,
		},
		{
			name: "bad logging and health settings",
			files: map[string]string{
				"mcpgate.toml": "[server]\naccess_log = \"yes\"\nlog_level = \"WARNING\"\nhealth_details = \"none\"\n",
			},
			want: `$DIR/mcpgate.toml:2: server.access_log: expected a boolean, got string
$DIR/mcpgate.toml:3: server.log_level: "WARNING": must be "debug", "info", "warn" or "error"
$DIR/mcpgate.toml:4: server.health_details: "none": must be "loopback" (version and build only for clients on this machine) or "all"`,
		},
		{
			name: "bad metrics address",
			files: map[string]string{
				"mcpgate.toml": "[server]\nmetrics = \"9464\"\n",
			},
			want: `$DIR/mcpgate.toml:2: server.metrics: "9464": not host:port (missing port in address); use host:port or unix:/absolute/path`,
		},
		{
			name: "empty metrics address",
			files: map[string]string{
				"mcpgate.toml": "[server]\nmetrics = \"\"\n",
			},
			want: `$DIR/mcpgate.toml:2: server.metrics: "": must not be empty (omit it to turn metrics off)`,
		},
		{
			name: "metrics on port 0",
			files: map[string]string{
				"mcpgate.toml": "[server]\nmetrics = \"127.0.0.1:0\"\n",
			},
			want: `$DIR/mcpgate.toml:2: server.metrics: "127.0.0.1:0": port 0 picks a random port, which no scraper can find: give a fixed one`,
		},
		{
			name: "relative metrics socket",
			files: map[string]string{
				"mcpgate.toml": "[server]\nmetrics = \"unix:run/metrics.sock\"\n",
			},
			want: `$DIR/mcpgate.toml:2: server.metrics: "unix:run/metrics.sock": the socket path must be absolute and clean, such as unix:/run/mcpgate/metrics.sock`,
		},
		{
			name: "bad durations",
			files: map[string]string{
				"mcpgate.toml": "[server]\ndrain_timeout = \"30\"\n",
				"notes.toml":   okProxy + "[timeouts]\nconnect = \"0s\"\nresponse_header = \"-5m\"\n",
			},
			want: `$DIR/mcpgate.toml:2: server.drain_timeout: invalid duration "30" (use a number with a unit, such as "30s" or "5m")
$DIR/notes.toml:6: timeouts.connect: must be greater than zero
$DIR/notes.toml:7: timeouts.response_header: must be greater than zero`,
		},
		{
			name: "bad headers",
			files: map[string]string{"notes.toml": okProxy + `[headers]
request = { "X-Mcpgate-User" = "eve", Connection = "close", "Bad Name" = "x", "X-Ok" = "a\r\nb", "X_Mcpgate_User" = "eve" }
response = { host = "x", "content-length" = "0", "x-env" = "a", "X-Env" = "b" }
remove_request = ["Keep-Alive", "X-Debug", "x-debug", "TE"]
remove_response = ["x-env"]
`},
			want: `$DIR/notes.toml:6: headers.request."Bad Name": "Bad Name" is not a valid header name
$DIR/notes.toml:6: headers.request.Connection: "Connection" is a hop-by-hop header and cannot be set or removed
$DIR/notes.toml:6: headers.request.X-Mcpgate-User: "X-Mcpgate-User" is reserved (names starting with "X-Mcpgate-" belong to mcpgate)
$DIR/notes.toml:6: headers.request.X-Ok: value must not contain CR, LF or NUL
$DIR/notes.toml:6: headers.request.X_Mcpgate_User: "X_Mcpgate_User": header names may only contain letters, digits and '-'
$DIR/notes.toml:7: headers.response.content-length: "Content-Length" is managed by the proxy and cannot be set or removed
$DIR/notes.toml:7: headers.response.host: "Host" cannot be set or removed (use preserve_host)
$DIR/notes.toml:7: headers.response.x-env: same header as headers.response.X-Env
$DIR/notes.toml:8: headers.remove_request[0]: "Keep-Alive" is a hop-by-hop header and cannot be set or removed
$DIR/notes.toml:8: headers.remove_request[2]: "X-Debug" is listed more than once
$DIR/notes.toml:8: headers.remove_request[3]: "Te" is a hop-by-hop header and cannot be set or removed
$DIR/notes.toml:9: headers.remove_response[0]: "X-Env" is also set in headers.response`,
		},
		{
			name: "bad routes",
			files: map[string]string{"notes.toml": okProxy + `[[routes]]
path = "/"
target = "http://127.0.0.1:1"
[[routes]]
path = "api"
target = "http://127.0.0.1:1"
[[routes]]
path = "/a//b"
target = "http://127.0.0.1:1"
[[routes]]
path = "/a/../b"
target = "http://127.0.0.1:1"
[[routes]]
path = "/q?x"
target = "http://127.0.0.1:1"
[[routes]]
path = "/api/"
target = "http://127.0.0.1:1"
[[routes]]
path = "/api"
target = "gopher://x"
[[routes]]
target = "http://127.0.0.1:1"
`},
			want: `$DIR/notes.toml:6: routes[0].path: "/": "/" would match everything; set target instead
$DIR/notes.toml:9: routes[1].path: "api": must start with "/"
$DIR/notes.toml:12: routes[2].path: "/a//b": must not contain "//"
$DIR/notes.toml:15: routes[3].path: "/a/../b": must not contain a ".." segment
$DIR/notes.toml:18: routes[4].path: "/q?x": must not contain "?" or "#"
$DIR/notes.toml:24: routes[6].path: "/api" is already routed by routes[5]
$DIR/notes.toml:25: routes[6].target: scheme "gopher" is not supported (use http, https or unix:/path.sock)
$DIR/notes.toml:26: routes[7].path: required`,
		},
		{
			name: "bad listen addresses",
			files: map[string]string{"mcpgate.toml": `[server]
https = ["127.0.0.1", "127.0.0.1:https", "[::1]:70000", "bad_host:1", ":8443"]
http = ["[::1]:80", "[0:0::1]:080", "0.0.0.0:8443"]
`},
			want: `$DIR/mcpgate.toml:2: server.https[0]: "127.0.0.1": not host:port (missing port in address)
$DIR/mcpgate.toml:2: server.https[1]: "127.0.0.1:https": invalid port "https" (use a number from 0 to 65535)
$DIR/mcpgate.toml:2: server.https[2]: "[::1]:70000": invalid port "70000" (use a number from 0 to 65535)
$DIR/mcpgate.toml:2: server.https[3]: "bad_host:1": invalid host: label "bad_host" may only contain letters, digits and '-'
$DIR/mcpgate.toml:3: server.http[1]: "[0:0::1]:080" is also listed in server.http[0]`,
		},
		{
			name:  "listen address clashing with a default",
			files: map[string]string{"mcpgate.toml": "[server]\nhttps = [\"127.0.0.1:8080\"]\n"},
			want:  `$DIR/mcpgate.toml:2: server.https[0]: "127.0.0.1:8080" is also the default for server.http (set http explicitly)`,
		},
		{
			name:  "empty state_dir",
			files: map[string]string{"mcpgate.toml": "[server]\nstate_dir = \"\"\n"},
			want:  `$DIR/mcpgate.toml:2: server.state_dir: must not be empty`,
		},
		{
			name: "bad proxy file names",
			files: map[string]string{
				"my proxy.toml": okProxy,
				"-x.toml":       okProxy,
				"ok_1.2-3.toml": okProxy,
			},
			want: `$DIR/-x.toml: "-x" is not a valid proxy name: use letters, digits, '_', '.' and '-', starting with a letter or digit
$DIR/my proxy.toml: "my proxy" is not a valid proxy name: use letters, digits, '_', '.' and '-', starting with a letter or digit`,
		},
		{
			name: "errors in several files at once",
			files: map[string]string{
				"mcpgate.toml":  "[server]\nhttp = [\"nope\"]\n[oauth2]\n",
				"a.toml":        "hostnames = [\"a.example.com\"\n",
				"b.toml":        "hostnames = [\"a.example.com\", \"10.0.0.1\"]\ntarget = \"http://127.0.0.1:1\"\nextra = 1\n[tls]\nself_signed = true\n",
				"c.toml":        "hostnames = [\"c.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n[timeouts]\nconnect = \"soon\"\n",
				"d.toml":        "hostnames = [\"a.example.com\"]\ntarget = \"http://127.0.0.1:1\"\n[tls]\nself_signed = true\n",
				"bad name.toml": "",
			},
			want: `$DIR/a.toml:1: expected a comma (',') or array terminator (']'), but got end of file
$DIR/b.toml:1: hostnames[1]: "10.0.0.1": IP addresses cannot be used: TLS SNI cannot carry IP addresses
$DIR/b.toml:3: extra: unknown key
$DIR/bad name.toml: "bad name" is not a valid proxy name: use letters, digits, '_', '.' and '-', starting with a letter or digit
$DIR/c.toml:6: timeouts.connect: invalid duration "soon" (use a number with a unit, such as "30s" or "5m")
$DIR/d.toml:1: hostnames: "a.example.com" is also claimed by $DIR/b.toml:1
$DIR/mcpgate.toml:2: server.http[0]: "nope": not host:port (missing port in address)
$DIR/mcpgate.toml:3: oauth2: unknown key`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noEnv(t)
			dir := t.TempDir()
			writeCert(t, dir)
			writeFiles(t, dir, withAuthOff(tt.files))
			cfg, err := Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded with %d proxies, want errors", len(cfg.Proxies))
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			want := strings.ReplaceAll(tt.want, "$DIR", dir)
			if got := err.Error(); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestLoadFull(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeCert(t, dir)
	writeFiles(t, dir, map[string]string{
		"mcpgate.toml": `# Global settings.
[server]
https = ["127.0.0.1:8443", "[::1]:8443"]
http = []
state_dir = "state"
drain_timeout = "1m30s"
access_log = false
log_level = "debug"
health_details = "all"
metrics = "unix:/run/mcpgate/metrics.sock"
`,
		"notes.toml": `enabled = true
hostnames = ["Notes.Example.com.", "*.notes.example.com"]
target = "http://127.0.0.1:3000/base/"
preserve_host = true

[tls]
cert_file = "tls/notes.crt"
key_file = "` + filepath.Join(dir, "tls", "notes.key") + `"

[timeouts]
connect = "2s"
response_header = "10m"

[headers]
request = { "x-env" = "prod", "X-Team" = "core" }
response.strict-transport-security = "max-age=63072000"
remove_request = ["x-debug"]
remove_response = ["Server"]

[[routes]]
path = "/api/"
target = "https://api.internal:8443/v1"

[[routes]]
path = "/api/admin"
target = "unix:run/admin.sock"

[[routes]]
path = "/z"
target = "unix:///run/z.sock"

[auth]
required = false
`,
		"legacy.toml": `enabled = false
hostnames = ["notes.example.com"]
target = "unix:/run/legacy.sock"
[tls]
cert_file = "/nonexistent/legacy.crt"
key_file = "/nonexistent/legacy.key"
`,
		"README.md":       "not a proxy",
		".hidden.toml":    "not even TOML [",
		"conf.d/sub.toml": "not scanned [",
		"notes.toml.bak":  "ignored [",
	})
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range cfg.Proxies {
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(p.Hash) {
			t.Errorf("%s: hash %q is not hex sha256", p.Name, p.Hash)
		}
		p.Hash = "" // compared in TestHash
	}
	want := &Config{
		Dir: dir,
		Server: Server{
			File:          filepath.Join(dir, "mcpgate.toml"),
			HTTPS:         []string{"127.0.0.1:8443", "[::1]:8443"},
			HTTP:          []string{},
			StateDir:      filepath.Join(dir, "state"),
			DrainTimeout:  90 * time.Second,
			AccessLog:     false,
			LogLevel:      "debug",
			HealthDetails: "all",
			Metrics:       "unix:/run/mcpgate/metrics.sock",
		},
		ACME: &ACME{DirectoryURL: DefaultACMEDirectory, Challenges: DefaultACMEChallenges},
		Proxies: []*Proxy{
			{
				Name:      "legacy",
				File:      filepath.Join(dir, "legacy.toml"),
				Enabled:   false,
				Hostnames: []string{"notes.example.com"},
				HTTP3:     true,
				Target:    Upstream{Raw: "unix:/run/legacy.sock", Scheme: "http", Host: "legacy", Socket: "/run/legacy.sock"},
				TLS:       TLS{CertFile: "/nonexistent/legacy.crt", KeyFile: "/nonexistent/legacy.key"},
				Timeouts:  Timeouts{Connect: DefaultConnectTimeout, ResponseHeader: DefaultResponseHeaderTimeout},
				// Disabled, so it may require authentication without [oauth].
				Auth: Auth{Required: true, Scopes: []string{"mcp"}, ResourcePath: "/mcp"},
			},
			{
				Name:      "notes",
				File:      filepath.Join(dir, "notes.toml"),
				Enabled:   true,
				Hostnames: []string{"notes.example.com", "*.notes.example.com"},
				Target:    Upstream{Raw: "http://127.0.0.1:3000/base/", Scheme: "http", Host: "127.0.0.1:3000", Path: "/base"},
				Routes: []Route{
					{Path: "/api/admin", Target: Upstream{Raw: "unix:run/admin.sock", Scheme: "http", Host: "notes", Socket: filepath.Join(dir, "run/admin.sock")}},
					{Path: "/api", Target: Upstream{Raw: "https://api.internal:8443/v1", Scheme: "https", Host: "api.internal:8443", Path: "/v1"}},
					{Path: "/z", Target: Upstream{Raw: "unix:///run/z.sock", Scheme: "http", Host: "notes", Socket: "/run/z.sock"}},
				},
				PreserveHost: true,
				HTTP3:        true,
				TLS:          TLS{CertFile: filepath.Join(dir, "tls/notes.crt"), KeyFile: filepath.Join(dir, "tls/notes.key")},
				Headers: Headers{
					Request:        map[string]string{"X-Env": "prod", "X-Team": "core"},
					Response:       map[string]string{"Strict-Transport-Security": "max-age=63072000"},
					RemoveRequest:  []string{"X-Debug"},
					RemoveResponse: []string{"Server"},
				},
				Timeouts: Timeouts{Connect: 2 * time.Second, ResponseHeader: 10 * time.Minute},
				Auth:     Auth{Required: false, Scopes: []string{"mcp"}, ResourcePath: "/mcp"},
			},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load:\n%s\nwant:\n%s", dump(t, cfg), dump(t, want))
	}
	if got := len(cfg.Enabled()); got != 1 {
		t.Errorf("Enabled() has %d proxies, want 1", got)
	}

	wantSummaries := []string{
		"legacy: notes.example.com -> unix:/run/legacy.sock (routes: 0, tls: files, auth: mcp) (disabled)",
		"notes: notes.example.com, *.notes.example.com -> http://127.0.0.1:3000/base/ (routes: 3, tls: files, auth: off)",
	}
	for i, p := range cfg.Proxies {
		if got := p.Summary(); got != wantSummaries[i] {
			t.Errorf("Summary() = %q, want %q", got, wantSummaries[i])
		}
	}
}

func dump(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDefaults(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"notes.toml": openProxy})
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantServer := Server{
		HTTPS:         DefaultHTTPS,
		HTTP:          DefaultHTTP,
		StateDir:      DefaultStateDir,
		DrainTimeout:  DefaultDrainTimeout,
		AccessLog:     true,
		LogLevel:      "info",
		HealthDetails: "loopback",
	}
	if !reflect.DeepEqual(cfg.Server, wantServer) {
		t.Errorf("Server = %+v, want %+v", cfg.Server, wantServer)
	}
	// The defaults must be copies: a caller appending must not change them.
	cfg.Server.HTTPS[0] = "changed"
	if DefaultHTTPS[0] == "changed" {
		t.Error("Server.HTTPS aliases DefaultHTTPS")
	}
	p := cfg.Proxy("notes")
	if p == nil {
		t.Fatal(`Proxy("notes") = nil`)
	}
	if !p.Enabled || p.PreserveHost || p.Routes != nil ||
		!reflect.DeepEqual(p.Headers, Headers{}) ||
		p.Timeouts != (Timeouts{DefaultConnectTimeout, DefaultResponseHeaderTimeout}) ||
		!reflect.DeepEqual(p.Auth, Auth{Scopes: DefaultAuthScopes, ResourcePath: DefaultResourcePath}) {
		t.Errorf("defaults not applied: %+v", p)
	}
	if cfg.OAuth != nil {
		t.Errorf("OAuth = %+v without [oauth], want nil", cfg.OAuth)
	}
	p.Auth.Scopes[0] = "changed"
	if DefaultAuthScopes[0] == "changed" {
		t.Error("Auth.Scopes aliases DefaultAuthScopes")
	}
	if cfg.Proxy("missing") != nil {
		t.Error(`Proxy("missing") != nil`)
	}
}

func TestExplicitEmptyLists(t *testing.T) {
	noEnv(t)
	tests := []struct {
		global      string
		https, http []string
	}{
		{"", DefaultHTTPS, DefaultHTTP},
		{"[server]\n", DefaultHTTPS, DefaultHTTP},
		{"[server]\nhttp = []\n", DefaultHTTPS, []string{}},
		{"[server]\nhttps = []\nhttp = []\n", []string{}, []string{}},
		{"[server]\nhttps = [\"0.0.0.0:443\"]\n", []string{"0.0.0.0:443"}, DefaultHTTP},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"mcpgate.toml": tt.global})
		srv, err := LoadGlobal(dir)
		if err != nil {
			t.Fatalf("%q: %v", tt.global, err)
		}
		// DeepEqual tells []string{} from nil, which is the point here.
		if !reflect.DeepEqual(srv.HTTPS, tt.https) || !reflect.DeepEqual(srv.HTTP, tt.http) {
			t.Errorf("%q: https=%#v http=%#v, want %#v %#v", tt.global, srv.HTTPS, srv.HTTP, tt.https, tt.http)
		}
		if srv.HTTP == nil || srv.HTTPS == nil {
			t.Errorf("%q: nil list; empty must stay non-nil", tt.global)
		}
	}
}

func TestRelativePaths(t *testing.T) {
	noEnv(t)
	base := t.TempDir()
	writeCert(t, filepath.Join(base, "etc"))
	writeFiles(t, base, map[string]string{
		"etc/mcpgate.toml": "[server]\nstate_dir = \"../var/./lib\"\n",
		"etc/notes.toml":   "hostnames = [\"notes.example.com\"]\ntarget = \"unix:sock/../app.sock\"\n[tls]\ncert_file = \"tls/notes.crt\"\nkey_file = \"./tls/notes.key\"\n" + authOff,
	})
	t.Chdir(base)
	cfg, err := Load("etc") // relative dir: values must still come out absolute
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(base, "etc")
	p := cfg.Proxies[0]
	for _, c := range []struct{ name, got, want string }{
		{"Dir", cfg.Dir, etc},
		{"Server.File", cfg.Server.File, filepath.Join(etc, "mcpgate.toml")},
		{"StateDir", cfg.Server.StateDir, filepath.Join(base, "var/lib")},
		{"Proxy.File", p.File, filepath.Join(etc, "notes.toml")},
		{"Socket", p.Target.Socket, filepath.Join(etc, "app.sock")},
		{"CertFile", p.TLS.CertFile, filepath.Join(etc, "tls/notes.crt")},
		{"KeyFile", p.TLS.KeyFile, filepath.Join(etc, "tls/notes.key")},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}

	// Errors name files with the directory exactly as passed in.
	writeFiles(t, base, map[string]string{"etc/bad.toml": "x = 1\n"})
	_, err = Load("etc")
	want := `etc/bad.toml: auth: ` + noOAuthRequired + `
etc/bad.toml: hostnames: at least one hostname is required
etc/bad.toml: target: required, e.g. target = "http://127.0.0.1:3000"
etc/bad.toml: tls: set acme = true, or cert_file and key_file (self_signed = true for development)
etc/bad.toml:1: x: unknown key`
	if err == nil || err.Error() != want {
		t.Errorf("Load(\"etc\") error:\n%v\nwant:\n%s", err, want)
	}
}

func TestStateDirectory(t *testing.T) {
	tests := []struct {
		env, global, want string
	}{
		{"", "", DefaultStateDir},
		{"/run/state/mcpgate", "", "/run/state/mcpgate"},
		{"/var/lib/a:/var/lib/b", "", "/var/lib/a"},
		{"/var/lib/a/", "", "/var/lib/a"},
		{"/var/lib/env", "[server]\nstate_dir = \"/srv/mcpgate\"\n", "/srv/mcpgate"},
	}
	for _, tt := range tests {
		t.Setenv("STATE_DIRECTORY", tt.env)
		dir := t.TempDir()
		if tt.global != "" {
			writeFiles(t, dir, map[string]string{"mcpgate.toml": tt.global})
		}
		srv, err := LoadGlobal(dir)
		if err != nil {
			t.Fatal(err)
		}
		if srv.StateDir != tt.want {
			t.Errorf("STATE_DIRECTORY=%q, mcpgate.toml %q: StateDir = %q, want %q", tt.env, tt.global, srv.StateDir, tt.want)
		}
		if wantFile := tt.global != ""; (srv.File != "") != wantFile {
			t.Errorf("File = %q with mcpgate.toml present=%v", srv.File, wantFile)
		}
	}
}

func TestLoadGlobalIgnoresProxies(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"mcpgate.toml": "[server]\nstate_dir = \"/srv/state\"\n",
		"broken.toml":  "this is not TOML",
	})
	srv, err := LoadGlobal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if srv.StateDir != "/srv/state" {
		t.Errorf("StateDir = %q", srv.StateDir)
	}

	writeFiles(t, dir, map[string]string{"mcpgate.toml": "[server]\nstate_dir = 1\n"})
	_, err = LoadGlobal(dir)
	want := dir + "/mcpgate.toml:2: server.state_dir: expected a string, got integer"
	if err == nil || err.Error() != want {
		t.Errorf("LoadGlobal error = %v, want %s", err, want)
	}
}

func TestHash(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	body := `hostnames = ["a.example.com", "b.example.com"]
target = "http://127.0.0.1:3000"
[tls]
self_signed = true
[headers]
request = { "X-A" = "1", "X-B" = "2", "X-C" = "3" }
[auth]
required = false
`
	writeFiles(t, dir, map[string]string{"notes.toml": body, "other.toml": openProxy})
	load := func() (notes, other string) {
		t.Helper()
		cfg, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Proxy("notes").Hash, cfg.Proxy("other").Hash
	}
	h1, o1 := load()
	h2, o2 := load()
	if h1 != h2 || o1 != o2 {
		t.Fatalf("hash not stable across loads: %s %s / %s %s", h1, h2, o1, o2)
	}

	// Reordering maps and comments does not change the effective config.
	writeFiles(t, dir, map[string]string{"notes.toml": "# comment\n" +
		strings.Replace(body, `"X-A" = "1", "X-B" = "2", "X-C" = "3"`, `"x-c" = "3", "X-A" = "1", "X-B" = "2"`, 1)})
	if h, _ := load(); h != h1 {
		t.Errorf("hash changed after reordering headers: %s != %s", h, h1)
	}

	writeFiles(t, dir, map[string]string{"notes.toml": strings.Replace(body, "3000", "3001", 1)})
	h3, o3 := load()
	if h3 == h1 {
		t.Error("hash unchanged after changing target")
	}
	if o3 != o1 {
		t.Error("other proxy's hash changed with notes.toml")
	}
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Proxy("notes"); p.hash(nil, nil, nil) != p.Hash {
		t.Error("Hash is not the hash of the proxy with Hash empty")
	}
}

func TestDirectoryEntries(t *testing.T) {
	noEnv(t)
	dir := t.TempDir()
	elsewhere := t.TempDir()
	writeFiles(t, elsewhere, map[string]string{"linked.toml": openProxy})
	writeFiles(t, dir, map[string]string{"a.toml": strings.Replace(openProxy, "ok.", "a.", 1)})
	for _, l := range []struct{ target, name string }{
		{filepath.Join(elsewhere, "linked.toml"), "linked.toml"}, // followed
		{elsewhere, "dir.toml"},                                  // a directory: ignored
	} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.toml"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range cfg.Proxies {
		names = append(names, p.Name)
	}
	if want := []string{"a", "linked"}; !reflect.DeepEqual(names, want) {
		t.Errorf("proxies %v, want %v", names, want)
	}

	// A dangling link is most likely a mistake, so it is reported.
	if err := os.Symlink(filepath.Join(elsewhere, "gone.toml"), filepath.Join(dir, "gone.toml")); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	want := dir + "/gone.toml: stat: no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestIOErrors(t *testing.T) {
	noEnv(t)
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := Load(missing)
	if want := missing + ": stat: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %s", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}

	// A typo in the directory name must not silently mean "all defaults".
	if _, err := LoadGlobal(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadGlobal(missing dir) = %v, want fs.ErrNotExist", err)
	}
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	writeFiles(t, dir, map[string]string{"file": ""})
	if _, err := Load(notDir); err == nil || err.Error() != notDir+": not a directory" {
		t.Errorf("Load(file) = %v, want %s: not a directory", err, notDir)
	}

	// A missing mcpgate.toml is fine; one that cannot be read is not.
	if err := os.Mkdir(filepath.Join(dir, GlobalFile), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = LoadGlobal(dir)
	if want := dir + "/mcpgate.toml: read: is a directory"; err == nil || err.Error() != want {
		t.Errorf("LoadGlobal = %v, want %s", err, want)
	}
}

func TestErrorFormat(t *testing.T) {
	list := ErrorList{
		{File: "b.toml", Line: 1, Key: "a", Msg: "m1"},
		{File: "a.toml", Line: 10, Key: "x", Msg: "m2"},
		{File: "a.toml", Line: 2, Key: "y", Msg: "m3"},
		{File: "a.toml", Line: 2, Key: "", Msg: "m4"},
		{File: "a.toml", Msg: "m5"},
	}
	list.sort()
	want := `a.toml: m5
a.toml:2: m4
a.toml:2: y: m3
a.toml:10: x: m2
b.toml:1: a: m1`
	if got := list.Error(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if n := len(list.Unwrap()); n != len(list) {
		t.Errorf("Unwrap returned %d errors, want %d", n, len(list))
	}
	var e *Error
	if !errors.As(error(list), &e) || e != list[0] {
		t.Error("errors.As does not find the first *Error")
	}
}

func TestKeyPathString(t *testing.T) {
	var root keyPath
	tests := []struct {
		p    keyPath
		want string
	}{
		{root, ""},
		{root.key("hostnames").at(1), "hostnames[1]"},
		{root.key("routes").at(0).key("path"), "routes[0].path"},
		{root.key("headers").key("request").key("X-Env"), "headers.request.X-Env"},
		{root.key("headers").key("request").key("a.b c"), `headers.request."a.b c"`},
		{root.key(""), `""`},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	// key and at must not write into a shared backing array.
	base := make(keyPath, 1, 4)
	base[0] = pathElem{key: "a", index: -1}
	x, y := base.key("x"), base.key("y")
	if x.String() != "a.x" || y.String() != "a.y" {
		t.Errorf("aliasing: %s %s", x, y)
	}
}

func TestParsePrefix(t *testing.T) {
	for raw, want := range map[string]string{
		"192.0.2.1":        "192.0.2.1/32",
		"::ffff:192.0.2.1": "192.0.2.1/32",
		"2001:db8::1":      "2001:db8::1/128",
		"10.0.0.0/8":       "10.0.0.0/8",
		"2001:db8::/32":    "2001:db8::/32",
	} {
		got, err := parsePrefix(raw)
		if err != nil || got.String() != want {
			t.Errorf("parsePrefix(%q) = %v, %v; want %s", raw, got, err, want)
		}
	}
}
