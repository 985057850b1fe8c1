// Package storetest is the conformance suite for store.Store backends, in
// the manner of dex's storage/conformance: a backend's tests call Run with
// a constructor of fresh, empty stores, and a backend that passes behaves as
// the authorization server expects.
//
// Beyond the comments in package store, the suite pins these details:
//   - Times round-trip with at least millisecond precision (the suite uses
//     UTC times truncated to milliseconds) and come back as equal instants.
//   - A nil and an empty list (or Metadata) are the same.
//   - Something with an ExpiresAt is valid while now < ExpiresAt; Get,
//     Take, Update, Consume and Rotate treat an expired item as absent
//     (ErrNotFound).
//   - Create and PutPending of a key that exists: ErrAlreadyExists, and the
//     stored item is unchanged. PutConsent replaces.
//   - UpdateClient, DeleteClient, UpdatePending and DeleteRefreshToken of
//     an unknown key: ErrNotFound, and nothing changes (no revocation is
//     logged for an unknown client).
//   - ConsumeAuthCode of a used code returns the code (UsedAt of the first
//     use) with ErrAlreadyUsed, also after the code expired, until Cleanup
//     removed it: reuse must stay detectable for the code's lifetime.
//   - RotateRefreshToken whose successor hash exists: ErrAlreadyExists and
//     the old token stays unrotated (and without a RotationNonce).
//   - CountEvent's window opens at the key's first event and the count is
//     atomic across every Store instance on the same backing data.
//   - DeleteUnusedClients removes exactly what DeleteClient would, for
//     each client last used before the cut-off.
//   - RevokeGrant logs its revocation even when no refresh token of the
//     grant is left (access tokens of the grant may still be live), and
//     removes the grant's codes too.
//   - ListGrants lists a family once, by its current (unrotated) token;
//     a family whose current token expired is not listed. The user filter
//     matches a subject exactly and a login ASCII case-insensitively.
//   - Revocation Seq values are never reused, also after Cleanup removed
//     the newest entries, and a reader never sees a Seq before all smaller
//     ones are visible (workers keep a cursor). A backend whose sequence
//     can commit out of order (PostgreSQL) must serialize revocation
//     inserts or derive the cursor differently.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

// Run runs the suite. newStore returns a fresh, empty store for each
// subtest; Run closes it when the subtest ends.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"Client/CreateGet", testClientCreateGet},
		{"Client/CreateDuplicate", testClientCreateDuplicate},
		{"Client/GetUnknown", testClientGetUnknown},
		{"Client/Update", testClientUpdate},
		{"Client/Delete", testClientDelete},
		{"Client/TouchAndCollectUnused", testClientTouchAndCollect},
		{"Client/List", testClientList},

		{"Pending/PutGetTake", testPendingPutGetTake},
		{"Pending/PutDuplicate", testPendingPutDuplicate},
		{"Pending/Update", testPendingUpdate},
		{"Pending/Expired", testPendingExpired},
		{"Pending/BindOnce", testPendingBindOnce},
		{"Pending/Count", testPendingCount},

		{"AuthCode/ConsumeOnce", testAuthCodeConsumeOnce},
		{"AuthCode/Unknown", testAuthCodeUnknown},
		{"AuthCode/Expired", testAuthCodeExpired},
		{"AuthCode/CreateDuplicate", testAuthCodeCreateDuplicate},

		{"RefreshToken/CreateGet", testRefreshCreateGet},
		{"RefreshToken/Rotate", testRefreshRotate},
		{"RefreshToken/RotateErrors", testRefreshRotateErrors},
		{"RefreshToken/RevokeGrant", testRevokeGrant},
		{"RefreshToken/Delete", testRefreshDelete},
		{"RefreshToken/FamilyAbsoluteExpiry", testRefreshFamilyExpiry},

		{"Grant/List", testGrantList},
		{"Grant/RevokeClientGrants", testRevokeClientGrants},

		{"RateLimit/CountEvent", testCountEvent},

		{"Revocation/AccessToken", testRevokeAccessToken},
		{"Revocation/CursorLimitExpiry", testRevocationsCursor},
		{"Revocation/SeqNotReused", testRevocationsSeqNotReused},

		{"Consent", testConsent},
		{"Cleanup", testCleanup},

		{"Race/CreateClient", testRaceCreateClient},
		{"Race/ConsumeAuthCode", testRaceConsumeAuthCode},
		{"Race/RotateRefreshToken", testRaceRotateRefreshToken},
		{"Race/RotateSameSuccessor", testRaceRotateSameSuccessor},
		{"Race/CountEvent", testRaceCountEvent},
		{"Race/TakePending", testRaceTakePending},
		{"Race/BindPending", testRaceBindPending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.run(t, s)
		})
	}
}

// racers is how many goroutines race for one item.
const racers = 8

// now is the suite's clock: real time, so a backend may compare with its
// own clock, truncated to what every backend keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func sampleClient(id string, t0 time.Time) *store.Client {
	return &store.Client{
		ID:                      id,
		SecretHash:              hash("secret-" + id),
		SecretExpiresAt:         t0.Add(90 * 24 * time.Hour),
		RedirectURIs:            []string{"https://app.example/cb", "http://127.0.0.1/cb"},
		Name:                    "Client " + id,
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		ResponseTypes:           []string{"code"},
		TokenEndpointAuthMethod: "client_secret_basic",
		Scope:                   "mcp user",
		ApplicationType:         "web",
		Metadata:                []byte(`{"client_name":"Client ` + id + `"}`),
		RegistrationTokenHash:   hash("rat-" + id),
		CreatedAt:               t0,
		UpdatedAt:               t0,
		LastUsedAt:              t0,
	}
}

func samplePending(id string, expires time.Time) *store.Pending {
	return &store.Pending{
		ID:                  id,
		Host:                "mcp.example.com",
		ClientID:            "client-1",
		RedirectURI:         "http://127.0.0.1:33418/callback",
		State:               "client-state-" + id,
		CodeChallenge:       hash("verifier-" + id),
		CodeChallengeMethod: "S256",
		Scope:               "mcp",
		Resource:            "https://mcp.example.com/mcp",
		ClientKey:           "192.0.2.7",
		UpstreamVerifier:    "upstream-verifier-" + id,
		Nonce:               "nonce-" + id,
		ProofHash:           hash("proof-" + id),
		ExpiresAt:           expires,
	}
}

func sampleCode(code, clientID string, expires time.Time) *store.AuthCode {
	return &store.AuthCode{
		CodeHash:      hash(code),
		GrantID:       "grant-" + code,
		ClientID:      clientID,
		RedirectURI:   "http://127.0.0.1:33418/callback",
		CodeChallenge: hash("verifier-" + code),
		Resource:      "https://mcp.example.com/mcp",
		Scope:         "mcp user",
		Subject:       "12345",
		Login:         "alice",
		Host:          "mcp.example.com",
		Orgs:          []string{"acme"},
		Teams:         []string{"acme/platform"},
		AuthTime:      expires.Add(-time.Minute),
		ExpiresAt:     expires,
	}
}

