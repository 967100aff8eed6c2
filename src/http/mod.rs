//! The HTTP layer (poem + poem-openapi): routes, the edge middleware, error mapping, the
//! OpenAPI document and the playground. Handlers are thin: extract, call one domain function,
//! map the result. Nothing here runs SQL or crypto.

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod docs;
pub mod edge;
pub mod error;
pub mod health;
pub mod json;
pub mod metrics;
pub mod secrets;
pub mod sso;
pub mod workspaces;

use crate::state::AppState;
use futures_util::future::{ready, Either};
use poem::endpoint::{BoxEndpoint, DynEndpoint};
use poem::error::MethodNotAllowedError;
use poem::http::Method;
use poem::middleware::CookieJarManager;
use poem::{Endpoint, EndpointExt, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use std::collections::HashMap;
use std::future::Future;

/// The tags that group operations in the spec and the playground.
#[derive(Tags)]
pub enum ApiTags {
    /// Liveness, readiness and metrics for operators and orchestrators.
    Operations,
    /// Signing in and out: sign-up, login, anonymous sessions, refresh, TOTP, JWKS.
    Auth,
    /// The caller's own account: profile, password, sessions, personal access tokens.
    Me,
    /// Platform administration of user accounts.
    Users,
    /// Workspaces, members, roles and rules, API keys, and decisions for backend services.
    Workspaces,
    /// Workspace secrets: sealed by the vault, versioned, revealed only with `reveal`.
    Secrets,
    /// The tamper-evident audit log: query, export, verification, signed checkpoints.
    Audit,
    /// Security monitoring: alerts raised by threshold rules over the audit log (platform admin).
    Security,
    /// Single sign-on through corporate identity providers (OIDC): login, callback, one-time
    /// codes, and the platform admin's provider management with a dry-run preview.
    Sso,
}

const DESCRIPTION: &str = "Gatehouse is the single public entrance of a multi-tenant platform: it signs people and \
machines in, decides what they may do, keeps secrets encrypted and writes a tamper-evident audit log.\n\n\
Every error is `application/problem+json` (RFC 9457) with `type`, `title`, `status`, `detail` and `request_id`. \
Every response carries `X-Request-Id`; send your own (1 to 64 characters of `A-Z a-z 0-9 . _ -`) to correlate logs.";

/// The API description shared by the server and `gatehouse openapi`.
type Apis = (
    health::HealthApi,
    metrics::MetricsApi,
    accounts::AccountsApi,
    workspaces::WorkspacesApi,
    secrets::SecretsApi,
    audit::AuditApi,
    alerts::AlertsApi,
    sso::SsoApi,
);

pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(Apis::default(), "Gatehouse", env!("CARGO_PKG_VERSION"))
        .description(DESCRIPTION)
        .license("Apache-2.0")
}

/// The operations of [`Apis`] at their paths, by method: the router the edge calls. `meta` is
/// `Apis`' metadata (made once at start, also for [`route_table`]).
///
/// Built here rather than by `OpenApiService::into_endpoint`, which puts the same router behind
/// a boxed endpoint, a response mapping, a query pre-parser and a cookie jar manager: layers
/// every request's future would be moved through. The edge parses the query (poem-openapi's
/// `UrlQuery`) instead, and the cookie jar manager is put only in front of the operations that
/// read a cookie (see [`reads_cookies`]): the others never look at the jar. The operations of
/// one path are picked by [`Operations`] rather than poem's `RouteMethod`. Like
/// `into_endpoint`, it panics at start on two operations with one id (a unit test builds it).
pub fn api_routes(meta: &[poem_openapi::registry::MetaApi]) -> Route {
    // As `into_endpoint` does: two operations under one id would break generated clients.
    let mut ids = std::collections::HashSet::new();
    for op in meta.iter().flat_map(|api| &api.paths).flat_map(|p| &p.operations) {
        if let Some(id) = op.operation_id {
            assert!(ids.insert(id), "duplicate operation id: {id}");
        }
    }
    let with_cookies = reads_cookies(meta);
    let mut table = HashMap::new();
    poem_openapi::OpenApi::add_routes(Apis::default(), &mut table);
    table.into_iter().fold(Route::new(), |route, (path, methods)| {
        let ops = methods
            .into_iter()
            .map(|(method, op)| {
                let op = if with_cookies.contains(&(path.clone(), method.clone())) {
                    op.with(CookieJarManager::new()).boxed()
                } else {
                    op
                };
                (method, op)
            })
            .collect();
        route.at(path, Operations(ops))
    })
}

