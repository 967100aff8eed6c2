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
    e("alert.acknowledged", "", &[], "TODO"),
    e("alert.raised", "", &[], "TODO"),
    e("api.read", "", &[], "TODO"),
    e("api_key.created", "", &[], "TODO"),
    e("api_key.deleted", "", &[], "TODO"),
    e("api_key.disabled", "", &[], "TODO"),
    e("api_key.enabled", "", &[], "TODO"),
    e("api_key.rotated", "", &[], "TODO"),
    e("api_key.updated", "", &[], "TODO"),
    e("api_key.used_from_new_ip", "", &[], "TODO"),
    e("audit.checkpoints_listed", "", &[], "TODO"),
    e("audit.exported", "", &[], "TODO"),
    e("audit.purged", "", &[], "TODO"),
    e("audit.queried", "", &[], "TODO"),
    e("audit.verified", "", &[], "TODO"),
    e("auth.account.locked", "", &[], "TODO"),
    e("auth.api_key.rejected", "", &[], "TODO"),
    e("auth.csrf.rejected", "", &[], "TODO"),
    e("auth.login.failed", "", &[], "TODO"),
    e("auth.login.succeeded", "", &[], "TODO"),
    e("auth.login.throttled", "", &[], "TODO"),
    e("auth.mfa.challenged", "", &[], "TODO"),
    e("auth.mfa.totp.disable_failed", "", &[], "TODO"),
    e("auth.mfa.totp.disabled", "", &[], "TODO"),
    e("auth.mfa.totp.enabled", "", &[], "TODO"),
    e("auth.mfa.totp.enrolment_started", "", &[], "TODO"),
    e("auth.rate_limited", "", &[], "TODO"),
    e("auth.refresh.reused", "", &[], "TODO"),
    e("auth.token.rejected", "", &[], "TODO"),
    e("auth.token.revoked", "", &[], "TODO"),
    e("config.rejected", "", &[], "TODO"),
    e("key.signing.created", "", &[], "TODO"),
    e("key.signing.removed", "", &[], "TODO"),
    e("key.signing.retired", "", &[], "TODO"),
    e("key.signing.rotated", "", &[], "TODO"),
    e("member.added", "", &[], "TODO"),
    e("member.removed", "", &[], "TODO"),
    e("member.updated", "", &[], "TODO"),
    e("role.created", "", &[], "TODO"),
    e("role.deleted", "", &[], "TODO"),
    e("role.updated", "", &[], "TODO"),
    e("secret.deleted", "", &[], "TODO"),
    e("secret.restored", "", &[], "TODO"),
    e("secret.revealed", "", &[], "TODO"),
    e("secret.written", "", &[], "TODO"),
    e("server.started", "", &[], "TODO"),
    e("server.stopped", "", &[], "TODO"),
    e("session.logout", "", &[], "TODO"),
    e("session.logout_all", "", &[], "TODO"),
    e("session.refreshed", "", &[], "TODO"),
    e("session.revoked", "", &[], "TODO"),
    e("tls.certificate.reloaded", "", &[], "TODO"),
    e("token.created", "", &[], "TODO"),
    e("token.revoked", "", &[], "TODO"),
    e("token.used_from_new_ip", "", &[], "TODO"),
    e("user.admin.created", "", &[], "TODO"),
    e("user.admin.granted", "", &[], "TODO"),
    e("user.admin.password_reset", "", &[], "TODO"),
    e("user.admin.revoked", "", &[], "TODO"),
    e("user.anonymous.created", "", &[], "TODO"),
    e("user.anonymous.purged", "", &[], "TODO"),
    e("user.created", "", &[], "TODO"),
    e("user.deleted", "", &[], "TODO"),
    e("user.disabled", "", &[], "TODO"),
    e("user.enabled", "", &[], "TODO"),
    e("user.invited", "", &[], "TODO"),
    e("user.password.change_failed", "", &[], "TODO"),
    e("user.password.changed", "", &[], "TODO"),
    e("user.signed_up", "", &[], "TODO"),
    e("user.updated", "", &[], "TODO"),
    e("vault.integrity_failure", "", &[], "TODO"),
    e("vault.master_key.retired", "", &[], "TODO"),
    e("vault.master_key.rotated", "", &[], "TODO"),
    e("vault.master_key.rotation_started", "", &[], "TODO"),
    e("workspace.created", "", &[], "TODO"),
    e("workspace.deleted", "", &[], "TODO"),
    e("workspace.updated", "", &[], "TODO"),
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
         `audit.retention_days` keys on.\n",
    );
    for cat in categories() {
        out.push_str(&format!("\n## {cat}\n\n| event | target | details | when |\n| --- | --- | --- | --- |\n"));
        for e in EVENTS.iter().filter(|e| category(e.action) == cat) {
            let details = if e.details.is_empty() {
                "".to_string()
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
}
