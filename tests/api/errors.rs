//! Every error is problem+json with the request id; no input gets a 5xx with details.
//! The JSON-body cases run through the same edge middleware as every route, mounted on a small
//! API of the test's own (no operation of this issue takes a JSON body yet).

use crate::helpers::{client, spawn_app};
use gatehouse::http::edge::Edge;
use gatehouse::http::json::JsonBody;
use poem::{EndpointExt, Route};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, OpenApiService};
use reqwest::StatusCode;

async fn assert_problem(res: reqwest::Response, status: StatusCode) -> serde_json::Value {
    if res.status() != status {
        let got = res.status();
        panic!("expected {status}, got {got}: {}", res.text().await.unwrap_or_default());
    }
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["request_id"], id.as_str());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

/// `HEAD` is answered by the `GET` operation of the route, headers and all, without the body;
/// a route without `GET` refuses it like any other method it lacks.
#[tokio::test]
async fn head_is_answered_by_get_without_a_body() {
    let app = spawn_app().await;
    let get = app.client.get(app.url("/healthz")).send().await.unwrap();
    let res = app.client.head(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for name in ["content-type", "content-security-policy", "strict-transport-security", "cache-control"] {
        assert_eq!(res.headers().get(name), get.headers().get(name), "{name}");
    }
    assert!(res.headers().contains_key("x-request-id"));
    assert!(res.bytes().await.unwrap().is_empty(), "no body");
    // A route with a parameter, and an operation that needs a credential: the GET's 401.
    let res = app.client.head(app.url("/v1/users/98765")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.bytes().await.unwrap().is_empty(), "no body");

    let res = app.client.head(app.url("/v1/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST");
    app.stop().await;
}

#[tokio::test]
async fn unknown_route_wrong_method_and_oversized_body_are_problems() {
    let app = spawn_app().await;
    assert_problem(app.client.get(app.url("/v1/nope")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let res = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "GET, HEAD", "405 names the methods the route has");
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;

    let big = vec![b'a'; 1024 * 1024 + 1];
    let res = app.client.post(app.url("/healthz")).body(big.clone()).send().await.unwrap();
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    // A streamed (chunked) body is counted as it arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let res = app.client.post(app.url("/v1/anything")).body(body).send().await.unwrap();
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    app.stop().await;
}

#[tokio::test]
async fn hostile_requests_never_get_a_server_error() {
    let app = spawn_app().await;
    let paths = [
        "/%ff%fe",
        "/..%2f..%2fetc%2fpasswd",
        "/docs/assets/%00",
        "/healthz?x=%zz",
        "//healthz",
        "/metrics/../../healthz",
        "/openapi.json/extra",
        "/v1/users/' OR 1=1 --",
    ];
    for p in paths {
        let res = app.client.get(app.url(p)).send().await.unwrap();
        assert!(res.status().as_u16() < 500, "{p} -> {}", res.status());
    }
    let long = "a".repeat(16 * 1024);
    let res = app.client.get(app.url("/healthz")).header("x-long", long).send().await.unwrap();
    assert!(res.status().as_u16() < 500);
    app.stop().await;
}

/// A forged session cookie, sent to every operation of the document: refused with a 401 where the
/// operation takes the cookie, and never a 5xx anywhere. (The operations that read cookies are the only ones with a cookie jar in front, and poem
/// panics when one runs without it: a 500 here.)
#[tokio::test]
async fn a_forged_session_cookie_is_refused_by_every_operation() {
    let app = spawn_app().await;
    let spec: serde_json::Value = serde_json::from_str(&gatehouse::http::openapi_json()).unwrap();
    let mut cookie_operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "00000000-0000-0000-0000-000000000000" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().unwrap() {
            let reads_cookie =
                op["security"].as_array().into_iter().flatten().any(|s| s.get("sessionCookie").is_some());
            cookie_operations += usize::from(reads_cookie);
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app
                .client
                .request(m, app.url(&concrete))
                .header("cookie", "__Host-gatehouse_session=forged-session-value")
                .header("x-csrf-token", "forged-csrf-value")
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let status = res.status();
            assert!(status.as_u16() < 500, "{method} {path}: {status} {}", res.text().await.unwrap_or_default());
            if reads_cookie {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }
    }
    assert!(cookie_operations > 20, "the document lists the cookie scheme on {cookie_operations} operations");
    app.stop().await;
}

#[derive(Object)]
struct Greeting {
    /// Who to greet.
    name: String,
    /// How many times.
    times: u8,
}

struct ProbeApi;

#[OpenApi]
impl ProbeApi {
    #[oai(path = "/echo", method = "post")]
    async fn echo(&self, body: JsonBody<Greeting>) -> Json<String> {
        Json(format!("{} x{}", body.0.name, body.0.times))
    }

    #[oai(path = "/boom", method = "get")]
    async fn boom(&self) -> Json<String> {
        panic!("secret internal detail 0xdeadbeef");
    }
}

async fn spawn_probe() -> (String, tokio::task::JoinHandle<()>, crate::helpers::TestApp) {
    let app = spawn_app().await;
    let state = app.state.clone();
    let routes = Route::new().nest("/", OpenApiService::new(ProbeApi, "probe", "1"));
    let edge = Edge::wrap(routes, Route::new().boxed(), state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let handle = tokio::spawn(async move {
        let _ = poem::Server::new(poem::listener::TcpListener::bind(addr.to_string())).run(edge).await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    (format!("http://{addr}"), handle, app)
}

#[tokio::test]
async fn json_bodies_are_checked_with_clear_problems() {
    let (base, handle, app) = spawn_probe().await;
    let c = client();
    let ok = c.post(format!("{base}/echo")).json(&serde_json::json!({"name": "ada", "times": 2})).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let res =
        c.post(format!("{base}/echo")).header("content-type", "text/plain").body("name=ada").send().await.unwrap();
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let res = c
        .post(format!("{base}/echo"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("malformed JSON"), "{body}");

    let res =
        c.post(format!("{base}/echo")).json(&serde_json::json!({"name": "ada", "times": "two"})).send().await.unwrap();
    let body = assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("field `times`: expected integer"), "{body}");

    let res = c.post(format!("{base}/echo")).json(&serde_json::json!({"name": "ada"})).send().await.unwrap();
    let body = assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("times"), "the missing field is named: {body}");

    let res =
        c.post(format!("{base}/echo")).json(&serde_json::json!({"name": "ada", "times": 300})).send().await.unwrap();
    let body = assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("times"), "the bad field is named: {body}");

    let res = c.get(format!("{base}/boom")).send().await.unwrap();
    let body = assert_problem(res, StatusCode::INTERNAL_SERVER_ERROR).await;
    let text = body.to_string();
    assert!(!text.contains("deadbeef") && !text.contains("panic"), "5xx bodies are generic: {text}");
    handle.abort();
    app.stop().await;
}
