//! Single sign-on protocols: the only place that touches openidconnect. Each protocol turns an
//! identity provider's answer into one [`ExternalIdentity`]; what happens to it (find, link,
//! create, map) is decided in `domain::sso`.

pub mod oidc;
pub mod saml;

use crate::config::ClaimPaths;
use serde_json::{Map, Value};

/// Who the identity provider says signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalIdentity {
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Every claim (or attribute) as the provider sent it, for mapping rules and previews.
    pub raw_claims: Map<String, Value>,
}

impl ExternalIdentity {
    /// Read the user attributes out of `claims` with the provider's claim paths.
    pub fn from_claims(
        provider: &str,
        issuer: &str,
        subject: &str,
        claims: Map<String, Value>,
        paths: &ClaimPaths,
    ) -> Self {
        let text = |path: &str| claim_at(&claims, path).and_then(scalar_text).filter(|s| !s.is_empty());
        let email = text(&paths.email).map(|e| e.trim().to_string());
        // Providers send a boolean, sometimes the string "true" (older Azure AD, some SAML IdPs).
        let email_verified = match claim_at(&claims, &paths.email_verified) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let groups = claim_at(&claims, &paths.groups).map(values_of).unwrap_or_default();
        Self {
            provider: provider.to_string(),
            issuer: issuer.to_string(),
            subject: subject.to_string(),
            email,
            email_verified,
            name: text(&paths.name),
            groups,
            raw_claims: claims,
        }
    }
}

/// The value at a dotted path (`realm_access.roles`): each segment names a member of an object.
/// A key that itself contains dots (`https://example.com/groups`) is matched whole first.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim as text when it is a string, number or boolean.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as a list of texts: an array's scalar items, or a single scalar (some providers send
/// one group as a string). At most 1000 values, each at most 512 bytes, are kept.
pub fn values_of(v: &Value) -> Vec<String> {
    let items: Vec<String> = match v {
        Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
        other => scalar_text(other).into_iter().collect(),
    };
    items.into_iter().filter(|s| s.len() <= 512).take(1000).collect()
}

/// Whether the claim at `path` is `value`, or a list holding it.
pub fn claim_matches(claims: &Map<String, Value>, path: &str, value: &str) -> bool {
    claim_at(claims, path).is_some_and(|v| values_of(v).iter().any(|x| x == value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn dotted_paths_and_values() {
        let c = map(json!({
            "email": "Ann@Corp.example", "email_verified": "true", "name": "Ann",
            "realm_access": {"roles": ["admin", "dev", 7]},
            "https://example.com/groups": ["x"],
            "single": "solo",
            "deep": {"a": {"b": true}}
        }));
        assert_eq!(claim_at(&c, "realm_access.roles").map(values_of).unwrap(), vec!["admin", "dev", "7"]);
        assert_eq!(claim_at(&c, "https://example.com/groups").map(values_of).unwrap(), vec!["x"]);
        assert!(claim_matches(&c, "single", "solo"));
        assert!(claim_matches(&c, "deep.a.b", "true"));
        assert!(!claim_matches(&c, "deep.a", "true"));
        assert!(!claim_matches(&c, "realm_access.roles", "ops"));
        assert!(claim_at(&c, "missing.path").is_none());
        let paths = ClaimPaths { groups: "realm_access.roles".into(), ..ClaimPaths::default() };
        let id = ExternalIdentity::from_claims("corp", "https://idp", "s1", c, &paths);
        assert_eq!(id.email.as_deref(), Some("Ann@Corp.example"));
        assert!(id.email_verified);
        assert_eq!(id.groups, vec!["admin", "dev", "7"]);
    }
}
