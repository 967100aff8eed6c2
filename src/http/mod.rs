//! The HTTP layer (poem + poem-openapi): routes, the edge middleware, error mapping, the
//! OpenAPI document and the playground. Handlers are thin: extract, call one domain function,
//! map the result. Nothing here runs SQL or crypto.

pub mod docs;
pub mod edge;
pub mod error;
pub mod health;
pub mod metrics;

use crate::state::AppState;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

/// The tags that group operations in the spec and the playground.
#[derive(Tags)]
pub enum ApiTags {
    /// Liveness, readiness and metrics for operators and orchestrators.
    Operations,
}

const DESCRIPTION: &str = "Gatehouse is the single public entrance of a multi-tenant platform: it signs people and \
machines in, decides what they may do, keeps secrets encrypted and writes a tamper-evident audit log.\n\n\
Every error is `application/problem+json` (RFC 9457) with `type`, `title`, `status`, `detail` and `request_id`. \
Every response carries `X-Request-Id`; send your own (1 to 64 characters of `A-Z a-z 0-9 . _ -`) to correlate logs.";

/// The API description shared by the server and `gatehouse openapi`.
pub fn api_service() -> OpenApiService<(health::HealthApi, metrics::MetricsApi), ()> {
    OpenApiService::new((health::HealthApi, metrics::MetricsApi), "Gatehouse", env!("CARGO_PKG_VERSION"))
        .description(DESCRIPTION)
        .license("Apache-2.0")
}

/// The OpenAPI document as pretty JSON, exactly as `/openapi.json` serves it.
pub fn openapi_json() -> String {
    api_service().spec()
}

/// Every route, wrapped in the edge middleware.
pub fn app(state: AppState) -> impl Endpoint {
    let api = api_service();
    let spec = api.spec();
    let routes = Route::new()
        .at("/openapi.json", docs::spec_endpoint(spec))
        .nest("/docs", docs::playground())
        .nest("/", api);
    edge::Edge::wrap(routes.data(state.clone()), state)
}
