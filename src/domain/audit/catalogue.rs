//! The event catalogue: every action Gatehouse records, what its target and details hold, and
//! when it fires. `packaging/audit-events.md` is rendered from this table (a test fails when it
//! drifts, and another when the code can record an action missing here).

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The dotted, lower-case name (`auth.login.failed`).
    pub action: &'static str,
    /// What the `target` column holds.
    pub target: &'static str,
    /// The keys `details` may carry.
    pub details: &'static [&'static str],
    /// When it fires.
    pub when: &'static str,
}

const fn e(action: &'static str, target: &'static str, details: &'static [&'static str], when: &'static str) -> Entry {
    Entry { action, target, details, when }
}

/// Every event, grouped by category, sorted by name.
pub const EVENTS: &[Entry] = &[
    e(
        "alert.acknowledged",
        "alert id",
        &["rule", "key"],
        "a platform admin acknowledges an open alert (`POST /v1/security/alerts/{id}/acknowledge`); the note stays \
         with the alert, not in the record.",
    ),
    e(
        "alert.raised",
        "alert id",
        &["alert_id", "rule", "severity", "key", "count", "window_seconds"],
        "a monitoring rule reaches its threshold and an alert is opened; actor `system`.",
    ),
    e(
        "api.read",
        "request path (at most 256 characters)",
        &["route", "status"],
        "with `audit.record_reads` on, an authenticated `GET` or `HEAD` under `/v1/` is answered (the audit API's \
         own routes excepted, they record themselves); outcome success below 400, denied for 401, 403 and 404, \
         failure otherwise.",
    ),
    e(
        "api_key.created",
        "API key id",
        &["name", "rules", "expires_at", "as_admin"],
        "a workspace API key is created; `expires_at` is in Unix milliseconds, or null.",
    ),
    e("api_key.deleted", "API key id", &["name", "as_admin"], "a workspace API key is deleted."),
    e(
        "api_key.disabled",
        "API key id",
        &["name", "rules", "enabled", "expires_at", "as_admin"],
        "a `PATCH` turns an enabled API key off; each field the request changed has its `before` and `after`.",
    ),
    e(
        "api_key.enabled",
        "API key id",
        &["name", "rules", "enabled", "expires_at", "as_admin"],
        "a `PATCH` turns a disabled API key back on; each field the request changed has its `before` and `after`.",
    ),
    e(
        "api_key.rotated",
        "API key id",
        &["name", "as_admin"],
        "an API key gets a new secret; the old one stops working at once.",
    ),
    e(
        "api_key.updated",
        "API key id",
        &["name", "rules", "enabled", "expires_at", "as_admin"],
        "a `PATCH` changes an API key without turning it on or off; each field the request changed has its \
         `before` and `after`.",
    ),
    e(
        "api_key.used_from_new_ip",
        "API key id",
        &["ip", "first_address"],
        "an API key authenticates from an address it was never seen from (once per key and address); actor the \
         key; `first_address` is true on the key's very first use, which the monitor does not alert on.",
    ),
    e(
        "audit.checkpoints_listed",
        "—",
        &["returned"],
        "a platform admin lists the signed checkpoints (`GET /v1/audit/checkpoints`).",
    ),
    e(
        "audit.exported",
        "—",
        &["since", "until", "actor", "action", "target", "outcome", "ip", "workspace", "cursor"],
        "a platform admin starts a streamed export (`GET /v1/audit/export`), recorded before the first record is \
         sent; the details are the export's filters.",
    ),
    e(
        "audit.purged",
        "—",
        &["removed", "by_category", "first_seq", "last_seq", "base_seq"],
        "retention (`audit.retention_days`) removes expired records, one event per purged batch, each followed by a \
         signed checkpoint; actor `system`.",
    ),
    e(
        "audit.queried",
        "—",
        &[
            "since",
            "until",
            "actor",
            "action",
            "target",
            "outcome",
            "ip",
            "workspace",
            "cursor",
            "returned",
            "as_admin",
        ],
        "the audit log is searched: by a platform admin (`GET /v1/audit`), or by a member with `read` on `audit` \
         (`GET /v1/workspaces/{ws}/audit`, recorded in that workspace); the details are the filters and the number \
         of records returned.",
    ),
    e(
        "audit.verified",
        "—",
        &["ok", "records", "checkpoints", "first_broken"],
        "a platform admin verifies the chain through the API (`GET /v1/audit/verify`); outcome failure when \
         `ok` is false.",
    ),
    e(
        "auth.account.locked",
        "user id",
        &["failures", "locked_until_ms"],
        "a failed login or re-authentication brings a known account to the lock threshold, right after its \
         `auth.login.failed`; actor `system`, outcome denied.",
    ),
    e(
        "auth.credential.rejected",
        "—",
        &["reason", "route", "status"],
        "a request carried an access token, personal access token, API key or session cookie that was refused \
         (malformed, unknown, expired, revoked, its user disabled; a cookie request that changes state without its \
         CSRF token), whatever the operation; actor `anonymous`, outcome denied.",
    ),
    e(
        "auth.login.failed",
        "user id (none for an unknown email)",
        &["reason", "failures", "email_pseudonym", "locked"],
        "a password login or its second step fails, or a password given to re-authenticate is wrong; `reason` is \
         `unknown_email`, `disabled`, `no_password`, `wrong_password`, `wrong_second_factor`, \
         `wrong_current_password` or `wrong_password_disabling_totp`; `email_pseudonym` and `locked` only for an \
         unknown email; actor anonymous, outcome failure.",
    ),
    e(
        "auth.login.succeeded",
        "session id",
        &["method", "amr", "mode", "rehashed"],
        "every factor of a login passed and a session opens; `mode` is `cookie` or `bearer`, `rehashed` says the \
         stored password hash was upgraded.",
    ),
    e(
        "auth.login.throttled",
        "user id (none for an unknown email)",
        &["email_pseudonym", "retry_after_s"],
        "a password login is refused unchecked because the account, or the unknown email, is in back-off or \
         locked; actor anonymous, outcome denied.",
    ),
    e(
        "auth.mfa.challenged",
        "user id",
        &[],
        "the right password for an account with TOTP arrives without a code: a second-factor challenge is issued.",
    ),
    e(
        "auth.mfa.totp.disable_failed",
        "user id",
        &[],
        "turning TOTP off is refused (wrong password or wrong code); outcome failure; a wrong password also \
         records `auth.login.failed`.",
    ),
    e(
        "auth.mfa.totp.disabled",
        "user id",
        &[],
        "a user turns TOTP off with the password and a current or recovery code; the recovery codes are deleted.",
    ),
    e(
        "auth.mfa.totp.enabled",
        "user id",
        &[],
        "a user confirms TOTP enrolment with a first valid code; ten recovery codes are issued.",
    ),
    e(
        "auth.mfa.totp.enrolment_started",
        "user id",
        &[],
        "a user starts TOTP enrolment: a new seed is stored, inactive until confirmed.",
    ),
    e(
        "auth.rate_limited",
        "—",
        &["endpoint"],
        "the per-address limit (`auth.rate_limit`) refuses a sign-in request; `endpoint` is `login`, `signup`, \
         `anonymous` or `refresh`; actor anonymous, outcome denied.",
    ),
    e(
        "auth.refresh.reused",
        "session id",
        &["session_revoked"],
        "a refresh token that was already used is presented again: its session is revoked; outcome denied.",
    ),
    e(
        "config.rejected",
        "—",
        &["what", "reason"],
        "a TLS certificate reload (`SIGHUP`) fails to load the new pair and the server keeps the current one; \
         `what` is `tls`, `reason` the error; actor `system`, outcome failure.",
    ),
    e(
        "key.signing.created",
        "signing key id (kid)",
        &["alg", "activates_at_ms", "reason"],
        "the key schedule creates a JWT signing key: the first one, which signs at once, or the next one, published \
         ahead (`reason` `schedule`); actor `system`.",
    ),
    e(
        "key.signing.removed",
        "—",
        &["count"],
        "retired signing keys whose publication window ended are dropped from the JWKS; actor `system`.",
    ),
    e(
        "key.signing.retired",
        "signing key id (kid)",
        &["replaced_by", "published_until_ms"],
        "a signing key stops signing because a newer one took over; it stays published until \
         `published_until_ms`; actor `system`.",
    ),
    e(
        "key.signing.rotated",
        "signing key id (kid)",
        &["alg", "activates_at_ms"],
        "an operator forces a signing key rotation (`gatehouse keys rotate`); a pending key is brought forward \
         rather than a new one made.",
    ),
    e(
        "member.added",
        "user id",
        &["before", "after", "as_admin"],
        "a user becomes a member of the workspace; `after` holds its role names, `before` is null.",
    ),
    e(
        "member.removed",
        "user id",
        &["before", "after", "as_admin"],
        "a member is removed from the workspace, or leaves it; `before` holds its role names, `after` is null.",
    ),
    e(
        "member.updated",
        "user id",
        &["before", "after", "as_admin"],
        "a member's roles are replaced; `before` and `after` hold the role names.",
    ),
    e(
        "role.created",
        "role id",
        &["name", "rules", "as_admin"],
        "a custom role is created; `rules` lists the rules it grants.",
    ),
    e(
        "role.deleted",
        "role id",
        &["name", "rules", "as_admin"],
        "a custom role that no member holds is deleted; `rules` lists the rules it granted.",
    ),
    e(
        "role.updated",
        "role id",
        &["before", "after", "rules", "as_admin"],
        "a custom role's name, description or rules are replaced; `before` and `after` hold the name, `rules` the \
         rules added and removed.",
    ),
    e(
        "secret.deleted",
        "secret name",
        &["name", "versions_destroyed", "as_admin"],
        "a secret and every version of it are deleted.",
    ),
    e(
        "secret.restored",
        "secret name",
        &["name", "restored_from", "version", "as_admin"],
        "an old version's value is written again as a new version (`version`).",
    ),
    e(
        "secret.revealed",
        "secret name",
        &["name", "reason", "version", "as_admin"],
        "the value of a secret's current or given `version` is revealed; `reason` is the caller's text, or null.",
    ),
    e(
        "secret.written",
        "secret name",
        &["name", "version", "as_admin"],
        "a new version of a secret is written (`PUT`), creating the secret when it did not exist.",
    ),
    e(
        "server.started",
        "—",
        &["version", "listen", "tls"],
        "the server has bound its address and is about to serve; actor `system`.",
    ),
    e(
        "server.stopped",
        "—",
        &[],
        "the server shuts down gracefully, once requests and background tasks have finished; actor `system`.",
    ),
    e(
        "session.logout",
        "user id",
        &["sessions"],
        "a user logs out (`POST /v1/auth/logout`): the calling session ends; `sessions` lists the ended session ids.",
    ),
    e(
        "session.logout_all",
        "user id",
        &["sessions"],
        "a user logs out everywhere (`POST /v1/auth/logout-all`): every session ends, the calling one included.",
    ),
    e("session.refreshed", "session id", &[], "a refresh token is exchanged for a new access token and refresh token."),
    e(
        "session.revoked",
        "user id",
        &["sessions"],
        "a user ends one of their sessions (`DELETE /v1/me/sessions/{id}`); `sessions` holds its id.",
    ),
    e(
        "sso.admin.granted",
        "user id",
        &["provider"],
        "an SSO login's mapping makes the user a platform admin (a rule with `platform_role = \"admin\"` matched).",
    ),
    e(
        "sso.admin.revoked",
        "user id",
        &["provider"],
        "an SSO login's mapping takes the platform admin role back: the mapping granted it and no rule matches any \
         more (or the provider is authoritative); never the last admin.",
    ),
    e(
        "sso.code.exchanged",
        "session id",
        &["provider", "mode"],
        "an API client exchanges the one-time code of an SSO login for a session (`POST /v1/sso/exchange`).",
    ),
    e(
        "sso.identity.linked",
        "user id",
        &["provider", "issuer", "subject", "by"],
        "an SSO identity seen for the first time is linked to the existing account with the same verified email \
         (`link_by_email = \"verified_only\"`).",
    ),
    e(
        "sso.login.failed",
        "provider id",
        &["provider", "reason"],
        "an SSO login fails at the callback (state unknown, used, expired or from another browser; the provider's \
         error; an ID token that fails a check; a refused account) or a one-time code is refused; `reason` is the \
         short reason the page shows, never the provider's answer.",
    ),
    e(
        "sso.login.succeeded",
        "session id (cookie mode); user id (code mode)",
        &["provider", "mode", "subject"],
        "an SSO login completes: the identity was matched, linked or created, the mapping applied, and a browser \
         session opened (`cookie`) or a one-time code minted (`code`).",
    ),
    e(
        "sso.membership.changed",
        "user id",
        &["provider", "added", "removed", "before", "after"],
        "an SSO login's mapping adds or removes roles in a workspace (role names); the record's workspace is that \
         workspace.",
    ),
    e(
        "sso.profile.updated",
        "user id",
        &["provider", "fields"],
        "an SSO login brings a changed email or name from the provider; `fields` names what changed.",
    ),
    e(
        "sso.provider.created",
        "provider id",
        &[
            "issuer",
            "client_id",
            "enabled",
            "jit",
            "link_by_email",
            "mapping_rules",
            "authoritative",
            "client_secret_changed",
        ],
        "a platform admin adds an identity provider (`POST /v1/sso-providers`); never the client secret.",
    ),
    e("sso.provider.deleted", "provider id", &[], "a platform admin deletes an identity provider."),
    e(
        "sso.provider.previewed",
        "provider id",
        &["subject"],
        "a platform admin runs the dry-run preview of a provider's provisioning and mapping; nothing changes.",
    ),
    e(
        "sso.provider.updated",
        "provider id",
        &[
            "issuer",
            "client_id",
            "enabled",
            "jit",
            "link_by_email",
            "mapping_rules",
            "authoritative",
            "client_secret_changed",
        ],
        "a platform admin replaces an identity provider's settings (`PUT /v1/sso-providers/{id}`).",
    ),
    e(
        "sso.user.provisioned",
        "user id",
        &["provider", "issuer", "subject"],
        "an SSO login creates the account of an identity seen for the first time (`jit = \"create\"`).",
    ),
    e(
        "tls.certificate.reloaded",
        "—",
        &["cert_file"],
        "a TLS certificate reload (`SIGHUP`) succeeds and new connections get the new pair; actor `system`.",
    ),
    e("token.created", "token id", &["name", "expires_at_ms"], "a user creates a personal access token."),
    e("token.revoked", "token id", &[], "a user revokes one of their personal access tokens."),
    e(
        "token.used_from_new_ip",
        "token id",
        &["ip", "first_address"],
        "a personal access token authenticates from an address it was never seen from (once per token and \
         address); actor the token; `first_address` is true on the token's very first use, which the monitor does \
         not alert on.",
    ),
    e(
        "user.admin.created",
        "user id",
        &["email"],
        "a platform admin account is created: at first start (the bootstrap admin, actor `system`) or by \
         `gatehouse users add-admin` (actor `operator`).",
    ),
    e("user.admin.granted", "user id", &[], "a platform admin makes a user a platform admin (`PATCH /v1/users/{id}`)."),
    e(
        "user.admin.password_reset",
        "user id",
        &["email"],
        "`gatehouse users add-admin` (actor `operator`), or the first start's bootstrap when no admin exists but its \
         email is taken (actor `system`), names an existing account: its password is reset and it becomes an \
         enabled platform admin.",
    ),
    e(
        "user.admin.revoked",
        "user id",
        &[],
        "a platform admin takes the platform admin right from another user (`PATCH /v1/users/{id}`).",
    ),
    e(
        "user.anonymous.created",
        "user id",
        &["session", "expires_at_ms"],
        "`POST /v1/auth/anonymous` creates an anonymous user and its first session; actor the new user.",
    ),
    e(
        "user.anonymous.purged",
        "—",
        &["count"],
        "housekeeping deletes expired anonymous users (at most 1000 a round); actor `system`.",
    ),
    e("user.created", "user id", &[], "a platform admin creates a local account (`POST /v1/users`)."),
    e(
        "user.deleted",
        "user id",
        &["kind"],
        "a platform admin deletes an account and everything personal; the trail keeps its id.",
    ),
    e(
        "user.disabled",
        "user id",
        &["sessions_revoked"],
        "a platform admin disables an account: its sessions end and its personal access tokens are revoked.",
    ),
    e(
        "user.enabled",
        "user id",
        &[],
        "a platform admin re-enables a disabled account, clearing its failed-login count.",
    ),
    e(
        "user.invited",
        "—",
        &["expires_at_ms"],
        "a platform admin invites an email address to sign up (the address is not recorded).",
    ),
    e(
        "user.password.change_failed",
        "user id",
        &[],
        "a password change is refused because the current password is wrong; outcome failure; also recorded as \
         `auth.login.failed`.",
    ),
    e(
        "user.password.changed",
        "user id",
        &["sessions_revoked"],
        "a user changes their password; their other sessions end.",
    ),
    e(
        "user.signed_up",
        "user id",
        &["from_anonymous", "invited", "session"],
        "a user signs up (`POST /v1/auth/signup`), as a new account or by upgrading their anonymous one.",
    ),
    e(
        "user.updated",
        "user id",
        &["fields", "sessions_revoked"],
        "a user changes their own name (no details), or a platform admin changes a user's name or email \
         (`fields` lists which).",
    ),
    e(
        "vault.integrity_failure",
        "secret name (none from `vault verify`)",
        &["name", "found_by", "places"],
        "a sealed value fails its integrity check: when a secret is revealed or restored (in its workspace, with \
         `name`), or under `gatehouse vault verify` (actor `operator`, with `found_by` and `places`); outcome \
         failure.",
    ),
    e(
        "vault.master_key.retired",
        "master key id",
        &[],
        "`gatehouse keys retire ID` deletes an older master key's file; actor `operator`.",
    ),
    e(
        "vault.master_key.rotated",
        "master key id",
        &["to", "data_keys_rewrapped"],
        "`gatehouse keys rotate-master` finishes: every data key is wrapped by the new master key; actor `operator`.",
    ),
    e(
        "vault.master_key.rotation_started",
        "master key id",
        &["from", "to"],
        "`gatehouse keys rotate-master` starts a rotation (not when it resumes one); actor `operator`.",
    ),
    e(
        "workspace.created",
        "workspace id",
        &["slug", "name", "owner"],
        "a user creates a workspace and becomes its owner.",
    ),
    e(
        "workspace.deleted",
        "workspace id",
        &["slug", "name", "members_removed", "api_keys_deleted", "as_admin"],
        "a workspace is deleted with its members, roles, API keys and secrets.",
    ),
    e(
        "workspace.updated",
        "workspace id",
        &["before", "after", "as_admin"],
        "a workspace's slug or name changes; `before` and `after` hold both.",
    ),
];

