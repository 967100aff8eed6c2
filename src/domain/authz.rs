//! Authorization: rules, roles and the one decision function.
//!
//! A rule is `{effect: allow|deny, actions, subjects, conditions}`. A caller's rights in a
//! workspace are the rules of its roles (an API key: its own rules, intersected with its
//! creator's current rights). [`decide`] walks them: a matching deny wins, else a matching allow
//! allows, else no. Every endpoint asks [`decide`] (through `workspaces::access`); no handler
//! decides on its own.
//!
//! Gatehouse's own subjects have a fixed set of actions; any other subject belongs to a backend
//! service and its actions are free. `*` matches every action or subject, and the subject
//! [`BACKEND`] matches every subject that is not Gatehouse's own (the built-in roles use it so
//! that "everything but security" needs no deny rule, which would win over other roles).

use crate::error::AppError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Gatehouse's own subjects and their actions.
pub const SUBJECTS: &[(&str, &[&str])] = &[
    ("workspace", &["read", "update", "delete", "authorize"]),
    ("member", &["read", "create", "update", "delete"]),
    ("role", &["read", "create", "update", "delete"]),
    ("api_key", &["read", "create", "update", "delete", "rotate"]),
    ("secret", &["read", "write", "delete", "reveal"]),
    ("audit", &["read"]),
];

/// The subject that stands for every backend-service subject (not Gatehouse's own).
pub const BACKEND: &str = "@backend";

/// Limits that keep a rule set small enough to check quickly and to show in a page.
pub const MAX_RULES: usize = 100;
const MAX_NAMES: usize = 50;
const MAX_CONDITIONS: usize = 16;
const MAX_IN: usize = 100;
const MAX_TEXT: usize = 256;

fn gatehouse_actions(subject: &str) -> Option<&'static [&'static str]> {
    SUBJECTS.iter().find(|(s, _)| *s == subject).map(|(_, a)| *a)
}

pub fn is_gatehouse_subject(subject: &str) -> bool {
    gatehouse_actions(subject).is_some()
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// A comparison of one resource attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The attribute equals the value (`${user.id}` and `${user.email}` are replaced first).
    Equals(Value),
    /// The attribute equals one of the values.
    In(Vec<Value>),
    /// The attribute is a string that starts with the value.
    Prefix(String),
}

/// One rule, in its stored (canonical) form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub effect: Effect,
    pub actions: Vec<String>,
    pub subjects: Vec<String>,
    #[serde(default)]
    pub conditions: BTreeMap<String, Condition>,
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.:-".contains(c))
}

fn scalar(v: &Value, at: &str) -> Result<Value, AppError> {
    match v {
        Value::String(s) if s.chars().count() > MAX_TEXT => {
            Err(AppError::Invalid(format!("{at}: a value has at most {MAX_TEXT} characters")))
        }
        Value::String(_) | Value::Bool(_) | Value::Number(_) => Ok(v.clone()),
        _ => Err(AppError::Invalid(format!("{at}: a value must be a string, a number or a boolean"))),
    }
}

/// One condition from its wire form: a bare value (equals), or an object with exactly one of
/// `equals`, `in`, `prefix`.
fn condition(v: &Value, at: &str) -> Result<Condition, AppError> {
    let Value::Object(map) = v else { return scalar(v, at).map(Condition::Equals) };
    let mut entries = map.iter();
    let (Some((op, arg)), None) = (entries.next(), entries.next()) else {
        return Err(AppError::Invalid(format!("{at}: a condition has exactly one of equals, in, prefix")));
    };
    match op.as_str() {
        "equals" => scalar(arg, &format!("{at}.equals")).map(Condition::Equals),
        "in" => {
            let Value::Array(items) = arg else {
                return Err(AppError::Invalid(format!("{at}.in: must be a list of values")));
            };
            if items.is_empty() || items.len() > MAX_IN {
                return Err(AppError::Invalid(format!("{at}.in: must hold 1 to {MAX_IN} values")));
            }
            let items =
                items.iter().enumerate().map(|(i, x)| scalar(x, &format!("{at}.in[{i}]"))).collect::<Result<_, _>>()?;
            Ok(Condition::In(items))
        }
        "prefix" => match arg {
            Value::String(s) if s.chars().count() <= MAX_TEXT => Ok(Condition::Prefix(s.clone())),
            _ => Err(AppError::Invalid(format!("{at}.prefix: must be a string of at most {MAX_TEXT} characters"))),
        },
        other => Err(AppError::Invalid(format!("{at}: unknown operator '{other}'; use equals, in or prefix"))),
    }
}

