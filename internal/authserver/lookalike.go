package authserver

import (
	"net/url"
	"strings"
	"sync"
	"unicode"

	"github.com/mcpgate/mcpgate/internal/policy"
)

// A client ID metadata document names its client freely: anyone can
// publish "Claude" at https://evil.example/client.json. The consent page
// therefore shows the document's host prominently and warns when the name
// imitates a well-known client whose vendor does not own that host.

// wellKnownClient is a client users recognise by name, and the domains
// (and their subdomains) its vendor publishes metadata documents from.
type wellKnownClient struct {
	name    string   // as shown in the warning
	keys    []string // folded names (see foldName) that refer to it
	domains []string
}

var wellKnownClients = []wellKnownClient{
	{"Claude", []string{"claude", "anthropic"}, []string{"claude.ai", "claude.com", "anthropic.com"}},
	{"ChatGPT", []string{"chatgpt", "openai"}, []string{"openai.com", "chatgpt.com"}},
	{"Cursor", []string{"cursor"}, []string{"cursor.com", "cursor.sh", "anysphere.co"}},
	{"Visual Studio Code", []string{"vscode", "visualstudio"}, []string{"visualstudio.com", "vscode.dev", "microsoft.com", "github.com"}},
	{"GitHub Copilot", []string{"copilot", "github"}, []string{"github.com", "githubcopilot.com", "microsoft.com"}},
	{"Windsurf", []string{"windsurf", "codeium"}, []string{"windsurf.com", "codeium.com"}},
	{"Zed", []string{"zed"}, []string{"zed.dev"}},
	{"Gemini", []string{"gemini"}, []string{"google.com"}},
	{"Perplexity", []string{"perplexity"}, []string{"perplexity.ai"}},
	{"Raycast", []string{"raycast"}, []string{"raycast.com"}},
	{"Goose", []string{"goose"}, []string{"block.xyz"}},
	{"Cline", []string{"cline"}, []string{"cline.bot"}},
}

// imitatedClient returns the well-known client that name looks like when
// the metadata document at clientID is not hosted by its vendor, else "".
// Short keys ("zed") must be the whole folded name, so "Zedboard" is not
// flagged; longer ones may appear anywhere ("Claude Desktop (beta)").
func imitatedClient(name, clientID string) string {
	u, err := url.Parse(clientID)
	if err != nil {
		return ""
	}
	host, _ := policy.HostName(u.Host)
	folded := foldName(name)
	if folded == "" {
		return ""
	}
	for _, c := range wellKnownClients {
		matched := false
		for _, k := range c.keys {
			if folded == k || (len(k) >= 5 && strings.Contains(folded, k)) {
				matched = true
				break
			}
		}
		if !matched {
			continue
		}
		for _, d := range c.domains {
			if host == d || strings.HasSuffix(host, "."+d) {
				return ""
			}
		}
		return c.name
	}
	return ""
}

// foldName reduces a display name to lower-case ASCII letters and digits
// for comparison: case, spaces and punctuation, accents, full-width forms
// and the usual homoglyphs (Cyrillic and Greek look-alikes, digits for
// letters, "rn" for "m", "vv" for "w") do not matter.
func foldName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0xFF01 && r <= 0xFF5E { // full-width ASCII
			r -= 0xFEE0
		}
		if unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Cf, r) { // combining marks, zero-width characters
			continue
		}
		r = unicode.ToLower(r)
		if m, ok := confusables()[r]; ok {
			r = m
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return strings.NewReplacer("rn", "m", "vv", "w").Replace(b.String())
}

// confusables maps characters that look like an ASCII letter to it. Built
// on first use (client registration), not at every process start.
var confusables = sync.OnceValue(func() map[rune]rune {
	m := map[rune]rune{
		'0': 'o', '1': 'l', '3': 'e', '4': 'a', '5': 's', '7': 't', '@': 'a', '$': 's', '|': 'l', '!': 'i',
		'ı': 'i', 'ł': 'l', 'ø': 'o', 'đ': 'd', 'ħ': 'h', 'ŧ': 't', 'ß': 's', 'æ': 'a', 'œ': 'o',
	}
	groups := map[rune]string{
		// Latin letters with diacritics (precomposed).
		'a': "àáâãäåāăąǎȁȃạảấầẩẫậắằẳẵặ",
		'c': "çćĉċč",
		'd': "ďḋḍ",
		'e': "èéêëēĕėęěȅȇẹẻẽếềểễệ",
		'g': "ĝğġģǧ",
		'h': "ĥḣḥ",
		'i': "ìíîïĩīĭįǐȉȋịỉ",
		'j': "ĵ",
		'k': "ķǩ",
		'l': "ĺļľŀḷ",
		'n': "ñńņňŉṅṇ",
		'o': "òóôõöōŏőǒȍȏọỏốồổỗộớờởỡợơ",
		'r': "ŕŗřȑȓṛ",
		's': "śŝşšșṡṣ",
		't': "ţťțṫṭ",
		'u': "ùúûüũūŭůűųǔȕȗụủứừửữựư",
		'w': "ŵẁẃẅ",
		'y': "ýÿŷỳỵỷỹ",
		'z': "źżžẓ",
		// Cyrillic and Greek look-alikes (lower case: ToLower runs first),
		// under upper-case keys only to keep this map's keys distinct.
		'A': "аα",
		'B': "ьвβ",
		'C': "сϲ",
		'D': "ԁ",
		'E': "еєεё",
		'H': "һн",
		'I': "іїιίϊ",
		'J': "ј",
		'K': "кκ",
		'L': "ӏ",
		'M': "м",
		'N': "пη",
		'O': "оοσόо",
		'P': "рρ",
		'R': "гя",
		'S': "ѕ",
		'T': "тτ",
		'U': "υџц",
		'V': "ѵν",
		'W': "шωѡ",
		'X': "хχ",
		'Y': "уγ",
	}
	for to, from := range groups {
		for _, r := range from {
			m[r] = unicode.ToLower(to)
		}
	}
	return m
})
