package fakeoidc

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestDiscoveryJWKSAndToken(t *testing.T) {
	s := New(t)
	s.RegisterClient("c", "sec", "http://127.0.0.1:1/cb")
	s.AddUser(User{Sub: "u1", PreferredUsername: "alice"})
	s.SetLoginAs("u1")
	var doc map[string]any
	resp, err := http.Get(s.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if doc["issuer"] != s.URL || doc["jwks_uri"] != s.URL+"/jwks" {
		t.Fatalf("discovery %v", doc)
	}
	var jwks struct{ Keys []map[string]string }
	resp, _ = http.Get(s.URL + "/jwks")
	json.NewDecoder(resp.Body).Decode(&jwks)
	resp.Body.Close()
	if len(jwks.Keys) != 1 || jwks.Keys[0]["kty"] != "RSA" || jwks.Keys[0]["alg"] != "RS256" || s.JWKSFetches() != 1 {
		t.Fatalf("jwks %v", jwks)
	}

	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	resp, err = c.Get(s.URL + "/authorize?response_type=code&scope=openid&client_id=c&state=st&nonce=n&redirect_uri=" + url.QueryEscape("http://127.0.0.1:1/cb"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {"http://127.0.0.1:1/cb"}}
	// client_secret_post is refused while client_secret_basic is advertised.
	resp, _ = c.PostForm(s.URL+"/token", url.Values{"client_id": {"c"}, "client_secret": {"sec"}, "code": form["code"]})
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("post auth: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("c", "sec")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]any
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 200 || tok["token_type"] != "Bearer" || strings.Count(tok["id_token"].(string), ".") != 2 {
		t.Fatalf("token: %d %v", resp.StatusCode, tok)
	}
}

func TestPKCEAndNonce(t *testing.T) {
	s := New(t)
	s.RegisterClient("c", "sec", "http://127.0.0.1:1/cb")
	s.AddUser(User{Sub: "u1"})
	s.SetLoginAs("u1")
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // RFC 7636 appendix B
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	exchange := func(v string) (int, map[string]any) {
		resp, err := c.Get(s.URL + "/authorize?" + url.Values{"response_type": {"code"}, "scope": {"openid"}, "client_id": {"c"},
			"state": {"st"}, "nonce": {"n-1"}, "redirect_uri": {"http://127.0.0.1:1/cb"},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
			"redirect_uri": {"http://127.0.0.1:1/cb"}, "code_verifier": {v}}
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("c", "sec")
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if st, body := exchange("wrong"); st != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("wrong verifier: %d %v", st, body)
	}
	st, body := exchange(verifier)
	if st != http.StatusOK {
		t.Fatalf("right verifier: %d %v", st, body)
	}
	parts := strings.Split(body["id_token"].(string), ".")
	if len(parts) != 3 {
		t.Fatalf("id_token %v", body)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	json.Unmarshal(raw, &claims)
	if claims["nonce"] != "n-1" {
		t.Errorf("nonce claim %v, want the request's", claims["nonce"])
	}
}