/// A rule as a client sends it.
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub effect: Effect,
    pub actions: Vec<String>,
    pub subjects: Vec<String>,
    pub conditions: BTreeMap<String, Value>,
}

/// Check a client's rules and put them in canonical form. Errors name the field
/// (`rules[2].actions[0]`) and say what is allowed.
pub fn parse_rules(input: Vec<RuleInput>, field: &str) -> Result<Vec<Rule>, AppError> {
    if input.len() > MAX_RULES {
        return Err(AppError::Invalid(format!("{field}: at most {MAX_RULES} rules")));
    }
    let mut out = Vec::with_capacity(input.len());
    for (i, r) in input.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        for (list, what) in [(&r.actions, "actions"), (&r.subjects, "subjects")] {
            if list.is_empty() || list.len() > MAX_NAMES {
                return Err(AppError::Invalid(format!("{at}.{what}: must hold 1 to {MAX_NAMES} names")));
            }
        }
        for (j, s) in r.subjects.iter().enumerate() {
            if s != "*" && s != BACKEND && !valid_name(s) {
                return Err(AppError::Invalid(format!(
                    "{at}.subjects[{j}]: '{}' is not a subject name (lower-case letters, digits, _ . : -, \
                     starting with a letter; or * or {BACKEND})",
                    shorten(s)
                )));
            }
        }
        for (j, a) in r.actions.iter().enumerate() {
            if a != "*" && !valid_name(a) {
                return Err(AppError::Invalid(format!(
                    "{at}.actions[{j}]: '{}' is not an action name (lower-case letters, digits, _ . : -, \
                     starting with a letter; or *)",
                    shorten(a)
                )));
            }
            for s in &r.subjects {
                if let Some(known) = gatehouse_actions(s) {
                    if a != "*" && !known.contains(&a.as_str()) {
                        return Err(AppError::Invalid(format!(
                            "{at}.actions[{j}]: '{a}' is not an action of subject '{s}' (its actions: {})",
                            known.join(", ")
                        )));
                    }
                }
            }
        }
        if r.conditions.len() > MAX_CONDITIONS {
            return Err(AppError::Invalid(format!("{at}.conditions: at most {MAX_CONDITIONS} conditions")));
        }
        let mut conditions = BTreeMap::new();
        for (name, v) in &r.conditions {
            if !valid_attribute(name) {
                return Err(AppError::Invalid(format!(
                    "{at}.conditions: '{}' is not an attribute name (letters, digits, _ . -, at most 64)",
                    shorten(name)
                )));
            }
            conditions.insert(name.clone(), condition(v, &format!("{at}.conditions.{name}"))?);
        }
        let mut actions = r.actions;
        actions.dedup();
        let mut subjects = r.subjects;
        subjects.dedup();
        out.push(Rule { effect: r.effect, actions, subjects, conditions });
    }
    Ok(out)
}

