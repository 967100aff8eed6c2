-- Gatehouse schema, version 3: workspaces, roles, members, workspace API keys.

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Every workspace has the three built-in roles as rows (their rules live in the code, `rules`
-- is '[]' for them) so that memberships always point at a role row.
CREATE TABLE roles (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    builtin      INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),
    rules        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
) STRICT;

CREATE TABLE members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX members_user ON members (user_id);

-- A role still assigned cannot be deleted (RESTRICT); a membership's end removes its roles.
CREATE TABLE member_roles (
    workspace_id TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    role_id      TEXT NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
    PRIMARY KEY (workspace_id, user_id, role_id),
    FOREIGN KEY (workspace_id, user_id) REFERENCES members (workspace_id, user_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX member_roles_role ON member_roles (role_id);

-- The secret is stored only as its SHA-256; `hint` is its last four characters.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    hint         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL UNIQUE,
    rules        TEXT NOT NULL,
    created_by   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    expires_at   INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    rotated_at   INTEGER,
    last_used_at INTEGER,
    last_used_ip TEXT
) STRICT;

CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

-- The addresses each key was used from, for the `api_key.used_from_new_ip` audit event.
CREATE TABLE api_key_ips (
    key_id        TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    ip            TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, ip)
) STRICT, WITHOUT ROWID;
