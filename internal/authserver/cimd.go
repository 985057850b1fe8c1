package authserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits on fetching a client ID metadata document.
const (
	cimdMaxBytes   = 64 << 10
	cimdTimeout    = 5 * time.Second
	cimdMinCache   = time.Minute
	cimdMaxCache   = 24 * time.Hour
	cimdMaxEntries = 1000
)

// metadataFetcher fetches and caches client ID metadata documents. The
// client_id is a URL chosen by whoever starts a flow, so the fetch is an
// SSRF risk: no private, loopback or link-local addresses (checked on the
// address actually dialled, so DNS rebinding cannot get around it), no
// redirects, bounded time and size.
type metadataFetcher struct {
	hc  *http.Client
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cachedClient // guarded by mu
}

type cachedClient struct {
	c       *client
	expires time.Time
}

func newMetadataFetcher(hc *http.Client, allowPrivate bool, now func() time.Time) *metadataFetcher {
	if hc == nil {
		d := &net.Dialer{Timeout: cimdTimeout}
		if !allowPrivate {
			d.Control = func(network, address string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(address)
				if err != nil {
					return err
				}
				if !publicAddr(ap.Addr()) {
					return fmt.Errorf("metadata document host resolves to a non-public address %s", ap.Addr())
				}
				return nil
			}
		}
		hc = &http.Client{
			Timeout: cimdTimeout,
			Transport: &http.Transport{
				Proxy:                 nil,
				DialContext:           d.DialContext,
				TLSHandshakeTimeout:   cimdTimeout,
				ResponseHeaderTimeout: cimdTimeout,
				MaxIdleConns:          10,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &metadataFetcher{hc: hc, now: now, cache: map[string]cachedClient{}}
}

func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLoopback() && !a.IsLinkLocalUnicast() &&
		!(a.Is4() && a.As4()[0] == 100 && a.As4()[1]&0xC0 == 64) // 100.64.0.0/10 shared address space
}

type metadataDocument struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
}

func (f *metadataFetcher) get(ctx context.Context, id string) (*client, error) {
	now := f.now()
	f.mu.Lock()
	if e, ok := f.cache[id]; ok && now.Before(e.expires) {
		f.mu.Unlock()
		return e.c, nil
	}
	f.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, cimdTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, errUnknownClient
	}
	req.Header.Set("Accept", "application/json")
	res, err := f.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetching metadata document: %v", errUnknownClient, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: metadata document: HTTP %d", errUnknownClient, res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, cimdMaxBytes+1))
	if err != nil || len(body) > cimdMaxBytes {
		return nil, fmt.Errorf("%w: metadata document too large or unreadable", errUnknownClient)
	}
	var doc metadataDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%w: metadata document is not JSON", errUnknownClient)
	}
	if doc.ClientID != id {
		return nil, fmt.Errorf("%w: metadata document client_id does not equal its URL", errUnknownClient)
	}
	if len(doc.RedirectURIs) == 0 {
		return nil, fmt.Errorf("%w: metadata document has no redirect_uris", errUnknownClient)
	}
	for _, u := range doc.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return nil, fmt.Errorf("%w: metadata document redirect_uri %s: %v", errUnknownClient, u, err)
		}
	}
	if m := doc.TokenEndpointAuthMethod; m != "" && m != "none" {
		// Secrets cannot be registered through a document; only public
		// clients (private_key_jwt is not implemented).
		return nil, fmt.Errorf("%w: metadata document token_endpoint_auth_method %q is not supported", errUnknownClient, m)
	}
	grants := doc.GrantTypes
	if len(grants) == 0 {
		grants = []string{"authorization_code"}
	}
	c := &client{ID: id, Name: doc.ClientName, RedirectURIs: doc.RedirectURIs, Public: true, GrantTypes: grants, Kind: kindMetadata}
	f.mu.Lock()
	if len(f.cache) >= cimdMaxEntries {
		for k, e := range f.cache {
			if !now.Before(e.expires) || len(f.cache) >= cimdMaxEntries {
				delete(f.cache, k)
			}
		}
	}
	f.cache[id] = cachedClient{c: c, expires: now.Add(cacheLifetime(res.Header.Get("Cache-Control")))}
	f.mu.Unlock()
	return c, nil
}

// cacheLifetime honours max-age within bounds; no-store still caches for
// the minimum, so one flow does not fetch the document several times.
func cacheLifetime(cc string) time.Duration {
	d := cimdMinCache
	for _, part := range strings.Split(cc, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(strings.ToLower(part)), "=")
		if k == "max-age" {
			if n, err := strconv.Atoi(v); err == nil {
				d = time.Duration(n) * time.Second
			}
		}
	}
	return min(max(d, cimdMinCache), cimdMaxCache)
}
