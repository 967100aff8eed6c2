-- Gatehouse schema, version 2: accounts and sessions.
-- users is rebuilt: anonymous users have no email; lockout counters; TOTP state.

CREATE TABLE users_v2 (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL DEFAULT 'local' CHECK (kind IN ('local', 'anonymous')),
    email          TEXT UNIQUE COLLATE NOCASE,
    name           TEXT,
    password_hash  TEXT,
    is_admin       INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    -- Anonymous users are purged after this instant (ms since the epoch).
    expires_at     INTEGER,
    -- Per-account throttling: consecutive failures, the last one, and a lock window.
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    last_failed_at INTEGER,
    locked_until   INTEGER,
    -- TOTP: the seed sealed with the system sealing key (AAD `totp:<user id>`).
    totp_seed      TEXT,
    totp_enabled   INTEGER NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1)),
    totp_last_step INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CHECK (kind = 'anonymous' OR email IS NOT NULL)
) STRICT;

INSERT INTO users_v2 (id, kind, email, name, password_hash, is_admin, disabled, created_at, updated_at)
    SELECT id, 'local', email, name, password_hash, is_admin, disabled, created_at, updated_at FROM users;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;
CREATE INDEX users_anonymous_expiry ON users (expires_at) WHERE kind = 'anonymous';
CREATE INDEX users_created ON users (created_at, id);

-- One-time MFA recovery codes, stored as SHA-256.
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
) STRICT;

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    -- Sliding expiry (refresh lifetime) and the absolute cap it never passes.
    expires_at    INTEGER NOT NULL,
    max_expires_at INTEGER NOT NULL,
    ip            TEXT,
    user_agent    TEXT,
    method        TEXT NOT NULL,
    amr           TEXT NOT NULL,
    mfa           INTEGER NOT NULL DEFAULT 0 CHECK (mfa IN (0, 1)),
    -- Browser mode: SHA-256 of the cookie secret and of the CSRF token.
    cookie_hash   BLOB UNIQUE,
    csrf_hash     BLOB,
    revoked_at    INTEGER,
    revoke_reason TEXT
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id, created_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Refresh tokens by SHA-256. A used one stays (used_at set) so that its reuse is recognised.
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- JWT signing keys: private part sealed (AAD `signing_key:<kid>`), public part as a JWK.
-- A key is published from created_at, signs from activates_at until retired_at, and leaves
-- the JWKS at expires_at (when every token it signed has expired).
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    private_sealed TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    activates_at   INTEGER NOT NULL,
    retired_at     INTEGER,
    expires_at     INTEGER
) STRICT;

CREATE TABLE personal_access_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    last_used_ip TEXT,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id, created_at);

-- Password accepted, second factor pending.
CREATE TABLE login_challenges (
    hash       BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mode       TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Sign-up invitations (signup mode `invite`), by SHA-256.
CREATE TABLE invites (
    hash       BLOB PRIMARY KEY,
    email      TEXT NOT NULL COLLATE NOCASE,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

-- Deleted users, kept for the access-token lifetime so that a restart still refuses their
-- unexpired access tokens.
CREATE TABLE deleted_users (
    id         TEXT PRIMARY KEY,
    deleted_at INTEGER NOT NULL
) STRICT;
