-- Gatehouse schema, version 4: the vault. Data keys wrapped by a master key; workspace secrets
-- sealed by their workspace's data key.

-- Every data key, wrapped (sealed) by the master key `kek_id`, with AAD
-- `vault_key:<id>:<purpose>:<workspace or ->`. Purposes: `system` (seals signing keys and TOTP
-- seeds), `audit` (the audit MAC key), `pseudonym`, `workspace` (one active per workspace;
-- retired ones stay until nothing is sealed under them).
CREATE TABLE vault_keys (
    id           TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL CHECK (purpose IN ('system', 'audit', 'pseudonym', 'workspace')),
    workspace_id TEXT,
    kek_id       TEXT NOT NULL,
    wrapped      TEXT NOT NULL,
    -- Seals made under this key (AES-GCM with random nonces: rotate well before 2^32).
    seals        INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
) STRICT;

CREATE INDEX vault_keys_kek ON vault_keys (kek_id);
CREATE INDEX vault_keys_workspace ON vault_keys (workspace_id, retired_at);

CREATE TABLE secrets (
    workspace_id    TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT,
    updated_at      INTEGER NOT NULL,
    updated_by      TEXT,
    PRIMARY KEY (workspace_id, name)
) STRICT, WITHOUT ROWID;

-- Each version sealed under the workspace data key `data_key_id` with AAD
-- `secret:<workspace>:<name>:<version>`.
CREATE TABLE secret_versions (
    workspace_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    data_key_id   TEXT NOT NULL,
    envelope      TEXT NOT NULL,
    size          INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT,
    restored_from INTEGER,
    PRIMARY KEY (workspace_id, name, version),
    FOREIGN KEY (workspace_id, name) REFERENCES secrets (workspace_id, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX secret_versions_key ON secret_versions (data_key_id);
