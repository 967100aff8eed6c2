-- Gatehouse schema, version 5: audit queries, signed checkpoints, retention.

-- Filters of GET /v1/audit: each an index range in sequence order.
CREATE INDEX audit_log_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, seq);
CREATE INDEX audit_log_ip ON audit_log (client_ip, seq);
-- Record times never go backwards, so a time range is a sequence range.
CREATE INDEX audit_log_time ON audit_log (ts_ms, seq);

-- Signed checkpoints: the chain head at `seq`, the retained chain's base, the purged records'
-- digest and the previous checkpoint's signature, signed with the audit Ed25519 key.
CREATE TABLE audit_checkpoints (
    id            INTEGER PRIMARY KEY,
    ts_ms         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    head_hash     BLOB NOT NULL,
    base_seq      INTEGER NOT NULL,
    base_hash     BLOB NOT NULL,
    purged_count  INTEGER NOT NULL,
    purged_digest BLOB NOT NULL,
    prev          BLOB NOT NULL,
    reason        TEXT NOT NULL CHECK (reason IN ('records', 'interval', 'purge', 'shutdown', 'manual')),
    key_id        TEXT NOT NULL,
    signature     BLOB NOT NULL
) STRICT;

-- What retention removed from the middle of the chain: the sequence number and hash of each
-- purged record, so that the record after it still verifies. Stubs below the base of the
-- latest checkpoint are dropped.
CREATE TABLE audit_purged (
    seq  INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
) STRICT;

-- Records are deleted only by a purge, which marks itself in meta for its transaction.
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN (SELECT value FROM meta WHERE key = 'audit.purging') IS NULL
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
