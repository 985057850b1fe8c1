package authserver

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/internal/store"
)

func TestFoldName(t *testing.T) {
	for in, want := range map[string]string{
		"Claude":           "claude",
		"C L A U D E":      "claude",
		"Сlaude":           "claude", // Cyrillic Es
		"Clаude":           "claude", // Cyrillic a
		"Cláude":           "claude", // precomposed
		"Cla\u0301ude":     "claude", // combining acute
		"Ｃｌａｕｄｅ":           "claude", // full-width
		"C1aude":           "claude",
		"Chat-GPT":         "chatgpt",
		"ChatGРТ":          "chatgpt", // Cyrillic Er, Te
		"Cu\u200brsor":     "cursor",  // zero-width space
		"VS Code":          "vscode",
		"Wind surf":        "windsurf",
		"GitHub Copi1ot":   "githubcopilot",
		"Cuгsor":           "cursor", // Cyrillic Ghe
		"CuЖsor":           "cusor",  // not every Cyrillic letter is a look-alike
		"Tuner":            "tuner",
		"Notes for Claude": "notesforclaude",
	} {
		if got := foldName(in); got != want {
			t.Errorf("foldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImitatedClient(t *testing.T) {
	for _, c := range []struct {
		name, id, want string
	}{
		{"Claude", "https://claude.ai/oauth/mcp-oauth-client-metadata", ""},
		{"Claude Code", "https://www.anthropic.com/claude-code/client.json", ""},
		{"Claude", "https://evil.example/client.json", "Claude"},
		{"CLAUDE desktop", "https://claude.ai.evil.example/client.json", "Claude"},
		{"Сlaude", "https://evil.example/c.json", "Claude"},
		{"ChatGPT", "https://chatgpt.com/oauth/client.json", ""},
		{"Chat GPT", "https://chatgpt.com.evil.example/c.json", "ChatGPT"},
		{"Cursor", "https://cursor.com/oauth/client.json", ""},
		{"Cursor", "https://cursor.example/c.json", "Cursor"},
		{"Visual Studio Code", "https://vscode.dev/oauth/client-metadata.json", ""},
		{"VS Code", "https://example.org/c.json", "Visual Studio Code"},
		{"GitHub Copilot", "https://evil.example/c.json", "GitHub Copilot"},
		{"Windsurf", "https://windsurf.com/c.json", ""},
		{"Zed", "https://zed.dev/c.json", ""},
		{"Zed", "https://zed.example/c.json", "Zed"},
		{"Zedboard Helper", "https://zedboard.example/c.json", ""}, // short names match whole
		{"Notes", "https://notes.example/c.json", ""},
		{"", "https://evil.example/c.json", ""},
	} {
		if got := imitatedClient(c.name, c.id); got != c.want {
			t.Errorf("imitatedClient(%q, %q) = %q, want %q", c.name, c.id, got, c.want)
		}
	}
}

// TestConsentPage: metadata-document clients are shown with the host that
// publishes them and flagged when they imitate a well-known client;
// dynamically registered clients are flagged as unverified; the form
// carries the flow's proof.
func TestConsentPage(t *testing.T) {
	s, _ := testServer()
	p := &store.Pending{ID: "flow-1", RedirectURI: "http://127.0.0.1:5555/cb", Resource: "https://notes.test/mcp", Login: "alice", Granted: "mcp"}
	render := func(c *client) string {
		w := httptest.NewRecorder()
		s.consentPage(w, httptest.NewRequest("GET", "https://notes.test/oauth/continue", nil), p, c, "the-proof")
		return w.Body.String()
	}
	fake := render(&client{ID: "https://evil.example/clients/claude.json", Name: "Claude", Kind: kindMetadata})
	for _, want := range []string{"Published by <strong>evil.example</strong>", "looks like Claude", `name="proof" value="the-proof"`, `name="flow" value="flow-1"`} {
		if !strings.Contains(fake, want) {
			t.Errorf("consent page for a fake Claude lacks %q:\n%s", want, fake)
		}
	}
	if strings.Contains(fake, "registered itself") {
		t.Error("a metadata-document client is called dynamically registered")
	}
	real := render(&client{ID: "https://claude.ai/oauth/mcp-oauth-client-metadata", Name: "Claude", Kind: kindMetadata})
	if !strings.Contains(real, "Published by <strong>claude.ai</strong>") || strings.Contains(real, "looks like") {
		t.Errorf("consent page for Claude's own document:\n%s", real)
	}
	dyn := render(&client{ID: "mcpgate-123", Name: "Claude", Kind: kindDynamic})
	if !strings.Contains(dyn, "registered itself") || strings.Contains(dyn, "Published by") {
		t.Errorf("consent page for a dynamically registered client:\n%s", dyn)
	}
	static := render(&client{ID: "cli", Name: "CLI", Kind: kindStatic})
	if strings.Contains(static, "registered itself") || strings.Contains(static, "Published by") || strings.Contains(static, "looks like") {
		t.Errorf("consent page for a static client:\n%s", static)
	}
}