fn valid_attribute(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The built-in roles, by name, with the rules that define them.
pub const BUILTIN_ROLES: &[&str] = &["owner", "editor", "viewer"];

pub fn builtin_rules(name: &str) -> Vec<Rule> {
    let allow = |actions: &[&str], subjects: &[&str]| Rule {
        effect: Effect::Allow,
        actions: actions.iter().map(|s| s.to_string()).collect(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        conditions: BTreeMap::new(),
    };
    match name {
        // Everything, including security and permissions.
        "owner" => vec![allow(&["*"], &["*"])],
        // Everything but security (API keys, audit, asking decisions for others), permissions
        // (members, roles) and revealing secrets.
        "editor" => vec![
            allow(&["read", "update"], &["workspace"]),
            allow(&["read"], &["member", "role"]),
            allow(&["read", "write", "delete"], &["secret"]),
            allow(&["*"], &[BACKEND]),
        ],
        // Read.
        "viewer" => vec![allow(&["read"], &["workspace", "member", "role", "secret", BACKEND])],
        _ => Vec::new(),
    }
}

/// The user a rule's `${user.id}` and `${user.email}` stand for.
#[derive(Debug, Clone, Default)]
pub struct UserContext {
    pub id: String,
    pub email: Option<String>,
}

/// A rule ready to match, labelled with where it came from (`editor[0]`, `api_key[2]`).
#[derive(Debug)]
pub struct Compiled {
    allow: bool,
    actions: Option<Vec<String>>,
    subjects: Option<Vec<String>>,
    backend: bool,
    conditions: Vec<(String, Condition)>,
    pub label: String,
}

impl Compiled {
    pub fn new(rule: &Rule, label: String) -> Self {
        let any = |v: &Vec<String>| v.iter().any(|x| x == "*");
        Self {
            allow: rule.effect == Effect::Allow,
            actions: if any(&rule.actions) { None } else { Some(rule.actions.clone()) },
            subjects: if any(&rule.subjects) { None } else { Some(rule.subjects.clone()) },
            backend: rule.subjects.iter().any(|s| s == BACKEND),
            conditions: rule.conditions.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            label,
        }
    }

    fn matches_subject(&self, subject: &str) -> bool {
        match &self.subjects {
            None => true,
            Some(list) => list.iter().any(|s| s == subject) || (self.backend && !is_gatehouse_subject(subject)),
        }
    }

    fn matches_action(&self, action: &str) -> bool {
        self.actions.as_ref().is_none_or(|list| list.iter().any(|a| a == action))
    }

    fn holds(&self, attrs: &BTreeMap<String, Value>, user: &UserContext) -> bool {
        self.conditions.iter().all(|(name, c)| {
            let Some(v) = attrs.get(name) else { return false };
            match c {
                Condition::Equals(want) => same(v, want, user),
                Condition::In(list) => list.iter().any(|want| same(v, want, user)),
                Condition::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(expand(p, user).as_ref())),
            }
        })
    }
}

fn expand<'a>(s: &'a str, user: &UserContext) -> std::borrow::Cow<'a, str> {
    if !s.contains("${") {
        return s.into();
    }
    s.replace("${user.id}", &user.id).replace("${user.email}", user.email.as_deref().unwrap_or("\u{0}")).into()
}

fn same(have: &Value, want: &Value, user: &UserContext) -> bool {
    match (have, want) {
        (Value::String(h), Value::String(w)) => h == expand(w, user).as_ref(),
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        _ => have == want,
    }
}

/// A set of compiled rules (a member's roles, or an API key's own rules).
#[derive(Debug, Default, Clone)]
pub struct RuleSet(pub Vec<Arc<Compiled>>);

impl RuleSet {
    pub fn from_rules(rules: &[Rule], name: &str) -> Self {
        Self(rules.iter().enumerate().map(|(i, r)| Arc::new(Compiled::new(r, format!("{name}[{i}]")))).collect())
    }

    pub fn extend(&mut self, other: &RuleSet) {
        self.0.extend(other.0.iter().cloned());
    }
}

/// What a resource is: its subject and its attributes (`id`, `owner`, `path`…).
#[derive(Debug, Clone, Default)]
pub struct Resource {
    pub subject: String,
    pub attributes: BTreeMap<String, Value>,
}

