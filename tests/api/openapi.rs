//! The committed spec matches the code, and the served spec is the same document.

use crate::helpers::{gatehouse, repo_root, run, spawn_app};

#[test]
fn committed_spec_matches_gatehouse_openapi() {
    let (code, out, err) = run(gatehouse(&["openapi"]));
    assert_eq!(code, 0, "{err}");
    let committed =
        std::fs::read_to_string(repo_root().join("openapi/openapi.json")).expect("openapi/openapi.json is committed");
    assert!(
        committed.trim_end() == out.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json` and commit it"
    );
    let spec: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(spec["info"]["title"], "Gatehouse");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(spec["info"]["description"].as_str().unwrap().contains("problem+json"));
    assert!(spec["tags"].as_array().unwrap().iter().any(|t| t["name"] == "Operations"));
    let schemes = &spec["components"]["securitySchemes"];
    for name in ["metricsToken", "sessionToken", "personalAccessToken", "apiKey", "sessionCookie"] {
        assert!(schemes[name].is_object(), "security scheme {name} is declared");
    }
    assert_eq!(schemes["apiKey"]["name"], "X-Api-Key");
    assert_eq!(schemes["sessionCookie"]["in"], "cookie");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path}");
    }
}

#[tokio::test]
async fn served_spec_is_the_generated_one() {
    let app = spawn_app().await;
    let served = app.client.get(app.url("/openapi.json")).send().await.unwrap().text().await.unwrap();
    assert_eq!(served, gatehouse::http::openapi_json());
    app.stop().await;
}
