//! Provisioning: one function for every protocol. An [`ExternalIdentity`] is matched to a user
//! by (provider, issuer, subject); else linked to the user with the same email when the
//! provider's policy allows; else created when `jit = create`. Then the provider's mapping
//! decides the platform role and the memberships it manages:
//!
//! - a role the mapping grants is added (and remembered as the mapping's, unless the member
//!   already held it by hand);
//! - a role the mapping granted earlier and no longer grants is removed; a member left with no
//!   role stops being a member;
//! - roles given by hand are never touched, unless the provider is authoritative: then, in each
//!   workspace the mapping names, the member holds exactly the mapped roles (and a rule naming a
//!   platform role makes the platform role the mapping's too);
//! - a workspace's last owner stays an owner, and the last platform admin stays an admin.
//!
//! [`plan`] works out all of it without writing (the dry-run preview shows it); [`apply`] writes
//! a plan in the caller's transaction, with its audit records.

use crate::config::{Jit, LinkByEmail, MappingRule};
use crate::db::{IdentityRow, Tx, UserRow};
use crate::domain::accounts::normalize_email;
use crate::domain::audit::{self, Actor, Auditor, Event, Origin};
use crate::domain::unix_ms;
use crate::error::AppError;
use crate::sso::{claim_matches, ExternalIdentity};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// What a provider's policy says about provisioning (the parts `plan` needs).
#[derive(Debug, Clone)]
pub struct Policy {
    pub provider_id: String,
    pub jit: Jit,
    pub link_by_email: LinkByEmail,
    pub allowed_email_domains: Vec<String>,
    pub mapping: Vec<MappingRule>,
    pub authoritative: bool,
    /// Take the provider's emails as verified even without `email_verified` (Entra ID sends none).
    pub trust_email: bool,
}

/// Which user the identity is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMatch {
    /// Already linked.
    Linked { user_id: String },
    /// Linked now to the account with the same (verified) email.
    LinkByEmail { user_id: String },
    /// A new account.
    Create { email: Option<String>, name: Option<String> },
    /// Refused, with the reason (safe to show).
    Refuse { reason: String },
}

/// The change to one workspace membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub workspace_id: String,
    pub workspace_slug: String,
    /// (role id, role name)
    pub add: Vec<(String, String)>,
    pub remove: Vec<(String, String)>,
    /// Roles held after the change (names).
    pub after: Vec<String>,
    /// Roles held before (names); empty when not a member.
    pub before: Vec<String>,
}

/// The platform role change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminChange {
    None,
    Grant,
    Revoke,
}

/// Everything a login would do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub user: UserMatch,
    /// Profile fields that change (`email`, `name`), with the new values.
    pub email: Option<String>,
    pub name: Option<String>,
    pub profile_changes: Vec<&'static str>,
    pub admin: AdminChange,
    /// Whether the user is (or will be) a platform admin after the plan.
    pub admin_after: bool,
    pub memberships: Vec<MembershipChange>,
    /// Mapping rules that could not be applied, and changes held back (safe to show).
    pub notes: Vec<String>,
}

fn email_domain_allowed(policy: &Policy, email: Option<&str>) -> bool {
    if policy.allowed_email_domains.is_empty() {
        return true;
    }
    let Some(domain) = email.and_then(|e| e.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase()) else {
        return false;
    };
    policy.allowed_email_domains.contains(&domain)
}

/// Replace the workspace slugs of `rules` by ids. `Err((index, reference))` names the first rule
/// whose workspace does not exist.
pub fn resolve_workspaces(tx: &Tx<'_>, rules: &mut [MappingRule]) -> Result<Result<(), (usize, String)>, AppError> {
    for (i, r) in rules.iter_mut().enumerate() {
        if let Some(reference) = &r.workspace {
            match tx.workspace_by_ref(reference)? {
                Some(ws) => r.workspace = Some(ws.id),
                None => return Ok(Err((i, reference.clone()))),
            }
        }
    }
    Ok(Ok(()))
}

