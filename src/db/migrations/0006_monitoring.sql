-- Gatehouse schema, version 6: security monitoring. Alerts raised by the monitor's threshold
-- rules over the audit stream, with their acknowledgement and webhook delivery state; and the
-- addresses each personal access token was used from (for `token.used_from_new_ip`).

CREATE TABLE security_alerts (
    id                   TEXT PRIMARY KEY,
    rule                 TEXT NOT NULL,
    severity             TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    -- What the rule counted by: an account id, a client address, an actor or a credential.
    -- Never a secret.
    key                  TEXT NOT NULL,
    count                INTEGER NOT NULL,
    window_seconds       INTEGER NOT NULL,
    first_seq            INTEGER NOT NULL,
    last_seq             INTEGER NOT NULL,
    -- Context copied from the audit records (addresses, credential ids); never a secret.
    details              TEXT NOT NULL DEFAULT '{}',
    created_at           INTEGER NOT NULL,
    status               TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged')),
    acknowledged_by      TEXT,
    acknowledged_at      INTEGER,
    acknowledged_note    TEXT,
    -- Webhook delivery: `none` (no webhook configured when raised), `pending`, `delivered`,
    -- `failed` (gave up after the last attempt).
    delivery_status      TEXT NOT NULL CHECK (delivery_status IN ('none', 'pending', 'delivered', 'failed')),
    delivery_attempts    INTEGER NOT NULL DEFAULT 0,
    delivery_next_at     INTEGER,
    delivered_at         INTEGER,
    delivery_last_error  TEXT
) STRICT;

CREATE INDEX security_alerts_created ON security_alerts (created_at, id);
CREATE INDEX security_alerts_due ON security_alerts (delivery_next_at) WHERE delivery_status = 'pending';

CREATE TABLE pat_ips (
    token_id      TEXT NOT NULL REFERENCES personal_access_tokens (id) ON DELETE CASCADE,
    ip            TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    PRIMARY KEY (token_id, ip)
) STRICT, WITHOUT ROWID;