impl Resource {
    pub fn new(subject: &str) -> Self {
        Self { subject: subject.to_string(), attributes: BTreeMap::new() }
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.to_string(), value.into());
        self
    }
}

/// The answer, with the reason and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    pub rule: Option<String>,
}

impl Decision {
    pub fn allow(reason: impl Into<String>, rule: Option<String>) -> Self {
        Self { allowed: true, reason: reason.into(), rule }
    }

    pub fn deny(reason: impl Into<String>, rule: Option<String>) -> Self {
        Self { allowed: false, reason: reason.into(), rule }
    }

    /// `Forbidden` with the reason when denied.
    pub fn require(self) -> Result<Decision, AppError> {
        if self.allowed {
            Ok(self)
        } else {
            Err(AppError::Forbidden(self.reason))
        }
    }
}

/// Who is asking, with what rights, in one workspace.
#[derive(Debug, Clone)]
pub enum Rights {
    /// A platform administrator: everything, audited as an admin action.
    PlatformAdmin,
    /// A member, with the rules of its roles.
    Member { user: UserContext, rules: RuleSet },
    /// An API key: its own rules, within what its creator may still do.
    ApiKey { key_id: String, creator: UserContext, own: RuleSet, creator_rules: RuleSet },
    /// Not a member (an outsider, or a user whose membership ended).
    None,
}

/// Walk one rule set: a matching deny wins, then the first matching allow; nothing means no.
fn walk(rules: &RuleSet, action: &str, res: &Resource, user: &UserContext) -> Decision {
    let mut allowed_by: Option<&Compiled> = None;
    for r in &rules.0 {
        if !r.matches_action(action) || !r.matches_subject(&res.subject) || !r.holds(&res.attributes, user) {
            continue;
        }
        if !r.allow {
            return Decision::deny(
                format!("{action} on {} is denied by rule {}", res.subject, r.label),
                Some(r.label.clone()),
            );
        }
        if allowed_by.is_none() {
            allowed_by = Some(r);
        }
    }
    match allowed_by {
        Some(r) => Decision::allow(
            format!("{action} on {} is allowed by rule {}", res.subject, r.label),
            Some(r.label.clone()),
        ),
        None => Decision::deny(format!("no rule allows {action} on {}", res.subject), None),
    }
}

/// The one decision function.
pub fn decide(rights: &Rights, action: &str, res: &Resource) -> Decision {
    match rights {
        Rights::PlatformAdmin => Decision::allow("platform administrators may do everything", None),
        Rights::None => Decision::deny("not a member of this workspace", None),
        Rights::Member { user, rules } => walk(rules, action, res, user),
        Rights::ApiKey { creator, own, creator_rules, .. } => {
            let by_key = walk(own, action, res, creator);
            if !by_key.allowed {
                return Decision { reason: format!("API key: {}", by_key.reason), ..by_key };
            }
            let by_creator = walk(creator_rules, action, res, creator);
            if !by_creator.allowed {
                return Decision::deny(
                    format!("the key's creator may no longer do this ({})", by_creator.reason),
                    by_creator.rule,
                );
            }
            Decision { reason: format!("API key: {}", by_key.reason), ..by_key }
        }
    }
}

/// Every (action, subject) pair a rule can allow, with `*` expanded over Gatehouse's actions
/// where that is finite.
fn grants(rule: &Rule) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in &rule.subjects {
        for a in &rule.actions {
            match (a.as_str(), gatehouse_actions(s)) {
                ("*", Some(known)) => out.extend(known.iter().map(|k| (k.to_string(), s.clone()))),
                _ => out.push((a.clone(), s.clone())),
            }
        }
    }
    out
}

