package sqlite

// migrations[i] takes the schema from version i to version i+1; the version
// lives in PRAGMA user_version. Append, never edit: a database file outlives
// the binary that created it.
//
// Conventions: times are unix milliseconds (UTC) in INTEGER columns, 0 for
// the zero time; lists are JSON arrays in TEXT columns; secrets, codes and
// tokens are stored only as the hex SHA-256 the caller computed (pending IDs
// are hashed here). There are no foreign keys: clients from the
// configuration and from metadata documents are not stored, so codes,
// tokens and consents may name clients that have no row, and DeleteClient
// removes what belongs to a client explicitly.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE clients (
	id                         TEXT PRIMARY KEY,
	secret_hash                TEXT NOT NULL,
	secret_expires_at          INTEGER NOT NULL,
	redirect_uris              TEXT NOT NULL,
	name                       TEXT NOT NULL,
	grant_types                TEXT NOT NULL,
	response_types             TEXT NOT NULL,
	token_endpoint_auth_method TEXT NOT NULL,
	scope                      TEXT NOT NULL,
	application_type           TEXT NOT NULL,
	metadata                   BLOB,
	registration_token_hash    TEXT NOT NULL,
	created_at                 INTEGER NOT NULL,
	updated_at                 INTEGER NOT NULL
) STRICT;

CREATE TABLE pending (
	id_hash               TEXT PRIMARY KEY,
	host                  TEXT NOT NULL,
	client_id             TEXT NOT NULL,
	redirect_uri          TEXT NOT NULL,
	state                 TEXT NOT NULL,
	code_challenge        TEXT NOT NULL,
	code_challenge_method TEXT NOT NULL,
	scope                 TEXT NOT NULL,
	resource              TEXT NOT NULL,
	subject               TEXT NOT NULL,
	login                 TEXT NOT NULL,
	granted               TEXT NOT NULL,
	expires_at            INTEGER NOT NULL
) STRICT;
CREATE INDEX pending_expires_at ON pending (expires_at);

CREATE TABLE auth_codes (
	code_hash      TEXT PRIMARY KEY,
	grant_id       TEXT NOT NULL,
	client_id      TEXT NOT NULL,
	redirect_uri   TEXT NOT NULL,
	code_challenge TEXT NOT NULL,
	resource       TEXT NOT NULL,
	scope          TEXT NOT NULL,
	subject        TEXT NOT NULL,
	login          TEXT NOT NULL,
	host           TEXT NOT NULL,
	expires_at     INTEGER NOT NULL,
	used_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX auth_codes_expires_at ON auth_codes (expires_at);
CREATE INDEX auth_codes_client_id ON auth_codes (client_id);

CREATE TABLE refresh_tokens (
	token_hash TEXT PRIMARY KEY,
	grant_id   TEXT NOT NULL,
	client_id  TEXT NOT NULL,
	subject    TEXT NOT NULL,
	login      TEXT NOT NULL,
	scope      TEXT NOT NULL,
	resource   TEXT NOT NULL,
	host       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	rotated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_client_id ON refresh_tokens (client_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE consents (
	subject    TEXT NOT NULL,
	client_id  TEXT NOT NULL,
	scope      TEXT NOT NULL,
	granted_at INTEGER NOT NULL,
	PRIMARY KEY (subject, client_id)
) STRICT;
CREATE INDEX consents_client_id ON consents (client_id);

-- AUTOINCREMENT, not a plain rowid: a plain rowid reuses max+1 after the
-- newest row was deleted (Cleanup), and a worker whose cursor already passed
-- that number would never see the new entry.
CREATE TABLE revocations (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	kind       TEXT NOT NULL,
	value      TEXT NOT NULL,
	expires_at INTEGER NOT NULL,
	at         INTEGER NOT NULL
) STRICT;
CREATE INDEX revocations_expires_at ON revocations (expires_at);
`,
	// 2: pending flows carry the upstream PKCE verifier and nonce, the
	// browser binding (bind cookie and continue proof, hashed) and the
	// client's network for the per-address limit.
	`
ALTER TABLE pending ADD COLUMN client_key TEXT NOT NULL DEFAULT '';
ALTER TABLE pending ADD COLUMN upstream_verifier TEXT NOT NULL DEFAULT '';
ALTER TABLE pending ADD COLUMN nonce TEXT NOT NULL DEFAULT '';
ALTER TABLE pending ADD COLUMN bind_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE pending ADD COLUMN proof_hash TEXT NOT NULL DEFAULT '';
CREATE INDEX pending_client_key ON pending (client_key, expires_at);
`,
}

// schemaVersion is the user_version a fully migrated database has.
var schemaVersion = len(migrations)
