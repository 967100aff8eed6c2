//! The edge middleware every request passes through, outermost first:
//! request id → client address (trusting `X-Forwarded-For` only from `trusted_proxies`) →
//! request span → credential check → body size limit → panic catcher → the pages or the API
//! (picked by path; for the API, its query parsed for poem-openapi's extractors), each behind
//! CORS when origins are allow-listed. On the way out: every error becomes problem+json (5xx generic),
//! security headers, `X-Request-Id`, metrics by route template, one access log line. It is one
//! endpoint rather than a stack of middleware layers, and it calls the API's router in place
//! rather than boxed, because every layer boxes and moves each request's future (see
//! `tests/bench/README.md`).
//!
//! Nothing here logs headers, bodies or query strings.

use super::error::{Problem, PROBLEM_JSON};
use crate::metrics::{Metrics, RouteId, UNMATCHED_ROUTE};
use crate::state::AppState;
use futures_util::future::Either;
use futures_util::FutureExt;
use ipnet::IpNet;
use poem::endpoint::{BoxEndpoint, DynEndpoint};
use poem::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use poem::middleware::Cors;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Result};
use poem::{PathPattern, Route};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What the edge learned about a request; handlers read it from the request extensions.
/// Cheap to clone: the strings are shared.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: Arc<str>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<Arc<str>>,
}

