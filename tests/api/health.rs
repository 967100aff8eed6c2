//! Health, readiness, metrics, request ids, security headers, CORS, plain HTTP behind a proxy.

use crate::helpers::{spawn_app, spawn_app_with};
use reqwest::StatusCode;

#[tokio::test]
async fn healthz_and_readyz_answer_with_security_headers() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["strict-transport-security"], "max-age=63072000; includeSubDomains");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
    assert!(h.get("server").is_none(), "no server header");
    assert!(h.get("access-control-allow-origin").is_none(), "CORS is off by default");
    let id = h["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "generated request id is a uuid: {id}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["status"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn request_id_is_kept_when_well_formed_and_replaced_otherwise() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).header("x-request-id", "trace-42.a_b").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-42.a_b");
    for bad in ["has space", "x".repeat(65).as_str(), "semi;colon", "<script>"] {
        let res = app.client.get(app.url("/healthz")).header("x-request-id", bad).send().await.unwrap();
        let got = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(got, bad);
        assert!(uuid::Uuid::parse_str(&got).is_ok());
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_routes_by_template_for_loopback_clients() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.client.get(app.url("/healthz")).send().await.unwrap();
    }
    app.client.get(app.url("/no/such/thing/12345")).send().await.unwrap();
    app.client.get(app.url("/readyz")).send().await.unwrap();
    // A parameterised route is counted under its template, and a wrong method there gets Allow.
    app.client.get(app.url("/v1/users/98765")).send().await.unwrap();
    let res = app.client.request(reqwest::Method::PUT, app.url("/v1/users/98765")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET, HEAD, DELETE, PATCH");
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(text.contains(r#"gatehouse_http_requests_total{method="GET",route="/healthz",status="200"} 3"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404""#), "unknown paths share one label: {text}");
    assert!(!text.contains("12345") && !text.contains("98765"), "raw paths never become labels");
    assert!(text.contains(r#"route="/v1/users/{id}",status="401""#), "{text}");
    assert!(text.contains("gatehouse_http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"gatehouse_db_operation_duration_seconds_count{op="write"}"#), "{text}");
    assert!(text.contains("gatehouse_build_info{version="));
    app.stop().await;
}

#[tokio::test]
async fn metrics_refuse_non_loopback_clients_and_forwarded_for_is_believed_only_from_trusted_proxies() {
    // Without trusted proxies a spoofed X-Forwarded-For is ignored: the peer is loopback.
    let app = spawn_app().await;
    let res = app.client.get(app.url("/metrics")).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;

    // Behind a trusted local proxy, the forwarded client is the client.
    let app = spawn_app_with(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let res = app.client.get(app.url("/metrics")).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 403);
    let res = app.client.get(app.url("/metrics")).header("x-forwarded-for", "127.0.0.1").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Spoofing attempts: a port, garbage before the proxy's hop, a second header line, bytes
    // that are not text. None of them makes the client pass for the local proxy.
    for bad in ["203.0.113.9:4444", "junk, 203.0.113.9", "127.0.0.1, nonsense"] {
        let res = app.client.get(app.url("/metrics")).header("x-forwarded-for", bad).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{bad}");
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "127.0.0.1")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "every header line counts");
    let raw = reqwest::header::HeaderValue::from_bytes(b"\xff, 127.0.0.1").unwrap();
    let res = app.client.get(app.url("/metrics")).header("x-forwarded-for", raw).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "unreadable header");
    app.stop().await;
}

#[tokio::test]
async fn metrics_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "s3cret-metrics-token\n").unwrap();
    let path = token_file.clone();
    let app = spawn_app_with(move |c| c.metrics.token_file = Some(path)).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.client.get(app.url("/metrics")).bearer_auth("s3cret-metrics-tokeN").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.client.get(app.url("/metrics")).bearer_auth("s3cret-metrics-token").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn cors_answers_only_allow_listed_origins() {
    let app = spawn_app_with(|c| c.server.cors_allowed_origins = vec!["https://app.example.test".into()]).await;
    let res = app.client.get(app.url("/healthz")).header("origin", "https://app.example.test").send().await.unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.test");
    let res = app.client.get(app.url("/healthz")).header("origin", "https://evil.example.test").send().await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn plain_http_on_loopback_when_tls_is_disabled() {
    let app = spawn_app_with(|c| {
        c.tls.enabled = false;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    assert!(app.base.starts_with("http://127.0.0.1:"), "{}", app.base);
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    app.stop().await;
}

#[tokio::test]
async fn docs_page_has_a_csp_that_allows_only_its_own_assets() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no external links in the page");
    for asset in ["/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/assets/init.js"] {
        let res = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
    }
    let res = app.client.get(app.url("/docs/assets/..%2f..%2fCargo.toml")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
