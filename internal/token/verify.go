package token

import (
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/keys"
)

// Errors returned by Verify. Each error wraps exactly one of them, and none
// contains the token. A resource server answers all of them with
// invalid_token (RFC 6750).
var (
	ErrMalformed    = errors.New("token: malformed")
	ErrAlgorithm    = errors.New("token: algorithm not allowed")
	ErrType         = errors.New("token: not an access token")
	ErrUnknownKey   = errors.New("token: unknown signing key")
	ErrSignature    = errors.New("token: invalid signature")
	ErrExpired      = errors.New("token: expired")
	ErrNotYetValid  = errors.New("token: not valid yet")
	ErrMissingClaim = errors.New("token: missing claim")
	ErrIssuer       = errors.New("token: issuer not accepted")
	ErrAudience     = errors.New("token: wrong audience")
	ErrRevoked      = errors.New("token: revoked")
)

const (
	// MaxSize bounds the tokens Verify looks at; mcpgate's are about 1 KiB.
	MaxSize = 8 << 10
	// MaxLeeway is the most clock skew VerifierOptions.Leeway may allow.
	MaxLeeway = 5 * time.Second
	// DefaultCacheSize is the verified-token cache size when
	// VerifierOptions.CacheSize is zero.
	DefaultCacheSize = 100_000
	// refreshInterval rate-limits key refreshes caused by unknown kids,
	// which anybody can send.
	refreshInterval = time.Second
)

// KeySource gives the verification keys; *keys.Set implements it.
type KeySource interface {
	PublicKey(kid string) (*rsa.PublicKey, bool)
	// Refresh re-reads the keys; called for an unknown kid, at most once
	// per second.
	Refresh() error
}

var _ KeySource = (*keys.Set)(nil)

// VerifierOptions configure a Verifier.
type VerifierOptions struct {
	Keys KeySource // required
	// AcceptIssuer reports whether iss is one of the gateway's issuers
	// (one per hostname). Required. Like Revoked, it is called on every
	// Verify, concurrently, so a configuration reload takes effect for
	// cached tokens too.
	AcceptIssuer func(iss string) bool
	// Revoked, if set, is asked on every Verify, cached token or not, and
	// must be fast: it runs on the request path. It must not modify p.
	Revoked func(p *identity.Principal) bool
	// Leeway is the clock skew allowed on exp, nbf and iat: 0 (the issuer
	// is this machine) up to MaxLeeway.
	Leeway time.Duration
	// CacheSize bounds the verified-token cache: 0 means DefaultCacheSize,
	// a negative value disables the cache.
	CacheSize int
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Verifier checks access tokens. It is safe for concurrent use.
type Verifier struct {
	keys     KeySource
	accept   func(string) bool
	revoked  func(*identity.Principal) bool
	leeway   time.Duration
	now      func() time.Time
	parser   *jwt.Parser
	cache    *cache // nil: disabled
	lastRefr atomic.Int64
}

// NewVerifier returns a Verifier.
func NewVerifier(o VerifierOptions) (*Verifier, error) {
	switch {
	case o.Keys == nil:
		return nil, errors.New("token: verifier needs keys")
	case o.AcceptIssuer == nil:
		return nil, errors.New("token: verifier needs AcceptIssuer")
	case o.Leeway < 0 || o.Leeway > MaxLeeway:
		return nil, fmt.Errorf("token: leeway %v outside 0..%v", o.Leeway, MaxLeeway)
	}
	v := &Verifier{
		keys:    o.Keys,
		accept:  o.AcceptIssuer,
		revoked: o.Revoked,
		leeway:  o.Leeway,
		now:     o.Now,
	}
	if v.now == nil {
		v.now = time.Now
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{keys.Algorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(o.Leeway),
		jwt.WithTimeFunc(v.now),
		jwt.WithStrictDecoding(), // one token, one encoding: no malleable trailing bits
	)
	switch size := o.CacheSize; {
	case size == 0:
		v.cache = newCache(DefaultCacheSize)
	case size > 0:
		v.cache = newCache(size)
	}
	return v, nil
}

// Verify checks raw, the bearer token of a request to the protected
// resource audience, and returns who it stands for. The Principal is
// shared with the cache: read it, never modify it.
func (v *Verifier) Verify(raw, audience string) (*identity.Principal, error) {
	if raw == "" || len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: empty or longer than %d bytes", ErrMalformed, MaxSize)
	}
	now := v.now()
	var sum [sha256.Size]byte
	if v.cache != nil {
		sum = sha256Sum(raw)
		if e := v.cache.get(&sum); e != nil {
			// The signing key must still be in the set: deleting a key
			// (retirement, or by hand after a compromise) invalidates
			// cached tokens at the next keys.Refresh.
			if pub, ok := v.keys.PublicKey(e.kid); ok && pub == e.pub {
				return v.check(e, audience, now)
			}
			v.cache.del(&sum)
		}
	}
	c, kid, pub, err := v.verify(raw)
	if err != nil {
		return nil, err
	}
	e := &entry{claims: c, kid: kid, pub: pub, expires: c.ExpiresAt.Add(v.leeway)}
	if c.HasAudience(audience) {
		e.who = c.principal(audience)
	}
	if v.cache != nil && e.who != nil {
		v.cache.put(&sum, e, now)
	}
	return v.check(e, audience, now)
}

// sha256Sum is the cache key of raw. The cache is keyed by the token's
// SHA-256, not the token: it then holds no usable bearer token, and a key
// costs 32 bytes instead of about 1 KiB. unsafe: the hash reads the
// string's bytes without the copy []byte(raw) would make on the hot path.
func sha256Sum(raw string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}

// check is what Verify does on every call: expiry, issuer, audience,
// revocation. e is shared with the cache.
func (v *Verifier) check(e *entry, audience string, now time.Time) (*identity.Principal, error) {
	c := e.claims
	if !now.Before(c.ExpiresAt.Add(v.leeway)) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if !v.accept(c.Issuer) {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	}
	// Exact string match (RFC 8707, RFC 9068 section 4): audiences are
	// canonical when issued, and a near miss is another resource.
	if audience == "" || !c.HasAudience(audience) {
		return nil, fmt.Errorf("%w: token is for %q, not %q", ErrAudience, []string(c.Audience), audience)
	}
	who := e.who
	if who == nil || who.Audience != audience {
		// A token with several audiences is cached for the first one it
		// was presented for; the principal names the one accepted here.
		who = c.principal(audience)
	}
	if v.revoked != nil && v.revoked(who) {
		return nil, fmt.Errorf("%w: jti %q, grant %q", ErrRevoked, c.ID, c.GrantID)
	}
	return who, nil
}

// verify parses raw and checks what does not change between calls: the
// header, the signature and the presence of the required claims.
func (v *Verifier) verify(raw string) (c *Claims, kid string, pub *rsa.PublicKey, err error) {
	var keyErr error
	c = new(Claims)
	tok, err := v.parser.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		// jwt has checked alg against WithValidMethods before calling.
		typ, _ := t.Header["typ"].(string)
		if !strings.EqualFold(typ, Type) && !strings.EqualFold(typ, "application/"+Type) {
			keyErr = fmt.Errorf("%w: typ %q", ErrType, typ)
			return nil, keyErr
		}
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 section 4.1.11: we understand no extension.
			keyErr = fmt.Errorf("%w: crit header", ErrMalformed)
			return nil, keyErr
		}
		kid, _ = t.Header["kid"].(string)
		if kid == "" {
			keyErr = fmt.Errorf("%w: no kid", ErrUnknownKey)
			return nil, keyErr
		}
		var ok bool
		if pub, ok = v.publicKey(kid); !ok {
			keyErr = fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
			return nil, keyErr
		}
		return pub, nil
	})
	if err != nil {
		return nil, "", nil, v.classify(tok, err, keyErr)
	}
	var missing []string
	for _, m := range []struct {
		name  string
		empty bool
	}{
		{"iss", c.Issuer == ""},
		{"sub", c.Subject == ""},
		{"aud", len(c.Audience) == 0},
		{"iat", c.IssuedAt == nil},
		{"jti", c.ID == ""},
		{"client_id", c.ClientID == ""},
	} {
		if m.empty {
			missing = append(missing, m.name)
		}
	}
	if missing != nil {
		return nil, "", nil, fmt.Errorf("%w: %s", ErrMissingClaim, strings.Join(missing, ", "))
	}
	return c, kid, pub, nil
}

