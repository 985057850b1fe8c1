package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mcpgate/mcpgate/internal/store"
)

// Signing keys (store.KeyStore).

// SigningKeys returns every stored key.
func (s *Store) SigningKeys(ctx context.Context) ([]store.SealedKey, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT kid, created_at, sealed FROM signing_keys`)
	if err != nil {
		return nil, wrap("signing keys", err)
	}
	out, err := pgx.CollectRows(rows, scanKey)
	if err != nil {
		return nil, wrap("signing keys", err)
	}
	return out, nil
}

func scanKey(row pgx.CollectableRow) (store.SealedKey, error) {
	var k store.SealedKey
	var created int64
	err := row.Scan(&k.Kid, &created, &k.Sealed)
	k.Created = fromMS(created)
	return k, err
}

// UpdateSigningKeys runs f under an advisory lock held until commit, so
// one node at a time creates or retires keys and the others, waiting,
// then see its result.
func (s *Store) UpdateSigningKeys(ctx context.Context, f func([]store.SealedKey) ([]store.SealedKey, []string, error)) error {
	return s.tx(ctx, "update signing keys", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKeys); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT kid, created_at, sealed FROM signing_keys`)
		if err != nil {
			return err
		}
		cur, err := pgx.CollectRows(rows, scanKey)
		if err != nil {
			return err
		}
		add, del, err := f(cur)
		if err != nil {
			return err
		}
		for _, k := range add {
			if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, created_at, sealed) VALUES ($1, $2, $3)
				ON CONFLICT (kid) DO NOTHING`, k.Kid, ms(k.Created), k.Sealed); err != nil {
				return err
			}
		}
		for _, kid := range del {
			if _, err := tx.Exec(ctx, `DELETE FROM signing_keys WHERE kid = $1`, kid); err != nil {
				return err
			}
		}
		return nil
	})
}

// Export and import (store.Porter).

// Export emits every durable item; it reads in one repeatable-read
// transaction, so the export is one consistent snapshot.
func (s *Store) Export(ctx context.Context, emit func(*store.Record) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return wrap("export", err)
	}
	defer tx.Rollback(context.Background())
	now := ms(time.Now())
	each := func(sql string, args []any, f func(pgx.Row) error) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := f(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	steps := []struct {
		sql  string
		args []any
		f    func(pgx.Row) error
	}{
		{`SELECT ` + clientCols + ` FROM clients ORDER BY id`, nil, func(r pgx.Row) error {
			c, err := scanClient(r)
			if err != nil {
				return err
			}
			return emit(&store.Record{Client: c})
		}},
		{`SELECT ` + codeCols + ` FROM auth_codes WHERE expires_at > $1 ORDER BY code_hash`, []any{now}, func(r pgx.Row) error {
			c, err := scanCode(r)
			if err != nil {
				return err
			}
			return emit(&store.Record{Code: c})
		}},
		{`SELECT ` + tokenCols + ` FROM refresh_tokens WHERE expires_at > $1 ORDER BY token_hash`, []any{now}, func(r pgx.Row) error {
			t, err := scanToken(r)
			if err != nil {
				return err
			}
			return emit(&store.Record{Token: t})
		}},
		{`SELECT subject, client_id, scope, granted_at FROM consents ORDER BY subject, client_id`, nil, func(r pgx.Row) error {
			var c store.Consent
			var at int64
			if err := r.Scan(&c.Subject, &c.ClientID, &c.Scope, &at); err != nil {
				return err
			}
			c.GrantedAt = fromMS(at)
			return emit(&store.Record{Consent: &c})
		}},
		{`SELECT seq, kind, value, expires_at, at FROM revocations WHERE expires_at > $1 ORDER BY seq`, []any{now}, func(r pgx.Row) error {
			var v store.Revocation
			var kind string
			var exp, at int64
			if err := r.Scan(&v.Seq, &kind, &v.Value, &exp, &at); err != nil {
				return err
			}
			v.Kind, v.ExpiresAt, v.At = store.RevocationKind(kind), fromMS(exp), fromMS(at)
			return emit(&store.Record{Revocation: &v})
		}},
	}
	for _, st := range steps {
		if err := each(st.sql, st.args, st.f); err != nil {
			return wrap("export", err)
		}
	}
	return nil
}

// Import stores one exported record, leaving an existing item alone.
func (s *Store) Import(ctx context.Context, r *store.Record) error {
	var err error
	switch {
	case r.Client != nil:
		_, err = s.exec(ctx, "import client", insertClient, clientArgs(r.Client)...)
	case r.Code != nil:
		_, err = s.exec(ctx, "import code", insertCode, codeArgs(r.Code)...)
	case r.Token != nil:
		_, err = s.exec(ctx, "import refresh token", insertToken, tokenArgs(r.Token)...)
	case r.Consent != nil:
		_, err = s.exec(ctx, "import consent", `INSERT INTO consents (subject, client_id, scope, granted_at)
			VALUES ($1, $2, $3, $4) ON CONFLICT (subject, client_id) DO NOTHING`,
			r.Consent.Subject, r.Consent.ClientID, r.Consent.Scope, ms(r.Consent.GrantedAt))
	case r.Revocation != nil:
		v := r.Revocation
		err = s.tx(ctx, "import revocation", func(tx pgx.Tx) error {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM revocations WHERE kind = $1 AND value = $2`,
				string(v.Kind), v.Value).Scan(&n); err != nil || n > 0 {
				return err
			}
			if err := addRevocation(ctx, tx, v.Kind, v.Value, v.ExpiresAt); err != nil {
				return err
			}
			// Keep the original time, not the import's.
			_, err := tx.Exec(ctx, `UPDATE revocations SET at = $3 WHERE kind = $1 AND value = $2`,
				string(v.Kind), v.Value, ms(v.At))
			return err
		})
	default:
		return fmt.Errorf("postgres: import: empty record")
	}
	return err
}

// Revocation notifications.

// Notify listens for new revocations on a connection of its own until ctx
// ends. wake receives (without blocking the listener: it holds at most one
// signal) on every notification and after every (re)connection, when
// something may have been missed. live reports whether the listening
// connection is up; while it is not, the caller must poll.
func (s *Store) Notify(ctx context.Context) (wake <-chan struct{}, live func() bool) {
	ch := make(chan struct{}, 1)
	var up atomic.Bool
	ctx, cancel := context.WithCancel(ctx)
	s.listen.Lock()
	s.stopL = append(s.stopL, cancel)
	s.listen.Unlock()
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		delay := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := s.listenOnce(ctx, &up, signal)
			up.Store(false)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				delay = 100 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 5*time.Second)
		}
	}()
	return ch, up.Load
}

func (s *Store) listenOnce(ctx context.Context, up *atomic.Bool, signal func()) error {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.cfg.ConnConfig.Copy())
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+channel); err != nil {
		return err
	}
	up.Store(true)
	signal() // catch up on what happened while not listening
	for {
		// A connection that silently died (a node lost its network)
		// would wait forever; ping it when quiet for listenPing.
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil {
			signal()
			continue
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
	}
}

// listenPing is how long a quiet listening connection waits before it
// checks that it is still alive.
const listenPing = 10 * time.Second
