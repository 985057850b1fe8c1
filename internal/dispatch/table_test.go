package dispatch

import (
	"testing"

	"github.com/mcpgate/mcpgate/internal/wire"
)

type fakeTarget string

func (f fakeTarget) Deliver(wire.Kind, Conn, []byte, []byte) error { return nil }
func (f fakeTarget) Name() string                                  { return string(f) }

func TestTableLookup(t *testing.T) {
	tb := NewTable()
	tb.Add("notes.example.com", fakeTarget("notes"))
	tb.Add("*.example.com", fakeTarget("wild"))
	tb.Add("*.deep.example.com", fakeTarget("deep"))
	tb.Add("Other.Example.ORG.", fakeTarget("other"))
	tests := []struct {
		host, want string
	}{
		{"notes.example.com", "notes"},
		{"NOTES.example.com.", "notes"},
		{"docs.example.com", "wild"},
		{"a.b.example.com", ""}, // a wildcard covers one label only
		{"x.deep.example.com", "deep"},
		{"example.com", ""},
		{"other.example.org", "other"},
		{"", ""},
		{".example.com", ""},
		{"unknown.test", ""},
	}
	for _, tt := range tests {
		got := ""
		if tg := tb.Lookup(tt.host); tg != nil {
			got = tg.Name()
		}
		if got != tt.want {
			t.Errorf("Lookup(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
	var nilTable *Table
	if nilTable.Lookup("x") != nil {
		t.Error("nil table found a target")
	}
}
