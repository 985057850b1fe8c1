// Package hygiene holds tests about the tree itself rather than about
// behaviour: conventions that keep it readable for the next person.
package hygiene

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs fails for a package under internal/ without a package
// doc comment saying what it is for (ARCHITECTURE.md points at them).
func TestPackageDocs(t *testing.T) {
	root := filepath.Join("..", "..", "internal")
	n := 0
	err := filepath.WalkDir(root, func(dir string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() == "testdata" {
			if d != nil && d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		name, documented := "", false
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				return err
			}
			name = f.Name.Name
			if f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Package "+name+" ") {
				documented = true
			}
		}
		if name == "" {
			return nil // no Go package here
		}
		n++
		if !documented {
			t.Errorf("%s: package %s has no doc comment starting %q", dir, name, "Package "+name+" ")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Fatalf("found only %d packages under %s; is the walk broken?", n, root)
	}
}
