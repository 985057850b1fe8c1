package tlscert

import (
	"bytes"
	"os"
	"testing"
)

func TestSelfSignedKeptAndRenewed(t *testing.T) {
	dir := t.TempDir()
	c1, err := SelfSigned(dir, "notes", []string{"notes.test", "*.notes.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Leaf.VerifyHostname("x.notes.test"); err != nil {
		t.Errorf("wildcard not covered: %v", err)
	}
	certFile, keyFile := Paths(dir, "notes")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v", fi, err)
	}
	// A restart reuses the certificate clients may have pinned.
	c2, err := SelfSigned(dir, "notes", []string{"notes.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Error("certificate regenerated although it still covers the hosts")
	}
	// A new hostname needs a new certificate.
	c3, err := SelfSigned(dir, "notes", []string{"notes.test", "other.test"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c1.Certificate[0], c3.Certificate[0]) {
		t.Error("certificate not regenerated for a new hostname")
	}
	if err := c3.Leaf.VerifyHostname("other.test"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(certFile); err != nil {
		t.Fatal(err)
	}
}
