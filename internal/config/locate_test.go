package config

import (
	"testing"

	"github.com/BurntSushi/toml"
)

func TestIndexLines(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want map[string]int // path -> line; every listed path must match
	}{
		{
			name: "top-level keys and comments",
			src:  "# comment\n\na = 1 # trailing\n  b = \"x # not a comment\"\n",
			want: map[string]int{"a": 3, "b": 4},
		},
		{
			name: "tables",
			src:  "[server]\nhttps = []\n\n[ tls ] # spaced\ncert_file = \"x\"\n",
			want: map[string]int{"server": 1, "server.https": 2, "tls": 4, "tls.cert_file": 5},
		},
		{
			name: "nested and implicit tables",
			src:  "[idp.github]\nclient_id = \"x\"\n[idp]\nenabled = true\n",
			want: map[string]int{"idp": 3, "idp.github": 1, "idp.github.client_id": 2, "idp.enabled": 4},
		},
		{
			name: "array of tables with index counting",
			src:  "[[routes]]\npath = \"/a\"\n\n[[routes]]\npath = \"/b\"\ntarget = \"x\"\n",
			want: map[string]int{"routes": 1, "routes[0]": 1, "routes[0].path": 2, "routes[1]": 4, "routes[1].path": 5, "routes[1].target": 6},
		},
		{
			name: "tables below an array of tables",
			src:  "[[a]]\n[a.b]\nx = 1\n[[a]]\n[[a.c]]\ny = 1\n[[a.c]]\ny = 2\n",
			want: map[string]int{"a[0].b": 2, "a[0].b.x": 3, "a[1]": 4, "a[1].c[0]": 5, "a[1].c[0].y": 6, "a[1].c[1].y": 8},
		},
		{
			name: "dotted keys",
			src:  "a.b = 1\na . c = 2\n[t]\nx.y.z = 3\n",
			want: map[string]int{"a": 1, "a.b": 1, "a.c": 2, "t.x": 4, "t.x.y": 4, "t.x.y.z": 4},
		},
		{
			name: "quoted keys",
			src:  "[headers]\n\"X-Env\" = \"a\"\n'X Literal' = \"b\"\n\"a.b\" = 1\n\"esc\\u0041\" = 2\n[\"quoted table\".x]\ny = 1\n",
			want: map[string]int{"headers.X-Env": 2, `headers."X Literal"`: 3, `headers."a.b"`: 4, "headers.escA": 5, `"quoted table".x.y`: 7},
		},
		{
			name: "inline tables",
			src:  "[headers]\nrequest = { \"X-Env\" = \"prod\", X-B = { c = 1 } }\nresponse = {}\n",
			want: map[string]int{"headers.request": 2, "headers.request.X-Env": 2, "headers.request.X-B": 2, "headers.request.X-B.c": 2, "headers.response": 3},
		},
		{
			name: "multi-line inline table (TOML 1.1)",
			src:  "t = {\n  a = 1,\n  # note\n  b = [\n    2,\n  ],\n}\nafter = 1\n",
			want: map[string]int{"t": 1, "t.a": 2, "t.b": 4, "t.b[0]": 5, "after": 8},
		},
		{
			name: "multi-line arrays",
			src:  "hostnames = [\n  \"a\", # first\n  # comment with ] and \"\n  \"b\",\n  'c]',\n]\nnext = 1\n",
			want: map[string]int{"hostnames": 1, "hostnames[0]": 2, "hostnames[1]": 4, "hostnames[2]": 5, "next": 7},
		},
		{
			name: "arrays of inline tables",
			src:  "routes = [\n  { path = \"/a\", target = \"x\" },\n  { path = \"/b\" },\n]\n",
			want: map[string]int{"routes[0].path": 2, "routes[0].target": 2, "routes[1].path": 3},
		},
		{
			name: "nested arrays",
			src:  "a = [[1, 2], [\n3]]\nb = 1\n",
			want: map[string]int{"a[0]": 1, "a[0][1]": 1, "a[1]": 1, "a[1][0]": 2, "b": 3},
		},
		{
			name: "multi-line strings",
			src:  "a = \"\"\"\nx = 1\n[fake]\n\\\"\"\"\"\nb = '''\n[[also]]\n'''''\nc = \"\"\"q\"\"\"\"\"\nd = 1\n",
			want: map[string]int{"a": 1, "b": 5, "c": 8, "d": 9},
		},
		{
			name: "strings with brackets, braces and hashes",
			src:  "a = \"[x] {y} # z\"\nb = 'it\\'\nc = [\"]\", '}', \"\\\"]\"]\nd = 1\n",
			want: map[string]int{"a": 1, "c[0]": 3, "c[1]": 3, "c[2]": 3, "d": 4},
		},
		{
			name: "datetimes and numbers",
			src:  "a = 1979-05-27 07:32:00Z\nb = [1979-05-27T07:32:00, 1_000, -inf, 0x1F]\nc = true\n",
			want: map[string]int{"a": 1, "b[0]": 2, "b[3]": 2, "c": 3},
		},
		{
			name: "CRLF line endings and BOM",
			src:  "\xef\xbb\xbfa = 1\r\n[t]\r\nb = [\r\n  1,\r\n  2\r\n]\r\n",
			want: map[string]int{"a": 1, "t": 2, "t.b": 3, "t.b[1]": 5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The locator only ever sees documents the toml package accepted;
			// make sure the test inputs are such documents.
			var doc map[string]any
			if _, err := toml.Decode(tt.src, &doc); err != nil {
				t.Fatalf("test input is not valid TOML: %v", err)
			}
			ix := indexLines([]byte(tt.src))
			for path, want := range tt.want {
				if got, ok := ix[path]; !ok || got != want {
					t.Errorf("line of %s = %d (found %v), want %d", path, got, ok, want)
				}
			}
			if t.Failed() {
				t.Logf("index: %v", ix)
			}
		})
	}
}

func TestLineFallsBackToParent(t *testing.T) {
	ix := indexLines([]byte("x = 1\n[tls]\ncert_file = \"a\"\n[[routes]]\npath = \"/\"\n"))
	var root keyPath
	tests := []struct {
		p    keyPath
		want int
	}{
		{root.key("tls").key("key_file"), 2},
		{root.key("routes").at(0).key("target"), 4},
		{root.key("routes").at(5).key("target"), 0 + 4}, // routes is known, routes[5] is not
		{root.key("hostnames"), 0},
		{root, 0},
	}
	for _, tt := range tests {
		if got := ix.line(tt.p); got != tt.want {
			t.Errorf("line(%s) = %d, want %d", tt.p, got, tt.want)
		}
	}
}

func TestUnescape(t *testing.T) {
	tests := map[string]string{
		`plain`:      "plain",
		`a\tb`:       "a\tb",
		`\"q\"`:      `"q"`,
		`\\`:         `\`,
		`\u00e9`:     "é",
		`\U0001F600`: "😀",
		`\x41\e`:     "A\x1b",
		`bad\u12`:    `bad\u12`,
		`\q`:         `\q`,
		`trailing\`:  `trailing\`,
		`\uD800`:     `\uD800`, // surrogate: not a valid rune
	}
	for in, want := range tests {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
