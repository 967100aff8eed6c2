//! Secrets never reach a log: a known secret sent in headers, body and query is absent from
//! everything the server printed, at debug level, while the request lines are there.

use crate::helpers::{client, gatehouse, ServeProcess};

#[test]
fn secrets_in_requests_never_reach_the_logs() {
    const SECRET: &str = "SuperSecretValue-7f3a9c1e";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd =
        gatehouse(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--log-format", "json"]);
    cmd.env("GATEHOUSE_LOG__LEVEL", "debug");
    let server = ServeProcess::start(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    let mut ids = Vec::new();
    rt.block_on(async {
        let requests = vec![
            c.get(server.url("/healthz")).bearer_auth(SECRET),
            c.get(server.url("/metrics")).header("cookie", format!("__Host-session={SECRET}")),
            c.get(server.url("/readyz")).header("x-api-key", SECRET).header("x-csrf-token", SECRET),
            c.get(server.url(&format!("/healthz?token={SECRET}&password={SECRET}"))),
            c.get(server.url(&format!("/v1/reset/{SECRET}"))),
            c.post(server.url("/v1/auth/login")).json(&serde_json::json!({"email": "a@b.c", "password": SECRET})),
            c.post(server.url("/healthz"))
                .header("content-type", "application/json")
                .body(format!("{{\"secret\": \"{SECRET}\"")),
            c.get(server.url("/healthz")).header("user-agent", "probe").header("x-forwarded-for", SECRET),
        ];
        for r in requests {
            let res = r.send().await.unwrap();
            ids.push(res.headers()["x-request-id"].to_str().unwrap().to_string());
        }
    });
    let (status, out, err) = server.terminate();
    assert!(status.success());
    let all = format!("{out}\n{err}");
    for id in &ids {
        assert!(all.contains(id.as_str()), "every request is logged with its id ({id})");
    }
    assert!(!all.contains(SECRET), "the secret leaked into the logs:\n{all}");
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
        if v["target"] == "gatehouse::access" {
            for field in ["request_id", "method"] {
                assert!(!v["span"][field].is_null(), "{field} missing from the request span in {line}");
            }
            for field in ["route", "status", "latency_ms"] {
                assert!(!v["fields"][field].is_null(), "{field} missing from the access line in {line}");
            }
        }
    }
}

#[test]
fn access_lines_can_be_turned_off_but_server_errors_and_spans_stay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd =
        gatehouse(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--log-format", "json"]);
    cmd.env("GATEHOUSE_LOG__ACCESS", "false");
    let server = ServeProcess::start(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let res = client().get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    });
    let (status, _, err) = server.terminate();
    assert!(status.success());
    assert!(!err.contains("request completed"), "no access line when log.access = false:\n{err}");
}
