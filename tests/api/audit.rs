//! The audit chain: start-up and admin events are recorded and chained; a row edited with plain
//! SQL, or a deleted row, is detected and named by `gatehouse audit verify`.

use crate::helpers::{gatehouse, run, serve_cmd, spawn_app, ServeProcess};
use gatehouse::domain::audit;

fn db_path(data: &std::path::Path) -> std::path::PathBuf {
    data.join("gatehouse.db")
}

fn actions(db: &std::path::Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT seq, action FROM audit_log ORDER BY seq").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn start_and_admin_creation_are_chained() {
    let app = spawn_app().await;
    assert!(app.bootstrap_password.is_some());
    let report = audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![]).await.unwrap();
    assert_eq!(report.first_broken, None);
    assert!(report.records >= 2, "{report:?}");
    let data = app.config.data_dir.clone();
    let _dir = app.stop().await;
    let acts: Vec<String> = actions(&db_path(&data)).into_iter().map(|(_, a)| a).collect();
    assert_eq!(acts, ["user.admin.created", "key.signing.created", "server.started", "server.stopped"]);
}

#[test]
fn tampering_with_one_row_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let server = ServeProcess::start(serve_cmd(&data, &[]));
    let (status, _, _) = server.terminate();
    assert!(status.success());
    for _ in 0..2 {
        let server = ServeProcess::start(serve_cmd(&data, &[]));
        server.terminate();
    }
    let (code, out, err) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain OK: 8 records verified"), "{out}");

    // An attacker with database access rewrites one record.
    let db = db_path(&data);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let updated = conn.execute("UPDATE audit_log SET details = '{\"listen\":\"0.0.0.0:1\"}' WHERE seq = 4", []);
        assert!(updated.is_err(), "the table refuses updates");
        conn.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
        conn.execute("UPDATE audit_log SET details = '{\"listen\":\"0.0.0.0:1\"}' WHERE seq = 4", []).unwrap();
    }
    let (code, _, err) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 1);
    assert!(err.contains("broken at sequence 4"), "{err}");

    // Recomputing a plain SHA-256 does not help: the chain is keyed.
    // Deleting a record instead of editing it is detected too.
    let dir2 = tempfile::tempdir().unwrap();
    let data2 = dir2.path().join("data");
    let server = ServeProcess::start(serve_cmd(&data2, &[]));
    server.terminate();
    let server = ServeProcess::start(serve_cmd(&data2, &[]));
    server.terminate();
    let conn = rusqlite::Connection::open(db_path(&data2)).unwrap();
    assert!(conn.execute("DELETE FROM audit_log WHERE seq = 2", []).is_err(), "the table refuses deletes");
    conn.execute_batch("DROP TRIGGER audit_log_no_delete").unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq = 2", []).unwrap();
    drop(conn);
    let (code, _, err) = run(gatehouse(&["audit", "verify", "--data-dir", data2.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("broken at sequence 2"), "{err}");
}
