package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
)

// Writes go to s.w, whose transactions begin IMMEDIATE; reads of a single
// row or list go to the read-only pool s.r. A single statement is atomic on
// its own, so only multi-statement operations use a transaction.

// inTx runs f in a BEGIN IMMEDIATE transaction: it commits if f returns
// nil and rolls back otherwise.
func (s *Store) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // no-op after Commit
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// affected returns how many rows an ExecContext changed.
func affected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Clients.

const clientCols = `id, secret_hash, secret_expires_at, redirect_uris, name, grant_types,
	response_types, token_endpoint_auth_method, scope, application_type, metadata,
	registration_token_hash, created_at, updated_at, last_used_at`

func clientArgs(c *store.Client) []any {
	return []any{c.ID, c.SecretHash, ms(c.SecretExpiresAt), listJSON(c.RedirectURIs), c.Name,
		listJSON(c.GrantTypes), listJSON(c.ResponseTypes), c.TokenEndpointAuthMethod, c.Scope,
		c.ApplicationType, c.Metadata, c.RegistrationTokenHash, ms(c.CreatedAt), ms(c.UpdatedAt), ms(c.LastUsedAt)}
}

func scanClient(r rowScanner) (*store.Client, error) {
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

// CreateClient stores a new client; ErrAlreadyExists if the ID is taken.
func (s *Store) CreateClient(ctx context.Context, c *store.Client) error {
	n, err := affected(s.w.ExecContext(ctx, `INSERT INTO clients (`+clientCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, clientArgs(c)...))
	if err != nil {
		return fmt.Errorf("sqlite: create client: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: create client %q: %w", c.ID, store.ErrAlreadyExists)
	}
	return nil
}

// GetClient returns the client; ErrNotFound if there is none.
func (s *Store) GetClient(ctx context.Context, id string) (*store.Client, error) {
	c, err := scanClient(s.r.QueryRowContext(ctx, `SELECT `+clientCols+` FROM clients WHERE id = ?`, id))
	if err != nil {
		return nil, notFound(fmt.Sprintf("get client %q", id), err)
	}
	return c, nil
}

// UpdateClient replaces every field of the client with c.ID; ErrNotFound if
// there is none.
func (s *Store) UpdateClient(ctx context.Context, c *store.Client) error {
	args := clientArgs(c)
	n, err := affected(s.w.ExecContext(ctx, `UPDATE clients SET secret_hash = ?, secret_expires_at = ?,
		redirect_uris = ?, name = ?, grant_types = ?, response_types = ?,
		token_endpoint_auth_method = ?, scope = ?, application_type = ?, metadata = ?,
		registration_token_hash = ?, created_at = ?, updated_at = ?, last_used_at = ? WHERE id = ?`,
		append(args[1:], c.ID)...))
	if err != nil {
		return fmt.Errorf("sqlite: update client: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: update client %q: %w", c.ID, store.ErrNotFound)
	}
	return nil
}

// DeleteClient removes the client with its consents, codes and refresh
// tokens and logs a RevokeClient revocation, all in one transaction.
// ErrNotFound (and nothing changed) if there is no such client.
func (s *Store) DeleteClient(ctx context.Context, id string, revokeUntil time.Time) error {
	if err := requireExpiry("delete client", revokeUntil); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		n, err := affected(tx.ExecContext(ctx, `DELETE FROM clients WHERE id = ?`, id))
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return deleteClientData(ctx, tx, id, revokeUntil)
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete client %q: %w", id, err)
	}
	s.revoked()
	return nil
}

// deleteClientData removes what belongs to a deleted client and logs the
// revocation that kills its access tokens in every worker.
func deleteClientData(ctx context.Context, tx *sql.Tx, id string, revokeUntil time.Time) error {
	for _, q := range []string{
		`DELETE FROM consents WHERE client_id = ?`,
		`DELETE FROM auth_codes WHERE client_id = ?`,
		`DELETE FROM refresh_tokens WHERE client_id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return err
		}
	}
	return addRevocation(ctx, tx, store.RevokeClient, id, revokeUntil)
}

// ListClients returns every stored client, sorted by ID.
func (s *Store) ListClients(ctx context.Context) ([]*store.Client, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+clientCols+` FROM clients ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list clients: %w", err)
	}
	defer rows.Close()
	var out []*store.Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list clients: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list clients: %w", err)
	}
	return out, nil
}

