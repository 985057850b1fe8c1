package postgres

// migrations[i] takes the schema from version i to version i+1; the version
// lives in mcpgate_schema. Append, never edit, never drop: nodes running
// the previous release read the same database during a rolling upgrade
// (TestMigrationsNotDestructive).
//
// The conventions are SQLite's (internal/store/sqlite/schema.go), so export
// and import map one to one: times are unix milliseconds in BIGINT columns,
// 0 for the zero time; lists are JSON arrays in TEXT columns; secrets,
// codes and tokens are stored only as hashes; no foreign keys.
var migrations = []migration{
	{"initial schema", `
CREATE TABLE clients (
	id                         TEXT PRIMARY KEY,
	secret_hash                TEXT NOT NULL,
	secret_expires_at          BIGINT NOT NULL,
	redirect_uris              TEXT NOT NULL,
	name                       TEXT NOT NULL,
	grant_types                TEXT NOT NULL,
	response_types             TEXT NOT NULL,
	token_endpoint_auth_method TEXT NOT NULL,
	scope                      TEXT NOT NULL,
	application_type           TEXT NOT NULL,
	metadata                   BYTEA,
	registration_token_hash    TEXT NOT NULL,
	created_at                 BIGINT NOT NULL,
	updated_at                 BIGINT NOT NULL,
	last_used_at               BIGINT NOT NULL
);
CREATE INDEX clients_last_used_at ON clients (last_used_at);

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
	expires_at            BIGINT NOT NULL,
	client_key            TEXT NOT NULL,
	upstream_verifier     TEXT NOT NULL,
	nonce                 TEXT NOT NULL,
	bind_hash             TEXT NOT NULL,
	proof_hash            TEXT NOT NULL,
	orgs                  TEXT NOT NULL,
	teams                 TEXT NOT NULL
);
CREATE INDEX pending_expires_at ON pending (expires_at);
CREATE INDEX pending_client_key ON pending (client_key, expires_at);

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
	expires_at     BIGINT NOT NULL,
	used_at        BIGINT NOT NULL,
	orgs           TEXT NOT NULL,
	teams          TEXT NOT NULL,
	auth_time      BIGINT NOT NULL
);
CREATE INDEX auth_codes_expires_at ON auth_codes (expires_at);
CREATE INDEX auth_codes_client_id ON auth_codes (client_id);

CREATE TABLE refresh_tokens (
	token_hash     TEXT PRIMARY KEY,
	grant_id       TEXT NOT NULL,
	client_id      TEXT NOT NULL,
	subject        TEXT NOT NULL,
	login          TEXT NOT NULL,
	scope          TEXT NOT NULL,
	resource       TEXT NOT NULL,
	host           TEXT NOT NULL,
	created_at     BIGINT NOT NULL,
	expires_at     BIGINT NOT NULL,
	rotated_at     BIGINT NOT NULL,
	orgs           TEXT NOT NULL,
	teams          TEXT NOT NULL,
	auth_time      BIGINT NOT NULL,
	rotation_nonce TEXT NOT NULL
);
CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_client_id ON refresh_tokens (client_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE consents (
	subject    TEXT NOT NULL,
	client_id  TEXT NOT NULL,
	scope      TEXT NOT NULL,
	granted_at BIGINT NOT NULL,
	PRIMARY KEY (subject, client_id)
);
CREATE INDEX consents_client_id ON consents (client_id);

-- A sequence never hands out a number twice, also after Cleanup deleted
-- the newest rows. Inserts are serialized (see addRevocation) so that seq
-- order is commit order.
CREATE TABLE revocations (
	seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind       TEXT NOT NULL,
	value      TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	at         BIGINT NOT NULL
);
CREATE INDEX revocations_expires_at ON revocations (expires_at);

CREATE TABLE rate_limits (
	key          TEXT PRIMARY KEY,
	window_start BIGINT NOT NULL,
	count        BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL
);
CREATE INDEX rate_limits_expires_at ON rate_limits (expires_at);

-- Signing keys shared by every node; sealed is the PKCS#8 DER private key
-- encrypted by internal/keys (the store never sees a plaintext key).
CREATE TABLE signing_keys (
	kid        TEXT PRIMARY KEY,
	created_at BIGINT NOT NULL,
	sealed     BYTEA NOT NULL
);
`},
}

type migration struct {
	name string
	sql  string
}

// schemaVersion is the version a fully migrated database has.
var schemaVersion = len(migrations)
