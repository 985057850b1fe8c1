package logging

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPrefixedPriorities(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newPrefixed(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("proxy", "notes")
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.WithGroup("g").Error("e", "k", "v")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	want := []string{"<7>", "<6>", "<4>", "<3>"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %q", len(lines), len(want), buf.String())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]+"{") || !strings.Contains(l, `"proxy":"notes"`) {
			t.Errorf("line %d = %q, want prefix %s and the logger's attributes", i, l, want[i])
		}
	}
}

func TestToJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]bool{
		fmt.Sprintf("%d:%d", st.Dev, st.Ino):   true,
		fmt.Sprintf("%d:%d", st.Dev, st.Ino+1): false, // stderr redirected elsewhere
		"":                                     false,
		"garbage":                              false,
	} {
		t.Setenv("JOURNAL_STREAM", v)
		if got := ToJournal(f); got != want {
			t.Errorf("JOURNAL_STREAM=%q: toJournal = %v, want %v", v, got, want)
		}
	}
	// New picks the prefixed handler for the journal.
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	New(f, "info").Warn("careful")
	b, _ := os.ReadFile(f.Name())
	if !strings.HasPrefix(string(b), "<4>{") {
		t.Errorf("journal line %q, want a <4> prefix", b)
	}
}