// TouchClient sets the client's last use; ErrNotFound if there is none.
func (s *Store) TouchClient(ctx context.Context, id string, now time.Time) error {
	if now.IsZero() {
		return errZeroNow("touch client")
	}
	n, err := affected(s.w.ExecContext(ctx, `UPDATE clients SET last_used_at = ? WHERE id = ?`, ms(now), id))
	if err != nil {
		return fmt.Errorf("sqlite: touch client: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: touch client %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteUnusedClients deletes the clients last used before unusedSince,
// with everything DeleteClient removes, in one transaction.
func (s *Store) DeleteUnusedClients(ctx context.Context, unusedSince, revokeUntil time.Time) (int, error) {
	if err := requireExpiry("delete unused clients", revokeUntil); err != nil {
		return 0, err
	}
	// Every worker runs this each minute; when nothing is due (the usual
	// case) a read says so without the write lock or a writer connection.
	var due bool
	if err := s.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM clients WHERE last_used_at < ?)`,
		ms(unusedSince)).Scan(&due); err != nil {
		return 0, fmt.Errorf("sqlite: delete unused clients: %w", err)
	}
	if !due {
		return 0, nil
	}
	var n int
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM clients WHERE last_used_at < ? RETURNING id`, ms(unusedSince))
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		for _, id := range ids {
			if err := deleteClientData(ctx, tx, id, revokeUntil); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete unused clients: %w", err)
	}
	if n > 0 {
		s.revoked()
	}
	return n, nil
}

// Pending authorizations.

const pendingCols = `host, client_id, redirect_uri, state, code_challenge,
	code_challenge_method, scope, resource, client_key, upstream_verifier, nonce,
	bind_hash, proof_hash, subject, login, granted, expires_at, orgs, teams`

func pendingArgs(p *store.Pending) []any {
	return []any{p.Host, p.ClientID, p.RedirectURI, p.State, p.CodeChallenge,
		p.CodeChallengeMethod, p.Scope, p.Resource, p.ClientKey, p.UpstreamVerifier, p.Nonce,
		p.BindHash, p.ProofHash, p.Subject, p.Login, p.Granted, ms(p.ExpiresAt),
		listJSON(p.Orgs), listJSON(p.Teams)}
}

func scanPending(r rowScanner, id string) (*store.Pending, error) {
	p := store.Pending{ID: id}
	var exp int64
	var orgs, teams string
	if err := r.Scan(&p.Host, &p.ClientID, &p.RedirectURI, &p.State, &p.CodeChallenge,
		&p.CodeChallengeMethod, &p.Scope, &p.Resource, &p.ClientKey, &p.UpstreamVerifier, &p.Nonce,
		&p.BindHash, &p.ProofHash, &p.Subject, &p.Login, &p.Granted, &exp,
		&orgs, &teams); err != nil {
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

// PutPending stores a new pending authorization; ErrAlreadyExists if the
// ID is taken (IDs are random, so that would be a bug, and overwriting
// would hand one user's flow to another).
func (s *Store) PutPending(ctx context.Context, p *store.Pending) error {
	if err := requireExpiry("put pending", p.ExpiresAt); err != nil {
		return err
	}
	n, err := affected(s.w.ExecContext(ctx, `INSERT INTO pending (id_hash, `+pendingCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id_hash) DO NOTHING`,
		append([]any{hashID(p.ID)}, pendingArgs(p)...)...))
	if err != nil {
		return fmt.Errorf("sqlite: put pending: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: put pending: %w", store.ErrAlreadyExists)
	}
	return nil
}

// UpdatePending replaces a pending authorization that exists and has not
// expired; ErrNotFound otherwise.
func (s *Store) UpdatePending(ctx context.Context, p *store.Pending) error {
	if err := requireExpiry("update pending", p.ExpiresAt); err != nil {
		return err
	}
	n, err := affected(s.w.ExecContext(ctx, `UPDATE pending SET host = ?, client_id = ?, redirect_uri = ?,
		state = ?, code_challenge = ?, code_challenge_method = ?, scope = ?, resource = ?,
		client_key = ?, upstream_verifier = ?, nonce = ?, bind_hash = ?, proof_hash = ?,
		subject = ?, login = ?, granted = ?, expires_at = ?, orgs = ?, teams = ?
		WHERE id_hash = ? AND expires_at > ?`,
		append(pendingArgs(p), hashID(p.ID), ms(time.Now()))...))
	if err != nil {
		return fmt.Errorf("sqlite: update pending: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: update pending: %w", store.ErrNotFound)
	}
	return nil
}

// TakePending deletes the pending authorization and returns it. The
// DELETE ... RETURNING is one statement, so it is atomic without an
// explicit transaction: of several concurrent takers exactly one gets the
// row. An expired one is deleted too, and reported as ErrNotFound.
func (s *Store) TakePending(ctx context.Context, id string) (*store.Pending, error) {
	p, err := scanPending(s.w.QueryRowContext(ctx,
		`DELETE FROM pending WHERE id_hash = ? RETURNING `+pendingCols, hashID(id)), id)
	if err != nil {
		return nil, notFound("take pending", err)
	}
	if !p.ExpiresAt.After(time.Now()) {
		return nil, fmt.Errorf("sqlite: take pending: expired: %w", store.ErrNotFound)
	}
	return p, nil
}

// GetPending returns the pending authorization without deleting it;
// ErrNotFound if unknown or expired.
func (s *Store) GetPending(ctx context.Context, id string) (*store.Pending, error) {
	p, err := scanPending(s.r.QueryRowContext(ctx, `SELECT `+pendingCols+
		` FROM pending WHERE id_hash = ? AND expires_at > ?`, hashID(id), ms(time.Now())), id)
	if err != nil {
		return nil, notFound("get pending", err)
	}
	return p, nil
}

// BindPending sets bind_hash where it is still empty, in one statement,
// so of two browsers racing to bind the same flow exactly one wins.
func (s *Store) BindPending(ctx context.Context, id, bindHash string) error {
	if bindHash == "" {
		return fmt.Errorf("sqlite: bind pending: empty hash")
	}
	n, err := affected(s.w.ExecContext(ctx, `UPDATE pending SET bind_hash = ?
		WHERE id_hash = ? AND bind_hash = '' AND expires_at > ?`, bindHash, hashID(id), ms(time.Now())))
	if err != nil {
		return fmt.Errorf("sqlite: bind pending: %w", err)
	}
	if n == 1 {
		return nil
	}
	if _, err := s.GetPending(ctx, id); err != nil {
		return fmt.Errorf("sqlite: bind pending: %w", store.ErrNotFound)
	}
	return fmt.Errorf("sqlite: bind pending: %w", store.ErrAlreadyUsed)
}

// CountPending counts the live pending authorizations of one client
// network (indexed by client_key, expires_at).
func (s *Store) CountPending(ctx context.Context, clientKey string, now time.Time) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM pending WHERE client_key = ? AND expires_at > ?`,
		clientKey, ms(now)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlite: count pending: %w", err)
	}
	return n, nil
}

// Authorization codes.

const codeCols = `code_hash, grant_id, client_id, redirect_uri, code_challenge, resource,
	scope, subject, login, host, expires_at, used_at, orgs, teams, auth_time`

// CreateAuthCode stores a new code; ErrAlreadyExists if its hash is taken.
func (s *Store) CreateAuthCode(ctx context.Context, c *store.AuthCode) error {
	if err := requireExpiry("create auth code", c.ExpiresAt); err != nil {
		return err
	}
	n, err := affected(s.w.ExecContext(ctx, `INSERT INTO auth_codes (`+codeCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (code_hash) DO NOTHING`,
		c.CodeHash, c.GrantID, c.ClientID, c.RedirectURI, c.CodeChallenge, c.Resource, c.Scope,
		c.Subject, c.Login, c.Host, ms(c.ExpiresAt), ms(c.UsedAt), listJSON(c.Orgs), listJSON(c.Teams), ms(c.AuthTime)))
	if err != nil {
		return fmt.Errorf("sqlite: create auth code: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: create auth code: %w", store.ErrAlreadyExists)
	}
	return nil
}

// ConsumeAuthCode marks the code used at now and returns it. A code used
// before is returned with ErrAlreadyUsed even after it expired (until
// Cleanup drops it), so the caller can still revoke what the first
// redemption issued; an unused expired or unknown code is ErrNotFound.
func (s *Store) ConsumeAuthCode(ctx context.Context, codeHash string, now time.Time) (*store.AuthCode, error) {
	if now.IsZero() {
		return nil, errZeroNow("consume auth code") // would store "not used"
	}
	var code *store.AuthCode
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var c store.AuthCode
		var exp, used, authTime int64
		var orgs, teams string
		err := tx.QueryRowContext(ctx, `SELECT `+codeCols+` FROM auth_codes WHERE code_hash = ?`, codeHash).Scan(
			&c.CodeHash, &c.GrantID, &c.ClientID, &c.RedirectURI, &c.CodeChallenge, &c.Resource,
			&c.Scope, &c.Subject, &c.Login, &c.Host, &exp, &used, &orgs, &teams, &authTime)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		c.ExpiresAt, c.UsedAt, c.AuthTime = fromMS(exp), fromMS(used), fromMS(authTime)
		if c.Orgs, err = parseList(orgs); err != nil {
			return fmt.Errorf("orgs: %w", err)
		}
		if c.Teams, err = parseList(teams); err != nil {
			return fmt.Errorf("teams: %w", err)
		}
		if used != 0 {
			code = &c
			return store.ErrAlreadyUsed // rolls back: nothing was changed
		}
		if exp <= ms(now) {
			return fmt.Errorf("expired: %w", store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE auth_codes SET used_at = ? WHERE code_hash = ?`,
			ms(now), codeHash); err != nil {
			return err
		}
		c.UsedAt = fromMS(ms(now))
		code = &c
		return nil
	})
	if err != nil {
		err = fmt.Errorf("sqlite: consume auth code: %w", err)
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
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING`

func scanToken(r rowScanner) (*store.RefreshToken, error) {
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

// CreateRefreshToken stores a new token (the first of a family);
// ErrAlreadyExists if its hash is taken.
func (s *Store) CreateRefreshToken(ctx context.Context, t *store.RefreshToken) error {
	if err := requireExpiry("create refresh token", t.ExpiresAt); err != nil {
		return err
	}
	n, err := affected(s.w.ExecContext(ctx, insertToken, tokenArgs(t)...))
	if err != nil {
		return fmt.Errorf("sqlite: create refresh token: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: create refresh token: %w", store.ErrAlreadyExists)
	}
	return nil
}

// GetRefreshToken returns the token, rotated or not; ErrNotFound if it is
// unknown, expired or was revoked (deleted).
func (s *Store) GetRefreshToken(ctx context.Context, tokenHash string) (*store.RefreshToken, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenCols+
		` FROM refresh_tokens WHERE token_hash = ? AND expires_at > ?`, tokenHash, ms(time.Now())))
	if err != nil {
		return nil, notFound("get refresh token", err)
	}
	return t, nil
}

// RotateRefreshToken marks old rotated at now with nonce and stores next,
// in one transaction. ErrAlreadyRotated if old was rotated before,
// ErrNotFound if it is unknown or expired (now), ErrAlreadyExists if
// next's hash is taken; in every error case nothing changes.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash, nonce string, next *store.RefreshToken, now time.Time) error {
	if err := requireExpiry("rotate refresh token", next.ExpiresAt); err != nil {
		return err
	}
	if now.IsZero() {
		return errZeroNow("rotate refresh token") // would store "not rotated"
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var exp, rotated int64
		err := tx.QueryRowContext(ctx, `SELECT expires_at, rotated_at FROM refresh_tokens
			WHERE token_hash = ?`, oldHash).Scan(&exp, &rotated)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if rotated != 0 {
			return store.ErrAlreadyRotated
		}
		if exp <= ms(now) {
			return fmt.Errorf("expired: %w", store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET rotated_at = ?, rotation_nonce = ?
			WHERE token_hash = ?`, ms(now), nonce, oldHash); err != nil {
			return err
		}
		n, err := affected(tx.ExecContext(ctx, insertToken, tokenArgs(next)...))
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("successor: %w", store.ErrAlreadyExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: rotate refresh token: %w", err)
	}
	return nil
}

// RevokeGrant deletes every refresh token of the grant, rotated or not,
// and its codes (an unredeemed code would start the family again), and
// logs a RevokeGrant revocation (also when nothing is left: access tokens
// of the grant may still be live).
func (s *Store) RevokeGrant(ctx context.Context, grantID string, revokeUntil time.Time) error {
	if err := requireExpiry("revoke grant", revokeUntil); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error { return revokeGrant(ctx, tx, grantID, revokeUntil) })
	if err != nil {
		return fmt.Errorf("sqlite: revoke grant %q: %w", grantID, err)
	}
	s.revoked()
	return nil
}

func revokeGrant(ctx context.Context, tx *sql.Tx, grantID string, revokeUntil time.Time) error {
	for _, q := range []string{
		`DELETE FROM refresh_tokens WHERE grant_id = ?`,
		`DELETE FROM auth_codes WHERE grant_id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, grantID); err != nil {
			return err
		}
	}
	return addRevocation(ctx, tx, store.RevokeGrant, grantID, revokeUntil)
}

const grantCols = `grant_id, client_id, subject, login, scope, resource, host, auth_time, created_at, expires_at`

// ListGrants reads the current token of each family: the one not rotated
// (rotation marks the old token and inserts its successor in one
// transaction, so a live family has exactly one).
func (s *Store) ListGrants(ctx context.Context, f store.GrantFilter, now time.Time) ([]store.Grant, error) {
	if now.IsZero() {
		return nil, errZeroNow("list grants")
	}
	q := `SELECT ` + grantCols + ` FROM refresh_tokens WHERE rotated_at = 0 AND expires_at > ?`
	args := []any{ms(now)}
	if f.User != "" {
		// SQLite's lower() folds ASCII only: the folding policy wants.
		q += ` AND (subject = ? OR lower(login) = lower(?))`
		args = append(args, f.User, f.User)
	}
	if f.ClientID != "" {
		q += ` AND client_id = ?`
		args = append(args, f.ClientID)
	}
	q += ` ORDER BY auth_time, grant_id`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list grants: %w", err)
	}
	defer rows.Close()
	var out []store.Grant
	for rows.Next() {
		var g store.Grant
		var authTime, created, exp int64
		if err := rows.Scan(&g.ID, &g.ClientID, &g.Subject, &g.Login, &g.Scope, &g.Resource, &g.Host,
			&authTime, &created, &exp); err != nil {
			return nil, fmt.Errorf("sqlite: list grants: %w", err)
		}
		g.AuthTime, g.LastUsed, g.ExpiresAt = fromMS(authTime), fromMS(created), fromMS(exp)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list grants: %w", err)
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
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT grant_id FROM refresh_tokens WHERE client_id = ?1
			UNION SELECT grant_id FROM auth_codes WHERE client_id = ?1 ORDER BY 1`, clientID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		for _, id := range ids {
			if err := revokeGrant(ctx, tx, id, revokeUntil); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM consents WHERE client_id = ?`, clientID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: revoke grants of client %q: %w", clientID, err)
	}
	if len(ids) > 0 {
		s.revoked()
	}
	return ids, nil
}

// DeleteRefreshToken removes one token; ErrNotFound if there is none.
func (s *Store) DeleteRefreshToken(ctx context.Context, tokenHash string) error {
	n, err := affected(s.w.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE token_hash = ?`, tokenHash))
	if err != nil {
		return fmt.Errorf("sqlite: delete refresh token: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: delete refresh token: %w", store.ErrNotFound)
	}
	return nil
}

// Revocations.

// execer is *sql.DB or *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func addRevocation(ctx context.Context, e execer, kind store.RevocationKind, value string, until time.Time) error {
	_, err := e.ExecContext(ctx, `INSERT INTO revocations (kind, value, expires_at, at) VALUES (?, ?, ?, ?)`,
		string(kind), value, ms(until), ms(time.Now()))
	return err
}

