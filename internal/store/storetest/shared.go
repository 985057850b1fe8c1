package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

// RunShared is the suite of what only a shared store shows: two Store
// instances on the same backing data (two processes on one SQLite file, two
// nodes on one PostgreSQL database) racing for one item, and one seeing
// what the other did. newPair returns two fresh stores on the same empty
// data; RunShared closes them.
func RunShared(t *testing.T, newPair func(t *testing.T) (a, b store.Store)) {
	tests := []struct {
		name string
		run  func(t *testing.T, a, b store.Store)
	}{
		{"ConsumeAuthCodeOnce", testSharedConsume},
		{"RotateRaceSameSuccessor", testSharedRotateRace},
		{"RotateAgainLater", testSharedRotateLater},
		{"RevocationVisible", testSharedRevocation},
		{"CountEventOneBudget", testSharedCountEvent},
		{"PendingFlowsCounted", testSharedPending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newPair(t)
			t.Cleanup(func() {
				if err := errors.Join(a.Close(), b.Close()); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.run(t, a, b)
		})
	}
}

// pick alternates racers between the two stores.
func pick(i int, a, b store.Store) store.Store {
	if i%2 == 0 {
		return a
	}
	return b
}

// testSharedConsume: racers on both stores redeem one code; exactly one
// wins and every loser learns the code was used (to revoke its grant).
func testSharedConsume(t *testing.T, a, b store.Store) {
	ctx := context.Background()
	t0 := now()
	c := sampleCode("code", "client-1", t0.Add(time.Minute))
	ok(t, a.CreateAuthCode(ctx, c), "CreateAuthCode on a")
	errs := race(func(i int) error {
		_, err := pick(i, a, b).ConsumeAuthCode(ctx, c.CodeHash, t0)
		return err
	})
	oneWinner(t, errs, store.ErrAlreadyUsed)
}

// testSharedRotateRace: concurrent refreshes of one token from both nodes
// (the retry-inside-the-grace case): one rotation wins, and a loser on
// either node reads the winner's nonce, which names the stored successor.
func testSharedRotateRace(t *testing.T, a, b store.Store) {
	ctx := context.Background()
	t0 := now()
	rt := sampleToken("rt", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, a.CreateRefreshToken(ctx, rt), "CreateRefreshToken")
	succ := func(nonce string) *store.RefreshToken {
		return sampleToken("succ-"+nonce, "g1", "client-1", t0, t0.Add(time.Hour))
	}
	errs := race(func(i int) error {
		n := fmt.Sprint("nonce-", i)
		return pick(i, a, b).RotateRefreshToken(ctx, rt.TokenHash, n, succ(n), t0)
	})
	w := oneWinner(t, errs, store.ErrAlreadyRotated)
	for _, s := range []store.Store{a, b} {
		got, err := s.GetRefreshToken(ctx, rt.TokenHash)
		ok(t, err, "GetRefreshToken")
		if want := fmt.Sprint("nonce-", w); got.RotationNonce != want {
			t.Fatalf("nonce %q, want the winner's %q", got.RotationNonce, want)
		}
		_, err = s.GetRefreshToken(ctx, succ(got.RotationNonce).TokenHash)
		ok(t, err, "GetRefreshToken of the successor")
	}
}

// testSharedRotateLater: a token rotated on a and presented on b later
// (outside any grace: reuse) is refused as rotated, and b sees when it was
// rotated, which is what the grace decision needs; revoking the grant on b
// removes the whole family for a.
func testSharedRotateLater(t *testing.T, a, b store.Store) {
	ctx := context.Background()
	t0 := now()
	rt := sampleToken("rt", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, a.CreateRefreshToken(ctx, rt), "CreateRefreshToken")
	next := sampleToken("next", "g1", "client-1", t0, t0.Add(time.Hour))
	ok(t, a.RotateRefreshToken(ctx, rt.TokenHash, "n1", next, t0), "Rotate on a")
	later := t0.Add(time.Minute)
	wantErr(t, b.RotateRefreshToken(ctx, rt.TokenHash, "n2", sampleToken("other", "g1", "client-1", later, later.Add(time.Hour)), later),
		store.ErrAlreadyRotated, "Rotate again on b")
	got, err := b.GetRefreshToken(ctx, rt.TokenHash)
	ok(t, err, "GetRefreshToken on b")
	if !got.RotatedAt.Equal(t0) || got.RotationNonce != "n1" {
		t.Fatalf("b sees rotation at %v nonce %q, want %v n1", got.RotatedAt, got.RotationNonce, t0)
	}
	ok(t, b.RevokeGrant(ctx, "g1", t0.Add(time.Hour)), "RevokeGrant on b")
	_, err = a.GetRefreshToken(ctx, next.TokenHash)
	wantErr(t, err, store.ErrNotFound, "successor on a after revocation on b")
}

// testSharedRevocation: what b revokes is in a's log, in order.
func testSharedRevocation(t *testing.T, a, b store.Store) {
	ctx := context.Background()
	t0 := now()
	ok(t, a.RevokeAccessToken(ctx, "on-a", t0.Add(time.Hour)), "RevokeAccessToken on a")
	ok(t, b.RevokeGrant(ctx, "on-b", t0.Add(time.Hour)), "RevokeGrant on b")
	for name, s := range map[string]store.Store{"a": a, "b": b} {
		r, err := s.Revocations(ctx, 0, 10)
		ok(t, err, "Revocations on "+name)
		if len(r) != 2 || r[0].Value != "on-a" || r[1].Value != "on-b" || r[1].Seq <= r[0].Seq {
			t.Fatalf("%s reads %+v, want on-a then on-b", name, r)
		}
	}
}

// testSharedCountEvent: the registration rate limit is one budget across
// nodes: racers on both stores get each count once.
func testSharedCountEvent(t *testing.T, a, b store.Store) {
	ctx := context.Background()
	t0 := now()
	counts := make([]int64, racers)
	errs := race(func(i int) error {
		var err error
		counts[i], err = pick(i, a, b).CountEvent(ctx, "register:192.0.2.7", time.Minute, t0)
		return err
	})
	for i, err := range errs {
		ok(t, err, fmt.Sprint("CountEvent of racer ", i))
	}
	slices.Sort(counts)
	for i, n := range counts {
		if n != int64(i+1) {
			t.Fatalf("counts %v: want 1..%d once each", counts, racers)
		}
	}
}

// testSharedPending: the per-address limit on pending flows counts flows
// started on every node, and a flow started on one node can be finished
// on the other (no sticky sessions).
func testSharedPending(t *testing.T, a, b store.Store) {
	ctx := context.Background()
	t0 := now()
	ok(t, a.PutPending(ctx, samplePending("p-a", t0.Add(10*time.Minute))), "PutPending on a")
	ok(t, b.PutPending(ctx, samplePending("p-b", t0.Add(10*time.Minute))), "PutPending on b")
	for name, s := range map[string]store.Store{"a": a, "b": b} {
		n, err := s.CountPending(ctx, "192.0.2.7", t0)
		ok(t, err, "CountPending on "+name)
		if n != 2 {
			t.Fatalf("CountPending on %s = %d, want 2", name, n)
		}
	}
	ok(t, b.BindPending(ctx, "p-a", hash("bind")), "BindPending on b")
	wantErr(t, a.BindPending(ctx, "p-a", hash("other")), store.ErrAlreadyUsed, "BindPending again on a")
	got, err := b.TakePending(ctx, "p-a")
	ok(t, err, "TakePending on b")
	if got.BindHash != hash("bind") {
		t.Fatalf("the flow lost its binding")
	}
	_, err = a.TakePending(ctx, "p-a")
	wantErr(t, err, store.ErrNotFound, "TakePending again on a")
}

// RunPorter checks export and import: everything exported from a filled
// store of one backend comes back from a store of another (or the same)
// backend, and importing twice changes nothing.
func RunPorter(t *testing.T, from, to func(t *testing.T) store.Store) {
	ctx := context.Background()
	src, dst := from(t), to(t)
	t.Cleanup(func() { src.Close(); dst.Close() })
	ps, okS := src.(store.Porter)
	pd, okD := dst.(store.Porter)
	if !okS || !okD {
		t.Fatalf("store.Porter not implemented: %T %v, %T %v", src, okS, dst, okD)
	}
	t0 := now()
	ok(t, src.CreateClient(ctx, sampleClient("c1", t0)), "CreateClient")
	pub := sampleClient("c2", t0)
	pub.Metadata, pub.SecretHash = nil, ""
	ok(t, src.CreateClient(ctx, pub), "CreateClient public")
	ok(t, src.CreateAuthCode(ctx, sampleCode("code", "c1", t0.Add(time.Minute))), "CreateAuthCode")
	ok(t, src.CreateAuthCode(ctx, sampleCode("used", "c1", t0.Add(time.Minute))), "CreateAuthCode")
	_, err := src.ConsumeAuthCode(ctx, hash("used"), t0)
	ok(t, err, "ConsumeAuthCode")
	rt := sampleToken("rt", "g1", "c1", t0, t0.Add(time.Hour))
	ok(t, src.CreateRefreshToken(ctx, rt), "CreateRefreshToken")
	next := sampleToken("next", "g1", "c1", t0, t0.Add(time.Hour))
	ok(t, src.RotateRefreshToken(ctx, rt.TokenHash, "nonce", next, t0), "RotateRefreshToken")
	ok(t, src.PutConsent(ctx, &store.Consent{Subject: "alice", ClientID: "c1", Scope: "mcp", GrantedAt: t0}), "PutConsent")
	ok(t, src.RevokeAccessToken(ctx, "jti-1", t0.Add(time.Hour)), "RevokeAccessToken")
	ok(t, src.RevokeGrant(ctx, "g0", t0.Add(time.Hour)), "RevokeGrant")

	var recs []*store.Record
	ok(t, ps.Export(ctx, func(r *store.Record) error { recs = append(recs, r); return nil }), "Export")
	if len(recs) != 9 {
		t.Fatalf("exported %d records, want 9", len(recs))
	}
	for range 2 {
		for _, r := range recs {
			ok(t, pd.Import(ctx, r), "Import")
		}
	}
	var back []*store.Record
	ok(t, pd.Export(ctx, func(r *store.Record) error { back = append(back, r); return nil }), "Export of the copy")
	for _, r := range append(recs, back...) {
		if r.Revocation != nil {
			r.Revocation.Seq = 0 // a new log numbers anew
		}
	}
	equal(t, "records after export, import and export", back, recs)

	// The copy works: the used code is still used, the rotated token
	// still rotated, the revocations in the log.
	_, err = dst.ConsumeAuthCode(ctx, hash("used"), t0)
	wantErr(t, err, store.ErrAlreadyUsed, "used code in the copy")
	_, err = dst.ConsumeAuthCode(ctx, hash("code"), t0)
	ok(t, err, "unused code in the copy")
	wantErr(t, dst.RotateRefreshToken(ctx, rt.TokenHash, "n2", sampleToken("x", "g1", "c1", t0, t0.Add(time.Hour)), t0),
		store.ErrAlreadyRotated, "rotated token in the copy")
	wantRevocation(t, dst, store.RevokeToken, "jti-1", t0.Add(time.Hour))
}

// RunKeyStore checks a store.KeyStore: two instances on the same data see
// each other's keys, and concurrent updates run one at a time (each sees
// what the previous one added), so nodes agree on one first key.
func RunKeyStore(t *testing.T, newPair func(t *testing.T) (a, b store.KeyStore)) {
	ctx := context.Background()
	a, b := newPair(t)
	t0 := now()
	got, err := a.SigningKeys(ctx)
	ok(t, err, "SigningKeys of an empty store")
	if len(got) != 0 {
		t.Fatalf("empty store holds keys: %+v", got)
	}
	// Racers on both instances each add a key only if none exists.
	errs := race(func(i int) error {
		s := a
		if i%2 == 1 {
			s = b
		}
		return s.UpdateSigningKeys(ctx, func(cur []store.SealedKey) ([]store.SealedKey, []string, error) {
			if len(cur) > 0 {
				return nil, nil, nil
			}
			return []store.SealedKey{{Kid: fmt.Sprint("k", i), Created: t0, Sealed: []byte{byte(i)}}}, nil, nil
		})
	})
	for i, err := range errs {
		ok(t, err, fmt.Sprint("UpdateSigningKeys of racer ", i))
	}
	got, err = b.SigningKeys(ctx)
	ok(t, err, "SigningKeys")
	if len(got) != 1 || !got[0].Created.Equal(t0) || len(got[0].Sealed) != 1 {
		t.Fatalf("after the race: %+v, want exactly one key", got)
	}
	first := got[0].Kid

	// Rotate on b: add one, delete the first; a sees it.
	ok(t, b.UpdateSigningKeys(ctx, func(cur []store.SealedKey) ([]store.SealedKey, []string, error) {
		return []store.SealedKey{{Kid: "k-new", Created: t0.Add(time.Second), Sealed: []byte("sealed")}}, []string{first}, nil
	}), "UpdateSigningKeys rotate")
	got, err = a.SigningKeys(ctx)
	ok(t, err, "SigningKeys on a")
	equal(t, "keys after the rotation", got, []store.SealedKey{{Kid: "k-new", Created: t0.Add(time.Second), Sealed: []byte("sealed")}})

	// A failing update changes nothing.
	boom := errors.New("boom")
	err = a.UpdateSigningKeys(ctx, func(cur []store.SealedKey) ([]store.SealedKey, []string, error) {
		return []store.SealedKey{{Kid: "k-lost", Created: t0, Sealed: []byte("x")}}, []string{"k-new"}, boom
	})
	wantErr(t, err, boom, "UpdateSigningKeys failing")
	got, err = b.SigningKeys(ctx)
	ok(t, err, "SigningKeys")
	if len(got) != 1 || got[0].Kid != "k-new" {
		t.Fatalf("a failed update changed the keys: %+v", got)
	}
}
