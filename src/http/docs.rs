//! The playground at `/docs` (Swagger UI, embedded from `static/docs`, no CDN), the sign-in page
//! at `/login` (from `static/login`) and the spec at `/openapi.json`. Works air-gapped: every asset comes from this binary.

use bytes::Bytes;
use poem::http::{header, StatusCode};
use poem::web::Path;
use poem::{handler, Endpoint, EndpointExt, IntoResponse, Response, Route};
use std::sync::Arc;
use tokio::sync::OnceCell;

#[derive(rust_embed::RustEmbed)]
#[folder = "static/docs/"]
struct DocsAssets;

#[derive(rust_embed::RustEmbed)]
#[folder = "static/login/"]
struct LoginAssets;

fn asset(name: &str) -> Option<Response> {
    let file = DocsAssets::get(name)?;
    Some(typed(name, file.data.into_owned()))
}

fn typed(name: &str, data: Vec<u8>) -> Response {
    let mime = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    Response::builder().content_type(mime).header(header::CACHE_CONTROL, "public, max-age=3600").body(data)
}

#[handler]
fn index() -> Response {
    asset("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

#[handler]
fn assets(Path(name): Path<String>) -> Response {
    if name.ends_with(".html") {
        return StatusCode::NOT_FOUND.into_response();
    }
    asset(&name).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// Routes under `/docs`.
pub fn playground() -> Route {
    Route::new().at("/", poem::get(index)).at("/assets/:name", poem::get(assets))
}

fn login_asset(name: &str) -> Option<Response> {
    LoginAssets::get(name).map(|f| typed(name, f.data.into_owned()))
}

#[handler]
fn login_index() -> Response {
    let mut r = login_asset("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response());
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

#[handler]
fn login_assets(Path(name): Path<String>) -> Response {
    if name.ends_with(".html") {
        return StatusCode::NOT_FOUND.into_response();
    }
    login_asset(&name).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// The sign-in page at `/login` (a button per identity provider), from `static/login`.
pub fn login_page() -> Route {
    Route::new().at("/", poem::get(login_index)).at("/assets/:name", poem::get(login_assets))
}

/// `/openapi.json`: made on the first request (on the blocking pool; about 10 ms) and kept. A
/// server whose document nobody reads does not hold its 400 kB, nor makes it at start.
pub fn spec_endpoint() -> impl Endpoint {
    let document: Arc<OnceCell<Bytes>> = Arc::default();
    poem::endpoint::make(move |_| {
        let document = document.clone();
        async move {
            let made = document
                .get_or_try_init(|| async { tokio::task::spawn_blocking(|| Bytes::from(super::openapi_json())).await })
                .await;
            match made {
                Ok(body) => Response::builder()
                    .content_type("application/json")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(body.clone()),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    })
    .map_to_response()
}