/// The operations at one path, by method, as poem's `RouteMethod` picks them: a `HEAD` with no
/// operation of its own is answered by the `GET` one (the edge drops the body); any other method
/// is a 405. Each operation's boxed endpoint is called as it is: `RouteMethod` boxes every operation
/// a second time, and calling a `BoxEndpoint` through `Endpoint` wraps its future in two more
/// that each hold the request. Together about 1.5 KB more to allocate and move on every API
/// request (`tests/bench/README.md`).
struct Operations(Vec<(Method, BoxEndpoint<'static, Response>)>);

impl Operations {
    fn find(&self, method: &Method) -> Option<&dyn DynEndpoint<Output = Response>> {
        self.0.iter().find(|(m, _)| m == method).map(|(_, op)| op.as_ref())
    }
}

impl Endpoint for Operations {
    type Output = Response;

    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let op = match self.find(req.method()) {
            Some(op) => Some(op),
            // The edge sends no body with any answer to a HEAD.
            None if req.method() == Method::HEAD => {
                let get = self.find(&Method::GET);
                if get.is_some() {
                    req.set_method(Method::GET);
                }
                get
            }
            None => None,
        };
        match op {
            Some(op) => Either::Left(DynEndpoint::call(op, req)),
            None => Either::Right(ready(Err(MethodNotAllowedError.into()))),
        }
    }
}

/// The operations (route pattern as poem-openapi registers it, method) that read the request's
/// cookie jar: those with a cookie parameter or a security scheme whose key is a cookie. poem
/// panics when one of them runs without a `CookieJarManager` in front (a 500, which
/// `errors::a_forged_session_cookie_is_refused_by_every_operation` would catch). Only what the
/// document shows is seen here: an operation that took poem's `CookieJar` as an extractor of its
/// own, or a hidden operation, would have to be added by hand (there is none).
fn reads_cookies(meta: &[poem_openapi::registry::MetaApi]) -> std::collections::HashSet<(String, poem::http::Method)> {
    use poem_openapi::registry::{MetaParamIn, Registry};
    let mut registry = Registry::new();
    <Apis as poem_openapi::OpenApi>::register(&mut registry);
    let cookie_schemes: Vec<&str> =
        registry.security_schemes.iter().filter(|(_, s)| s.key_in == Some("cookie")).map(|(name, _)| *name).collect();
    let mut out = std::collections::HashSet::new();
    for path in meta.iter().flat_map(|api| &api.paths) {
        for op in &path.operations {
            let cookie_param = op.params.iter().any(|p| {
                matches!(p.in_type, MetaParamIn::Cookie | MetaParamIn::CookiePrivate | MetaParamIn::CookieSigned)
            });
            let cookie_scheme = op.security.iter().any(|any| any.keys().any(|name| cookie_schemes.contains(name)));
            if cookie_param || cookie_scheme {
                out.insert((poem_pattern(&path.path), op.method.clone()));
            }
        }
    }
    out
}

/// The OpenAPI document as pretty JSON, exactly as `/openapi.json` serves it.
pub fn openapi_json() -> String {
    with_credential_schemes(api_service().spec())
}

/// The ways a caller proves who it is, declared in the document from the start so that the
/// playground's Authorize dialog and client generators know them. poem-openapi publishes a
/// scheme only once an operation uses it; a scheme it already published is left as it is.
const CREDENTIAL_SCHEMES: &[(&str, &str)] = &[
    (
        "sessionToken",
        r#"{"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "Session access token (a short-lived JWT) from `POST /v1/auth/login`, sent as `Authorization: Bearer <token>`."}"#,
    ),
    (
        "personalAccessToken",
        r#"{"type": "http", "scheme": "bearer",
            "description": "Personal access token (`<prefix>_<random><checksum>`) from `POST /v1/me/tokens`, sent as `Authorization: Bearer <token>`."}"#,
    ),
    (
        "apiKey",
        r#"{"type": "apiKey", "in": "header", "name": "X-Api-Key",
            "description": "Workspace API key, sent in the `X-Api-Key` header."}"#,
    ),
    (
        "sessionCookie",
        r#"{"type": "apiKey", "in": "cookie", "name": "__Host-gatehouse_session",
            "description": "Browser session cookie (HTTP-only, Secure, SameSite=Lax). Requests that change state also need the `X-CSRF-Token` header."}"#,
    ),
];