/// Whether a granter's allow rule covers `(action, subject)` under the conditions `conds`:
/// it names the action (or `*`) and the subject (or `*`, or `@backend` for a backend subject),
/// and each of its conditions is one of `conds`.
fn covers_pair(g: &Rule, action: &str, subject: &str, conds: &BTreeMap<String, Condition>) -> bool {
    if g.effect != Effect::Allow {
        return false;
    }
    let action_ok = g.actions.iter().any(|a| a == "*" || a == action);
    let subject_ok = g.subjects.iter().any(|s| {
        s == "*"
            || s == subject
            || (s == BACKEND && (subject == BACKEND || (subject != "*" && !is_gatehouse_subject(subject))))
    });
    action_ok && subject_ok && g.conditions.iter().all(|(k, c)| conds.get(k) == Some(c))
}

/// Check that granting `wanted` (an API key's rules, a role's rules) gives nothing the granter
/// lacks. Deny rules only take away and always pass; each allow is checked pair by pair. The
/// check is conservative (a granter's conditional deny is not subtracted here), and use-time
/// intersection with the creator's rights enforces the rest for API keys.
pub fn check_within(granter: &Rights, granter_rules: &[Rule], wanted: &[Rule]) -> Result<(), AppError> {
    if matches!(granter, Rights::PlatformAdmin) {
        return Ok(());
    }
    for (i, w) in wanted.iter().enumerate() {
        if w.effect == Effect::Deny {
            continue;
        }
        for (action, subject) in grants(w) {
            let covered = granter_rules.iter().any(|g| covers_pair(g, &action, &subject, &w.conditions));
            let denied = granter_rules.iter().any(|g| {
                g.effect == Effect::Deny
                    && g.conditions.is_empty()
                    && g.actions.iter().any(|a| a == "*" || *a == action)
                    && g.subjects.iter().any(|s| s == "*" || *s == subject)
            });
            if !covered || denied {
                return Err(AppError::Forbidden(format!(
                    "rules[{i}] would allow {action} on {subject}, which you may not do yourself"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        let input = RuleInput {
            effect: serde_json::from_value(v["effect"].clone()).unwrap(),
            actions: serde_json::from_value(v["actions"].clone()).unwrap(),
            subjects: serde_json::from_value(v["subjects"].clone()).unwrap(),
            conditions: serde_json::from_value(v.get("conditions").cloned().unwrap_or(json!({}))).unwrap(),
        };
        parse_rules(vec![input], "rules").unwrap().remove(0)
    }

    fn member(rules: Vec<Rule>) -> Rights {
        Rights::Member {
            user: UserContext { id: "u1".into(), email: Some("a@x.io".into()) },
            rules: RuleSet::from_rules(&rules, "r"),
        }
    }

    #[test]
    fn deny_wins_and_nothing_means_no() {
        let r = member(vec![
            rule(json!({"effect": "allow", "actions": ["*"], "subjects": ["pages"]})),
            rule(
                json!({"effect": "deny", "actions": ["delete"], "subjects": ["pages"], "conditions": {"locked": true}}),
            ),
        ]);
        assert!(decide(&r, "edit", &Resource::new("pages")).allowed);
        let locked = Resource::new("pages").with("locked", true);
        let d = decide(&r, "delete", &locked);
        assert!(!d.allowed);
        assert_eq!(d.rule.as_deref(), Some("r[1]"));
        assert!(decide(&r, "delete", &Resource::new("pages").with("locked", false)).allowed);
        let none = decide(&r, "read", &Resource::new("files"));
        assert!(!none.allowed);
        assert_eq!(none.rule, None);
    }

    #[test]
    fn conditions_compare_attributes_with_user_templates() {
        let r = member(vec![rule(json!({"effect": "allow", "actions": ["edit"], "subjects": ["pages"],
            "conditions": {"owner": "${user.id}", "tag": {"in": ["a", "b"]}, "path": {"prefix": "/u/${user.id}/"}}}))]);
        let ok = Resource::new("pages").with("owner", "u1").with("tag", "b").with("path", "/u/u1/x");
        assert!(decide(&r, "edit", &ok).allowed);
        for bad in [
            ok.clone().with("owner", "u2"),
            ok.clone().with("tag", "c"),
            ok.clone().with("path", "/u/u2/x"),
            Resource::new("pages").with("tag", "b").with("path", "/u/u1/x"),
        ] {
            assert!(!decide(&r, "edit", &bad).allowed, "{bad:?}");
        }
    }

    #[test]
    fn builtin_roles() {
        let editor = member(builtin_rules("editor"));
        assert!(decide(&editor, "publish", &Resource::new("pages")).allowed);
        assert!(decide(&editor, "write", &Resource::new("secret")).allowed);
        assert!(!decide(&editor, "reveal", &Resource::new("secret")).allowed);
        assert!(!decide(&editor, "update", &Resource::new("member")).allowed);
        assert!(!decide(&editor, "create", &Resource::new("api_key")).allowed);
        let viewer = member(builtin_rules("viewer"));
        assert!(decide(&viewer, "read", &Resource::new("pages")).allowed);
        assert!(!decide(&viewer, "edit", &Resource::new("pages")).allowed);
        assert!(!decide(&viewer, "read", &Resource::new("audit")).allowed);
    }

    #[test]
    fn unknown_actions_of_gatehouse_subjects_are_refused() {
        let bad = RuleInput {
            effect: Effect::Allow,
            actions: vec!["publish".into()],
            subjects: vec!["secret".into()],
            conditions: BTreeMap::new(),
        };
        let e = parse_rules(vec![bad], "rules").unwrap_err().to_string();
        assert!(e.contains("rules[0].actions[0]") && e.contains("reveal"), "{e}");
        let deep = RuleInput {
            effect: Effect::Allow,
            actions: vec!["x".into()],
            subjects: vec!["pages".into()],
            conditions: [("a".to_string(), json!({"equals": {"nested": 1}}))].into(),
        };
        assert!(parse_rules(vec![deep], "rules").unwrap_err().to_string().contains("rules[0].conditions.a.equals"));
    }

    #[test]
    fn grants_stay_within_the_granter() {
        let editor_rules = builtin_rules("editor");
        let editor = member(editor_rules.clone());
        let ok = rule(json!({"effect": "allow", "actions": ["publish"], "subjects": ["pages"]}));
        assert!(check_within(&editor, &editor_rules, &[ok]).is_ok());
        let more = rule(json!({"effect": "allow", "actions": ["reveal"], "subjects": ["secret"]}));
        assert!(check_within(&editor, &editor_rules, &[more]).is_err());
        let all = rule(json!({"effect": "allow", "actions": ["*"], "subjects": ["*"]}));
        assert!(check_within(&editor, &editor_rules, std::slice::from_ref(&all)).is_err());
        let owner_rules = builtin_rules("owner");
        assert!(check_within(&member(owner_rules.clone()), &owner_rules, &[all]).is_ok());
        // A conditional grant is covered only by the same condition or none.
        let cond = vec![rule(
            json!({"effect": "allow", "actions": ["edit"], "subjects": ["pages"], "conditions": {"team": "a"}}),
        )];
        let wider = rule(json!({"effect": "allow", "actions": ["edit"], "subjects": ["pages"]}));
        assert!(check_within(&member(cond.clone()), &cond, &[wider]).is_err());
        let same = rule(
            json!({"effect": "allow", "actions": ["edit"], "subjects": ["pages"], "conditions": {"team": "a", "x": 1}}),
        );
        assert!(check_within(&member(cond.clone()), &cond, &[same]).is_ok());
    }

    #[test]
    fn api_keys_are_cut_to_their_creator() {
        let key = Rights::ApiKey {
            key_id: "k".into(),
            creator: UserContext::default(),
            own: RuleSet::from_rules(&builtin_rules("owner"), "api_key"),
            creator_rules: RuleSet::from_rules(&builtin_rules("viewer"), "viewer"),
        };
        assert!(decide(&key, "read", &Resource::new("pages")).allowed);
        let d = decide(&key, "edit", &Resource::new("pages"));
        assert!(!d.allowed && d.reason.contains("creator"), "{d:?}");
    }
}
