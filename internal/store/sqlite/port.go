package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

var _ store.Porter = (*Store)(nil)

// Export emits every client, unexpired code and refresh token, consent and
// unexpired revocation, read in one transaction (one snapshot of the file).
func (s *Store) Export(ctx context.Context, emit func(*store.Record) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("sqlite: export: %w", err)
	}
	defer tx.Rollback()
	now := ms(time.Now())
	steps := []struct {
		query string
		args  []any
		f     func(*sql.Rows) error
	}{
		{`SELECT ` + clientCols + ` FROM clients ORDER BY id`, nil, func(r *sql.Rows) error {
			c, err := scanClient(r)
			if err != nil {
				return err
			}
			return emit(&store.Record{Client: c})
		}},
		{`SELECT ` + codeCols + ` FROM auth_codes WHERE expires_at > ? ORDER BY code_hash`, []any{now}, func(r *sql.Rows) error {
			var c store.AuthCode
			var exp, used, authTime int64
			var orgs, teams string
			if err := r.Scan(&c.CodeHash, &c.GrantID, &c.ClientID, &c.RedirectURI, &c.CodeChallenge, &c.Resource,
				&c.Scope, &c.Subject, &c.Login, &c.Host, &exp, &used, &orgs, &teams, &authTime); err != nil {
				return err
			}
			c.ExpiresAt, c.UsedAt, c.AuthTime = fromMS(exp), fromMS(used), fromMS(authTime)
			var err error
			if c.Orgs, err = parseList(orgs); err != nil {
				return err
			}
			if c.Teams, err = parseList(teams); err != nil {
				return err
			}
			return emit(&store.Record{Code: &c})
		}},
		{`SELECT ` + tokenCols + ` FROM refresh_tokens WHERE expires_at > ? ORDER BY token_hash`, []any{now}, func(r *sql.Rows) error {
			t, err := scanToken(r)
			if err != nil {
				return err
			}
			return emit(&store.Record{Token: t})
		}},
		{`SELECT subject, client_id, scope, granted_at FROM consents ORDER BY subject, client_id`, nil, func(r *sql.Rows) error {
			var c store.Consent
			var at int64
			if err := r.Scan(&c.Subject, &c.ClientID, &c.Scope, &at); err != nil {
				return err
			}
			c.GrantedAt = fromMS(at)
			return emit(&store.Record{Consent: &c})
		}},
		{`SELECT seq, kind, value, expires_at, at FROM revocations WHERE expires_at > ? ORDER BY seq`, []any{now}, func(r *sql.Rows) error {
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
		rows, err := tx.QueryContext(ctx, st.query, st.args...)
		if err != nil {
			return fmt.Errorf("sqlite: export: %w", err)
		}
		for rows.Next() {
			if err := st.f(rows); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: export: %w", err)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("sqlite: export: %w", err)
		}
	}
	return nil
}

// Import stores one exported record; an item whose key exists is left
// alone, so importing twice changes nothing.
func (s *Store) Import(ctx context.Context, r *store.Record) error {
	var err error
	switch {
	case r.Client != nil:
		_, err = s.w.ExecContext(ctx, `INSERT INTO clients (`+clientCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, clientArgs(r.Client)...)
	case r.Code != nil:
		c := r.Code
		_, err = s.w.ExecContext(ctx, `INSERT INTO auth_codes (`+codeCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (code_hash) DO NOTHING`,
			c.CodeHash, c.GrantID, c.ClientID, c.RedirectURI, c.CodeChallenge, c.Resource, c.Scope,
			c.Subject, c.Login, c.Host, ms(c.ExpiresAt), ms(c.UsedAt), listJSON(c.Orgs), listJSON(c.Teams), ms(c.AuthTime))
	case r.Token != nil:
		_, err = s.w.ExecContext(ctx, insertToken, tokenArgs(r.Token)...)
	case r.Consent != nil:
		c := r.Consent
		_, err = s.w.ExecContext(ctx, `INSERT INTO consents (subject, client_id, scope, granted_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (subject, client_id) DO NOTHING`, c.Subject, c.ClientID, c.Scope, ms(c.GrantedAt))
	case r.Revocation != nil:
		v := r.Revocation
		_, err = s.w.ExecContext(ctx, `INSERT INTO revocations (kind, value, expires_at, at)
			SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM revocations WHERE kind = ?1 AND value = ?2)`,
			string(v.Kind), v.Value, ms(v.ExpiresAt), ms(v.At))
	default:
		return fmt.Errorf("sqlite: import: empty record")
	}
	if err != nil {
		return fmt.Errorf("sqlite: import: %w", err)
	}
	return nil
}