// RevokeAccessToken logs a RevokeToken revocation for jti.
func (s *Store) RevokeAccessToken(ctx context.Context, jti string, expiresAt time.Time) error {
	if err := requireExpiry("revoke access token", expiresAt); err != nil {
		return err
	}
	if err := addRevocation(ctx, s.w, store.RevokeToken, jti, expiresAt); err != nil {
		return fmt.Errorf("sqlite: revoke access token: %w", err)
	}
	s.revoked()
	return nil
}

// Revocations returns up to limit unexpired entries with Seq > after,
// oldest first. Seq order is commit order: SQLite has one writer at a
// time, so a reader never sees seq n+1 before seq n. limit must be
// positive.
func (s *Store) Revocations(ctx context.Context, after int64, limit int) ([]store.Revocation, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlite: revocations: limit %d is not positive", limit)
	}
	rows, err := s.revoke.QueryContext(ctx, after, ms(time.Now()), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: revocations: %w", err)
	}
	defer rows.Close()
	var out []store.Revocation
	for rows.Next() {
		var r store.Revocation
		var kind string
		var exp, at int64
		if err := rows.Scan(&r.Seq, &kind, &r.Value, &exp, &at); err != nil {
			return nil, fmt.Errorf("sqlite: revocations: %w", err)
		}
		r.Kind, r.ExpiresAt, r.At = store.RevocationKind(kind), fromMS(exp), fromMS(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: revocations: %w", err)
	}
	return out, nil
}