func sampleToken(token, grantID, clientID string, created, expires time.Time) *store.RefreshToken {
	return &store.RefreshToken{
		TokenHash: hash(token),
		GrantID:   grantID,
		ClientID:  clientID,
		Subject:   "12345",
		Login:     "alice",
		Scope:     "mcp",
		Resource:  "https://mcp.example.com/mcp",
		Host:      "mcp.example.com",
		Orgs:      []string{"acme", "globex"},
		Teams:     []string{"acme/platform"},
		AuthTime:  created,
		CreatedAt: created,
		ExpiresAt: expires,
	}
}

// Assertions.

func ok(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

var timeType = reflect.TypeFor[time.Time]()

// normalize copies v with times as plain UTC instants and empty slices as
// nil, the equivalences the contract allows.
func normalize(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		p := reflect.New(v.Elem().Type())
		p.Elem().Set(normalize(v.Elem()))
		return p
	case reflect.Struct:
		if v.Type() == timeType {
			return reflect.ValueOf(v.Interface().(time.Time).Round(0).UTC())
		}
		c := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			c.Field(i).Set(normalize(v.Field(i)))
		}
		return c
	case reflect.Slice:
		if v.Len() == 0 {
			return reflect.Zero(v.Type())
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			c.Index(i).Set(normalize(v.Index(i)))
		}
		return c
	}
	return v
}

func same(got, want any) bool {
	return reflect.DeepEqual(normalize(reflect.ValueOf(got)).Interface(), normalize(reflect.ValueOf(want)).Interface())
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !same(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

// revocations reads the whole log.
func revocations(t *testing.T, s store.Store) []store.Revocation {
	t.Helper()
	r, err := s.Revocations(context.Background(), 0, 1000)
	ok(t, err, "Revocations")
	return r
}

// wantRevocation checks that the log holds exactly one entry of kind and
// value, expiring at until.
func wantRevocation(t *testing.T, s store.Store, kind store.RevocationKind, value string, until time.Time) {
	t.Helper()
	var found []store.Revocation
	for _, r := range revocations(t, s) {
		if r.Kind == kind && r.Value == value {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("revocations of %s %q: %d entries %+v, want 1", kind, value, len(found), found)
	}
	if !found[0].ExpiresAt.Equal(until) {
		t.Fatalf("revocation of %s %q expires at %v, want %v", kind, value, found[0].ExpiresAt, until)
	}
}

// race runs f in racers goroutines released at once and returns their
// errors.
func race(f func(i int) error) []error {
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one error is nil and all others are loser;
// it returns the winner's index.
func oneWinner(t *testing.T, errs []error, loser error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("racers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, loser):
			t.Fatalf("racer %d: error %v, want %v", i, err, loser)
		}
	}
	if winner < 0 {
		t.Fatalf("no racer won: %v", errs)
	}
	return winner
}

// Clients.

func testClientCreateGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	confidential := sampleClient("confidential", t0)
	public := &store.Client{
		ID:                      "public",
		RedirectURIs:            []string{"http://localhost/cb"},
		TokenEndpointAuthMethod: "none",
		ApplicationType:         "native",
		CreatedAt:               t0,
		UpdatedAt:               t0,
	}
	for _, c := range []*store.Client{confidential, public} {
		ok(t, s.CreateClient(ctx, c), "CreateClient "+c.ID)
	}
	for _, want := range []*store.Client{confidential, public} {
		got, err := s.GetClient(ctx, want.ID)
		ok(t, err, "GetClient "+want.ID)
		equal(t, "GetClient "+want.ID, got, want)
	}
}

func testClientCreateDuplicate(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	orig := sampleClient("c1", t0)
	ok(t, s.CreateClient(ctx, orig), "CreateClient")
	dup := sampleClient("c1", t0)
	dup.Name = "impostor"
	wantErr(t, s.CreateClient(ctx, dup), store.ErrAlreadyExists, "CreateClient again")
	got, err := s.GetClient(ctx, "c1")
	ok(t, err, "GetClient")
	equal(t, "client after failed create", got, orig)
}

func testClientGetUnknown(t *testing.T, s store.Store) {
	got, err := s.GetClient(context.Background(), "nobody")
	wantErr(t, err, store.ErrNotFound, "GetClient unknown")
	if got != nil {
		t.Fatalf("GetClient unknown returned %+v", got)
	}
}

func testClientUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	ok(t, s.CreateClient(ctx, sampleClient("c1", t0)), "CreateClient")
	upd := sampleClient("c1", t0)
	upd.Name = "Renamed"
	upd.RedirectURIs = []string{"https://other.example/cb"}
	upd.GrantTypes = nil
	upd.SecretHash = hash("new secret")
	upd.SecretExpiresAt = time.Time{}
	upd.Metadata = []byte(`{"client_name":"Renamed"}`)
	upd.UpdatedAt = t0.Add(time.Minute)
	ok(t, s.UpdateClient(ctx, upd), "UpdateClient")
	got, err := s.GetClient(ctx, "c1")
	ok(t, err, "GetClient")
	equal(t, "updated client", got, upd)

	wantErr(t, s.UpdateClient(ctx, sampleClient("nobody", t0)), store.ErrNotFound, "UpdateClient unknown")
	_, err = s.GetClient(ctx, "nobody")
	wantErr(t, err, store.ErrNotFound, "GetClient after UpdateClient unknown")
}

func testClientDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	until := t0.Add(time.Hour)
	for _, id := range []string{"gone", "kept"} {
		ok(t, s.CreateClient(ctx, sampleClient(id, t0)), "CreateClient "+id)
		ok(t, s.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: id, Scope: "mcp", GrantedAt: t0}), "PutConsent "+id)
		ok(t, s.CreateAuthCode(ctx, sampleCode("code-"+id, id, t0.Add(time.Minute))), "CreateAuthCode "+id)
		ok(t, s.CreateRefreshToken(ctx, sampleToken("rt-"+id, "grant-"+id, id, t0, t0.Add(time.Hour))), "CreateRefreshToken "+id)
	}

	ok(t, s.DeleteClient(ctx, "gone", until), "DeleteClient")

	_, err := s.GetClient(ctx, "gone")
	wantErr(t, err, store.ErrNotFound, "GetClient deleted")
	_, err = s.GetConsent(ctx, "alice", "gone")
	wantErr(t, err, store.ErrNotFound, "GetConsent of deleted client")
	_, err = s.ConsumeAuthCode(ctx, hash("code-gone"), t0)
	wantErr(t, err, store.ErrNotFound, "ConsumeAuthCode of deleted client")
	_, err = s.GetRefreshToken(ctx, hash("rt-gone"))
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken of deleted client")
	wantRevocation(t, s, store.RevokeClient, "gone", until)

	_, err = s.GetClient(ctx, "kept")
	ok(t, err, "GetClient kept")
	_, err = s.GetConsent(ctx, "alice", "kept")
	ok(t, err, "GetConsent kept")
	_, err = s.GetRefreshToken(ctx, hash("rt-kept"))
	ok(t, err, "GetRefreshToken kept")
	_, err = s.ConsumeAuthCode(ctx, hash("code-kept"), t0)
	ok(t, err, "ConsumeAuthCode kept")

	wantErr(t, s.DeleteClient(ctx, "gone", until), store.ErrNotFound, "DeleteClient again")
	wantRevocation(t, s, store.RevokeClient, "gone", until) // still one
}