/// The entry for `action`.
pub fn find(action: &str) -> Option<&'static Entry> {
    EVENTS.iter().find(|e| e.action == action)
}

/// The category of an action: its first dotted part (`auth` for `auth.login.failed`).
pub fn category(action: &str) -> &str {
    action.split('.').next().unwrap_or(action)
}

/// Every category, sorted, without repeats.
pub fn categories() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = EVENTS.iter().map(|e| category(e.action)).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Whether `name` is a category of some event.
pub fn is_category(name: &str) -> bool {
    EVENTS.iter().any(|e| category(e.action) == name)
}

/// `packaging/audit-events.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Audit events\n\n<!-- Rendered from src/domain/audit/catalogue.rs; \
         GATEHOUSE_UPDATE_DOCS=1 cargo test --test api catalogue rewrites it. -->\n\n\
         Every record carries: `seq`, `time`, `actor_type` (`system`, `operator`, `user`, `token`, \
         `api_key`, `anonymous`), `actor_id`, `action`, `target`, `workspace_id`, `outcome` (`success`, \
         `failure`, `denied`), `client_ip`, `user_agent`, `request_id`, `details` and `hash`. \
         The category of an event (the part before the first dot) is what \
         `audit.retention_days` keys on.\n\n\
         `target` is the column below (— for none). `details` is a JSON object; the keys listed are every key \
         the event may carry, some only in the cases its line names. Every workspace event (one with \
         `as_admin` listed) carries `\"as_admin\": true` when a platform admin acted beyond its own \
         memberships. Details never hold a secret value.\n",
    );
    for cat in categories() {
        out.push_str(&format!("\n## {cat}\n\n| event | target | details | when |\n| --- | --- | --- | --- |\n"));
        for e in EVENTS.iter().filter(|e| category(e.action) == cat) {
            let details = if e.details.is_empty() {
                "—".to_string()
            } else {
                e.details.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
            };
            out.push_str(&format!("| `{}` | {} | {} | {} |\n", e.action, e.target, details, e.when));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dotted_lower_case_sorted_and_unique() {
        for pair in EVENTS.windows(2) {
            assert!(pair[0].action < pair[1].action, "{} before {}", pair[0].action, pair[1].action);
        }
        for e in EVENTS {
            let ok = e.action.split('.').count() >= 2
                && e.action.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(ok, "{}", e.action);
            assert!(!e.when.is_empty(), "{}", e.action);
        }
    }

    #[test]
    fn every_entry_is_filled_in_and_renders_as_one_table_row() {
        for e in EVENTS {
            assert!(!e.target.is_empty(), "{}: target (— for none)", e.action);
            assert!(!e.when.contains("TODO") && e.when.ends_with('.'), "{}: when is one sentence", e.action);
            for text in [e.target, e.when].into_iter().chain(e.details.iter().copied()) {
                assert!(!text.contains('|') && !text.contains('\n'), "{}: {text:?} would break the table", e.action);
            }
            let mut keys = e.details.to_vec();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), e.details.len(), "{}: a details key twice", e.action);
        }
        let new_ip = find("api_key.used_from_new_ip").map(|e| e.details);
        assert_eq!(new_ip, Some(&["ip", "first_address"][..]));
        assert!(markdown().contains("| `auth.login.failed` | user id (none for an unknown email) | `reason`, "));
    }
}