/// Work out what a login of `identity` would do, reading only.
pub fn plan(tx: &Tx<'_>, policy: &Policy, identity: &ExternalIdentity) -> Result<Plan, AppError> {
    let email = identity.email.as_deref().and_then(|e| normalize_email(e).ok());
    // Only an email the provider vouches for may name an account: it links, it is stored, it is
    // refreshed. An unverified one is never written (members are added and conditions written
    // by email).
    let trusted = email.clone().filter(|_| identity.email_verified || policy.trust_email);
    let name = identity.name.as_deref().map(|n| n.chars().take(200).collect::<String>());
    let refuse = |reason: &str| Plan {
        user: UserMatch::Refuse { reason: reason.to_string() },
        email: trusted.clone(),
        name: name.clone(),
        profile_changes: Vec::new(),
        admin: AdminChange::None,
        admin_after: false,
        memberships: Vec::new(),
        notes: Vec::new(),
    };
    if identity.subject.is_empty() || identity.subject.len() > 255 {
        return Ok(refuse("the provider named no usable subject"));
    }
    if !email_domain_allowed(policy, email.as_deref()) {
        return Ok(refuse("the email's domain is not allowed for this provider"));
    }
    let mut notes = Vec::new();
    if email.is_some() && trusted.is_none() {
        notes.push("the provider did not verify the email: it is not stored, linked or updated".to_string());
    }
    let linked = tx.sso_identity(&policy.provider_id, &identity.issuer, &identity.subject)?;
    let (user_match, user): (UserMatch, Option<UserRow>) = match linked {
        Some(link) => {
            let user = tx.user_by_id(&link.user_id)?;
            (UserMatch::Linked { user_id: link.user_id }, user)
        }
        None => {
            let by_email = match (&trusted, policy.link_by_email, policy.jit) {
                (_, _, Jit::Off) => None,
                (Some(e), LinkByEmail::VerifiedOnly, _) => tx.user_by_email(e)?,
                _ => None,
            };
            match by_email {
                Some(u) if u.kind == "anonymous" => return Ok(refuse("no account is linked to this identity")),
                // One identity per provider and account: a recycled mailbox does not inherit
                // the account of the person the provider knew before.
                Some(u) if tx.sso_identity_count(&policy.provider_id, &u.id)? > 0 => {
                    return Ok(refuse("the account with this email is linked to another identity of this provider"))
                }
                Some(u) => (UserMatch::LinkByEmail { user_id: u.id.clone() }, Some(u)),
                None if policy.jit == Jit::Create => {
                    // An account with this email (verified or not) exists but may not be
                    // linked: a second one would split the person in two.
                    if let Some(e) = &email {
                        if tx.user_by_email(e)?.is_some() {
                            return Ok(refuse(
                                "an account with this email exists and cannot be linked (this provider links verified emails only, or never)",
                            ));
                        }
                    }
                    // A new account needs an email the provider vouches for.
                    if trusted.is_none() {
                        return Ok(refuse(if email.is_some() {
                            "the provider did not verify the email; a new account needs a verified one"
                        } else {
                            "the provider sent no email; a new account needs one"
                        }));
                    }
                    (UserMatch::Create { email: trusted.clone(), name: name.clone() }, None)
                }
                None => return Ok(refuse("no account is linked to this identity")),
            }
        }
    };
    if let Some(u) = &user {
        if u.disabled {
            return Ok(refuse("the account is disabled"));
        }
    } else if !matches!(user_match, UserMatch::Create { .. }) {
        return Ok(refuse("no account is linked to this identity"));
    }
    let mut profile_changes = Vec::new();
    if let Some(u) = &user {
        if let Some(e) = &trusted {
            if u.email.as_deref() != Some(e.as_str()) {
                match tx.user_by_email(e)? {
                    Some(other) if other.id != u.id => notes
                        .push("the email the provider sent belongs to another account; kept the current one".into()),
                    _ => profile_changes.push("email"),
                }
            }
        }
        if name.is_some() && u.name != name {
            profile_changes.push("name");
        }
    }
    let user_id = user.as_ref().map(|u| u.id.clone());
    let (admin, admin_after) = plan_admin(tx, policy, identity, user.as_ref(), &mut notes)?;
    let memberships = plan_memberships(tx, policy, identity, user_id.as_deref(), &mut notes)?;
    Ok(Plan { user: user_match, email: trusted, name, profile_changes, admin, admin_after, memberships, notes })
}

fn plan_admin(
    tx: &Tx<'_>,
    policy: &Policy,
    identity: &ExternalIdentity,
    user: Option<&UserRow>,
    notes: &mut Vec<String>,
) -> Result<(AdminChange, bool), AppError> {
    let mentions_admin = policy.mapping.iter().any(|r| r.platform_role.is_some());
    let wants_admin = policy.mapping.iter().any(|r| {
        r.platform_role.as_deref() == Some("admin") && claim_matches(&identity.raw_claims, &r.claim, &r.value)
    });
    let is_admin = user.is_some_and(|u| u.is_admin);
    let granted_by_mapping = match user {
        Some(u) => tx.sso_admin_granted(&policy.provider_id, &u.id)?,
        None => false,
    };
    if wants_admin && !is_admin {
        return Ok((AdminChange::Grant, true));
    }
    let may_revoke = granted_by_mapping || (policy.authoritative && mentions_admin);
    if !wants_admin && is_admin && may_revoke {
        if tx.admin_count()? <= 1 {
            notes.push("kept the platform admin role: this is the last platform admin".into());
            return Ok((AdminChange::None, true));
        }
        return Ok((AdminChange::Revoke, false));
    }
    Ok((AdminChange::None, is_admin))
}