fn with_credential_schemes(spec: String) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&spec) else { return spec };
    let Some(root) = doc.as_object_mut() else { return spec };
    let components = root.entry("components").or_insert_with(|| serde_json::json!({}));
    let Some(components) = components.as_object_mut() else { return spec };
    let schemes = components.entry("securitySchemes").or_insert_with(|| serde_json::json!({}));
    let Some(schemes) = schemes.as_object_mut() else { return spec };
    for (name, scheme) in CREDENTIAL_SCHEMES {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(scheme) {
            schemes.entry(name.to_string()).or_insert(value);
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or(spec)
}

/// Every route, wrapped in the edge middleware.
pub fn app(state: AppState) -> impl Endpoint {
    let meta = <Apis as poem_openapi::OpenApi>::meta();
    let (mut allow, mut labels) = route_table(&meta);
    for path in ["/openapi.json", "/docs", "/docs/", "/docs/assets/:name", "/login", "/login/", "/login/assets/:name"] {
        allow.insert(path.to_string(), "GET, HEAD".to_string());
        labels.insert(path.to_string(), path.to_string());
    }
    // The pages (the document, the playground, the sign-in page) and the API are two endpoints
    // the edge picks between by path prefix, rather than one more router level every API
    // request would pass through.
    let pages = Route::new()
        .at("/openapi.json", poem::get(docs::spec_endpoint()))
        .nest("/docs", docs::playground())
        .nest("/login", docs::login_page());
    edge::Edge::wrap(api_routes(&meta), pages.boxed(), state).with_allow(allow, labels)
}

/// Route pattern (as poem reports it) → the methods the document lists for it, for the `Allow`
/// header of a 405; and → its metrics label (the document's `{name}` form). Read from the
/// operations' metadata, which the document is made from, so that a start does not make the
/// document (see `docs::spec_endpoint`).
fn route_table(meta: &[poem_openapi::registry::MetaApi]) -> (HashMap<String, String>, HashMap<String, String>) {
    let mut by_path: HashMap<&str, Vec<&Method>> = HashMap::new();
    for path in meta.iter().flat_map(|api| &api.paths) {
        by_path.entry(path.path.as_str()).or_default().extend(path.operations.iter().map(|op| &op.method));
    }
    let (mut allow, mut labels) = (HashMap::new(), HashMap::new());
    for (path, methods) in by_path {
        let mut names: Vec<&str> = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::PATCH]
            .iter()
            .filter(|m| methods.contains(m))
            .map(Method::as_str)
            .collect();
        if methods.contains(&&Method::GET) {
            // poem answers HEAD on every GET route.
            names.insert(1, "HEAD");
        }
        let pattern = poem_pattern(path);
        allow.insert(pattern.clone(), names.join(", "));
        labels.insert(pattern, path.to_string());
    }
    (allow, labels)
}

/// The pattern poem's router reports for a spec path: poem-openapi registers `{name}`
/// segments as `:param0`, `:param1`, … in order.
fn poem_pattern(spec_path: &str) -> String {
    let mut n = 0;
    spec_path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                n += 1;
                format!(":param{}", n - 1)
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_routes_build_with_unique_operation_ids() {
        let _routes = super::api_routes(&<super::Apis as poem_openapi::OpenApi>::meta());
    }

    /// The `Allow` values and metrics labels read from the operations' metadata are those the
    /// document itself gives.
    #[test]
    fn the_route_table_is_the_documents() {
        let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).unwrap();
        let mut allow = std::collections::HashMap::new();
        let mut labels = std::collections::HashMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let ops = item.as_object().unwrap();
            let mut methods: Vec<String> = ["get", "put", "post", "delete", "patch"]
                .iter()
                .filter(|m| ops.contains_key(**m))
                .map(|m| m.to_uppercase())
                .collect();
            if ops.contains_key("get") {
                methods.insert(1, "HEAD".to_string());
            }
            allow.insert(super::poem_pattern(path), methods.join(", "));
            labels.insert(super::poem_pattern(path), path.clone());
        }
        assert!(allow.len() > 40, "{}", allow.len());
        let meta = <super::Apis as poem_openapi::OpenApi>::meta();
        assert_eq!(super::route_table(&meta), (allow, labels));
    }
}
