package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mcpgate/mcpgate/internal/store"
)

// exec runs one statement under the operation deadline and returns the
// rows it changed.
func (s *Store) exec(ctx context.Context, op, sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, wrap(op, err)
	}
	return tag.RowsAffected(), nil
}

// queryRow runs one query under the operation deadline and scans its row
// with scan.
func (s *Store) queryRow(ctx context.Context, op string, scan func(pgx.Row) error, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := scan(s.pool.QueryRow(ctx, sql, args...)); err != nil {
		return wrap(op, err)
	}
	return nil
}

// Clients.

const clientCols = `id, secret_hash, secret_expires_at, redirect_uris, name, grant_types,
	response_types, token_endpoint_auth_method, scope, application_type, metadata,
	registration_token_hash, created_at, updated_at, last_used_at`

func clientArgs(c *store.Client) []any {
	var meta []byte
	if len(c.Metadata) > 0 {
		meta = c.Metadata
	}
	return []any{c.ID, c.SecretHash, ms(c.SecretExpiresAt), listJSON(c.RedirectURIs), c.Name,
		listJSON(c.GrantTypes), listJSON(c.ResponseTypes), c.TokenEndpointAuthMethod, c.Scope,
		c.ApplicationType, meta, c.RegistrationTokenHash, ms(c.CreatedAt), ms(c.UpdatedAt), ms(c.LastUsedAt)}
}

func scanClient(r pgx.Row) (*store.Client, error) {
	var c store.Client
	var secretExp, created, updated, used int64
	var redirect, grants, responses string
	if err := r.Scan(&c.ID, &c.SecretHash, &secretExp, &redirect, &c.Name, &grants, &responses,
		&c.TokenEndpointAuthMethod, &c.Scope, &c.ApplicationType, &c.Metadata,
		&c.RegistrationTokenHash, &created, &updated, &used); err != nil {
		return nil, err
	}
	c.SecretExpiresAt, c.CreatedAt, c.UpdatedAt = fromMS(secretExp), fromMS(created), fromMS(updated)
	c.LastUsedAt = fromMS(used)
	var err error
	if c.RedirectURIs, err = parseList(redirect); err != nil {
		return nil, fmt.Errorf("redirect_uris: %w", err)
	}
	if c.GrantTypes, err = parseList(grants); err != nil {
		return nil, fmt.Errorf("grant_types: %w", err)
	}
	if c.ResponseTypes, err = parseList(responses); err != nil {
		return nil, fmt.Errorf("response_types: %w", err)
	}
	if len(c.Metadata) == 0 {
		c.Metadata = nil
	}
	return &c, nil
}

const insertClient = `INSERT INTO clients (` + clientCols + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (id) DO NOTHING`

// CreateClient stores a new client; ErrAlreadyExists if the ID is taken.
func (s *Store) CreateClient(ctx context.Context, c *store.Client) error {
	n, err := s.exec(ctx, "create client", insertClient, clientArgs(c)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: create client %q: %w", c.ID, store.ErrAlreadyExists)
	}
	return nil
}

// GetClient returns the client; ErrNotFound if there is none.
func (s *Store) GetClient(ctx context.Context, id string) (*store.Client, error) {
	var c *store.Client
	err := s.queryRow(ctx, fmt.Sprintf("get client %q", id), func(r pgx.Row) (err error) {
		c, err = scanClient(r)
		return err
	}, `SELECT `+clientCols+` FROM clients WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// UpdateClient replaces every field of the client with c.ID; ErrNotFound if
// there is none.
func (s *Store) UpdateClient(ctx context.Context, c *store.Client) error {
	n, err := s.exec(ctx, "update client", `UPDATE clients SET secret_hash = $2, secret_expires_at = $3,
		redirect_uris = $4, name = $5, grant_types = $6, response_types = $7,
		token_endpoint_auth_method = $8, scope = $9, application_type = $10, metadata = $11,
		registration_token_hash = $12, created_at = $13, updated_at = $14, last_used_at = $15 WHERE id = $1`,
		clientArgs(c)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: update client %q: %w", c.ID, store.ErrNotFound)
	}
	return nil
}