// Consents.

// PutConsent stores the consent, replacing an earlier one of the same
// subject and client.
func (s *Store) PutConsent(ctx context.Context, c *store.Consent) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO consents (subject, client_id, scope, granted_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (subject, client_id)
		DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at`,
		c.Subject, c.ClientID, c.Scope, ms(c.GrantedAt))
	if err != nil {
		return fmt.Errorf("sqlite: put consent: %w", err)
	}
	return nil
}

// GetConsent returns the consent; ErrNotFound if there is none.
func (s *Store) GetConsent(ctx context.Context, subject, clientID string) (*store.Consent, error) {
	c := store.Consent{Subject: subject, ClientID: clientID}
	var granted int64
	err := s.r.QueryRowContext(ctx, `SELECT scope, granted_at FROM consents
		WHERE subject = ? AND client_id = ?`, subject, clientID).Scan(&c.Scope, &granted)
	if err != nil {
		return nil, notFound("get consent", err)
	}
	c.GrantedAt = fromMS(granted)
	return &c, nil
}

// Rate limits.

// CountEvent counts an event for key. The upsert is one statement, so it
// is atomic without a transaction, across processes too: of two workers
// counting at once, one sees n and the other n+1. The window opens at the
// key's first event (not on a clock boundary), so a burst is never split
// across two windows and let through twice.
func (s *Store) CountEvent(ctx context.Context, key string, window time.Duration, now time.Time) (int64, error) {
	if now.IsZero() {
		return 0, errZeroNow("count event")
	}
	if window <= 0 {
		return 0, fmt.Errorf("sqlite: count event: window %v is not positive", window)
	}
	var n int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO rate_limits (key, window_start, count, expires_at)
		VALUES (?1, ?2, 1, ?2 + ?3)
		ON CONFLICT (key) DO UPDATE SET
			count        = CASE WHEN expires_at > ?2 THEN count + 1 ELSE 1 END,
			window_start = CASE WHEN expires_at > ?2 THEN window_start ELSE ?2 END,
			expires_at   = CASE WHEN expires_at > ?2 THEN expires_at ELSE ?2 + ?3 END
		RETURNING count`, key, ms(now), window.Milliseconds()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlite: count event: %w", err)
	}
	return n, nil
}