// Pending authorizations.

func testPendingPutGetTake(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("p1", now().Add(10*time.Minute))
	ok(t, s.PutPending(ctx, p), "PutPending")
	for range 2 { // reading does not consume
		got, err := s.GetPending(ctx, "p1")
		ok(t, err, "GetPending")
		equal(t, "GetPending", got, p)
	}
	got, err := s.TakePending(ctx, "p1")
	ok(t, err, "TakePending")
	equal(t, "TakePending", got, p)

	got, err = s.TakePending(ctx, "p1")
	wantErr(t, err, store.ErrNotFound, "TakePending again")
	if got != nil {
		t.Fatalf("TakePending again returned %+v", got)
	}
	_, err = s.GetPending(ctx, "p1")
	wantErr(t, err, store.ErrNotFound, "GetPending after take")
	_, err = s.GetPending(ctx, "never")
	wantErr(t, err, store.ErrNotFound, "GetPending unknown")
}

func testPendingPutDuplicate(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("p1", now().Add(10*time.Minute))
	ok(t, s.PutPending(ctx, p), "PutPending")
	other := samplePending("p1", now().Add(10*time.Minute))
	other.ClientID = "attacker"
	wantErr(t, s.PutPending(ctx, other), store.ErrAlreadyExists, "PutPending again")
	got, err := s.GetPending(ctx, "p1")
	ok(t, err, "GetPending")
	equal(t, "pending after failed put", got, p)
}

func testPendingUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("p1", now().Add(10*time.Minute))
	ok(t, s.PutPending(ctx, p), "PutPending")
	upd := *p
	upd.Subject, upd.Login, upd.Granted = "12345", "alice", "mcp"
	upd.Orgs, upd.Teams = []string{"acme"}, []string{"acme/platform"}
	ok(t, s.UpdatePending(ctx, &upd), "UpdatePending")
	got, err := s.GetPending(ctx, "p1")
	ok(t, err, "GetPending")
	equal(t, "GetPending after update", got, &upd)
	got, err = s.TakePending(ctx, "p1")
	ok(t, err, "TakePending")
	equal(t, "TakePending after update", got, &upd)

	wantErr(t, s.UpdatePending(ctx, &upd), store.ErrNotFound, "UpdatePending after take")
	_, err = s.GetPending(ctx, "p1")
	wantErr(t, err, store.ErrNotFound, "GetPending after UpdatePending of a taken one")
}

func testPendingExpired(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("old", now().Add(-time.Second))
	ok(t, s.PutPending(ctx, p), "PutPending")
	_, err := s.GetPending(ctx, "old")
	wantErr(t, err, store.ErrNotFound, "GetPending expired")
	upd := *p
	upd.Subject = "12345"
	wantErr(t, s.UpdatePending(ctx, &upd), store.ErrNotFound, "UpdatePending expired")
	_, err = s.TakePending(ctx, "old")
	wantErr(t, err, store.ErrNotFound, "TakePending expired")
}

func testPendingBindOnce(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("p1", now().Add(10*time.Minute))
	ok(t, s.PutPending(ctx, p), "PutPending")
	ok(t, s.BindPending(ctx, "p1", hash("bind-1")), "BindPending")
	// The second browser to come (a victim given the link) cannot rebind.
	wantErr(t, s.BindPending(ctx, "p1", hash("bind-2")), store.ErrAlreadyUsed, "BindPending again")
	got, err := s.GetPending(ctx, "p1")
	ok(t, err, "GetPending")
	want := *p
	want.BindHash = hash("bind-1")
	equal(t, "GetPending after bind", got, &want)
	// UpdatePending carries the binding along like every other field.
	upd := *got
	upd.Subject = "12345"
	ok(t, s.UpdatePending(ctx, &upd), "UpdatePending")
	got, err = s.GetPending(ctx, "p1")
	ok(t, err, "GetPending after update")
	equal(t, "GetPending after update", got, &upd)

	wantErr(t, s.BindPending(ctx, "never", hash("bind-1")), store.ErrNotFound, "BindPending unknown")
	ok(t, s.PutPending(ctx, samplePending("old", now().Add(-time.Second))), "PutPending expired")
	wantErr(t, s.BindPending(ctx, "old", hash("bind-1")), store.ErrNotFound, "BindPending expired")
}

func testPendingCount(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	count := func(key string, at time.Time) int {
		t.Helper()
		n, err := s.CountPending(ctx, key, at)
		ok(t, err, "CountPending")
		return n
	}
	if n := count("192.0.2.7", t0); n != 0 {
		t.Fatalf("CountPending of an empty store = %d", n)
	}
	for i, exp := range []time.Duration{time.Minute, 10 * time.Minute, 10 * time.Minute, -time.Second} {
		p := samplePending(fmt.Sprint("p", i), t0.Add(exp))
		ok(t, s.PutPending(ctx, p), "PutPending")
	}
	other := samplePending("other", t0.Add(10*time.Minute))
	other.ClientKey = "2001:db8::/64"
	ok(t, s.PutPending(ctx, other), "PutPending other")

	if n := count("192.0.2.7", t0); n != 3 {
		t.Errorf("CountPending now = %d, want 3 (the expired one does not count)", n)
	}
	if n := count("192.0.2.7", t0.Add(2*time.Minute)); n != 2 {
		t.Errorf("CountPending in 2 minutes = %d, want 2", n)
	}
	if n := count("2001:db8::/64", t0); n != 1 {
		t.Errorf("CountPending of the other key = %d, want 1", n)
	}
	_, err := s.TakePending(ctx, "p1")
	ok(t, err, "TakePending")
	if n := count("192.0.2.7", t0); n != 2 {
		t.Errorf("CountPending after a take = %d, want 2", n)
	}
	// Cleanup collects expired flows.
	ok(t, s.Cleanup(ctx, t0.Add(2*time.Minute)), "Cleanup")
	if n := count("192.0.2.7", t0); n != 1 {
		t.Errorf("CountPending after cleanup = %d, want 1 (p2 only)", n)
	}
}

// Authorization codes.

func testAuthCodeConsumeOnce(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	c := sampleCode("code", "client-1", t0.Add(time.Minute))
	ok(t, s.CreateAuthCode(ctx, c), "CreateAuthCode")

	want := *c
	want.UsedAt = t0
	got, err := s.ConsumeAuthCode(ctx, c.CodeHash, t0)
	ok(t, err, "ConsumeAuthCode")
	equal(t, "ConsumeAuthCode", got, &want)

	got, err = s.ConsumeAuthCode(ctx, c.CodeHash, t0.Add(time.Second))
	wantErr(t, err, store.ErrAlreadyUsed, "ConsumeAuthCode again")
	if got == nil {
		t.Fatal("ConsumeAuthCode again returned no code: the caller cannot revoke its grant")
	}
	equal(t, "ConsumeAuthCode again", got, &want) // UsedAt of the first use

	// Reuse stays detectable after expiry.
	got, err = s.ConsumeAuthCode(ctx, c.CodeHash, t0.Add(time.Hour))
	wantErr(t, err, store.ErrAlreadyUsed, "ConsumeAuthCode after expiry of a used code")
	equal(t, "ConsumeAuthCode after expiry", got, &want)
}