pub const REQUEST_ID: &str = "x-request-id";
// Header names built once, not parsed from text on every response.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);
const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Data (JSON, problem+json): nothing may load from it, nothing may frame it. (`base-uri` and
/// `form-action` govern elements of an HTML document, which a data answer never is.)
const CSP_DATA: &str = "default-src 'none'; frame-ancestors 'none'";
/// An HTML page of the API's (the SSO callback's error page): no scripts, no forms, no `<base>`.
const CSP_PAGE: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The playground needs its own scripts, inline styles (Swagger UI sets them) and data: images.
const CSP_DOCS: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The API: the router of the operations (see `http::api_routes`).
pub type ApiRoutes = Route;

/// The API endpoint, with CORS in front when origins are allow-listed.
#[allow(clippy::large_enum_variant)] // One per process; the router is called in place, not boxed.
enum Api {
    Bare(ApiRoutes),
    Cors(BoxEndpoint<'static, Response>),
}

/// The edge endpoint.
pub struct Edge {
    api: Api,
    /// `/openapi.json`, `/docs/…` and `/login/…`: see [`is_page_path`].
    pages: BoxEndpoint<'static, Response>,
    state: AppState,
    /// Route template → `Allow` header value for 405 answers.
    allow: HashMap<String, String>,
    /// Route pattern → its route template (the metrics label) and metrics number, made once so
    /// that a request allocates none.
    labels: HashMap<String, RouteName>,
    unmatched: RouteName,
    /// The security headers of each kind of answer, made once (see [`with_security_headers`]).
    headers_data: HeaderMap,
    headers_page: HeaderMap,
    headers_script_page: HeaderMap,
}

/// The playground and the sign-in page, which run their own scripts (their CSP allows them).
fn is_script_page(path: &str) -> bool {
    path == "/docs" || path.starts_with("/docs/") || path == "/login" || path.starts_with("/login/")
}

/// Served by the pages endpoint rather than the API.
fn is_page_path(path: &str) -> bool {
    path == "/openapi.json" || is_script_page(path)
}

impl Edge {
    /// The API is kept as it is (not boxed) unless CORS goes in front of it: each boxed layer
    /// is one more move of every request's future. The pages come boxed.
    pub fn wrap(api: ApiRoutes, pages: BoxEndpoint<'static, Response>, state: AppState) -> Self {
        let (api, pages) = match cors(&state) {
            None => (Api::Bare(api), pages),
            Some(cors) => (
                Api::Cors(cors.transform(api).map_to_response().boxed()),
                cors.transform(pages).map_to_response().boxed(),
            ),
        };
        Self {
            api,
            pages,
            allow: HashMap::new(),
            labels: HashMap::new(),
            unmatched: RouteName::new(UNMATCHED_ROUTE.into(), &state.metrics),
            headers_data: security_header_set(Answer::Data, state.http.tls),
            headers_page: security_header_set(Answer::Page, state.http.tls),
            headers_script_page: security_header_set(Answer::ScriptPage, state.http.tls),
            state,
        }
    }

    /// The methods each route pattern accepts, for the `Allow` header of a 405, and the label
    /// (route template) each pattern is counted under in metrics.
    pub fn with_allow(mut self, allow: HashMap<String, String>, labels: HashMap<String, String>) -> Self {
        self.labels = labels.into_iter().map(|(k, v)| (k, RouteName::new(v, &self.state.metrics))).collect();
        self.allow = allow;
        self
    }

    /// The metrics label of a route template; anything unknown shares one label so that raw
    /// paths never become label values.
    fn route_label(&self, pattern: Option<&PathPattern>) -> &RouteName {
        pattern.and_then(|p| self.labels.get(p.0.as_ref())).unwrap_or(&self.unmatched)
    }
}

/// A route template, as the log and the audit log name it, and its number in the metrics.
struct RouteName {
    label: String,
    metrics: RouteId,
}

impl RouteName {
    fn new(label: String, metrics: &Metrics) -> Self {
        Self { metrics: metrics.route(&label), label }
    }
}

/// The CORS layer, when origins are allow-listed; made once for the API and the pages. (Panics
/// are caught in [`Edge::handle`] itself, and the state is put in the request there: two layers
/// fewer for every request to pass through.)
fn cors(state: &AppState) -> Option<Cors> {
    if state.http.cors_allowed_origins.is_empty() {
        return None;
    }
    let cors = Cors::new()
        .allow_origins(state.http.cors_allowed_origins.iter().map(String::as_str))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers(["authorization", "content-type", "x-api-key", "x-csrf-token", REQUEST_ID])
        .allow_headers(state.http.api_key_headers.iter().map(|h| h.as_str()))
        .expose_headers([REQUEST_ID])
        .allow_credentials(true)
        .max_age(600);
    Some(cors)
}

/// The parsed query, where poem-openapi's parameter extractors read it (see
/// `http::api_routes`).
fn parse_query(req: &mut Request) {
    let query = if req.uri().query().is_some() { req.params().unwrap_or_default() } else { Vec::new() };
    req.extensions_mut().insert(poem_openapi::__private::UrlQuery(query));
}

/// Methods as static labels; anything else is `OTHER`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A client-supplied request id is kept when it is 1–64 characters of `[A-Za-z0-9._-]`.
fn request_id(req: &Request) -> Arc<str> {
    let given = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
    match given {
        Some(id)
            if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Arc::from(id)
        }
        _ => {
            let mut buf = uuid::Uuid::encode_buffer();
            Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
        }
    }
}

/// The `X-Forwarded-For` chain as the proxy sent it: every header line joined in order.
/// `Err` when a line is not readable text: the chain cannot be trusted then.
fn forwarded_for(req: &Request) -> Result<Option<String>, ()> {
    let mut chain: Option<String> = None;
    for value in req.headers().get_all(X_FORWARDED_FOR) {
        let text = value.to_str().map_err(|_| ())?;
        match &mut chain {
            Some(c) => {
                c.push(',');
                c.push_str(text);
            }
            None => chain = Some(text.to_string()),
        }
    }
    Ok(chain)
}

/// The client address: the peer, unless the peer is a trusted proxy, in which case walk
/// `X-Forwarded-For` from the right and take the first address that is not a trusted proxy.
/// A chain with an unreadable or malformed hop gives no address at all (an unknown client),
/// never the proxy's own address: a client must not be able to pass for the proxy.
/// `forwarded` reads the chain (see [`forwarded_for`]); it is called only for a trusted peer.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded: impl FnOnce() -> Result<Option<String>, ()>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let header = match forwarded() {
        Ok(Some(h)) => h,
        // The proxy itself is calling.
        Ok(None) => return Some(peer),
        Err(()) => return None,
    };
    let mut client = None;
    for hop in header.rsplit(',') {
        let ip = hop.trim().parse::<IpAddr>().ok()?.to_canonical();
        client = Some(ip);
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An address as text. IPv4 (nearly every request's case) is written digit by digit: through
/// the formatting machinery it cost more than the rest of the request's span.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// The first `n` characters of `s` (all of it when shorter), without copying.
fn first_chars(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    s.char_indices().nth(n).map_or(s, |(end, _)| &s[..end])
}

fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.remote_addr().as_socket_addr().map(|a| a.ip().to_canonical())
}

/// A problem+json response.
pub fn problem_response(problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type(PROBLEM_JSON)
        .body(body)
}

/// Replace a response's body by `problem`, keeping its status, its route template and the
/// headers a client needs to act on an error.
fn replace_body(resp: Response, problem: &Problem) -> Response {
    let mut fresh = problem_response(problem);
    fresh.set_status(resp.status());
    for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::ALLOW] {
        if let Some(v) = resp.headers().get(&name) {
            fresh.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(p) = resp.data::<PathPattern>() {
        fresh.set_data(p.clone());
    }
    fresh
}

/// An HTML page Gatehouse wrote for a browser (the SSO callback's error page): kept as it is.
fn is_page(resp: &Response) -> bool {
    resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"))
}

fn is_problem(resp: &Response) -> bool {
    resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

/// The client-facing detail of a framework error (unknown route, wrong method, bad body…).
fn detail_for(status: StatusCode, message: &str) -> String {
    match status {
        StatusCode::NOT_FOUND => "No such resource.".into(),
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed on this resource.".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than the server accepts.".into(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            format!("Unsupported content type. {}", message.trim())
        }
        s if s.is_client_error() && !message.is_empty() => message.trim().to_string(),
        s => s.canonical_reason().unwrap_or("Error").to_string(),
    }
}

impl Edge {
    /// The body limit, checked without reading: `Ok(None)` when there is no body to read (a GET,
    /// an empty body), `Ok(Some(limit))` when the body must be read, with its limit.
    fn body_limit(&self, req: &mut Request) -> std::result::Result<Option<usize>, StatusCode> {
        let mut limit = self.state.http.max_body_bytes;
        // The SAML ACS reads less: a Response is a few kilobytes, rarely more than a hundred.
        let path = req.uri().path();
        if path.starts_with("/v1/sso/saml/") && path.ends_with("/acs") {
            limit = limit.min(super::sso::ACS_MAX_BODY_BYTES);
        }
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if matches!(declared, Some(n) if n > limit as u64) {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        if declared == Some(0) {
            return Ok(None);
        }
        let body = req.take_body();
        let empty = body.is_empty();
        req.set_body(body);
        Ok((!empty).then_some(limit))
    }

    /// Read the whole body (at most `limit` bytes) before any handler runs, declared length or
    /// streamed: an answer given before the body was read (a refused credential, a wrong content
    /// type) would otherwise leave it unread and the connection unusable for the client's next
    /// request.
    async fn read_body(req: &mut Request, limit: usize) -> std::result::Result<(), StatusCode> {
        match req.take_body().into_bytes_limit(limit).await {
            Ok(bytes) => {
                req.set_body(Body::from_bytes(bytes));
                Ok(())
            }
            Err(poem::error::ReadBodyError::PayloadTooLarge) => Err(StatusCode::PAYLOAD_TOO_LARGE),
            Err(_) => Err(StatusCode::BAD_REQUEST),
        }
    }

    /// A framework or handler error as problem+json. 4xx say what was wrong; 5xx are generic and
    /// the detail goes to the log.
    fn error_response(&self, err: &poem::Error, info: &RequestInfo) -> Response {
        let status = err.status();
        let mut resp = if status.is_server_error() {
            tracing::error!(error = %err, "request failed");
            let mut r = problem_response(&Problem::internal(&info.request_id));
            r.set_status(status);
            r
        } else {
            problem_response(&Problem::new(status, detail_for(status, &err.to_string()), &info.request_id))
        };
        if let Some(p) = err.data::<PathPattern>() {
            if status == StatusCode::METHOD_NOT_ALLOWED {
                if let Some(v) = self.allow.get(p.0.as_ref()).and_then(|m| HeaderValue::from_str(m).ok()) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
            }
            resp.set_data(p.clone());
        }
        resp
    }

    fn finish(&self, mut resp: Response, info: &RequestInfo, docs: bool) -> Response {
        let status = resp.status();
        // A 500 is always replaced by the generic body (unless it is a page we wrote, which never
        // holds a detail); other 5xx keep a problem body or page we wrote.
        let (problem, page) = (is_problem(&resp), is_page(&resp));
        if status.is_server_error() && !page && (!problem || status == StatusCode::INTERNAL_SERVER_ERROR) {
            resp = replace_body(resp, &Problem::internal(&info.request_id));
        } else if status.is_client_error() && !problem && !page {
            resp = replace_body(resp, &Problem::new(status, detail_for(status, ""), &info.request_id));
        }
        // Only an answer that was not a page is replaced (by problem+json): `page` still holds.
        let set = if docs {
            &self.headers_script_page
        } else if page {
            &self.headers_page
        } else {
            &self.headers_data
        };
        let own = std::mem::take(resp.headers_mut());
        let h = resp.headers_mut();
        *h = with_security_headers(own, set);
        if let Ok(v) = HeaderValue::from_str(&info.request_id) {
            h.insert(REQUEST_ID_HEADER, v);
        }
        resp
    }
}

/// What [`security_headers`] puts in an empty map: the headers every answer of this kind starts
/// from.
fn security_header_set(answer: Answer, tls: bool) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(16);
    security_headers(&mut h, answer, tls);
    h
}

/// An answer's own headers over a copy of `set` (from [`security_header_set`]): the same headers
/// as [`security_headers`] applied to `own` (its security headers replaced, its `Cache-Control`
/// kept, no `Server`), made by copying a ready map and adding the answer's few headers rather
/// than by a hashed insert of each security header into every answer.
fn with_security_headers(own: HeaderMap, set: &HeaderMap) -> HeaderMap {
    let mut h = set.clone();
    h.reserve(own.len() + 1);
    let mut current: Option<(HeaderName, bool)> = None;
    for (name, value) in own {
        if let Some(name) = name {
            let keep = if name == header::CACHE_CONTROL {
                h.remove(header::CACHE_CONTROL);
                true
            } else {
                name != header::SERVER && !set.contains_key(&name)
            };
            current = Some((name, keep));
        }
        if let Some((name, true)) = &current {
            h.append(name.clone(), value);
        }
    }
    h
}

/// What an answer is, for its security headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Data: JSON, problem+json, anything but HTML. Never a document with elements, windows or
    /// scripts of its own.
    Data,
    /// An HTML page of the API's (the SSO callback's error page): a document, without scripts.
    Page,
    /// The playground and the sign-in page, which run their own scripts (their CSP allows them).
    ScriptPage,
}

/// The security headers every answer carries, by kind of answer; `tls` for HSTS. A
/// `Cache-Control` the operation set is kept; any `Server` header goes. Documents also get
/// `Cross-Origin-Opener-Policy`, which browsers apply to documents only, and a CSP that
/// governs their elements; data gets the CSP that matters for data (nothing loads, nothing
/// frames). (Public for the benchmark, whose calibration ceiling sends the headers of a data
/// answer: `tests/bench/ceiling.rs`.)
pub fn security_headers(h: &mut HeaderMap, answer: Answer, tls: bool) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(CORP, HeaderValue::from_static("same-origin"));
    let csp = match answer {
        Answer::Data => CSP_DATA,
        Answer::Page => CSP_PAGE,
        Answer::ScriptPage => CSP_DOCS,
    };
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    if answer != Answer::Data {
        h.insert(COOP, HeaderValue::from_static("same-origin"));
    }
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains"));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.remove(header::SERVER);
}

impl Edge {
    /// Record an event of the edge's own; a failure is logged (the answer is already decided).
    async fn record(&self, event: crate::domain::audit::Event) {
        let action = event.action;
        let r = crate::domain::audit::record_alone(&self.state.db, &self.state.auditor, self.state.clock.now(), event);
        if let Err(e) = r.await {
            tracing::error!(error = %e, action, "could not record an audit event");
        }
    }

    /// A credential the request carried was refused (invalid, expired, revoked; a cookie without
    /// its CSRF token): an authentication event, recorded whatever the operation.
    async fn record_rejected(&self, reason: String, route: &str, status: u16, info: &RequestInfo) {
        use crate::domain::audit::{Actor, Event, Outcome};
        let event = Event::new("auth.credential.rejected", Actor::Anonymous)
            .origin(&super::auth::origin(info))
            .outcome(Outcome::Denied)
            .details(serde_json::json!({"reason": reason, "route": route, "status": status}));
        self.record(event).await;
    }

    /// `audit.record_reads`: who read which API route (the audit API records its own reads).
    async fn record_read(
        &self,
        who: &crate::domain::auth::Principal,
        path: String,
        route: &str,
        status: u16,
        info: &RequestInfo,
    ) {
        use crate::domain::audit::{Event, Outcome};
        if !route.starts_with("/v1/") || route.starts_with("/v1/audit") || route.ends_with("/audit") {
            return;
        }
        let outcome = match status {
            0..=399 => Outcome::Success,
            401 | 403 | 404 => Outcome::Denied,
            _ => Outcome::Failure,
        };
        let event = Event::new("api.read", who.actor())
            .target(path)
            .origin(&super::auth::origin(info))
            .outcome(outcome)
            .details(serde_json::json!({"route": route, "status": status}));
        self.record(event).await;
    }
}

impl Endpoint for Edge {
    type Output = Response;

    /// What needs no waiting is done here, before any future exists; the rest is one future,
    /// [`Edge::handle`] in the request's span. (An `async fn` here would carry the request a
    /// second time, and every request's future is moved into a box by the server.)
    fn call(&self, mut req: Request) -> impl Future<Output = Result<Self::Output>> + Send {
        let started = Instant::now();
        let info = RequestInfo {
            request_id: request_id(&req),
            // `X-Forwarded-For` is read only when the peer is a trusted proxy.
            client_ip: client_ip(peer_ip(&req), || forwarded_for(&req), &self.state.http.trusted_proxies),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| Arc::from(first_chars(s, 256))),
        };
        let method = req.method().clone();
        req.extensions_mut().insert(info.clone());
        // The span carries who and what; route, status and latency ride on the one access event
        // at the end (recording them into the span would format them a second time). Its values
        // are strings, which the log writes as they are (a `Display` value goes through the
        // formatting machinery: most of the cost of a span).
        let ip = info.client_ip.map(ip_text);
        let span = tracing::info_span!(
            "request",
            request_id = &*info.request_id,
            method = method.as_str(),
            client_ip = ip.as_deref(),
            principal = tracing::field::Empty,
        );
        self.handle(req, info, method, started).instrument(span)
    }
}

