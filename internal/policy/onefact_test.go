package policy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestOneFactOnePlace fails when the host, resource or user-list rules grow
// a second copy outside this package: copies drifted apart once and made an
// authorization bypass (a wildcard proxy lending its lists to an exact one).
func TestOneFactOnePlace(t *testing.T) {
	root := filepath.Join("..", "..")
	forbidden := regexp.MustCompile(`func (\([^)]*\) )?(canonicalHost|CanonicalHost|hostOnly|MatchHostname|EffectiveUsers|ResourceURL|MetadataURL|matchUser|intersects|proxyFor|issuableScopes)\(`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", ".cache", "dist", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if strings.HasPrefix(rel, filepath.Join("internal", "policy")+string(filepath.Separator)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := forbidden.FindString(line); m != "" {
				t.Errorf("%s:%d: %s — host, resource and user-list rules belong to internal/policy", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
