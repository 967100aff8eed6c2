-- Gatehouse schema, version 9: SAML assertions seen, so that a replayed assertion fails.
--
-- An assertion's ID is remembered (its SHA-256, per provider) until the assertion itself expires
-- (the earliest NotOnOrAfter, plus the clock skew); housekeeping forgets it after that.
CREATE TABLE sso_saml_assertions (
    provider_id   TEXT NOT NULL,
    id_hash       BLOB NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (provider_id, id_hash)
) WITHOUT ROWID;

CREATE INDEX sso_saml_assertions_expiry ON sso_saml_assertions (expires_at);
