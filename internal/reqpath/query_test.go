package reqpath

import (
	"net/url"
	"strings"
	"testing"
)

func TestQuery(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{in: "", want: ""},
		{in: "a=1&b=2", want: "a=1&b=2"},
		{in: "redirect_uri=http://127.0.0.1/cb?x=1&scope=mcp+read", want: "redirect_uri=http://127.0.0.1/cb?x=1&scope=mcp+read"},
		{in: "a=%20%zz", want: "a=%20%zz"}, // the client's escapes, even broken ones, stay
		{in: `a="<>\^` + "`{|}", want: "a=%22%3C%3E%5C%5E%60%7B%7C%7D"},
		{in: "a=\u00e9", want: "a=%C3%A9"},
		{in: "x /mcp", err: ErrQueryControl},
		{in: "x\t/mcp", err: ErrQueryControl},
		{in: "x\x00", err: ErrQueryControl},
		{in: "x\x7f", err: ErrQueryControl},
	} {
		got, err := Query(tc.in)
		if err != tc.err || got != tc.want {
			t.Errorf("Query(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Query("a=1&b=two&c=http://x/y?z") }); n != 0 {
		t.Errorf("Query allocates %v times for a query that needs no change", n)
	}
}

func FuzzQuery(f *testing.F) {
	for _, s := range []string{"a=1", "x /y", `a="{}"`, "a=\u00e9&b=%41", "%", "?/:@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		out, err := Query(q)
		if err != nil {
			if !strings.ContainsFunc(q, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("Query(%q) refused a query without a space or control character", q)
			}
			return
		}
		for i := 0; i < len(out); i++ {
			if !queryByte(out[i]) {
				t.Fatalf("Query(%q) = %q holds the raw byte %q", q, out, out[i])
			}
		}
		if !strings.Contains(q, "%") {
			if dec, err := url.PathUnescape(out); err != nil || dec != q {
				t.Fatalf("Query(%q) = %q decodes to %q (%v)", q, out, dec, err)
			}
		}
	})
}