// DeleteClient removes the client and what belongs to it and logs a
// RevokeClient revocation, in one transaction; ErrNotFound (and no
// revocation) for an unknown client.
func (s *Store) DeleteClient(ctx context.Context, id string, revokeUntil time.Time) error {
	if err := requireExpiry("delete client", revokeUntil); err != nil {
		return err
	}
	return s.tx(ctx, fmt.Sprintf("delete client %q", id), func(tx pgx.Tx) error {
		return deleteClient(ctx, tx, id, revokeUntil)
	})
}

func deleteClient(ctx context.Context, tx pgx.Tx, id string, revokeUntil time.Time) error {
	tag, err := tx.Exec(ctx, `DELETE FROM clients WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	for _, q := range []string{
		`DELETE FROM consents WHERE client_id = $1`,
		`DELETE FROM auth_codes WHERE client_id = $1`,
		`DELETE FROM refresh_tokens WHERE client_id = $1`,
	} {
		if _, err := tx.Exec(ctx, q, id); err != nil {
			return err
		}
	}
	return addRevocation(ctx, tx, store.RevokeClient, id, revokeUntil)
}

// TouchClient records the client's use at now.
func (s *Store) TouchClient(ctx context.Context, id string, now time.Time) error {
	n, err := s.exec(ctx, "touch client", `UPDATE clients SET last_used_at = $2 WHERE id = $1`, id, ms(now))
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: touch client %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteUnusedClients deletes, as DeleteClient does, every client last
// used before unusedSince, in one transaction.
func (s *Store) DeleteUnusedClients(ctx context.Context, unusedSince, revokeUntil time.Time) (int, error) {
	if err := requireExpiry("delete unused clients", revokeUntil); err != nil {
		return 0, err
	}
	var n int
	err := s.tx(ctx, "delete unused clients", func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `SELECT id FROM clients WHERE last_used_at < $1 FOR UPDATE`, ms(unusedSince))
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, id := range ids {
			err := deleteClient(ctx, tx, id, revokeUntil)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted by another node since the SELECT
			}
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Pending authorizations.

const pendingCols = `host, client_id, redirect_uri, state, code_challenge, code_challenge_method,
	scope, resource, subject, login, granted, expires_at, client_key, upstream_verifier, nonce,
	bind_hash, proof_hash, orgs, teams`

func pendingArgs(p *store.Pending) []any {
	return []any{hashID(p.ID), p.Host, p.ClientID, p.RedirectURI, p.State, p.CodeChallenge,
		p.CodeChallengeMethod, p.Scope, p.Resource, p.Subject, p.Login, p.Granted, ms(p.ExpiresAt),
		p.ClientKey, p.UpstreamVerifier, p.Nonce, p.BindHash, p.ProofHash, listJSON(p.Orgs), listJSON(p.Teams)}
}

func scanPending(r pgx.Row, id string) (*store.Pending, error) {
	p := store.Pending{ID: id}
	var exp int64
	var orgs, teams string
	if err := r.Scan(&p.Host, &p.ClientID, &p.RedirectURI, &p.State, &p.CodeChallenge,
		&p.CodeChallengeMethod, &p.Scope, &p.Resource, &p.Subject, &p.Login, &p.Granted, &exp,
		&p.ClientKey, &p.UpstreamVerifier, &p.Nonce, &p.BindHash, &p.ProofHash, &orgs, &teams); err != nil {
		return nil, err
	}
	p.ExpiresAt = fromMS(exp)
	var err error
	if p.Orgs, err = parseList(orgs); err != nil {
		return nil, fmt.Errorf("orgs: %w", err)
	}
	if p.Teams, err = parseList(teams); err != nil {
		return nil, fmt.Errorf("teams: %w", err)
	}
	return &p, nil
}

// PutPending stores a new pending authorization; ErrAlreadyExists if its
// ID is taken.
func (s *Store) PutPending(ctx context.Context, p *store.Pending) error {
	if err := requireExpiry("put pending", p.ExpiresAt); err != nil {
		return err
	}
	n, err := s.exec(ctx, "put pending", `INSERT INTO pending (id_hash, `+pendingCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
		ON CONFLICT (id_hash) DO NOTHING`, pendingArgs(p)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: put pending: %w", store.ErrAlreadyExists)
	}
	return nil
}

// UpdatePending replaces an unexpired pending authorization.
func (s *Store) UpdatePending(ctx context.Context, p *store.Pending) error {
	args := append(pendingArgs(p), ms(time.Now()))
	n, err := s.exec(ctx, "update pending", `UPDATE pending SET host = $2, client_id = $3,
		redirect_uri = $4, state = $5, code_challenge = $6, code_challenge_method = $7, scope = $8,
		resource = $9, subject = $10, login = $11, granted = $12, expires_at = $13, client_key = $14,
		upstream_verifier = $15, nonce = $16, bind_hash = $17, proof_hash = $18, orgs = $19, teams = $20
		WHERE id_hash = $1 AND expires_at > $21`, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: update pending: %w", store.ErrNotFound)
	}
	return nil
}

// TakePending deletes and returns the pending authorization in one
// statement: of several takers on any node exactly one gets the row.
func (s *Store) TakePending(ctx context.Context, id string) (*store.Pending, error) {
	var p *store.Pending
	err := s.queryRow(ctx, "take pending", func(r pgx.Row) (err error) {
		p, err = scanPending(r, id)
		return err
	}, `DELETE FROM pending WHERE id_hash = $1 RETURNING `+pendingCols, hashID(id))
	if err != nil {
		return nil, err
	}
	if !p.ExpiresAt.After(time.Now()) {
		return nil, fmt.Errorf("postgres: take pending: expired: %w", store.ErrNotFound)
	}
	return p, nil
}

// GetPending reads an unexpired pending authorization.
func (s *Store) GetPending(ctx context.Context, id string) (*store.Pending, error) {
	var p *store.Pending
	err := s.queryRow(ctx, "get pending", func(r pgx.Row) (err error) {
		p, err = scanPending(r, id)
		return err
	}, `SELECT `+pendingCols+` FROM pending WHERE id_hash = $1 AND expires_at > $2`, hashID(id), ms(time.Now()))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// BindPending sets bind_hash where it is still empty, in one statement:
// PostgreSQL re-checks the condition after waiting for a concurrent
// binder's row lock, so exactly one wins.
func (s *Store) BindPending(ctx context.Context, id, bindHash string) error {
	if bindHash == "" {
		return fmt.Errorf("postgres: bind pending: empty hash")
	}
	n, err := s.exec(ctx, "bind pending", `UPDATE pending SET bind_hash = $1
		WHERE id_hash = $2 AND bind_hash = '' AND expires_at > $3`, bindHash, hashID(id), ms(time.Now()))
	if err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	if _, err := s.GetPending(ctx, id); err != nil {
		return fmt.Errorf("postgres: bind pending: %w", store.ErrNotFound)
	}
	return fmt.Errorf("postgres: bind pending: %w", store.ErrAlreadyUsed)
}

// CountPending counts the live pending authorizations of one client
// network, across every node.
func (s *Store) CountPending(ctx context.Context, clientKey string, now time.Time) (int, error) {
	var n int
	err := s.queryRow(ctx, "count pending", func(r pgx.Row) error { return r.Scan(&n) },
		`SELECT count(*) FROM pending WHERE client_key = $1 AND expires_at > $2`, clientKey, ms(now))
	return n, err
}

// Authorization codes.

const codeCols = `code_hash, grant_id, client_id, redirect_uri, code_challenge, resource,
	scope, subject, login, host, expires_at, used_at, orgs, teams, auth_time`

func codeArgs(c *store.AuthCode) []any {
	return []any{c.CodeHash, c.GrantID, c.ClientID, c.RedirectURI, c.CodeChallenge, c.Resource, c.Scope,
		c.Subject, c.Login, c.Host, ms(c.ExpiresAt), ms(c.UsedAt), listJSON(c.Orgs), listJSON(c.Teams), ms(c.AuthTime)}
}

func scanCode(r pgx.Row) (*store.AuthCode, error) {
	var c store.AuthCode
	var exp, used, authTime int64
	var orgs, teams string
	if err := r.Scan(&c.CodeHash, &c.GrantID, &c.ClientID, &c.RedirectURI, &c.CodeChallenge, &c.Resource,
		&c.Scope, &c.Subject, &c.Login, &c.Host, &exp, &used, &orgs, &teams, &authTime); err != nil {
		return nil, err
	}
	c.ExpiresAt, c.UsedAt, c.AuthTime = fromMS(exp), fromMS(used), fromMS(authTime)
	var err error
	if c.Orgs, err = parseList(orgs); err != nil {
		return nil, fmt.Errorf("orgs: %w", err)
	}
	if c.Teams, err = parseList(teams); err != nil {
		return nil, fmt.Errorf("teams: %w", err)
	}
	return &c, nil
}

const insertCode = `INSERT INTO auth_codes (` + codeCols + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (code_hash) DO NOTHING`

// CreateAuthCode stores a new code; ErrAlreadyExists if its hash is taken.
func (s *Store) CreateAuthCode(ctx context.Context, c *store.AuthCode) error {
	if err := requireExpiry("create auth code", c.ExpiresAt); err != nil {
		return err
	}
	n, err := s.exec(ctx, "create auth code", insertCode, codeArgs(c)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: create auth code: %w", store.ErrAlreadyExists)
	}
	return nil
}

// ConsumeAuthCode marks the code used at now and returns it. The row is
// locked (FOR UPDATE) between the check and the change, so of two nodes
// redeeming one code the second waits and then sees it used.
func (s *Store) ConsumeAuthCode(ctx context.Context, codeHash string, now time.Time) (*store.AuthCode, error) {
	if now.IsZero() {
		return nil, errZeroNow("consume auth code")
	}
	var code *store.AuthCode
	err := s.tx(ctx, "consume auth code", func(tx pgx.Tx) error {
		c, err := scanCode(tx.QueryRow(ctx, `SELECT `+codeCols+` FROM auth_codes WHERE code_hash = $1 FOR UPDATE`, codeHash))
		if err != nil {
			return err
		}
		if !c.UsedAt.IsZero() {
			code = c
			return store.ErrAlreadyUsed // rolls back: nothing was changed
		}
		if ms(c.ExpiresAt) <= ms(now) {
			return fmt.Errorf("expired: %w", store.ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `UPDATE auth_codes SET used_at = $2 WHERE code_hash = $1`, codeHash, ms(now)); err != nil {
			return err
		}
		c.UsedAt = fromMS(ms(now))
		code = c
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrAlreadyUsed) {
			return code, err
		}
		return nil, err
	}
	return code, nil
}

// Refresh tokens.

const tokenCols = `token_hash, grant_id, client_id, subject, login, scope, resource, host,
	created_at, expires_at, rotated_at, orgs, teams, auth_time, rotation_nonce`

func tokenArgs(t *store.RefreshToken) []any {
	return []any{t.TokenHash, t.GrantID, t.ClientID, t.Subject, t.Login, t.Scope, t.Resource,
		t.Host, ms(t.CreatedAt), ms(t.ExpiresAt), ms(t.RotatedAt), listJSON(t.Orgs), listJSON(t.Teams),
		ms(t.AuthTime), t.RotationNonce}
}

const insertToken = `INSERT INTO refresh_tokens (` + tokenCols + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (token_hash) DO NOTHING`

func scanToken(r pgx.Row) (*store.RefreshToken, error) {
	var t store.RefreshToken
	var created, exp, rotated, authTime int64
	var orgs, teams string
	if err := r.Scan(&t.TokenHash, &t.GrantID, &t.ClientID, &t.Subject, &t.Login, &t.Scope,
		&t.Resource, &t.Host, &created, &exp, &rotated, &orgs, &teams, &authTime, &t.RotationNonce); err != nil {
		return nil, err
	}
	t.CreatedAt, t.ExpiresAt, t.RotatedAt, t.AuthTime = fromMS(created), fromMS(exp), fromMS(rotated), fromMS(authTime)
	var err error
	if t.Orgs, err = parseList(orgs); err != nil {
		return nil, fmt.Errorf("orgs: %w", err)
	}
	if t.Teams, err = parseList(teams); err != nil {
		return nil, fmt.Errorf("teams: %w", err)
	}
	return &t, nil
}

// CreateRefreshToken stores a new token; ErrAlreadyExists if its hash is
// taken.
func (s *Store) CreateRefreshToken(ctx context.Context, t *store.RefreshToken) error {
	if err := requireExpiry("create refresh token", t.ExpiresAt); err != nil {
		return err
	}
	n, err := s.exec(ctx, "create refresh token", insertToken, tokenArgs(t)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: create refresh token: %w", store.ErrAlreadyExists)
	}
	return nil
}

// GetRefreshToken returns the token, rotated or not, unless expired.
func (s *Store) GetRefreshToken(ctx context.Context, tokenHash string) (*store.RefreshToken, error) {
	var t *store.RefreshToken
	err := s.queryRow(ctx, "get refresh token", func(r pgx.Row) (err error) {
		t, err = scanToken(r)
		return err
	}, `SELECT `+tokenCols+` FROM refresh_tokens WHERE token_hash = $1 AND expires_at > $2`, tokenHash, ms(time.Now()))
	if err != nil {
		return nil, err
	}
	return t, nil
}

// RotateRefreshToken marks old rotated and stores next in one transaction,
// with old's row locked: of two nodes rotating one token, the second waits
// and then finds it rotated, with the winner's nonce to read back.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash, nonce string, next *store.RefreshToken, now time.Time) error {
	if err := requireExpiry("rotate refresh token", next.ExpiresAt); err != nil {
		return err
	}
	if now.IsZero() {
		return errZeroNow("rotate refresh token")
	}
	return s.tx(ctx, "rotate refresh token", func(tx pgx.Tx) error {
		var exp, rotated int64
		err := tx.QueryRow(ctx, `SELECT expires_at, rotated_at FROM refresh_tokens
			WHERE token_hash = $1 FOR UPDATE`, oldHash).Scan(&exp, &rotated)
		if err != nil {
			return err
		}
		if rotated != 0 {
			return store.ErrAlreadyRotated
		}
		if exp <= ms(now) {
			return fmt.Errorf("expired: %w", store.ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET rotated_at = $2, rotation_nonce = $3
			WHERE token_hash = $1`, oldHash, ms(now), nonce); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, insertToken, tokenArgs(next)...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("successor: %w", store.ErrAlreadyExists)
		}
		return nil
	})
}

// RevokeGrant deletes the grant's refresh tokens and logs a RevokeGrant
// revocation, in one transaction.
func (s *Store) RevokeGrant(ctx context.Context, grantID string, revokeUntil time.Time) error {
	if err := requireExpiry("revoke grant", revokeUntil); err != nil {
		return err
	}
	return s.tx(ctx, fmt.Sprintf("revoke grant %q", grantID), func(tx pgx.Tx) error {
		return revokeGrant(ctx, tx, grantID, revokeUntil)
	})
}

// revokeGrant deletes the grant's refresh tokens and unredeemed codes (a
// pending code must not start the grant again) and records the revocation.
func revokeGrant(ctx context.Context, tx pgx.Tx, grantID string, revokeUntil time.Time) error {
	for _, q := range []string{
		`DELETE FROM refresh_tokens WHERE grant_id = $1`,
		`DELETE FROM auth_codes WHERE grant_id = $1`,
	} {
		if _, err := tx.Exec(ctx, q, grantID); err != nil {
			return err
		}
	}
	return addRevocation(ctx, tx, store.RevokeGrant, grantID, revokeUntil)
}

// ListClients returns every stored client, sorted by ID.
func (s *Store) ListClients(ctx context.Context) ([]*store.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT `+clientCols+` FROM clients ORDER BY id`)
	if err != nil {
		return nil, wrap("list clients", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Client, error) { return scanClient(r) })
	if err != nil {
		return nil, wrap("list clients", err)
	}
	return out, nil
}

// asciiLower folds A-Z only, as policy compares logins: lower() would
// follow the database's locale into Unicode case folding.
const asciiLower = `'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'`

// ListGrants reads the current token of each family: the one not rotated
// (rotation marks the old token and inserts its successor in one
// transaction, so a live family has exactly one).
func (s *Store) ListGrants(ctx context.Context, f store.GrantFilter, now time.Time) ([]store.Grant, error) {
	if now.IsZero() {
		return nil, errZeroNow("list grants")
	}
	q := `SELECT grant_id, client_id, subject, login, scope, resource, host, auth_time, created_at, expires_at
		FROM refresh_tokens WHERE rotated_at = 0 AND expires_at > $1`
	args := []any{ms(now)}
	if f.User != "" {
		args = append(args, f.User)
		n := len(args)
		q += fmt.Sprintf(` AND (subject = $%d OR translate(login, %s) = translate($%d, %s))`, n, asciiLower, n, asciiLower)
	}
	if f.ClientID != "" {
		args = append(args, f.ClientID)
		q += fmt.Sprintf(` AND client_id = $%d`, len(args))
	}
	q += ` ORDER BY auth_time, grant_id`
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, wrap("list grants", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Grant, error) {
		var g store.Grant
		var authTime, created, exp int64
		err := r.Scan(&g.ID, &g.ClientID, &g.Subject, &g.Login, &g.Scope, &g.Resource, &g.Host, &authTime, &created, &exp)
		g.AuthTime, g.LastUsed, g.ExpiresAt = fromMS(authTime), fromMS(created), fromMS(exp)
		return g, err
	})
	if err != nil {
		return nil, wrap("list grants", err)
	}
	return out, nil
}

// RevokeClientGrants revokes every grant the client has a refresh token or
// a code of, and deletes its consents, in one transaction.
func (s *Store) RevokeClientGrants(ctx context.Context, clientID string, revokeUntil time.Time) ([]string, error) {
	if err := requireExpiry("revoke client grants", revokeUntil); err != nil {
		return nil, err
	}
	var ids []string
	err := s.tx(ctx, fmt.Sprintf("revoke grants of client %q", clientID), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT grant_id FROM refresh_tokens WHERE client_id = $1
			UNION SELECT grant_id FROM auth_codes WHERE client_id = $1 ORDER BY 1`, clientID)
		if err != nil {
			return err
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		for _, id := range ids {
			if err := revokeGrant(ctx, tx, id, revokeUntil); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `DELETE FROM consents WHERE client_id = $1`, clientID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// DeleteRefreshToken removes one token; ErrNotFound if there is none.
func (s *Store) DeleteRefreshToken(ctx context.Context, tokenHash string) error {
	n, err := s.exec(ctx, "delete refresh token", `DELETE FROM refresh_tokens WHERE token_hash = $1`, tokenHash)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: delete refresh token: %w", store.ErrNotFound)
	}
	return nil
}

// Revocations.

// addRevocation inserts one entry and announces it. The advisory lock,
// held until commit, serializes revocation inserts: a sequence hands out
// numbers at insert time, and without the lock seq n+1 could commit (and
// be read past by a worker's cursor) before seq n.
func addRevocation(ctx context.Context, tx pgx.Tx, kind store.RevocationKind, value string, until time.Time) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockRevocation); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO revocations (kind, value, expires_at, at) VALUES ($1, $2, $3, $4)`,
		string(kind), value, ms(until), ms(time.Now())); err != nil {
		return err
	}
	// Delivered at commit, to every node listening (Notify).
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, channel)
	return err
}

// RevokeAccessToken logs a RevokeToken revocation for jti.
func (s *Store) RevokeAccessToken(ctx context.Context, jti string, expiresAt time.Time) error {
	if err := requireExpiry("revoke access token", expiresAt); err != nil {
		return err
	}
	return s.tx(ctx, "revoke access token", func(tx pgx.Tx) error {
		return addRevocation(ctx, tx, store.RevokeToken, jti, expiresAt)
	})
}

// Revocations returns up to limit unexpired entries with Seq > after,
// oldest first.
func (s *Store) Revocations(ctx context.Context, after int64, limit int) ([]store.Revocation, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: revocations: limit %d is not positive", limit)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT seq, kind, value, expires_at, at FROM revocations
		WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3`, after, ms(time.Now()), limit)
	if err != nil {
		return nil, wrap("revocations", err)
	}
	out, err := pgx.CollectRows(rows, scanRevocation)
	if err != nil {
		return nil, wrap("revocations", err)
	}
	return out, nil
}

func scanRevocation(row pgx.CollectableRow) (store.Revocation, error) {
	var r store.Revocation
	var kind string
	var exp, at int64
	if err := row.Scan(&r.Seq, &kind, &r.Value, &exp, &at); err != nil {
		return r, err
	}
	r.Kind, r.ExpiresAt, r.At = store.RevocationKind(kind), fromMS(exp), fromMS(at)
	return r, nil
}

// Consents.

// PutConsent stores the consent, replacing an earlier one.
func (s *Store) PutConsent(ctx context.Context, c *store.Consent) error {
	_, err := s.exec(ctx, "put consent", `INSERT INTO consents (subject, client_id, scope, granted_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (subject, client_id)
		DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at`,
		c.Subject, c.ClientID, c.Scope, ms(c.GrantedAt))
	return err
}

// GetConsent returns the consent; ErrNotFound if there is none.
func (s *Store) GetConsent(ctx context.Context, subject, clientID string) (*store.Consent, error) {
	c := store.Consent{Subject: subject, ClientID: clientID}
	var granted int64
	err := s.queryRow(ctx, "get consent", func(r pgx.Row) error { return r.Scan(&c.Scope, &granted) },
		`SELECT scope, granted_at FROM consents WHERE subject = $1 AND client_id = $2`, subject, clientID)
	if err != nil {
		return nil, err
	}
	c.GrantedAt = fromMS(granted)
	return &c, nil
}

// Rate limits.

// CountEvent counts an event for key in one upsert: PostgreSQL's ON
// CONFLICT DO UPDATE is atomic, so every node draws on one budget.
func (s *Store) CountEvent(ctx context.Context, key string, window time.Duration, now time.Time) (int64, error) {
	if now.IsZero() {
		return 0, errZeroNow("count event")
	}
	if window <= 0 {
		return 0, fmt.Errorf("postgres: count event: window %v is not positive", window)
	}
	var n int64
	err := s.queryRow(ctx, "count event", func(r pgx.Row) error { return r.Scan(&n) },
		`INSERT INTO rate_limits AS r (key, window_start, count, expires_at)
		VALUES ($1, $2::bigint, 1, $2::bigint + $3::bigint)
		ON CONFLICT (key) DO UPDATE SET
			count        = CASE WHEN r.expires_at > $2::bigint THEN r.count + 1 ELSE 1 END,
			window_start = CASE WHEN r.expires_at > $2::bigint THEN r.window_start ELSE $2::bigint END,
			expires_at   = CASE WHEN r.expires_at > $2::bigint THEN r.expires_at ELSE $2::bigint + $3::bigint END
		RETURNING count`, key, ms(now), window.Milliseconds())
	return n, err
}

// Cleanup deletes what expired at or before now, in one transaction.
func (s *Store) Cleanup(ctx context.Context, now time.Time) error {
	return s.tx(ctx, "cleanup", func(tx pgx.Tx) error {
		for _, table := range []string{"pending", "auth_codes", "refresh_tokens", "revocations", "rate_limits"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE expires_at <= $1`, ms(now)); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
		return nil
	})
}