// cleanupTables are the tables Cleanup deletes expired rows from;
// cleanupDue tells whether any of them holds one (TestCleanupDueCoversTables
// keeps the two in step).
var cleanupTables = []string{"pending", "auth_codes", "refresh_tokens", "revocations", "rate_limits"}

const cleanupDue = `SELECT EXISTS (SELECT 1 FROM pending WHERE expires_at <= ?1)
	OR EXISTS (SELECT 1 FROM auth_codes WHERE expires_at <= ?1)
	OR EXISTS (SELECT 1 FROM refresh_tokens WHERE expires_at <= ?1)
	OR EXISTS (SELECT 1 FROM revocations WHERE expires_at <= ?1)
	OR EXISTS (SELECT 1 FROM rate_limits WHERE expires_at <= ?1)`

// Cleanup deletes pending authorizations, codes, refresh tokens,
// revocations and rate-limit windows that expired at or before now, in one
// transaction.
func (s *Store) Cleanup(ctx context.Context, now time.Time) error {
	// Every worker cleans each minute, and mostly finds nothing: a read
	// (each table's expires_at index) says so without the write lock, so
	// an idle worker never opens its writer connection (≈ 150 KiB of
	// SQLite memory each) and hundreds of them do not queue for the lock.
	var due bool
	if err := s.r.QueryRowContext(ctx, cleanupDue, ms(now)).Scan(&due); err != nil {
		return fmt.Errorf("sqlite: cleanup: %w", err)
	}
	if !due {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, table := range cleanupTables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE expires_at <= ?`, ms(now)); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: cleanup: %w", err)
	}
	return nil
}