func testAuthCodeUnknown(t *testing.T, s store.Store) {
	got, err := s.ConsumeAuthCode(context.Background(), hash("never issued"), now())
	wantErr(t, err, store.ErrNotFound, "ConsumeAuthCode unknown")
	if got != nil {
		t.Fatalf("ConsumeAuthCode unknown returned %+v", got)
	}
}

func testAuthCodeExpired(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	c := sampleCode("code", "client-1", t0.Add(time.Minute))
	ok(t, s.CreateAuthCode(ctx, c), "CreateAuthCode")
	got, err := s.ConsumeAuthCode(ctx, c.CodeHash, t0.Add(time.Minute))
	wantErr(t, err, store.ErrNotFound, "ConsumeAuthCode at expiry")
	if got != nil {
		t.Fatalf("ConsumeAuthCode expired returned %+v", got)
	}
	// Failing did not mark it used.
	_, err = s.ConsumeAuthCode(ctx, c.CodeHash, t0.Add(time.Minute-time.Millisecond))
	ok(t, err, "ConsumeAuthCode just before expiry")
}

func testAuthCodeCreateDuplicate(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	c := sampleCode("code", "client-1", t0.Add(time.Minute))
	ok(t, s.CreateAuthCode(ctx, c), "CreateAuthCode")
	other := sampleCode("code", "attacker", t0.Add(time.Minute))
	wantErr(t, s.CreateAuthCode(ctx, other), store.ErrAlreadyExists, "CreateAuthCode again")
	got, err := s.ConsumeAuthCode(ctx, c.CodeHash, t0)
	ok(t, err, "ConsumeAuthCode")
	if got.ClientID != "client-1" {
		t.Fatalf("code was overwritten: client %q", got.ClientID)
	}
}

// Refresh tokens.

func testRefreshCreateGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	rt := sampleToken("rt", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, rt), "CreateRefreshToken")
	got, err := s.GetRefreshToken(ctx, rt.TokenHash)
	ok(t, err, "GetRefreshToken")
	equal(t, "GetRefreshToken", got, rt)

	other := sampleToken("rt", "g2", "attacker", t0, t0.Add(time.Hour))
	wantErr(t, s.CreateRefreshToken(ctx, other), store.ErrAlreadyExists, "CreateRefreshToken again")
	got, err = s.GetRefreshToken(ctx, rt.TokenHash)
	ok(t, err, "GetRefreshToken")
	equal(t, "token after failed create", got, rt)

	_, err = s.GetRefreshToken(ctx, hash("unknown"))
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken unknown")

	old := sampleToken("old", "g3", "client-1", t0.Add(-2*time.Hour), t0.Add(-time.Second))
	ok(t, s.CreateRefreshToken(ctx, old), "CreateRefreshToken expired")
	_, err = s.GetRefreshToken(ctx, old.TokenHash)
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken expired")
}

func testRefreshRotate(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	rt1 := sampleToken("rt1", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, rt1), "CreateRefreshToken")

	t1 := t0.Add(time.Minute)
	rt2 := sampleToken("rt2", "g1", "client-1", t1, t1.Add(time.Hour))
	ok(t, s.RotateRefreshToken(ctx, rt1.TokenHash, "nonce-1", rt2, t1), "RotateRefreshToken")

	// The rotated token stays readable, so the caller can allow a grace
	// window for a concurrent refresh.
	rotated := *rt1
	rotated.RotatedAt = t1
	rotated.RotationNonce = "nonce-1"
	got, err := s.GetRefreshToken(ctx, rt1.TokenHash)
	ok(t, err, "GetRefreshToken rotated")
	equal(t, "rotated token", got, &rotated)
	got, err = s.GetRefreshToken(ctx, rt2.TokenHash)
	ok(t, err, "GetRefreshToken successor")
	equal(t, "successor", got, rt2)

	// A second rotation of the same token loses and changes nothing.
	t2 := t1.Add(time.Minute)
	rt2b := sampleToken("rt2b", "g1", "client-1", t2, t2.Add(time.Hour))
	wantErr(t, s.RotateRefreshToken(ctx, rt1.TokenHash, "nonce-2", rt2b, t2), store.ErrAlreadyRotated, "RotateRefreshToken again")
	_, err = s.GetRefreshToken(ctx, rt2b.TokenHash)
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken of the losing successor")
	got, err = s.GetRefreshToken(ctx, rt1.TokenHash)
	ok(t, err, "GetRefreshToken rotated")
	equal(t, "rotated token after losing rotation", got, &rotated)

	// The successor rotates in turn.
	rt3 := sampleToken("rt3", "g1", "client-1", t2, t2.Add(time.Hour))
	ok(t, s.RotateRefreshToken(ctx, rt2.TokenHash, "nonce-3", rt3, t2), "RotateRefreshToken successor")
	_, err = s.GetRefreshToken(ctx, rt3.TokenHash)
	ok(t, err, "GetRefreshToken third")
}

func testRefreshRotateErrors(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	next := sampleToken("next", "g1", "client-1", t0, t0.Add(time.Hour))
	wantErr(t, s.RotateRefreshToken(ctx, hash("unknown"), "n", next, t0), store.ErrNotFound, "RotateRefreshToken unknown")
	_, err := s.GetRefreshToken(ctx, next.TokenHash)
	wantErr(t, err, store.ErrNotFound, "successor of unknown token")

	old := sampleToken("old", "g1", "client-1", t0.Add(-time.Hour), t0.Add(time.Minute))
	ok(t, s.CreateRefreshToken(ctx, old), "CreateRefreshToken")
	wantErr(t, s.RotateRefreshToken(ctx, old.TokenHash, "n", next, t0.Add(time.Minute)), store.ErrNotFound, "RotateRefreshToken expired")
	_, err = s.GetRefreshToken(ctx, next.TokenHash)
	wantErr(t, err, store.ErrNotFound, "successor of expired token")

	// A successor hash that is taken fails the rotation as a whole.
	taken := sampleToken("taken", "g2", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, taken), "CreateRefreshToken taken")
	wantErr(t, s.RotateRefreshToken(ctx, old.TokenHash, "n", taken, t0), store.ErrAlreadyExists, "RotateRefreshToken onto a taken hash")
	got, err := s.GetRefreshToken(ctx, old.TokenHash)
	ok(t, err, "GetRefreshToken old")
	if !got.RotatedAt.IsZero() || got.RotationNonce != "" {
		t.Fatalf("failed rotation marked the token rotated at %v with nonce %q", got.RotatedAt, got.RotationNonce)
	}
	ok(t, s.RotateRefreshToken(ctx, old.TokenHash, "n", next, t0), "RotateRefreshToken after failures")
}

