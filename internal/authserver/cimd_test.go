package authserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestMetadataDocumentClients: a client_id that is an https URL is fetched,
// must name itself, may only register acceptable redirect URIs, and is
// cached per Cache-Control.
func TestMetadataDocumentClients(t *testing.T) {
	var fetches atomic.Int64
	docs := map[string]any{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		doc, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		json.NewEncoder(w).Encode(doc)
	}))
	defer srv.Close()
	id := func(path string) string { return srv.URL + path }
	docs["/good.json"] = map[string]any{"client_id": id("/good.json"), "client_name": "Good", "redirect_uris": []string{"https://app.example/cb", "http://127.0.0.1/cb"}, "grant_types": []string{"authorization_code", "refresh_token"}}
	docs["/liar.json"] = map[string]any{"client_id": id("/other.json"), "redirect_uris": []string{"https://app.example/cb"}}
	docs["/js.json"] = map[string]any{"client_id": id("/js.json"), "redirect_uris": []string{"javascript:alert(1)"}}
	docs["/secret.json"] = map[string]any{"client_id": id("/secret.json"), "redirect_uris": []string{"https://app.example/cb"}, "token_endpoint_auth_method": "client_secret_basic"}

	now := time.Now()
	f := newMetadataFetcher(srv.Client(), true, func() time.Time { return now })
	c, err := f.get(context.Background(), id("/good.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "Good" || !c.Public || c.Kind != kindMetadata || !c.needsConsent() || !c.allowsRefresh() {
		t.Errorf("client %+v", c)
	}
	if !matchRedirect(c.RedirectURIs, "http://127.0.0.1:5555/cb") || matchRedirect(c.RedirectURIs, "https://evil.example/cb") {
		t.Error("redirect URI rules not applied to the document's URIs")
	}
	if _, err := f.get(context.Background(), id("/good.json")); err != nil || fetches.Load() != 1 {
		t.Errorf("second lookup fetched again (%d fetches, %v)", fetches.Load(), err)
	}
	now = now.Add(11 * time.Minute)
	f.get(context.Background(), id("/good.json"))
	if fetches.Load() != 2 {
		t.Errorf("expired entry not fetched again (%d fetches)", fetches.Load())
	}
	for _, path := range []string{"/liar.json", "/js.json", "/secret.json", "/missing.json"} {
		if _, err := f.get(context.Background(), id(path)); !errors.Is(err, errUnknownClient) {
			t.Errorf("%s: %v, want an unknown client", path, err)
		}
	}
}

// TestMetadataDocumentSSRFGuard: without the lab setting, a document URL
// that resolves to loopback is never fetched.
func TestMetadataDocumentSSRFGuard(t *testing.T) {
	hit := make(chan struct{}, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit <- struct{}{} }))
	defer srv.Close()
	f := newMetadataFetcher(nil, false, time.Now)
	_, err := f.get(context.Background(), srv.URL+"/client.json")
	if !errors.Is(err, errUnknownClient) {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-hit:
		t.Fatal("the loopback server was contacted")
	default:
	}
}