impl Edge {
    /// The request in its span: the credential check, the body, the pages or the API, then the
    /// answer's headers, metrics and access line.
    #[allow(clippy::manual_async_fn)] // See the comment on the async block.
    fn handle(
        &self,
        mut req: Request,
        info: RequestInfo,
        method: Method,
        started: Instant,
    ) -> impl Future<Output = Result<Response>> + Send + '_ {
        // `docs`: a page that runs scripts (its own CSP).
        let (docs, page) = (is_script_page(req.uri().path()), is_page_path(req.uri().path()));
        // An async block rather than an `async fn`: its captures are kept once, where an `async
        // fn` keeps its arguments twice (as arguments and as locals) in the future.
        async move {
            // One credential check per request; the security schemes read its outcome.
            let mut refused = None;
            let mut reader = None;
            let mut rejected = None;
            // The checks' futures are large and most requests need none of them: they are boxed
            // rather than carried inline by every request's future.
            let outcome = match super::auth::presented(&self.state, &mut req) {
                Some(credential) => Some(Box::pin(super::auth::authenticate(&self.state, credential, &info)).await),
                None => None,
            };
            if let Some(outcome) = outcome {
                match &outcome.0 {
                    Ok(p) => {
                        tracing::Span::current().record("principal", p.describe());
                        if self.state.audit.record_reads && (method == Method::GET || method == Method::HEAD) {
                            reader = Some((p.clone(), req.uri().path().chars().take(256).collect::<String>()));
                        }
                        if matches!(p.credential, crate::domain::auth::Credential::ApiKey { .. }) {
                            // A valid key on an operation that does not take keys: say so
                            // rather than the scheme's generic 401.
                            refused = Some((StatusCode::FORBIDDEN, super::auth::API_KEY_ELSEWHERE.to_string()));
                        }
                    }
                    Err(e) => {
                        rejected = Some(e.1.clone());
                        refused = Some(e.clone());
                    }
                }
                req.extensions_mut().insert(outcome);
            }
            // Most requests have no body: the reading future (large) is boxed only when one comes.
            let body = match self.body_limit(&mut req) {
                Ok(Some(limit)) => Box::pin(Self::read_body(&mut req, limit)).await,
                other => other.map(|_| ()),
            };
            let result = match body {
                Err(status) => Err(poem::Error::from_status(status)),
                Ok(()) => {
                    // Handlers read the state with `Data<&AppState>`.
                    req.extensions_mut().insert(self.state.clone());
                    let inner = if page {
                        Either::Left(DynEndpoint::call(self.pages.as_ref(), req))
                    } else {
                        parse_query(&mut req);
                        match &self.api {
                            Api::Bare(api) => Either::Right(api.call(req)),
                            Api::Cors(api) => Either::Left(DynEndpoint::call(api.as_ref(), req)),
                        }
                    };
                    // A panic is answered with a 500, made generic below, like any other 500.
                    match AssertUnwindSafe(inner).catch_unwind().await {
                        Ok(result) => result,
                        Err(_panic) => Err(poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR)),
                    }
                }
            };
            let resp = match result {
                Ok(resp) => resp,
                // An operation's own problem answer (with its headers, e.g. Retry-After); a 503
                // we wrote says what is unavailable (never an internal detail).
                Err(err)
                    if err.is_from_response()
                        && (err.status().is_client_error() || err.status() == StatusCode::SERVICE_UNAVAILABLE) =>
                {
                    err.into_response()
                }
                Err(err) => self.error_response(&err, &info),
            };
            // An operation that needed a credential refused it: say why the credential failed
            // (expired, revoked, missing CSRF token…) rather than the scheme's generic 401.
            let resp = match refused {
                Some((status, detail)) if resp.status() == StatusCode::UNAUTHORIZED && !detail.is_empty() => {
                    let mut r = problem_response(&Problem::new(status, detail, &info.request_id));
                    if let Some(p) = resp.data::<PathPattern>() {
                        r.set_data(p.clone());
                    }
                    r
                }
                _ => resp,
            };
            let mut resp = self.finish(resp, &info, docs);
            // No answer to a HEAD has a body, an error's problem+json included (HTTP/2 clients
            // reset the stream when one comes).
            if method == Method::HEAD {
                resp.set_body(());
            }
            let route = self.route_label(resp.data::<PathPattern>());
            let status = resp.status().as_u16();
            if let Some((who, path)) = reader {
                Box::pin(self.record_read(&who, path, &route.label, status, &info)).await;
            }
            if let Some(reason) = rejected {
                Box::pin(self.record_rejected(reason, &route.label, status, &info)).await;
            }
            let elapsed = started.elapsed();
            self.state.metrics.observe_request(method_label(&method), route.metrics, status, elapsed);
            let latency_ms = elapsed.as_micros() as f64 / 1000.0;
            // A server error is always logged; the rest only with `log.access`. The message is a
            // string field (the same line as a format-string message, without formatting it).
            if status >= 500 {
                tracing::error!(
                    target: "gatehouse::access",
                    message = "request completed",
                    route = route.label.as_str(),
                    status,
                    latency_ms
                );
            } else if self.state.http.access_log {
                tracing::info!(
                    target: "gatehouse::access",
                    message = "request completed",
                    route = route.label.as_str(),
                    status,
                    latency_ms
                );
            }
            Ok(resp.into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = ["0.0.0.0", "127.0.0.1", "10.9.99.100", "255.255.255.255", "::1", "2001:db8::7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        ips.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 2, 9])));
        for ip in ips {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn a_copied_header_set_gives_the_same_headers_as_inserting_them() {
        let own = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h
        };
        let sorted = |h: &HeaderMap| {
            let mut v: Vec<(String, String)> =
                h.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
            v.sort();
            v
        };
        let cases = [
            own(&[]),
            own(&[("content-type", "application/json; charset=utf-8")]),
            own(&[("content-type", "text/html"), ("cache-control", "public, max-age=300"), ("server", "x")]),
            own(&[
                ("cache-control", "no-cache"),
                ("cache-control", "private"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
            ]),
            own(&[
                ("x-frame-options", "SAMEORIGIN"),
                ("content-security-policy", "default-src *"),
                ("retry-after", "3"),
                ("cross-origin-opener-policy", "unsafe-none"),
            ]),
            own(&[("x-request-id", "op"), ("access-control-allow-origin", "https://app.example"), ("vary", "origin")]),
        ];
        for (answer, tls) in
            [Answer::Data, Answer::Page, Answer::ScriptPage].into_iter().flat_map(|a| [(a, false), (a, true)])
        {
            let set = security_header_set(answer, tls);
            for case in &cases {
                let mut inserted = case.clone();
                security_headers(&mut inserted, answer, tls);
                assert_eq!(sorted(&with_security_headers(case.clone(), &set)), sorted(&inserted), "{case:?}");
            }
        }
    }

    #[test]
    fn documents_get_the_document_headers_and_data_the_data_ones() {
        let headers = |answer| {
            let mut h = HeaderMap::new();
            security_headers(&mut h, answer, true);
            h
        };
        let data = headers(Answer::Data);
        assert_eq!(data[header::CONTENT_SECURITY_POLICY], "default-src 'none'; frame-ancestors 'none'");
        assert!(data.get(COOP).is_none());
        for answer in [Answer::Data, Answer::Page, Answer::ScriptPage] {
            let h = headers(answer);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[CORP], "same-origin");
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], "max-age=63072000; includeSubDomains");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'none';") && csp.contains("frame-ancestors 'none'"), "{csp}");
            if answer != Answer::Data {
                assert_eq!(h[COOP], "same-origin");
                assert!(csp.contains("base-uri 'none'") && csp.contains("form-action"), "{csp}");
            }
        }
        assert!(!headers(Answer::Page)[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src"));
    }

    #[test]
    fn first_chars_counts_characters_not_bytes() {
        for s in
            ["", "curl/8.5", "é", &"a".repeat(300), &"é".repeat(300), &format!("{}é{}", "a".repeat(255), "b".repeat(9))]
        {
            for n in [0, 1, 255, 256, 257] {
                assert_eq!(first_chars(s, n), s.chars().take(n).collect::<String>(), "{s} {n}");
            }
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let one = |h: &'static str| move || Ok(Some(h.to_string()));
        assert_eq!(client_ip(Some(peer), one("1.2.3.4"), &[]), Some(peer));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(Some(peer), one("1.2.3.4"), &trusted), Some("1.2.3.4".parse().unwrap()));
        // The client cannot spoof by prepending: the rightmost untrusted hop wins.
        assert_eq!(
            client_ip(Some(peer), one("6.6.6.6, 1.2.3.4, 10.0.0.9"), &trusted),
            Some("1.2.3.4".parse().unwrap())
        );
        // The proxy calling on its own behalf.
        assert_eq!(client_ip(Some(peer), || Ok(None), &trusted), Some(peer));
        // Garbage, a port, or an unreadable header make the client unknown, never the proxy.
        for bad in ["junk", "203.0.113.9:4444", "1.2.3.4, ", ""] {
            assert_eq!(client_ip(Some(peer), one(bad), &trusted), None, "{bad}");
        }
        assert_eq!(client_ip(Some(peer), || Err(()), &trusted), None);
    }
}