func testRevokeGrant(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	until := t0.Add(time.Hour)
	rt1 := sampleToken("rt1", "g1", "client-1", t0, t0.Add(time.Hour))
	rt2 := sampleToken("rt2", "g1", "client-1", t0, t0.Add(time.Hour))
	other := sampleToken("other", "g2", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, rt1), "CreateRefreshToken")
	ok(t, s.RotateRefreshToken(ctx, rt1.TokenHash, "n", rt2, t0), "RotateRefreshToken")
	ok(t, s.CreateRefreshToken(ctx, other), "CreateRefreshToken other")

	code := sampleCode("c1", "client-1", t0.Add(time.Minute))
	code.GrantID = "g1"
	ok(t, s.CreateAuthCode(ctx, code), "CreateAuthCode of the grant")

	ok(t, s.RevokeGrant(ctx, "g1", until), "RevokeGrant")
	_, err := s.ConsumeAuthCode(ctx, code.CodeHash, t0)
	wantErr(t, err, store.ErrNotFound, "ConsumeAuthCode of a revoked grant")
	for _, h := range []string{rt1.TokenHash, rt2.TokenHash} {
		_, err := s.GetRefreshToken(ctx, h)
		wantErr(t, err, store.ErrNotFound, "GetRefreshToken of revoked family")
	}
	_, err = s.GetRefreshToken(ctx, other.TokenHash)
	ok(t, err, "GetRefreshToken of another grant")
	wantRevocation(t, s, store.RevokeGrant, "g1", until)

	// A grant without refresh tokens (a reused code whose tokens are gone)
	// is still logged: its access tokens may be live.
	ok(t, s.RevokeGrant(ctx, "no-tokens", until), "RevokeGrant without tokens")
	wantRevocation(t, s, store.RevokeGrant, "no-tokens", until)
}

func testRefreshDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	rt1 := sampleToken("rt1", "g1", "client-1", t0, t0.Add(time.Hour))
	rt2 := sampleToken("rt2", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, rt1), "CreateRefreshToken")
	ok(t, s.RotateRefreshToken(ctx, rt1.TokenHash, "n", rt2, t0), "RotateRefreshToken")
	ok(t, s.DeleteRefreshToken(ctx, rt1.TokenHash), "DeleteRefreshToken")
	_, err := s.GetRefreshToken(ctx, rt1.TokenHash)
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken deleted")
	_, err = s.GetRefreshToken(ctx, rt2.TokenHash)
	ok(t, err, "GetRefreshToken successor of deleted")
	wantErr(t, s.DeleteRefreshToken(ctx, rt1.TokenHash), store.ErrNotFound, "DeleteRefreshToken again")
	if r := revocations(t, s); len(r) != 0 {
		t.Fatalf("DeleteRefreshToken logged revocations %+v", r)
	}
}

// Revocations.

func testRevokeAccessToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	before := now()
	exp := before.Add(time.Hour)
	ok(t, s.RevokeAccessToken(ctx, "jti-1", exp), "RevokeAccessToken")
	after := now().Add(time.Millisecond)
	r := revocations(t, s)
	if len(r) != 1 {
		t.Fatalf("Revocations: %+v, want one", r)
	}
	if r[0].Kind != store.RevokeToken || r[0].Value != "jti-1" || !r[0].ExpiresAt.Equal(exp) {
		t.Fatalf("Revocations: %+v, want kind %q value jti-1 expiring %v", r[0], store.RevokeToken, exp)
	}
	if r[0].At.Before(before) || r[0].At.After(after) {
		t.Fatalf("revocation At %v not between %v and %v", r[0].At, before, after)
	}
}

func testRevocationsCursor(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	live := t0.Add(time.Hour)
	ok(t, s.RevokeAccessToken(ctx, "a", live), "RevokeAccessToken a")
	ok(t, s.RevokeGrant(ctx, "b", live), "RevokeGrant b")
	ok(t, s.RevokeAccessToken(ctx, "expired", t0.Add(-time.Second)), "RevokeAccessToken expired")
	ok(t, s.CreateClient(ctx, sampleClient("c", t0)), "CreateClient")
	ok(t, s.DeleteClient(ctx, "c", live), "DeleteClient c")
	ok(t, s.RevokeAccessToken(ctx, "d", live), "RevokeAccessToken d")
	ok(t, s.RevokeAccessToken(ctx, "e", live), "RevokeAccessToken e")

	type kv struct {
		Kind  store.RevocationKind
		Value string
	}
	entries := func(r []store.Revocation) []kv {
		var out []kv
		for _, e := range r {
			out = append(out, kv{e.Kind, e.Value})
		}
		return out
	}
	all := revocations(t, s)
	wantAll := []kv{{store.RevokeToken, "a"}, {store.RevokeGrant, "b"}, {store.RevokeClient, "c"},
		{store.RevokeToken, "d"}, {store.RevokeToken, "e"}}
	equal(t, "all revocations (the expired one skipped)", entries(all), wantAll)
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("Seq not increasing: %+v", all)
		}
	}

	got, err := s.Revocations(ctx, all[1].Seq, 100)
	ok(t, err, "Revocations after b")
	equal(t, "revocations after b", entries(got), wantAll[2:])

	got, err = s.Revocations(ctx, 0, 2)
	ok(t, err, "Revocations limit 2")
	equal(t, "first two", entries(got), wantAll[:2])
	got, err = s.Revocations(ctx, got[1].Seq, 2)
	ok(t, err, "Revocations next page")
	equal(t, "next two", entries(got), wantAll[2:4])

	got, err = s.Revocations(ctx, all[len(all)-1].Seq, 100)
	ok(t, err, "Revocations caught up")
	if len(got) != 0 {
		t.Fatalf("Revocations after the last: %+v", got)
	}
}

func testRevocationsSeqNotReused(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	ok(t, s.RevokeAccessToken(ctx, "kept", t0.Add(3*time.Hour)), "RevokeAccessToken kept")
	ok(t, s.RevokeAccessToken(ctx, "dropped", t0.Add(time.Hour)), "RevokeAccessToken dropped")
	r := revocations(t, s)
	if len(r) != 2 {
		t.Fatalf("Revocations: %+v", r)
	}
	cursor := r[1].Seq // a worker has seen "dropped"
	ok(t, s.Cleanup(ctx, t0.Add(2*time.Hour)), "Cleanup")
	ok(t, s.RevokeAccessToken(ctx, "new", t0.Add(time.Hour)), "RevokeAccessToken new")
	got, err := s.Revocations(ctx, cursor, 100)
	ok(t, err, "Revocations")
	if len(got) != 1 || got[0].Value != "new" {
		t.Fatalf("a worker at cursor %d sees %+v, want the new entry (its Seq was reused?)", cursor, got)
	}
}

// Consents.

