-- Gatehouse schema, version 7: single sign-on. Identity providers (from the configuration file
-- or the admin API), the external identities linked to users, the login attempts in flight,
-- the one-time codes an API client exchanges for tokens, and the memberships and platform role
-- a provider's mapping granted (so that a later login removes only what the mapping gave).

CREATE TABLE sso_providers (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('oidc', 'saml')),
    -- `config`: defined in the configuration file (read-only through the API); `api`.
    source        TEXT NOT NULL CHECK (source IN ('config', 'api')),
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    -- Everything but secrets, as JSON.
    settings      TEXT NOT NULL,
    -- The client secret (OIDC), sealed by the vault (`sso_secret:<id>`); never returned.
    secret_sealed TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- Identity is (provider, issuer, subject), never an email.
CREATE TABLE sso_identities (
    provider_id   TEXT NOT NULL REFERENCES sso_providers (id) ON DELETE CASCADE,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         TEXT,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER NOT NULL,
    PRIMARY KEY (provider_id, issuer, subject)
) STRICT, WITHOUT ROWID;

CREATE INDEX sso_identities_user ON sso_identities (user_id);

-- A login in flight: keyed by the SHA-256 of the `state` parameter; bound to the browser by
-- the SHA-256 of a cookie; single use (deleted when the callback reads it).
CREATE TABLE sso_logins (
    state_hash    BLOB PRIMARY KEY,
    provider_id   TEXT NOT NULL REFERENCES sso_providers (id) ON DELETE CASCADE,
    browser_hash  BLOB NOT NULL,
    -- The nonce and the PKCE verifier, sealed by the vault (`sso_login:<provider>`).
    secrets       TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    -- `cookie` (a browser session) or `code` (a one-time code for an API client).
    mode          TEXT NOT NULL CHECK (mode IN ('cookie', 'code')),
    -- Code mode: the API client's PKCE S256 challenge, checked at the exchange.
    code_challenge TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX sso_logins_expiry ON sso_logins (expires_at);

-- One-time codes, stored as SHA-256; exchanged once for a session's tokens.
CREATE TABLE sso_codes (
    code_hash     BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider_id   TEXT NOT NULL REFERENCES sso_providers (id) ON DELETE CASCADE,
    -- The API client's PKCE S256 challenge: the exchange must show its verifier.
    code_challenge TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A role in a workspace that a provider's mapping granted (not one given by hand).
CREATE TABLE sso_grants (
    provider_id   TEXT NOT NULL REFERENCES sso_providers (id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    role_id       TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (provider_id, user_id, workspace_id, role_id),
    FOREIGN KEY (workspace_id, user_id) REFERENCES members (workspace_id, user_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- The platform admin role a provider's mapping granted.
CREATE TABLE sso_admin_grants (
    provider_id   TEXT NOT NULL REFERENCES sso_providers (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (provider_id, user_id)
) STRICT, WITHOUT ROWID;
