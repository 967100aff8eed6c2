//! Workspaces, members, roles and rules, the decision API and workspace API keys, end to end.
//! Every check has its attack: privilege escalation through roles and keys, the last owner,
//! another workspace's ids (404, never 403, never in a list), keys outliving their creator's
//! rights, rotated, disabled and expired keys, malformed and oversized rules.

use crate::helpers::{spawn_app_with, TestApp};
use gatehouse::config::SignupMode;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

const PW: &str = "correct horse battery staple 42";

async fn open_app() -> TestApp {
    spawn_app_with(|c| {
        c.auth.signup = SignupMode::Open;
        c.auth.rate_limit.burst = 10_000;
        c.auth.rate_limit.per_minute = 60_000;
        c.auth.api_key_headers = vec!["x-prismeai-api-key".into()];
    })
    .await
}

/// A credential for `call`.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Key(&'a str),
    Header(&'a str, &'a str),
}

async fn call(app: &TestApp, method: Method, path: &str, cred: Cred<'_>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    req = match cred {
        Cred::None => req,
        Cred::Bearer(t) => req.bearer_auth(t),
        Cred::Key(k) => req.header("X-Api-Key", k),
        Cred::Header(h, v) => req.header(h, v),
    };
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A signed-up user: (access token, user id).
async fn user(app: &TestApp, email: &str) -> (String, String) {
    let (s, b) =
        call(app, Method::POST, "/v1/auth/signup", Cred::None, Some(json!({"email": email, "password": PW}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (b["access_token"].as_str().unwrap().to_string(), b["user_id"].as_str().unwrap().to_string())
}

async fn workspace(app: &TestApp, token: &str, slug: &str) -> String {
    let (s, b) = call(
        app,
        Method::POST,
        "/v1/workspaces",
        Cred::Bearer(token),
        Some(json!({"slug": slug, "name": format!("Workspace {slug}")})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["slug"], slug);
    b["id"].as_str().unwrap().to_string()
}

async fn set_roles(app: &TestApp, token: &str, ws: &str, user: &str, roles: &[&str]) -> (StatusCode, Value) {
    call(
        app,
        Method::PUT,
        &format!("/v1/workspaces/{ws}/members/{user}"),
        Cred::Bearer(token),
        Some(json!({"roles": roles})),
    )
    .await
}

fn detail(b: &Value) -> String {
    b["detail"].as_str().unwrap_or_default().to_string()
}

fn assert_problem(s: StatusCode, b: &Value, want: StatusCode) {
    assert_eq!(s, want, "{b}");
    assert_eq!(b["status"], want.as_u16(), "{b}");
    assert!(b["request_id"].is_string(), "{b}");
}

/// The audit records of one action: actor, workspace and details.
async fn audit_rows(app: &TestApp, action: &str) -> Vec<Value> {
    let path = app.config.database_path();
    let action = action.to_string();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT actor_type, actor_id, workspace_id, details FROM audit_log WHERE action = ?1 ORDER BY seq")
            .unwrap();
        stmt.query_map([action], |r| {
            let details: String = r.get(3)?;
            Ok(json!({
                "actor_type": r.get::<_, String>(0)?,
                "actor_id": r.get::<_, Option<String>>(1)?,
                "workspace_id": r.get::<_, Option<String>>(2)?,
                "details": serde_json::from_str::<Value>(&details).unwrap(),
            }))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn workspaces_members_and_the_last_owner() {
    let app = open_app().await;
    let (alice, alice_id) = user(&app, "alice@example.com").await;
    let (bob, bob_id) = user(&app, "bob@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;

    // Slugs: unique, validated; the slug works wherever the id does.
    let (s, b) =
        call(&app, Method::POST, "/v1/workspaces", Cred::Bearer(&bob), Some(json!({"slug": "acme", "name": "x"})))
            .await;
    assert_problem(s, &b, StatusCode::CONFLICT);
    assert!(detail(&b).contains("slug"), "{b}");
    for bad in ["A", "ab", "-abc", "abc-", "with space", "ünï", &"x".repeat(65), "3f1b5c2e-6a8d-4c1e-9b7a-2d4e6f8a0b1c"]
    {
        let (s, b) =
            call(&app, Method::POST, "/v1/workspaces", Cred::Bearer(&bob), Some(json!({"slug": bad, "name": "x"})))
                .await;
        assert_problem(s, &b, StatusCode::BAD_REQUEST);
        assert!(detail(&b).contains("slug"), "{bad}: {b}");
    }
    let (s, b) = call(&app, Method::GET, "/v1/workspaces/acme", Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], ws.as_str());

    // Bob is an outsider: the workspace does not exist for him, in a list or by id.
    let (s, b) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&bob), None).await;
    assert_problem(s, &b, StatusCode::NOT_FOUND);
    let (_, list) = call(&app, Method::GET, "/v1/workspaces", Cred::Bearer(&bob), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

    // As a viewer he reads but cannot change.
    let (s, b) = set_roles(&app, &alice, &ws, "bob@example.com", &["viewer"]).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["roles"], json!(["viewer"]));
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&bob), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) =
        call(&app, Method::PATCH, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&bob), Some(json!({"name": "Bob's"})))
            .await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("no rule allows update on workspace"), "{b}");

    // An editor changes the workspace but not its permissions.
    let (s, b) = set_roles(&app, &alice, &ws, &bob_id, &["editor"]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(
        &app,
        Method::PATCH,
        &format!("/v1/workspaces/{ws}"),
        Cred::Bearer(&bob),
        Some(json!({"name": "Renamed"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["name"], "Renamed");
    let (s, _) = set_roles(&app, &bob, &ws, &bob_id, &["owner"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an editor cannot make himself owner");
    let (s, _) = set_roles(&app, &bob, &ws, &alice_id, &["viewer"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an editor cannot demote the owner");

    // The last owner can be neither demoted nor removed; with a second owner she can.
    let (s, b) = set_roles(&app, &alice, &ws, &alice_id, &["editor"]).await;
    assert_problem(s, &b, StatusCode::CONFLICT);
    assert!(detail(&b).contains("last owner"), "{b}");
    let (s, b) =
        call(&app, Method::DELETE, &format!("/v1/workspaces/{ws}/members/{alice_id}"), Cred::Bearer(&alice), None)
            .await;
    assert_problem(s, &b, StatusCode::CONFLICT);
    let (s, _) = set_roles(&app, &alice, &ws, &bob_id, &["owner", "editor"]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = set_roles(&app, &alice, &ws, &alice_id, &["viewer"]).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Unknown roles and users: 4xx naming the field, nothing changed.
    let (s, b) = set_roles(&app, &bob, &ws, &alice_id, &["viewer", "nope"]).await;
    assert_problem(s, &b, StatusCode::BAD_REQUEST);
    assert!(detail(&b).contains("roles[1]"), "{b}");
    let (s, _) = set_roles(&app, &bob, &ws, "nobody@example.com", &["viewer"]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = set_roles(&app, &bob, &ws, &alice_id, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (_, members) =
        call(&app, Method::GET, &format!("/v1/workspaces/{ws}/members"), Cred::Bearer(&alice), None).await;
    let alice_row = members.as_array().unwrap().iter().find(|m| m["user_id"] == alice_id.as_str()).unwrap().clone();
    assert_eq!(alice_row["roles"], json!(["viewer"]), "{members}");

    // A member may leave; the audit trail has every change with before and after.
    let (s, _) =
        call(&app, Method::DELETE, &format!("/v1/workspaces/{ws}/members/{alice_id}"), Cred::Bearer(&alice), None)
            .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "gone with her membership");
    let updated = audit_rows(&app, "member.updated").await;
    assert!(
        updated
            .iter()
            .any(|r| r["details"]["before"] == json!(["viewer"]) && r["details"]["after"] == json!(["editor"])),
        "{updated:?}"
    );
    assert_eq!(audit_rows(&app, "member.removed").await.len(), 1);

    // Deleting the workspace takes its members with it.
    let (s, _) = call(&app, Method::DELETE, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&bob), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&bob), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let report =
        gatehouse::domain::audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![]).await.unwrap();
    assert_eq!(report.first_broken, None);
    app.stop().await;
}

#[tokio::test]
async fn custom_roles_rules_and_escalation() {
    let app = open_app().await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let (bob, bob_id) = user(&app, "bob@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    let roles = format!("/v1/workspaces/{ws}/roles");

    let (s, b) = call(&app, Method::GET, &roles, Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = b.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["owner", "editor", "viewer"]);

    // Malformed rules: 400 naming the field, nothing created.
    let bad_rules = [
        (json!([{"effect": "allow", "actions": ["publish"], "subjects": ["secret"]}]), "rules[0].actions[0]"),
        (json!([{"effect": "allow", "actions": ["read"], "subjects": ["Pages!"]}]), "rules[0].subjects[0]"),
        (json!([{"effect": "maybe", "actions": ["read"], "subjects": ["pages"]}]), "effect"),
        (json!([{"effect": "allow", "actions": [], "subjects": ["pages"]}]), "actions"),
        (
            json!([{"effect": "allow", "actions": ["read"], "subjects": ["pages"], "conditions": {"a": {"equals": {"deep": {"er": 1}}}}}]),
            "rules[0].conditions.a.equals",
        ),
        (
            json!([{"effect": "allow", "actions": ["read"], "subjects": ["pages"], "conditions": {"a": {"regex": ".*"}}}]),
            "rules[0].conditions.a",
        ),
        (
            json!([{"effect": "allow", "actions": ["read"], "subjects": ["pages"], "conditions": {"a": {"in": (0..101).collect::<Vec<_>>()}}}]),
            "rules[0].conditions.a.in",
        ),
        (
            json!((0..101)
                .map(|_| json!({"effect": "allow", "actions": ["read"], "subjects": ["pages"]}))
                .collect::<Vec<_>>()),
            "rules",
        ),
        (
            json!([{"effect": "allow", "actions": (0..51).map(|i| format!("a{i}")).collect::<Vec<_>>(), "subjects": ["pages"]}]),
            "actions",
        ),
    ];
    for (rules, field) in bad_rules {
        let (s, b) =
            call(&app, Method::POST, &roles, Cred::Bearer(&alice), Some(json!({"name": "bad", "rules": rules}))).await;
        assert_problem(s, &b, StatusCode::BAD_REQUEST);
        assert!(detail(&b).contains(field), "{field}: {b}");
    }
    for name in ["owner", "Bad Name", ""] {
        let (s, b) =
            call(&app, Method::POST, &roles, Cred::Bearer(&alice), Some(json!({"name": name, "rules": []}))).await;
        assert_problem(s, &b, StatusCode::BAD_REQUEST);
    }

    // A role for page authors: edit their own pages, never delete locked ones.
    let author = json!({"name": "author", "description": "Writes pages", "rules": [
        {"effect": "allow", "actions": ["read", "edit", "delete"], "subjects": ["pages"], "conditions": {"owner": "${user.id}"}},
        {"effect": "allow", "actions": ["read"], "subjects": ["workspace", "member"]},
        {"effect": "deny", "actions": ["delete"], "subjects": ["pages"], "conditions": {"locked": true}}
    ]});
    let (s, b) = call(&app, Method::POST, &roles, Cred::Bearer(&alice), Some(author.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = call(&app, Method::POST, &roles, Cred::Bearer(&alice), Some(author)).await;
    assert_problem(s, &b, StatusCode::CONFLICT);
    let (s, _) = set_roles(&app, &alice, &ws, &bob_id, &["author"]).await;
    assert_eq!(s, StatusCode::CREATED);

    let ask = |body: Value| {
        let app = &app;
        let ws = ws.clone();
        let bob = bob.clone();
        async move {
            call(app, Method::POST, &format!("/v1/workspaces/{ws}/authorize"), Cred::Bearer(&bob), Some(body)).await
        }
    };
    let (s, d) = ask(json!({"action": "edit", "subject": "pages", "resource": {"owner": bob_id}})).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        d,
        json!({"allowed": true, "reason": "edit on pages is allowed by rule author[0]", "rule": "author[0]"})
    );
    let (_, d) = ask(json!({"action": "edit", "subject": "pages", "resource": {"owner": "someone-else"}})).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(d["rule"], Value::Null);
    let (_, d) =
        ask(json!({"action": "delete", "subject": "pages", "resource": {"owner": bob_id, "locked": true}})).await;
    assert_eq!((d["allowed"].clone(), d["rule"].clone()), (json!(false), json!("author[2]")), "deny wins: {d}");
    let (s, d) = ask(json!({"checks": [
        {"action": "read", "subject": "pages", "resource": {"owner": bob_id}},
        {"action": "read", "subject": "workspace"},
        {"action": "update", "subject": "workspace"}
    ]}))
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let allowed: Vec<bool> = d["results"].as_array().unwrap().iter().map(|r| r["allowed"].as_bool().unwrap()).collect();
    assert_eq!(allowed, [true, true, false]);
    // Asking about someone else needs `authorize` on `workspace`; the owner has it.
    let (s, b) = ask(json!({"principal": "whoever", "action": "read", "subject": "pages"})).await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    let (s, d) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{ws}/authorize"),
        Cred::Bearer(&alice),
        Some(json!({"principal": bob_id, "action": "edit", "subject": "pages", "resource": {"owner": bob_id}})),
    )
    .await;
    assert_eq!((s, d["allowed"].clone()), (StatusCode::OK, json!(true)), "{d}");
    let (_, d) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{ws}/authorize"),
        Cred::Bearer(&alice),
        Some(json!({"principal": "not-a-member", "action": "read", "subject": "pages"})),
    )
    .await;
    assert_eq!(d["allowed"], false);
    for body in [
        json!({}),
        json!({"action": "read"}),
        json!({"checks": []}),
        json!({"checks": [{"action": "read", "subject": "pages"}], "action": "x", "subject": "y"}),
    ] {
        let (s, b) = ask(body.clone()).await;
        assert_problem(s, &b, StatusCode::BAD_REQUEST);
    }

    // Escalation: a member who may manage roles cannot create, widen or grant more than he has.
    let manager = json!({"name": "role-manager", "rules": [
        {"effect": "allow", "actions": ["read", "create", "update", "delete"], "subjects": ["role", "member"]},
        {"effect": "allow", "actions": ["*"], "subjects": ["pages"]}
    ]});
    let (s, _) = call(&app, Method::POST, &roles, Cred::Bearer(&alice), Some(manager)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = set_roles(&app, &alice, &ws, &bob_id, &["role-manager"]).await;
    assert_eq!(s, StatusCode::OK);
    let wide = json!({"name": "wide", "rules": [{"effect": "allow", "actions": ["reveal"], "subjects": ["secret"]}]});
    let (s, b) = call(&app, Method::POST, &roles, Cred::Bearer(&bob), Some(wide)).await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("reveal on secret"), "{b}");
    let (s, b) = call(
        &app,
        Method::PUT,
        &format!("{roles}/role-manager"),
        Cred::Bearer(&bob),
        Some(json!({"name": "role-manager", "rules": [{"effect": "allow", "actions": ["*"], "subjects": ["*"]}]})),
    )
    .await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    let (s, _) = set_roles(&app, &bob, &ws, &bob_id, &["role-manager", "owner"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = set_roles(&app, &bob, &ws, &bob_id, &["role-manager", "author"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "author reads the workspace, which role-manager does not");
    let narrow =
        json!({"name": "pages-only", "rules": [{"effect": "allow", "actions": ["publish"], "subjects": ["pages"]}]});
    let (s, b) = call(&app, Method::POST, &roles, Cred::Bearer(&bob), Some(narrow)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Built-in roles are fixed; a role in use cannot be deleted; a renamed role keeps its members.
    let (s, _) = call(
        &app,
        Method::PUT,
        &format!("{roles}/editor"),
        Cred::Bearer(&alice),
        Some(json!({"name": "x", "rules": []})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(&app, Method::DELETE, &format!("{roles}/viewer"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, b) = call(&app, Method::DELETE, &format!("{roles}/role-manager"), Cred::Bearer(&alice), None).await;
    assert_problem(s, &b, StatusCode::CONFLICT);
    assert!(detail(&b).contains("still assigned"), "{b}");
    let (s, b) = call(
        &app,
        Method::PUT,
        &format!("{roles}/role-manager"),
        Cred::Bearer(&alice),
        Some(json!({"name": "managers", "rules": [{"effect": "allow", "actions": ["read"], "subjects": ["role", "member"]}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, members) =
        call(&app, Method::GET, &format!("/v1/workspaces/{ws}/members"), Cred::Bearer(&alice), None).await;
    assert!(members.to_string().contains("\"managers\""), "{members}");
    let changes = audit_rows(&app, "role.updated").await;
    let diff = &changes.last().unwrap()["details"]["rules"];
    assert_eq!(diff["added"].as_array().unwrap().len(), 1, "{diff}");
    assert_eq!(diff["removed"].as_array().unwrap().len(), 2, "{diff}");
    let (s, _) = call(&app, Method::DELETE, &format!("{roles}/pages-only"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, Method::GET, &format!("{roles}/pages-only"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn api_keys_stay_within_their_creator() {
    let app = open_app().await;
    let (alice, alice_id) = user(&app, "alice@example.com").await;
    let (bob, bob_id) = user(&app, "bob@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    let other = workspace(&app, &alice, "other").await;
    let keys = format!("/v1/workspaces/{ws}/api-keys");
    set_roles(&app, &alice, &ws, &bob_id, &["editor"]).await;
    // Let Bob create keys without giving him more: a role with api_key rights.
    let keyrole =
        json!({"name": "key-maker", "rules": [{"effect": "allow", "actions": ["*"], "subjects": ["api_key"]}]});
    call(&app, Method::POST, &format!("/v1/workspaces/{ws}/roles"), Cred::Bearer(&alice), Some(keyrole)).await;
    set_roles(&app, &alice, &ws, &bob_id, &["editor", "key-maker"]).await;

    // Asking for more than he may do is 403 with the reason.
    let (s, b) = call(
        &app,
        Method::POST,
        &keys,
        Cred::Bearer(&bob),
        Some(
            json!({"name": "too much", "rules": [{"effect": "allow", "actions": ["reveal"], "subjects": ["secret"]}]}),
        ),
    )
    .await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("reveal on secret"), "{b}");

    let (s, k) = call(
        &app,
        Method::POST,
        &keys,
        Cred::Bearer(&bob),
        Some(json!({"name": "ci", "rules": [
            {"effect": "allow", "actions": ["read", "update"], "subjects": ["workspace"]},
            {"effect": "allow", "actions": ["*"], "subjects": ["pages"]}
        ]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let secret = k["key"].as_str().unwrap().to_string();
    let key_id = k["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("gthk_"), "{k}");
    assert_eq!(k["created_by"], bob_id.as_str());

    // The key works on its workspace, under X-Api-Key or the configured alias.
    let (s, b) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&secret), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) =
        call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Header("x-prismeai-api-key", &secret), None)
            .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) =
        call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Header("x-other-api-key", &secret), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "only configured aliases");
    let (s, d) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{ws}/authorize"),
        Cred::Key(&secret),
        Some(json!({"action": "publish", "subject": "pages"})),
    )
    .await;
    assert_eq!((s, d["allowed"].clone(), d["rule"].clone()), (StatusCode::OK, json!(true), json!("api_key[1]")), "{d}");
    // Nowhere else: not another workspace (404), not the account API, not its own members.
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{other}"), Cred::Key(&secret), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = call(&app, Method::GET, "/v1/me", Cred::Key(&secret), None).await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("workspace"), "{b}");
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}/members"), Cred::Key(&secret), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&app, Method::POST, &keys, Cred::Key(&secret), Some(json!({"name": "child", "rules": []}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "keys cannot mint keys");
    let (_, list) = call(&app, Method::GET, "/v1/workspaces", Cred::Key(&secret), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // The secret is never shown again; its use is recorded, the first use from an address audited.
    let (s, one) = call(&app, Method::GET, &format!("{keys}/{key_id}"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!one.to_string().contains(&secret), "{one}");
    assert_eq!(audit_rows(&app, "api_key.used_from_new_ip").await.len(), 1);
    gatehouse::startup::housekeeping_round(&app.state).await;
    let (_, one) = call(&app, Method::GET, &format!("{keys}/{key_id}"), Cred::Bearer(&alice), None).await;
    assert_eq!(one["last_used_ip"], "127.0.0.1", "{one}");

    // Rights are cut to the creator's current ones: demoted to viewer, the key can only read.
    set_roles(&app, &alice, &ws, &bob_id, &["viewer", "key-maker"]).await;
    let (s, b) =
        call(&app, Method::PATCH, &format!("/v1/workspaces/{ws}"), Cred::Key(&secret), Some(json!({"name": "by key"})))
            .await;
    assert_problem(s, &b, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("creator"), "{b}");
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&secret), None).await;
    assert_eq!(s, StatusCode::OK);

    // Disabled, rotated, expired, creator gone: each stops the key at once.
    let (s, b) =
        call(&app, Method::PATCH, &format!("{keys}/{key_id}"), Cred::Bearer(&alice), Some(json!({"enabled": false})))
            .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&secret), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    call(&app, Method::PATCH, &format!("{keys}/{key_id}"), Cred::Bearer(&alice), Some(json!({"enabled": true}))).await;
    let (s, r) = call(&app, Method::POST, &format!("{keys}/{key_id}/rotate"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let rotated = r["key"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&secret), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old secret died with the rotation");
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&rotated), None).await;
    assert_eq!(s, StatusCode::OK);
    let soon = (crate::helpers::test_time() + time::Duration::minutes(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, _) =
        call(&app, Method::PATCH, &format!("{keys}/{key_id}"), Cred::Bearer(&alice), Some(json!({"expires_at": soon})))
            .await;
    assert_eq!(s, StatusCode::OK);
    // Within the access tokens' 15 minutes.
    app.clock.advance(time::Duration::minutes(6));
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&rotated), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired");
    let (s, _) = call(
        &app,
        Method::PATCH,
        &format!("{keys}/{key_id}"),
        Cred::Bearer(&alice),
        Some(json!({"never_expires": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&rotated), None).await;
    assert_eq!(s, StatusCode::OK);
    // A platform admin disables Bob: his key stops with him, and works again when he is back.
    let pw = app.bootstrap_password.clone().unwrap();
    let (_, b) = call(
        &app,
        Method::POST,
        "/v1/auth/login",
        Cred::None,
        Some(json!({"email": "admin@localhost", "password": pw})),
    )
    .await;
    let admin = b["access_token"].as_str().unwrap().to_string();
    let user_path = format!("/v1/users/{bob_id}");
    let (s, _) = call(&app, Method::PATCH, &user_path, Cred::Bearer(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&rotated), None).await;
    assert_problem(s, &b, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&app, Method::PATCH, &user_path, Cred::Bearer(&admin), Some(json!({"disabled": false}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&rotated), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) =
        call(&app, Method::DELETE, &format!("/v1/workspaces/{ws}/members/{bob_id}"), Cred::Bearer(&alice), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "Bob is removed");
    let (s, b) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&rotated), None).await;
    assert_problem(s, &b, StatusCode::UNAUTHORIZED);
    assert!(detail(&b).contains("creator"), "{b}");
    // A forged key (right shape, wrong checksum) and garbage are refused alike.
    for forged in ["gthk_000000000000000000000000000000aaaaaa", "nonsense", &rotated[..rotated.len() - 1]] {
        let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(forged), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{forged}");
    }
    for action in ["api_key.created", "api_key.rotated", "api_key.disabled", "api_key.enabled"] {
        assert!(!audit_rows(&app, action).await.is_empty(), "{action}");
    }
    let _ = (alice_id,);
    app.stop().await;
}

/// Two workspaces; every endpoint is tried with the other workspace's ids. The answer is 404
/// (never 403), and nothing of the other workspace shows in a list or an error text.
#[tokio::test]
async fn another_workspaces_ids_are_not_found() {
    let app = open_app().await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let (bob, bob_id) = user(&app, "bob@example.com").await;
    let a = workspace(&app, &alice, "alpha").await;
    let b = workspace(&app, &bob, "bravo").await;
    let (_, role) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{b}/roles"),
        Cred::Bearer(&bob),
        Some(json!({"name": "bravo-role", "rules": []})),
    )
    .await;
    let role_b = role["id"].as_str().unwrap().to_string();
    let (_, key) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{b}/api-keys"),
        Cred::Bearer(&bob),
        Some(json!({"name": "k", "rules": []})),
    )
    .await;
    let key_b = key["id"].as_str().unwrap().to_string();
    let bravo_secret = key["key"].as_str().unwrap().to_string();
    let (s, _) = call(
        &app,
        Method::PUT,
        &format!("/v1/workspaces/{b}/secrets/bravo_token"),
        Cred::Bearer(&bob),
        Some(json!({"value": "bravo secret value"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let secret_words: HashSet<&str> =
        [b.as_str(), role_b.as_str(), key_b.as_str(), bob_id.as_str(), "bravo", "bravo secret value"].into();

    let role_body = json!({"name": "x", "rules": []});
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/workspaces/{b}"), None),
        (Method::PATCH, format!("/v1/workspaces/{b}"), Some(json!({"name": "pwned"}))),
        (Method::DELETE, format!("/v1/workspaces/{b}"), None),
        (Method::GET, format!("/v1/workspaces/{b}/members"), None),
        (Method::PUT, format!("/v1/workspaces/{b}/members/{bob_id}"), Some(json!({"roles": ["viewer"]}))),
        (Method::DELETE, format!("/v1/workspaces/{b}/members/{bob_id}"), None),
        (Method::DELETE, format!("/v1/workspaces/{a}/members/{bob_id}"), None),
        (Method::GET, format!("/v1/workspaces/{b}/roles"), None),
        (Method::POST, format!("/v1/workspaces/{b}/roles"), Some(role_body.clone())),
        (Method::GET, format!("/v1/workspaces/{a}/roles/{role_b}"), None),
        (Method::PUT, format!("/v1/workspaces/{a}/roles/{role_b}"), Some(role_body.clone())),
        (Method::DELETE, format!("/v1/workspaces/{a}/roles/{role_b}"), None),
        (Method::GET, format!("/v1/workspaces/{b}/roles/{role_b}"), None),
        (Method::POST, format!("/v1/workspaces/{b}/authorize"), Some(json!({"action": "read", "subject": "pages"}))),
        (Method::GET, format!("/v1/workspaces/{b}/api-keys"), None),
        (Method::POST, format!("/v1/workspaces/{b}/api-keys"), Some(json!({"name": "k", "rules": []}))),
        (Method::GET, format!("/v1/workspaces/{a}/api-keys/{key_b}"), None),
        (Method::PATCH, format!("/v1/workspaces/{a}/api-keys/{key_b}"), Some(json!({"enabled": false}))),
        (Method::DELETE, format!("/v1/workspaces/{a}/api-keys/{key_b}"), None),
        (Method::POST, format!("/v1/workspaces/{a}/api-keys/{key_b}/rotate"), None),
        (Method::GET, format!("/v1/workspaces/{b}/api-keys/{key_b}"), None),
        (Method::GET, format!("/v1/workspaces/{b}/secrets"), None),
        (Method::PUT, format!("/v1/workspaces/{b}/secrets/bravo_token"), Some(json!({"value": "overwritten"}))),
        (Method::GET, format!("/v1/workspaces/{b}/secrets/bravo_token"), None),
        (Method::GET, format!("/v1/workspaces/{a}/secrets/bravo_token"), None),
        (Method::DELETE, format!("/v1/workspaces/{a}/secrets/bravo_token"), None),
        (Method::DELETE, format!("/v1/workspaces/{b}/secrets/bravo_token"), None),
        (Method::GET, format!("/v1/workspaces/{a}/secrets/bravo_token/versions"), None),
        (Method::GET, format!("/v1/workspaces/{b}/secrets/bravo_token/versions"), None),
        (Method::POST, format!("/v1/workspaces/{a}/secrets/bravo_token/reveal"), Some(json!({}))),
        (Method::POST, format!("/v1/workspaces/{b}/secrets/bravo_token/reveal"), Some(json!({}))),
        (Method::POST, format!("/v1/workspaces/{a}/secrets/bravo_token/versions/1/restore"), None),
        (Method::POST, format!("/v1/workspaces/{b}/secrets/bravo_token/versions/1/restore"), None),
        (Method::GET, format!("/v1/workspaces/{b}/audit"), None),
        (Method::GET, format!("/v1/workspaces/{b}/audit?action=workspace."), None),
    ];
    // Every workspace operation of the spec is in the matrix.
    let spec: Value = serde_json::from_str(&gatehouse::http::openapi_json()).unwrap();
    for (template, item) in spec["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/workspaces/{ws}") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let covered = attempts
                .iter()
                .any(|(m, path, _)| m.as_str().eq_ignore_ascii_case(method) && matches_template(template, path));
            assert!(covered, "the isolation matrix misses {method} {template}");
        }
    }
    for (method, path, body) in &attempts {
        let (s, resp) = call(&app, method.clone(), path, Cred::Bearer(&alice), body.clone()).await;
        assert_problem(s, &resp, StatusCode::NOT_FOUND);
        let text = resp.to_string();
        for w in &secret_words {
            assert!(!text.contains(w), "{method} {path} leaks {w}: {text}");
        }
    }
    // Bravo's API key cannot reach alpha either.
    for (method, path, body) in &attempts {
        let path = path.replace(&b, &a);
        let (s, _) = call(&app, method.clone(), &path, Cred::Key(&bravo_secret), body.clone()).await;
        assert!(s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN && path.contains(&b), "{method} {path}: {s}");
    }
    // Lists: alpha's owner sees alpha only; alpha's members, roles and keys hold nothing of bravo.
    for path in [
        "/v1/workspaces".to_string(),
        format!("/v1/workspaces/{a}/members"),
        format!("/v1/workspaces/{a}/roles"),
        format!("/v1/workspaces/{a}/api-keys"),
        format!("/v1/workspaces/{a}/secrets"),
    ] {
        let (s, resp) = call(&app, Method::GET, &path, Cred::Bearer(&alice), None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        let text = resp.to_string();
        for w in &secret_words {
            assert!(!text.contains(w), "{path} leaks {w}: {text}");
        }
    }
    // Still there, untouched.
    let (s, w) = call(&app, Method::GET, &format!("/v1/workspaces/{b}"), Cred::Bearer(&bob), None).await;
    assert_eq!((s, w["name"].clone()), (StatusCode::OK, json!("Workspace bravo")));
    let (s, _) = call(&app, Method::GET, &format!("/v1/workspaces/{b}"), Cred::Key(&bravo_secret), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "bravo's key has no rules: present, allowed nothing");
    app.stop().await;
}

/// What a caller needs for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// No credential.
    Public,
    /// Any signed-in caller.
    SignedIn,
    /// A platform admin.
    Admin,
    /// A member with at least this built-in role (0 owner, 1 editor, 2 viewer).
    Role(u8),
}

fn need(method: &str, path: &str) -> Option<Need> {
    use Need::*;
    Some(match (method, path) {
        ("get", "/healthz" | "/readyz" | "/metrics" | "/.well-known/jwks.json") => Public,
        ("post", "/v1/auth/signup" | "/v1/auth/login" | "/v1/auth/anonymous" | "/v1/auth/refresh") => Public,
        // Single sign-on: the login page's list, the login itself, the callback and the code
        // exchange are for callers not signed in yet.
        ("get", "/v1/sso/providers" | "/v1/sso/{provider}/login" | "/v1/sso/oidc/{provider}/callback") => Public,
        ("post", "/v1/sso/exchange") => Public,
        // SAML: the SP metadata is for the IdP; the IdP's POST to the ACS is the login's end.
        ("get", "/v1/sso/saml/{provider}/metadata") => Public,
        ("post", "/v1/sso/saml/{provider}/acs") => Public,
        (_, p) if p.starts_with("/v1/sso-providers") => Admin,
        (
            "post",
            "/v1/auth/logout" | "/v1/auth/logout-all" | "/v1/auth/mfa/totp/enroll" | "/v1/auth/mfa/totp/verify",
        ) => SignedIn,
        ("delete", "/v1/auth/mfa/totp") => SignedIn,
        (
            _,
            "/v1/me"
            | "/v1/me/password"
            | "/v1/me/sessions"
            | "/v1/me/sessions/{id}"
            | "/v1/me/tokens"
            | "/v1/me/tokens/{id}",
        ) => SignedIn,
        (_, p) if p.starts_with("/v1/users") => Admin,
        (_, p) if p.starts_with("/v1/audit") => Admin,
        ("get", "/v1/workspaces/{ws}/audit") => Role(0),
        (_, p) if p.starts_with("/v1/security/alerts") => Admin,
        ("get" | "post", "/v1/workspaces") => SignedIn,
        (
            "get",
            "/v1/workspaces/{ws}"
            | "/v1/workspaces/{ws}/members"
            | "/v1/workspaces/{ws}/roles"
            | "/v1/workspaces/{ws}/roles/{role}",
        ) => Role(2),
        ("post", "/v1/workspaces/{ws}/authorize") => Role(2),
        ("patch", "/v1/workspaces/{ws}") => Role(1),
        ("delete", "/v1/workspaces/{ws}") => Role(0),
        (_, "/v1/workspaces/{ws}/members/{user}") => Role(0),
        ("post", "/v1/workspaces/{ws}/roles") | ("put" | "delete", "/v1/workspaces/{ws}/roles/{role}") => Role(0),
        (_, p) if p.starts_with("/v1/workspaces/{ws}/api-keys") => Role(0),
        ("get", "/v1/workspaces/{ws}/secrets" | "/v1/workspaces/{ws}/secrets/{name}") => Role(2),
        ("get", "/v1/workspaces/{ws}/secrets/{name}/versions") => Role(2),
        ("put" | "delete", "/v1/workspaces/{ws}/secrets/{name}") => Role(1),
        ("post", "/v1/workspaces/{ws}/secrets/{name}/versions/{version}/restore") => Role(1),
        ("post", "/v1/workspaces/{ws}/secrets/{name}/reveal") => Role(0),
        _ => return None,
    })
}

/// Every operation of the OpenAPI document, with each built-in role, an outsider and an
/// anonymous caller: allowed or denied as the table above says. An operation missing from the
/// table fails the test.
#[tokio::test]
async fn every_operation_with_every_role() {
    let app = open_app().await;
    let spec: Value = serde_json::from_str(&gatehouse::http::openapi_json()).unwrap();
    let (owner, _) = user(&app, "owner@example.com").await;
    let (outsider, _) = user(&app, "outsider@example.com").await;
    let roles = ["owner", "editor", "viewer"];
    let mut holders = Vec::new();
    for r in roles {
        holders.push(user(&app, &format!("{r}-holder@example.com")).await);
    }
    let (_, victim) = user(&app, "victim@example.com").await;
    let mut fixture = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let want = need(method, path).unwrap_or_else(|| panic!("no expectation for {method} {path}"));
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            match want {
                Need::Public => continue,
                Need::SignedIn | Need::Admin => {
                    let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
                    // A body the operation would accept, so that only the credential decides.
                    let body = match path.as_str() {
                        "/v1/users" => json!({"email": "made@example.com", "password": PW}),
                        "/v1/users/invites" => json!({"email": "invited@example.com"}),
                        "/v1/security/alerts/{id}/acknowledge" => json!({"note": "seen"}),
                        "/v1/sso-providers" | "/v1/sso-providers/{id}" => json!({
                            "id": "corp", "display_name": "Corp", "issuer": "https://127.0.0.1:1",
                            "client_id": "c", "client_secret": "s"}),
                        "/v1/sso-providers/{id}/preview" => json!({"claims": {"sub": "x"}}),
                        _ => json!({}),
                    };
                    let (s, _) = call(&app, m.clone(), &concrete, Cred::None, Some(body.clone())).await;
                    assert_eq!(s, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
                    if want == Need::Admin {
                        let (s, _) = call(&app, m.clone(), &concrete, Cred::Bearer(&outsider), Some(body)).await;
                        assert_eq!(s, StatusCode::FORBIDDEN, "non-admin {method} {path}");
                    } else if path.starts_with("/v1/workspaces") {
                        let body = json!({"slug": format!("own-{fixture}"), "name": "x"});
                        fixture += 1;
                        let (s, b) = call(&app, m.clone(), path, Cred::Bearer(&outsider), Some(body)).await;
                        assert!(s.is_success(), "outsider {method} {path}: {s} {b}");
                    }
                }
                Need::Role(min) => {
                    for (rank, holder) in holders.iter().enumerate() {
                        // A fresh workspace per try, so destructive operations start from the same state.
                        fixture += 1;
                        let ws = workspace(&app, &owner, &format!("fixture-{fixture}")).await;
                        let (s, _) = set_roles(&app, &owner, &ws, &holder.1, &[roles[rank]]).await;
                        assert_eq!(s, StatusCode::CREATED);
                        set_roles(&app, &owner, &ws, &victim, &["viewer"]).await;
                        let (_, role) = call(
                            &app,
                            Method::POST,
                            &format!("/v1/workspaces/{ws}/roles"),
                            Cred::Bearer(&owner),
                            Some(json!({"name": "spare", "rules": []})),
                        )
                        .await;
                        let (_, key) = call(
                            &app,
                            Method::POST,
                            &format!("/v1/workspaces/{ws}/api-keys"),
                            Cred::Bearer(&owner),
                            Some(json!({"name": "k", "rules": []})),
                        )
                        .await;
                        call(
                            &app,
                            Method::PUT,
                            &format!("/v1/workspaces/{ws}/secrets/spare"),
                            Cred::Bearer(&owner),
                            Some(json!({"value": "spare value"})),
                        )
                        .await;
                        let concrete = path
                            .replace("{name}", "spare")
                            .replace("{version}", "1")
                            .replace("{ws}", &ws)
                            .replace("{user}", &victim)
                            .replace("{role}", role["id"].as_str().unwrap())
                            .replace("{id}", key["id"].as_str().unwrap());
                        let body = match (method.as_str(), path.as_str()) {
                            ("patch", "/v1/workspaces/{ws}") => json!({"name": "changed"}),
                            ("put", "/v1/workspaces/{ws}/members/{user}") => json!({"roles": ["editor"]}),
                            ("post", "/v1/workspaces/{ws}/roles") | ("put", "/v1/workspaces/{ws}/roles/{role}") => {
                                json!({"name": "made", "rules": []})
                            }
                            ("post", "/v1/workspaces/{ws}/authorize") => json!({"action": "read", "subject": "pages"}),
                            ("post", "/v1/workspaces/{ws}/api-keys") => json!({"name": "n", "rules": []}),
                            ("put", "/v1/workspaces/{ws}/secrets/{name}") => json!({"value": "new value"}),
                            ("post", "/v1/workspaces/{ws}/secrets/{name}/reveal") => json!({"reason": "test"}),
                            ("patch", _) => json!({"name": "renamed"}),
                            _ => json!({}),
                        };
                        let (s, b) =
                            call(&app, m.clone(), &concrete, Cred::Bearer(&holder.0), Some(body.clone())).await;
                        if rank as u8 <= min {
                            assert!(s.is_success(), "{} {method} {path}: {s} {b}", roles[rank]);
                        } else {
                            assert_problem(s, &b, StatusCode::FORBIDDEN);
                        }
                        let (s, _) =
                            call(&app, m.clone(), &concrete, Cred::Bearer(&outsider), Some(body.clone())).await;
                        assert_eq!(s, StatusCode::NOT_FOUND, "outsider {method} {path}");
                        let (s, _) = call(&app, m.clone(), &concrete, Cred::None, Some(body)).await;
                        assert_eq!(s, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
                    }
                }
            }
        }
    }
    app.stop().await;
}

/// Platform admins manage every workspace; what their own memberships would not allow is
/// audited as an admin action.
#[tokio::test]
async fn platform_admins_act_in_any_workspace_as_admins() {
    let app = open_app().await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    let pw = app.bootstrap_password.clone().unwrap();
    let (s, b) = call(
        &app,
        Method::POST,
        "/v1/auth/login",
        Cred::None,
        Some(json!({"email": "admin@localhost", "password": pw})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let admin = b["access_token"].as_str().unwrap().to_string();
    let (_, list) = call(&app, Method::GET, "/v1/workspaces", Cred::Bearer(&admin), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (s, _) = call(
        &app,
        Method::PATCH,
        &format!("/v1/workspaces/{ws}"),
        Cred::Bearer(&admin),
        Some(json!({"name": "Fixed"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&app, Method::GET, &format!("/v1/workspaces/{ws}/api-keys"), Cred::Bearer(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rows = audit_rows(&app, "workspace.updated").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["details"]["as_admin"], true, "{rows:?}");
    assert_eq!(rows[0]["workspace_id"], ws.as_str());
    // Alice's own change is not an admin action.
    call(&app, Method::PATCH, &format!("/v1/workspaces/{ws}"), Cred::Bearer(&alice), Some(json!({"name": "Mine"})))
        .await;
    let rows = audit_rows(&app, "workspace.updated").await;
    assert_eq!(rows[1]["details"].get("as_admin"), None, "{rows:?}");
    app.stop().await;
}

/// Whether `path` is an instance of the route `template` (`{name}` matches one segment).
fn matches_template(template: &str, path: &str) -> bool {
    let want: Vec<&str> = template.split('/').collect();
    let have: Vec<&str> = path.split('/').collect();
    want.len() == have.len() && want.iter().zip(&have).all(|(w, h)| (w.starts_with('{') && !h.is_empty()) || w == h)
}