func testConsent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	c := &store.Consent{Subject: "alice", ClientID: "c1", Scope: "mcp", GrantedAt: t0}
	ok(t, s.PutConsent(ctx, c), "PutConsent")
	got, err := s.GetConsent(ctx, "alice", "c1")
	ok(t, err, "GetConsent")
	equal(t, "GetConsent", got, c)

	for _, k := range [][2]string{{"bob", "c1"}, {"alice", "c2"}} {
		_, err := s.GetConsent(ctx, k[0], k[1])
		wantErr(t, err, store.ErrNotFound, fmt.Sprintf("GetConsent(%q, %q)", k[0], k[1]))
	}

	c2 := &store.Consent{Subject: "alice", ClientID: "c1", Scope: "mcp admin", GrantedAt: t0.Add(time.Hour)}
	ok(t, s.PutConsent(ctx, c2), "PutConsent again")
	got, err = s.GetConsent(ctx, "alice", "c1")
	ok(t, err, "GetConsent")
	equal(t, "GetConsent after replacing", got, c2)
}

// Cleanup.

func testCleanup(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	soon, later := t0.Add(time.Hour), t0.Add(3*time.Hour)
	cleanAt := t0.Add(2 * time.Hour) // soon has expired then, later has not
	for _, x := range []struct {
		name string
		exp  time.Time
	}{{"soon", soon}, {"later", later}} {
		ok(t, s.PutPending(ctx, samplePending("p-"+x.name, x.exp)), "PutPending")
		ok(t, s.CreateAuthCode(ctx, sampleCode("code-"+x.name, "c1", x.exp)), "CreateAuthCode")
		ok(t, s.CreateAuthCode(ctx, sampleCode("used-"+x.name, "c1", x.exp)), "CreateAuthCode")
		_, err := s.ConsumeAuthCode(ctx, hash("used-"+x.name), t0)
		ok(t, err, "ConsumeAuthCode")
		ok(t, s.CreateRefreshToken(ctx, sampleToken("rt-"+x.name, "g-"+x.name, "c1", t0, x.exp)), "CreateRefreshToken")
		ok(t, s.RevokeAccessToken(ctx, "jti-"+x.name, x.exp), "RevokeAccessToken")
	}
	ok(t, s.CreateClient(ctx, sampleClient("c1", t0)), "CreateClient")
	ok(t, s.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: "c1", Scope: "mcp", GrantedAt: t0}), "PutConsent")

	ok(t, s.Cleanup(ctx, cleanAt), "Cleanup")

	// What expired by cleanAt is gone, although the wall clock says it is
	// still valid; the rest is there.
	_, err := s.GetPending(ctx, "p-soon")
	wantErr(t, err, store.ErrNotFound, "pending expired by cleanup time")
	_, err = s.GetPending(ctx, "p-later")
	ok(t, err, "GetPending later")
	_, err = s.ConsumeAuthCode(ctx, hash("code-soon"), t0)
	wantErr(t, err, store.ErrNotFound, "code expired by cleanup time")
	_, err = s.ConsumeAuthCode(ctx, hash("used-soon"), t0)
	wantErr(t, err, store.ErrNotFound, "used code expired by cleanup time")
	_, err = s.ConsumeAuthCode(ctx, hash("code-later"), t0)
	ok(t, err, "ConsumeAuthCode later")
	_, err = s.ConsumeAuthCode(ctx, hash("used-later"), t0)
	wantErr(t, err, store.ErrAlreadyUsed, "ConsumeAuthCode used later")
	_, err = s.GetRefreshToken(ctx, hash("rt-soon"))
	wantErr(t, err, store.ErrNotFound, "refresh token expired by cleanup time")
	_, err = s.GetRefreshToken(ctx, hash("rt-later"))
	ok(t, err, "GetRefreshToken later")
	r := revocations(t, s)
	if len(r) != 1 || r[0].Value != "jti-later" {
		t.Fatalf("revocations after cleanup: %+v, want only jti-later", r)
	}
	_, err = s.GetClient(ctx, "c1")
	ok(t, err, "GetClient after cleanup")
	_, err = s.GetConsent(ctx, "alice", "c1")
	ok(t, err, "GetConsent after cleanup")
}

// Races: several goroutines on one item, exactly one wins. Backends shared
// by processes need their own multi-process test as well.

func testRaceCreateClient(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	errs := race(func(i int) error {
		c := sampleClient("c1", t0)
		c.Name = fmt.Sprint("racer ", i)
		return s.CreateClient(ctx, c)
	})
	w := oneWinner(t, errs, store.ErrAlreadyExists)
	got, err := s.GetClient(ctx, "c1")
	ok(t, err, "GetClient")
	if want := fmt.Sprint("racer ", w); got.Name != want {
		t.Fatalf("stored client %q, but %q won", got.Name, want)
	}
}

func testRaceConsumeAuthCode(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	c := sampleCode("code", "client-1", t0.Add(time.Minute))
	ok(t, s.CreateAuthCode(ctx, c), "CreateAuthCode")
	codes := make([]*store.AuthCode, racers)
	errs := race(func(i int) error {
		var err error
		codes[i], err = s.ConsumeAuthCode(ctx, c.CodeHash, t0)
		return err
	})
	oneWinner(t, errs, store.ErrAlreadyUsed)
	for i, got := range codes {
		if got == nil || got.GrantID != c.GrantID {
			t.Fatalf("racer %d got code %+v", i, got)
		}
	}
}

func testRaceRotateRefreshToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	rt := sampleToken("rt", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, rt), "CreateRefreshToken")
	next := func(i int) *store.RefreshToken {
		return sampleToken(fmt.Sprint("next-", i), "g1", "client-1", t0, t0.Add(time.Hour))
	}
	errs := race(func(i int) error {
		return s.RotateRefreshToken(ctx, rt.TokenHash, fmt.Sprint("nonce-", i), next(i), t0)
	})
	w := oneWinner(t, errs, store.ErrAlreadyRotated)
	for i := range racers {
		_, err := s.GetRefreshToken(ctx, next(i).TokenHash)
		if i == w {
			ok(t, err, "GetRefreshToken of the winner's successor")
		} else {
			wantErr(t, err, store.ErrNotFound, fmt.Sprintf("GetRefreshToken of loser %d's successor", i))
		}
	}
}

func testRaceTakePending(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("p1", now().Add(10*time.Minute))
	ok(t, s.PutPending(ctx, p), "PutPending")
	got := make([]*store.Pending, racers)
	errs := race(func(i int) error {
		var err error
		got[i], err = s.TakePending(ctx, "p1")
		return err
	})
	w := oneWinner(t, errs, store.ErrNotFound)
	equal(t, "winner's pending", got[w], p)
}

// Client expiry.

