package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/supervisor"
)

// TestManagedCerts: certificates of serving workers only (a draining
// worker reports the same names, about to go), with their proxy.
func TestManagedCerts(t *testing.T) {
	st := &supervisor.Status{Workers: []supervisor.WorkerStatus{
		{Proxy: "a", State: "draining", Certificates: []certstatus.Cert{{Name: "a.test", State: certstatus.Valid, Serial: "old"}}},
		{Proxy: "a", State: "ready", Certificates: []certstatus.Cert{{Name: "a.test", State: certstatus.Valid, Serial: "new"}}},
		{Proxy: "b", State: "ready"},
		{Proxy: "c", State: "ready", Certificates: []certstatus.Cert{{Name: "c.test", State: certstatus.Obtaining, Error: "rejectedIdentifier: no", ErrorAt: time.Now(), NextTry: time.Now()}}},
	}}
	certs := managedCerts(st)
	if len(certs) != 2 || certs[0].Proxy != "a" || certs[0].Serial != "new" || certs[1].Proxy != "c" {
		t.Fatalf("managedCerts = %+v", certs)
	}
	if c := findCert(st, "A.test."); c == nil || c.Serial != "new" {
		t.Errorf("findCert(A.test.) = %+v", c)
	}
	var b bytes.Buffer
	printCerts(&b, certs)
	out := b.String()
	for _, want := range []string{"NAME", "a.test", "valid", "c.test", "obtaining (next try ", "rejectedIdentifier: no"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestACMESummary(t *testing.T) {
	cfg := &config.Config{
		ACME:    &config.ACME{DirectoryURL: "https://ca.test/dir", Challenges: []string{"http-01"}},
		Proxies: []*config.Proxy{{Name: "files", Enabled: true}},
	}
	if got := acmeSummary(cfg); got != "" {
		t.Errorf("without an ACME proxy: %q", got)
	}
	cfg.Proxies = append(cfg.Proxies, &config.Proxy{Name: "a", Enabled: true, TLS: config.TLS{ACME: true}})
	if got, want := acmeSummary(cfg), "acme: https://ca.test/dir (email: none, challenges: http-01)"; got != want {
		t.Errorf("acmeSummary = %q, want %q", got, want)
	}
}
