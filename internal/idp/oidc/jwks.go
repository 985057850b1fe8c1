package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/mcpgate/mcpgate/internal/idp/internal/upstream"
)

// keySet caches the provider's signing keys, fetched from jwks_uri on first
// use and again when a token names an unknown kid (the provider rotated),
// at most once per minRefetch so forged kids cannot make mcpgate hammer the
// provider.
type keySet struct {
	client     *http.Client
	uri        string
	timeout    time.Duration
	minRefetch time.Duration
	now        func() time.Time

	mu    sync.Mutex // serializes fetches and guards the fields below
	keys  []jwk
	tried time.Time // last fetch attempt; zero before the first
}

type jwk struct {
	kid, alg string
	key      any // *rsa.PublicKey or *ecdsa.PublicKey
}

// get returns the key for a token header's kid and alg.
func (ks *keySet) get(ctx context.Context, kid, alg string) (any, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k, err := ks.find(kid, alg); err == nil {
		return k, nil
	}
	if !ks.tried.IsZero() && ks.now().Sub(ks.tried) < ks.minRefetch {
		return ks.find(kid, alg)
	}
	ks.tried = ks.now()
	if err := ks.fetch(ctx); err != nil {
		return nil, err
	}
	return ks.find(kid, alg)
}

func (ks *keySet) find(kid, alg string) (any, error) {
	var match []any
	for _, k := range ks.keys {
		if (kid != "" && k.kid != kid) || (k.alg != "" && k.alg != alg) || !keyFits(k.key, alg) {
			continue
		}
		match = append(match, k.key)
	}
	switch {
	case len(match) == 1:
		return match[0], nil
	case len(match) > 1:
		return nil, fmt.Errorf("several %s keys match kid %q", alg, kid)
	}
	return nil, fmt.Errorf("no %s key with kid %q in the provider's JWKS", alg, kid)
}

func keyFits(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == "RS256"
	case *ecdsa.PublicKey:
		return alg == "ES256" && k.Curve == elliptic.P256()
	}
	return false
}

func (ks *keySet) fetch(ctx context.Context) error {
	req, err := http.NewRequest(http.MethodGet, ks.uri, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := upstream.Do(ctx, ks.client, req, ks.timeout)
	if err != nil {
		return fmt.Errorf("fetching JWKS: %w", err)
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("fetching JWKS: HTTP %d", resp.Status)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(resp.Body, &doc); err != nil {
		return errors.New("fetching JWKS: not a JSON Web Key Set")
	}
	var keys []jwk
	for _, m := range doc.Keys {
		if k, ok := parseJWK(m); ok {
			keys = append(keys, k)
		}
	}
	ks.keys = keys
	return nil
}

// parseJWK returns a verification key, skipping (ok false) keys for
// encryption, of other types and of unsafe sizes.
func parseJWK(m map[string]any) (jwk, bool) {
	s := func(name string) string { v, _ := m[name].(string); return v }
	b := func(name string) []byte {
		v, err := base64.RawURLEncoding.DecodeString(s(name))
		if err != nil {
			return nil
		}
		return v
	}
	if use := s("use"); use != "" && use != "sig" {
		return jwk{}, false
	}
	k := jwk{kid: s("kid"), alg: s("alg")}
	switch s("kty") {
	case "RSA":
		n, e := b("n"), b("e")
		if len(n) < 2048/8 || len(e) == 0 || len(e) > 4 {
			return jwk{}, false
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return jwk{}, false
		}
		k.key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case "EC":
		x, y := b("x"), b("y")
		if s("crv") != "P-256" || len(x) != 32 || len(y) != 32 {
			return jwk{}, false
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return jwk{}, false
		}
		k.key = pub
	default:
		return jwk{}, false
	}
	return k, true
}
