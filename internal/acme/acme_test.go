package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	acmeproto "github.com/mholt/acmez/v3/acme"

	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/logging/logtest"
)

// TestManagerWithoutCA: with the CA unreachable, the names stay
// "obtaining" with the error and the next try in the status, handshakes are
// refused with a reason in the log, storage is private, and nothing binds
// the challenge ports (certmagic finds its stub port taken).
func TestManagerWithoutCA(t *testing.T) {
	t.Setenv(timingEnv, "retry=1h")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	dead.Close() // nothing listens there now: connection refused

	var logs logtest.Buffer
	state := t.TempDir()
	m, err := New(Options{
		Names:    []string{"a.example.com"},
		ACME:     &config.ACME{DirectoryURL: "https://" + addr + "/dir", Challenges: config.DefaultACMEChallenges},
		StateDir: state,
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	info, err := os.Stat(filepath.Join(state, Dir))
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("storage dir: %v, mode %v; want 0700", err, info.Mode())
	}
	m.Start()

	deadline := time.Now().Add(20 * time.Second)
	var st certstatus.Cert
	for {
		st = m.Status()[0]
		if st.Error != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.State != certstatus.Obtaining || !strings.Contains(st.Error, "connection refused") || st.NextTry.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("status %+v; want obtaining, a connection error, next try in about an hour", st)
	}
	// certmagic logs the connection's address: a handshake has one.
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	_, err = m.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.com", SupportedProtos: []string{"h2"}, Conn: c1})
	if err == nil || !strings.Contains(err.Error(), "being obtained") {
		t.Errorf("handshake: %v; want a refusal", err)
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.com", Conn: c1}); err == nil {
		t.Error("handshake for a name not managed here succeeded")
	}
	if !strings.Contains(logs.String(), "TLS handshake refused") || !strings.Contains(logs.String(), "cannot obtain certificate") {
		t.Errorf("log does not say why handshakes fail:\n%s", logs.String())
	}
}

func TestTimingFromEnv(t *testing.T) {
	for v, want := range map[string]string{
		"":                          "",
		"retry=2s,renew_check=1s":   "",
		"retry=soon":                `acme: MCPGATE_ACME_TEST_TIMING: "retry=soon": want a positive duration`,
		"colour=1s":                 `acme: MCPGATE_ACME_TEST_TIMING: unknown setting "colour"`,
		"renew_check=0s":            `acme: MCPGATE_ACME_TEST_TIMING: "renew_check=0s": want a positive duration`,
		"retry=1s,renew_check=-1ms": `acme: MCPGATE_ACME_TEST_TIMING: "renew_check=-1ms": want a positive duration`,
	} {
		t.Setenv(timingEnv, v)
		_, err := timingFromEnv()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("%q: %q, want %q", v, got, want)
		}
	}
	var prod timing
	if prod.retry(0) != time.Minute || prod.retry(1000) != 6*time.Hour {
		t.Error("production retry schedule changed")
	}
}

// TestChallengeFromAnotherProcess: a challenge presented by another worker
// (old or new during a reload) is only in the shared storage; this one
// answers it anyway, over HTTP-01 and TLS-ALPN-01.
func TestChallengeFromAnotherProcess(t *testing.T) {
	state := t.TempDir()
	m, err := New(Options{
		Names:    []string{"a.example.com"},
		ACME:     &config.ACME{DirectoryURL: "https://127.0.0.1:1/dir", Challenges: config.DefaultACMEChallenges},
		StateDir: state,
		Log:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	// What certmagic's distributed solver stores in the presenting process.
	chal := acmeproto.Challenge{
		Type: "http-01", Token: "tok123", KeyAuthorization: "tok123.thumbprint",
		Identifier: acmeproto.Identifier{Type: "dns", Value: "a.example.com"},
	}
	b, _ := json.Marshal(chal)
	key := path.Join("acme", certmagic.StorageKeys.Safe(m.iss.IssuerKey()), "challenge_tokens", "a.example.com.json")
	if err := m.cfg.Storage.Store(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://a.example.com/.well-known/acme-challenge/tok123", nil)
	if !m.HandleHTTPChallenge(rec, req) || rec.Code != http.StatusOK || rec.Body.String() != "tok123.thumbprint" {
		t.Errorf("HTTP-01 from storage: status %d, body %q; want 200 with the key authorization", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	req = httptest.NewRequest(http.MethodGet, "http://a.example.com/other", nil)
	if m.HandleHTTPChallenge(rec, req) {
		t.Error("a request that is no challenge was answered as one")
	}

	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	cert, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.com", SupportedProtos: []string{"acme-tls/1"}, Conn: c1})
	if err != nil {
		t.Fatalf("TLS-ALPN-01 from storage: %v", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "a.example.com" {
		t.Errorf("TLS-ALPN-01 certificate: %v %v", leaf.DNSNames, err)
	}
}