func testClientTouchAndCollect(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	until := t0.Add(time.Hour)
	month := 30 * 24 * time.Hour
	for _, c := range []struct {
		id   string
		used time.Time
	}{{"idle", t0.Add(-month - time.Hour)}, {"touched", t0.Add(-month - time.Hour)}, {"busy", t0.Add(-time.Hour)}} {
		cl := sampleClient(c.id, c.used)
		ok(t, s.CreateClient(ctx, cl), "CreateClient "+c.id)
		ok(t, s.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: c.id, Scope: "mcp", GrantedAt: c.used}), "PutConsent "+c.id)
		ok(t, s.CreateRefreshToken(ctx, sampleToken("rt-"+c.id, "grant-"+c.id, c.id, t0, t0.Add(time.Hour))), "CreateRefreshToken "+c.id)
	}
	ok(t, s.TouchClient(ctx, "touched", t0), "TouchClient")
	got, err := s.GetClient(ctx, "touched")
	ok(t, err, "GetClient touched")
	if !got.LastUsedAt.Equal(t0) {
		t.Fatalf("LastUsedAt after TouchClient: %v, want %v", got.LastUsedAt, t0)
	}
	wantErr(t, s.TouchClient(ctx, "nobody", t0), store.ErrNotFound, "TouchClient unknown")

	n, err := s.DeleteUnusedClients(ctx, t0.Add(-month), until)
	ok(t, err, "DeleteUnusedClients")
	if n != 1 {
		t.Fatalf("DeleteUnusedClients deleted %d clients, want 1 (idle)", n)
	}
	_, err = s.GetClient(ctx, "idle")
	wantErr(t, err, store.ErrNotFound, "GetClient of a collected client")
	_, err = s.GetConsent(ctx, "alice", "idle")
	wantErr(t, err, store.ErrNotFound, "GetConsent of a collected client")
	_, err = s.GetRefreshToken(ctx, hash("rt-idle"))
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken of a collected client")
	wantRevocation(t, s, store.RevokeClient, "idle", until)
	for _, id := range []string{"touched", "busy"} {
		_, err = s.GetClient(ctx, id)
		ok(t, err, "GetClient "+id)
		_, err = s.GetRefreshToken(ctx, hash("rt-"+id))
		ok(t, err, "GetRefreshToken "+id)
	}
	n, err = s.DeleteUnusedClients(ctx, t0.Add(-month), until)
	ok(t, err, "DeleteUnusedClients again")
	if n != 0 {
		t.Fatalf("DeleteUnusedClients again deleted %d clients", n)
	}
}

// testRefreshFamilyExpiry: the store keeps AuthTime through a rotation
// and honours a successor's ExpiresAt even though it was just created (the
// caller caps it at the family's login + refresh_token_ttl).
func testRefreshFamilyExpiry(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	login := t0.Add(-time.Hour)
	rt1 := sampleToken("rt1", "g1", "client-1", login, login.Add(time.Hour+time.Minute))
	ok(t, s.CreateRefreshToken(ctx, rt1), "CreateRefreshToken")
	rt2 := sampleToken("rt2", "g1", "client-1", t0, login.Add(time.Hour+time.Minute))
	rt2.AuthTime = login
	ok(t, s.RotateRefreshToken(ctx, rt1.TokenHash, "n", rt2, t0), "RotateRefreshToken")
	got, err := s.GetRefreshToken(ctx, rt2.TokenHash)
	ok(t, err, "GetRefreshToken successor")
	equal(t, "successor", got, rt2)

	// A successor whose family ended a moment ago is not returned, however
	// new it is.
	rt3 := sampleToken("rt3", "g2", "client-1", t0, t0.Add(-time.Millisecond))
	rt3.AuthTime = t0.Add(-2 * time.Hour)
	ok(t, s.CreateRefreshToken(ctx, sampleToken("rt3-parent", "g2", "client-1", rt3.AuthTime, t0.Add(time.Minute))), "CreateRefreshToken parent")
	ok(t, s.RotateRefreshToken(ctx, hash("rt3-parent"), "n", rt3, t0), "RotateRefreshToken onto an ended family")
	_, err = s.GetRefreshToken(ctx, rt3.TokenHash)
	wantErr(t, err, store.ErrNotFound, "GetRefreshToken of a successor past the family's end")
}

// Rate limits.

func testCountEvent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	count := func(key string, at time.Time, want int64) {
		t.Helper()
		n, err := s.CountEvent(ctx, key, time.Minute, at)
		ok(t, err, "CountEvent "+key)
		if n != want {
			t.Fatalf("CountEvent(%s) at %v: %d, want %d", key, at.Sub(t0), n, want)
		}
	}
	count("a", t0, 1)
	count("a", t0.Add(30*time.Second), 2)
	count("b", t0.Add(30*time.Second), 1)
	// The window opened at the first event, not on a clock boundary.
	count("a", t0.Add(time.Minute-time.Millisecond), 3)
	count("a", t0.Add(time.Minute), 1) // a new window
	count("a", t0.Add(90*time.Second), 2)
	count("b", t0.Add(80*time.Second), 2)

	// Cleanup drops windows that ended; counting starts over.
	ok(t, s.Cleanup(ctx, t0.Add(3*time.Minute)), "Cleanup")
	count("a", t0.Add(30*time.Second), 1)
}

// testRaceRotateSameSuccessor: of racing rotations exactly one wins, and
// every loser reads back the winner's nonce, which names the successor
// that is stored: the caller derives the same successor from it.
func testRaceRotateSameSuccessor(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	rt := sampleToken("rt", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, s.CreateRefreshToken(ctx, rt), "CreateRefreshToken")
	successor := func(nonce string) *store.RefreshToken {
		return sampleToken("succ-of-rt-"+nonce, "g1", "client-1", t0, t0.Add(time.Hour))
	}
	errs := race(func(i int) error {
		return s.RotateRefreshToken(ctx, rt.TokenHash, fmt.Sprint("nonce-", i), successor(fmt.Sprint("nonce-", i)), t0)
	})
	w := oneWinner(t, errs, store.ErrAlreadyRotated)
	got, err := s.GetRefreshToken(ctx, rt.TokenHash)
	ok(t, err, "GetRefreshToken rotated")
	if want := fmt.Sprint("nonce-", w); got.RotationNonce != want {
		t.Fatalf("a loser reads nonce %q, want the winner's %q", got.RotationNonce, want)
	}
	_, err = s.GetRefreshToken(ctx, successor(got.RotationNonce).TokenHash)
	ok(t, err, "GetRefreshToken of the successor the nonce names")
}

func testRaceCountEvent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	counts := make([]int64, racers)
	errs := race(func(i int) error {
		var err error
		counts[i], err = s.CountEvent(ctx, "k", time.Minute, t0)
		return err
	})
	for i, err := range errs {
		ok(t, err, fmt.Sprint("CountEvent of racer ", i))
	}
	seen := map[int64]bool{}
	for _, n := range counts {
		if n < 1 || n > racers || seen[n] {
			t.Fatalf("racing counts %v: want each of 1..%d once", counts, racers)
		}
		seen[n] = true
	}
}

func testRaceBindPending(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := samplePending("p1", now().Add(10*time.Minute))
	ok(t, s.PutPending(ctx, p), "PutPending")
	errs := race(func(i int) error { return s.BindPending(ctx, "p1", hash(fmt.Sprint("bind-", i))) })
	w := oneWinner(t, errs, store.ErrAlreadyUsed)
	got, err := s.GetPending(ctx, "p1")
	ok(t, err, "GetPending")
	if got.BindHash != hash(fmt.Sprint("bind-", w)) {
		t.Errorf("BindHash is not the winner's")
	}
}

