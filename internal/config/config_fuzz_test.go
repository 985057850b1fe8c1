package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a proxy file and as
// mcpgate.toml. Load must not panic, and every error must be an ErrorList
// entry that points into a real file and line; errors about keys that are in
// the file must have found their line.
func FuzzLoad(f *testing.F) {
	seeds := []struct{ proxy, global string }{
		{okProxy, ""},
		{openProxy, ""},
		{openProxy, "[server]\nhttps = []\nhttp = [\"127.0.0.1:0\"]\nstate_dir = \"state\"\ndrain_timeout = \"1s\"\n"},
		{okProxy + "[auth]\nscopes = [\"mcp\", \"admin\"]\nresource_path = \"/\"\npublic_paths = [\"/docs/\"]\nmcp_users = []\n",
			"[oauth]\ncallback_url = \"https://ok.example.com/cb\"\nallowed_users = [\"*\"]\nrefresh_reuse_grace = \"0s\"\n" +
				"allowed_origins = [\"https://app.example.com:443\"]\n" +
				"[[oauth.clients]]\nclient_id = \"cli\"\nredirect_uris = [\"http://127.0.0.1/cb\", \"cursor://x/cb\"]\n" +
				"[idp.github]\nclient_id = \"x\"\nclient_secret_file = \"fuzz.toml\"\nallowed_orgs = [\"Acme\"]\n"},
		{okProxy + "[auth]\nrequired = true\n",
			"[oauth]\ncallback_url = \"http://ok.example.com\"\nclient_secret = 1\n[idp.oidc]\nissuer = \"https://x/?q\"\nclient_secret_credential = \"a/b\"\nscopes = [\"a b\"]\n[idp.github]\n"},
		{`hostnames = ["a.example.com", "*.a.example.com"]
target = "unix:app.sock"
preserve_host = true
[tls]
cert_file = "c.pem"
key_file = "k.pem"
[timeouts]
connect = "1s"
response_header = "1m"
[headers]
request = { "X-Env" = "prod" }
response.Server = "x"
remove_request = ["X-Debug"]
remove_response = ["Server"]
[[routes]]
path = "/api/"
target = "https://127.0.0.1:4000/v1"
`, "[oauth]\n"},
		{"hostnames = [\n  1,\n  \"x\",\n]\ntarget = 3\n[tls]\nself_signed = \"yes\"\n", "[server]\nhttps = \"x\"\n"},
		{"routes = [{ path = \"/\" }, { target = \"ftp://x\" }]\n[[x]]\n", "server = 1\n"},
		{"t = {\n a = \"\"\"\n\"\"\",\n}\n", "[server]\ndrain_timeout = \"-1s\"\n"},
		{"hostnames = [\"a\"\n", "[server\n"},
		{"\xef\xbb\xbfa = 1\r\n", "x = '''\n'''''\n"},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s.proxy), []byte(s.global))
	}
	f.Setenv("STATE_DIRECTORY", "")
	f.Setenv("CREDENTIALS_DIRECTORY", "")
	f.Fuzz(func(t *testing.T, proxy, global []byte) {
		dir := t.TempDir()
		files := map[string][]byte{"fuzz.toml": proxy, GlobalFile: global}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg, err := Load(dir)
		if err == nil {
			if len(cfg.Proxies) != 1 || cfg.Proxies[0].Hash == "" {
				t.Fatalf("Load succeeded without one hashed proxy: %+v", cfg)
			}
			return
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T %q is not a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			data, ok := files[filepath.Base(e.File)]
			if !ok || filepath.Dir(e.File) != dir {
				t.Fatalf("error names unexpected file: %v", e)
			}
			if lines := strings.Count(string(data), "\n") + 1; e.Line < 0 || e.Line > lines {
				t.Fatalf("line %d outside the file's %d lines: %v", e.Line, lines, e)
			}
			if e.Msg == "" {
				t.Fatalf("empty message: %v", e)
			}
			// These are about keys present in the file, so the locator
			// must have found them.
			if present := e.Msg == "unknown key" || strings.HasPrefix(e.Msg, "expected "); present && e.Line == 0 {
				t.Fatalf("no line for a key in the file: %v", e)
			}
		}
	})
}
