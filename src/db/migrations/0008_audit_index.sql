-- Gatehouse schema, version 8: the audit log's query indexes, written behind the chain.
--
-- An index on audit_log keyed by actor, target, address or workspace puts each new record on a
-- random leaf page of each index, and every page a commit dirties is written whole to the WAL:
-- about 20 KB per record. Only the sequence (the rowid) and the time, both append-only, stay
-- indexed on audit_log itself. The query keys go to audit_index, filled by a background indexer
-- a short time behind the chain head, a batch of records at a time sorted by key, so that a
-- batch dirties each page it touches once; `meta` 'audit.indexed_through' is the last sequence
-- number it indexed (written in the same transaction). Queries use audit_index up to that
-- number and scan audit_log above it. The backfill of the records already present runs in this
-- migration's transaction, after this file (src/db/migrate.rs).
DROP INDEX audit_log_action;
DROP INDEX audit_log_actor;
DROP INDEX audit_log_target;
DROP INDEX audit_log_workspace;
DROP INDEX audit_log_ip;

-- One row per (record, key). block: the record's sequence number divided by 65536 (shifted
-- right by 16 bits); the entries of a block come together, so that the indexer writes only in
-- the newest block's pages however long the log grows, and a query reads block after block.
-- kind: 1 actor id, and each part of it before a '/' (a personal access token's `user/token` is
-- found under the user); 2 action, and each part of it before a '.' (`auth.login.failed` under
-- `auth`, `auth.login` and itself); 3 target; 4 workspace id; 5 client IP address. Absent
-- values have no row.
CREATE TABLE audit_index (
    block INTEGER NOT NULL,
    kind  INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
    key   TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (block, kind, key, seq)
) STRICT, WITHOUT ROWID;

-- Entries go only with their records: deleted by a purge (the same mark as audit_log's), never
-- edited. A missing entry would hide a record from filtered queries.
CREATE TRIGGER audit_index_no_delete BEFORE DELETE ON audit_index
WHEN (SELECT value FROM meta WHERE key = 'audit.purging') IS NULL
BEGIN
    SELECT RAISE(ABORT, 'audit_index entries are removed only with their records');
END;

CREATE TRIGGER audit_index_no_update BEFORE UPDATE ON audit_index
BEGIN
    SELECT RAISE(ABORT, 'audit_index is append-only');
END;