func testClientList(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	got, err := s.ListClients(ctx)
	ok(t, err, "ListClients empty")
	if len(got) != 0 {
		t.Fatalf("ListClients of an empty store: %d clients", len(got))
	}
	var want []*store.Client
	for _, id := range []string{"b", "a", "c"} {
		c := sampleClient(id, t0)
		ok(t, s.CreateClient(ctx, c), "CreateClient "+id)
		want = append(want, c)
	}
	want[0], want[1] = want[1], want[0] // sorted by ID
	got, err = s.ListClients(ctx)
	ok(t, err, "ListClients")
	equal(t, "ListClients", got, want)
}

// Grants.

func testGrantList(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	// g1: alice, logged in first, refreshed once.
	rt1 := sampleToken("rt1", "g1", "client-1", t0.Add(-time.Hour), t0.Add(time.Hour))
	rt1.AuthTime = t0.Add(-time.Hour)
	ok(t, s.CreateRefreshToken(ctx, rt1), "CreateRefreshToken g1")
	t1 := t0.Add(-time.Minute)
	rt2 := sampleToken("rt2", "g1", "client-1", t1, t0.Add(time.Hour))
	rt2.AuthTime = rt1.AuthTime
	rt2.Scope = "mcp user"
	ok(t, s.RotateRefreshToken(ctx, rt1.TokenHash, "n", rt2, t1), "RotateRefreshToken g1")
	// g2: bob (another subject), another client and resource.
	bob := sampleToken("bob", "g2", "client-2", t0.Add(-30*time.Minute), t0.Add(time.Hour))
	bob.Subject, bob.Login, bob.Resource, bob.Host = "999", "Bob", "https://docs.example.com/mcp", "docs.example.com"
	ok(t, s.CreateRefreshToken(ctx, bob), "CreateRefreshToken g2")
	// g3: alice's family whose current token expired: not live.
	dead := sampleToken("dead", "g3", "client-1", t0.Add(-2*time.Hour), t0.Add(-time.Second))
	ok(t, s.CreateRefreshToken(ctx, dead), "CreateRefreshToken g3")

	g1 := store.Grant{ID: "g1", ClientID: "client-1", Subject: "12345", Login: "alice", Scope: "mcp user",
		Resource: rt2.Resource, Host: rt2.Host, AuthTime: rt1.AuthTime, LastUsed: t1, ExpiresAt: rt2.ExpiresAt}
	g2 := store.Grant{ID: "g2", ClientID: "client-2", Subject: "999", Login: "Bob", Scope: "mcp",
		Resource: bob.Resource, Host: bob.Host, AuthTime: bob.AuthTime, LastUsed: bob.CreatedAt, ExpiresAt: bob.ExpiresAt}
	for _, tc := range []struct {
		name string
		f    store.GrantFilter
		want []store.Grant
	}{
		{"all", store.GrantFilter{}, []store.Grant{g1, g2}},
		{"by login", store.GrantFilter{User: "alice"}, []store.Grant{g1}},
		{"by login, other case", store.GrantFilter{User: "bOB"}, []store.Grant{g2}},
		{"by subject", store.GrantFilter{User: "999"}, []store.Grant{g2}},
		{"by client", store.GrantFilter{ClientID: "client-2"}, []store.Grant{g2}},
		{"user and client", store.GrantFilter{User: "alice", ClientID: "client-2"}, nil},
		{"unknown user", store.GrantFilter{User: "carol"}, nil},
		// Unicode folding would match the Kelvin sign to k; ASCII folding
		// must not.
		{"no Unicode folding", store.GrantFilter{User: "\u212Aate"}, nil},
	} {
		got, err := s.ListGrants(ctx, tc.f, t0)
		ok(t, err, "ListGrants "+tc.name)
		equal(t, "ListGrants "+tc.name, got, tc.want)
	}
	// After revocation the family is gone from the list.
	ok(t, s.RevokeGrant(ctx, "g1", t0.Add(time.Hour)), "RevokeGrant")
	got, err := s.ListGrants(ctx, store.GrantFilter{}, t0)
	ok(t, err, "ListGrants after RevokeGrant")
	equal(t, "ListGrants after RevokeGrant", got, []store.Grant{g2})
}

func testRevokeClientGrants(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	until := t0.Add(time.Hour)
	const doc = "https://app.example/client.json" // a metadata-document client: no row
	ok(t, s.CreateRefreshToken(ctx, sampleToken("rt-a", "ga", doc, t0, t0.Add(time.Hour))), "CreateRefreshToken ga")
	ok(t, s.CreateRefreshToken(ctx, sampleToken("rt-b", "gb", doc, t0, t0.Add(time.Hour))), "CreateRefreshToken gb")
	code := sampleCode("code-c", doc, t0.Add(time.Minute)) // a code not redeemed yet: grant gc
	code.GrantID = "gc"
	ok(t, s.CreateAuthCode(ctx, code), "CreateAuthCode gc")
	ok(t, s.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: doc, Scope: "mcp", GrantedAt: t0}), "PutConsent")
	// Another client, stored, keeps everything.
	ok(t, s.CreateClient(ctx, sampleClient("kept", t0)), "CreateClient kept")
	ok(t, s.CreateRefreshToken(ctx, sampleToken("rt-k", "gk", "kept", t0, t0.Add(time.Hour))), "CreateRefreshToken gk")
	ok(t, s.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: "kept", Scope: "mcp", GrantedAt: t0}), "PutConsent kept")

	ids, err := s.RevokeClientGrants(ctx, doc, until)
	ok(t, err, "RevokeClientGrants")
	equal(t, "revoked grants", ids, []string{"ga", "gb", "gc"})
	for _, id := range ids {
		wantRevocation(t, s, store.RevokeGrant, id, until)
	}
	for _, r := range revocations(t, s) {
		if r.Kind == store.RevokeClient {
			t.Fatalf("RevokeClientGrants logged a client revocation %+v: the client could never sign in again", r)
		}
	}
	_, err = s.GetConsent(ctx, "alice", doc)
	wantErr(t, err, store.ErrNotFound, "GetConsent of the client")
	_, err = s.ConsumeAuthCode(ctx, code.CodeHash, t0)
	wantErr(t, err, store.ErrNotFound, "ConsumeAuthCode of the client")
	got, err := s.ListGrants(ctx, store.GrantFilter{}, t0)
	ok(t, err, "ListGrants")
	if len(got) != 1 || got[0].ID != "gk" {
		t.Fatalf("grants left: %+v, want only gk", got)
	}
	_, err = s.GetConsent(ctx, "alice", "kept")
	ok(t, err, "GetConsent of another client")

	// A stored client keeps its registration.
	ids, err = s.RevokeClientGrants(ctx, "kept", until)
	ok(t, err, "RevokeClientGrants of a stored client")
	equal(t, "revoked grants of kept", ids, []string{"gk"})
	_, err = s.GetClient(ctx, "kept")
	ok(t, err, "GetClient after RevokeClientGrants")

	ids, err = s.RevokeClientGrants(ctx, "nobody", until)
	ok(t, err, "RevokeClientGrants of a client without grants")
	if len(ids) != 0 {
		t.Fatalf("revoked %v of a client without grants", ids)
	}
}