// publicKey looks kid up, refreshing the key set once if it is unknown and
// no refresh happened in the last second: another process may just have
// rotated.
func (v *Verifier) publicKey(kid string) (*rsa.PublicKey, bool) {
	if pub, ok := v.keys.PublicKey(kid); ok {
		return pub, true
	}
	// Monotonic time, not v.now: this limits work, it is not token time.
	now := time.Now().UnixNano()
	last := v.lastRefr.Load()
	if now-last < int64(refreshInterval) || !v.lastRefr.CompareAndSwap(last, now) {
		return nil, false
	}
	if err := v.keys.Refresh(); err != nil {
		return nil, false
	}
	return v.keys.PublicKey(kid)
}

// classify maps a jwt error to ours, without jwt's text, which can quote
// decoding details.
func (v *Verifier) classify(tok *jwt.Token, err, keyErr error) error {
	if keyErr != nil {
		return keyErr
	}
	if tok != nil && tok.Header != nil {
		if alg, _ := tok.Header["alg"].(string); alg != keys.Algorithm {
			return fmt.Errorf("%w: %q", ErrAlgorithm, alg)
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: cannot decode", ErrMalformed)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrSignature
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return fmt.Errorf("%w: exp", ErrMissingClaim)
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("%w: nbf in the future", ErrNotYetValid)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fmt.Errorf("%w: iat in the future", ErrNotYetValid)
	}
	return fmt.Errorf("%w: invalid", ErrMalformed)
}

// VerifyAnyAudience checks what Verify checks except the audience and the
// revocation hook: for revocation and introspection at the authorization
// server, which serves every resource of the gateway and decides about
// revocation itself. It does not use the cache. The Principal's Audience
// is the token's first.
func (v *Verifier) VerifyAnyAudience(raw string) (*identity.Principal, error) {
	if raw == "" || len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: empty or longer than %d bytes", ErrMalformed, MaxSize)
	}
	c, _, _, err := v.verify(raw)
	if err != nil {
		return nil, err
	}
	if !v.now().Before(c.ExpiresAt.Add(v.leeway)) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if !v.accept(c.Issuer) {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	}
	return c.principal(""), nil
}