fn plan_memberships(
    tx: &Tx<'_>,
    policy: &Policy,
    identity: &ExternalIdentity,
    user_id: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<MembershipChange>, AppError> {
    // Workspace reference → role names wanted, and every workspace the mapping names.
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    for rule in &policy.mapping {
        let Some(ws) = &rule.workspace else { continue };
        named.insert(ws.clone());
        if claim_matches(&identity.raw_claims, &rule.claim, &rule.value) {
            wanted.entry(ws.clone()).or_default().extend(rule.roles.iter().cloned());
        }
    }
    // Rules hold workspace ids (slugs are resolved when a provider is saved): a workspace
    // renamed to a slug a rule once named does not inherit its members.
    let workspace = |id: &str| Ok::<_, AppError>(tx.workspace_by_ref(id)?.filter(|w| w.id == id));
    let mut by_ws: BTreeMap<String, (String, BTreeSet<String>, bool)> = BTreeMap::new(); // id → (slug, wanted role ids, named)
    let mut role_names: BTreeMap<String, String> = BTreeMap::new();
    let mut owner_roles: BTreeMap<String, String> = BTreeMap::new();
    // Role names and each workspace's owner role, for the roles of `ws_id`.
    let mut learn = |ws_id: &str, roles: &[crate::db::RoleRow]| {
        for r in roles {
            role_names.insert(r.id.clone(), r.name.clone());
            if r.builtin && r.name == "owner" {
                owner_roles.insert(ws_id.to_string(), r.id.clone());
            }
        }
    };
    for reference in &named {
        let Some(ws) = workspace(reference)? else {
            if wanted.contains_key(reference) {
                notes.push(format!("mapping names workspace {reference:?}, which does not exist"));
            }
            continue;
        };
        let roles = tx.roles_of(&ws.id)?;
        learn(&ws.id, &roles);
        let mut ids = BTreeSet::new();
        for name in wanted.get(reference).into_iter().flatten() {
            match roles.iter().find(|r| r.name == *name || r.id == *name) {
                Some(r) => {
                    ids.insert(r.id.clone());
                }
                None => {
                    notes.push(format!("mapping names role {name:?} in workspace {reference:?}, which does not exist"))
                }
            }
        }
        by_ws.insert(ws.id.clone(), (ws.slug.clone(), ids, true));
    }
    // What the mapping granted before (workspace → role ids).
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(uid) = user_id {
        for (ws, role) in tx.sso_grants_of(&policy.provider_id, uid)? {
            granted.entry(ws).or_default().insert(role);
        }
    }
    for ws_id in granted.keys() {
        if !by_ws.contains_key(ws_id) {
            // A workspace the mapping no longer names: what it granted there goes.
            if let Some(ws) = workspace(ws_id)? {
                learn(&ws.id, &tx.roles_of(&ws.id)?);
                by_ws.insert(ws.id.clone(), (ws.slug.clone(), BTreeSet::new(), false));
            }
        }
    }
    let name_of = |id: &String| role_names.get(id).cloned().unwrap_or_else(|| id.clone());
    let mut out = Vec::new();
    for (ws_id, (slug, want, is_named)) in &by_ws {
        let held: BTreeSet<String> = match user_id {
            Some(uid) => tx.member_role_ids(ws_id, uid)?.unwrap_or_default().into_iter().collect(),
            None => BTreeSet::new(),
        };
        let ours = granted.get(ws_id).cloned().unwrap_or_default();
        let add: BTreeSet<String> = want.difference(&held).cloned().collect();
        let mut remove: BTreeSet<String> = held
            .iter()
            .filter(|r| !want.contains(*r) && (ours.contains(*r) || (policy.authoritative && *is_named)))
            .cloned()
            .collect();
        // The last owner stays an owner.
        if let (Some(owner), Some(uid)) = (owner_roles.get(ws_id), user_id) {
            if remove.contains(owner) && tx.role_holders_except(owner, uid)? == 0 {
                remove.remove(owner);
                notes.push(format!("kept the owner role in workspace {slug:?}: the last owner"));
            }
        }
        if add.is_empty() && remove.is_empty() {
            continue;
        }
        let after: BTreeSet<String> = held.difference(&remove).chain(add.iter()).cloned().collect();
        let mut before_names: Vec<String> = held.iter().map(name_of).collect();
        before_names.sort();
        let mut after_names: Vec<String> = after.iter().map(name_of).collect();
        after_names.sort();
        out.push(MembershipChange {
            workspace_id: ws_id.clone(),
            workspace_slug: slug.clone(),
            add: add.iter().map(|id| (id.clone(), name_of(id))).collect(),
            remove: remove.iter().map(|id| (id.clone(), name_of(id))).collect(),
            after: after_names,
            before: before_names,
        });
    }
    Ok(out)
}

/// Write `plan` (made in this transaction) for `identity`: the user, the link, the profile, the
/// platform role and the memberships, each audited. Returns the user id.
pub fn apply(
    tx: &Tx<'_>,
    auditor: &Auditor,
    now: OffsetDateTime,
    policy: &Policy,
    identity: &ExternalIdentity,
    plan: &Plan,
    origin: &Origin,
) -> Result<String, AppError> {
    let now_ms = unix_ms(now);
    let provider = &policy.provider_id;
    let link = |user_id: &str| IdentityRow {
        provider_id: provider.clone(),
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone(),
        user_id: user_id.to_string(),
        email: plan.email.clone(),
        created_at_ms: now_ms,
        last_login_at_ms: now_ms,
    };
    let user_id = match &plan.user {
        UserMatch::Refuse { reason } => return Err(AppError::Forbidden(reason.clone())),
        UserMatch::Linked { user_id } => {
            tx.sso_identity_touch(provider, &identity.issuer, &identity.subject, plan.email.as_deref(), now_ms)?;
            user_id.clone()
        }
        UserMatch::LinkByEmail { user_id } => {
            tx.sso_identity_insert(&link(user_id))?;
            audit::record(
                tx,
                auditor,
                now,
                &Event::new("sso.identity.linked", Actor::User(user_id.clone()))
                    .target(user_id.clone())
                    .origin(origin)
                    .details(json!({"provider": provider, "issuer": identity.issuer, "subject": identity.subject, "by": "email"})),
            )?;
            user_id.clone()
        }
        UserMatch::Create { email, name } => {
            let id = uuid::Uuid::now_v7().to_string();
            let mut row = UserRow::new(id.clone(), "local", email.clone(), now_ms);
            row.name = name.clone();
            tx.user_insert(&row)?;
            tx.sso_identity_insert(&link(&id))?;
            audit::record(
                tx,
                auditor,
                now,
                &Event::new("sso.user.provisioned", Actor::User(id.clone()))
                    .target(id.clone())
                    .origin(origin)
                    .details(json!({"provider": provider, "issuer": identity.issuer, "subject": identity.subject})),
            )?;
            id
        }
    };
    if !plan.profile_changes.is_empty() {
        let patch = crate::db::UserPatch {
            email: plan.email.clone().filter(|_| plan.profile_changes.contains(&"email")),
            name: plan.profile_changes.contains(&"name").then(|| plan.name.clone()),
            ..Default::default()
        };
        tx.user_patch(&user_id, &patch, now_ms)?;
        audit::record(
            tx,
            auditor,
            now,
            &Event::new("sso.profile.updated", Actor::User(user_id.clone()))
                .target(user_id.clone())
                .origin(origin)
                .details(json!({"provider": provider, "fields": plan.profile_changes})),
        )?;
    }
    match plan.admin {
        AdminChange::None => {}
        AdminChange::Grant | AdminChange::Revoke => {
            let grant = plan.admin == AdminChange::Grant;
            let patch = crate::db::UserPatch { is_admin: Some(grant), ..Default::default() };
            tx.user_patch(&user_id, &patch, now_ms)?;
            tx.sso_admin_grant_set(provider, &user_id, grant, now_ms)?;
            audit::record(
                tx,
                auditor,
                now,
                &Event::new(
                    if grant { "sso.admin.granted" } else { "sso.admin.revoked" },
                    Actor::User(user_id.clone()),
                )
                .target(user_id.clone())
                .origin(origin)
                .details(json!({"provider": provider})),
            )?;
        }
    }
    for m in &plan.memberships {
        // A role is added only when not held: it is the mapping's from now on.
        for (role, _) in &m.add {
            tx.member_role_add(&m.workspace_id, &user_id, role, now_ms)?;
            tx.sso_grant_insert(provider, &m.workspace_id, &user_id, role, now_ms)?;
        }
        for (role, _) in &m.remove {
            tx.sso_grant_delete(provider, &m.workspace_id, &user_id, role)?;
            tx.member_role_remove(&m.workspace_id, &user_id, role, now_ms)?;
        }
        audit::record(
            tx,
            auditor,
            now,
            &Event::new("sso.membership.changed", Actor::User(user_id.clone()))
                .target(user_id.clone())
                .workspace(m.workspace_id.clone())
                .origin(origin)
                .details(json!({
                    "provider": provider,
                    "added": m.add.iter().map(|r| &r.1).collect::<Vec<_>>(),
                    "removed": m.remove.iter().map(|r| &r.1).collect::<Vec<_>>(),
                    "before": m.before,
                    "after": m.after,
                })),
        )?;
    }
    // Grants whose role the mapping still wants but that a person removed by hand stay
    // forgotten: the next login grants them again, as the mapping says.
    Ok(user_id)
}
