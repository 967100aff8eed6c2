//! The benchmark ceiling: the smallest poem HTTPS server that answers `GET /healthz` with
//! `{"status":"ok"}`, built from the same dependencies as Gatehouse (poem with rustls, tokio) and
//! with the same rustls crypto provider, so that `tests/bench/run.sh` can report Gatehouse's
//! `/healthz` throughput as a ratio of what the stack itself allows on this machine.
//!
//! Usage: `bench-ceiling CERT_PEM KEY_PEM 127.0.0.1:PORT`. Loopback addresses only. It prints
//! `ceiling listening on https://ADDR` once bound. It must not grow: no middleware, no logging.

use poem::listener::{Listener, RustlsCertificate, RustlsConfig, TcpListener};
use poem::web::Json;
use poem::{get, handler, Route, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::ExitCode;

#[handler]
fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cert_path, key_path, addr] = args.as_slice() else {
        eprintln!("usage: bench-ceiling CERT_PEM KEY_PEM 127.0.0.1:PORT");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-ceiling: bad address {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    if !addr.ip().is_loopback() {
        eprintln!("bench-ceiling: {addr} is not a loopback address");
        return ExitCode::from(2);
    }
    let (cert, key) = match (std::fs::read(cert_path), std::fs::read(key_path)) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bench-ceiling: cannot read the certificate or key: {e}");
            return ExitCode::from(1);
        }
    };
    gatehouse::tls::install_provider();
    // The same runtime shape as `gatehouse serve` (multi-thread, one worker per core).
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-ceiling: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let tls = RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert).key(key));
        let app = Route::new().at("/healthz", get(healthz));
        println!("ceiling listening on https://{addr}");
        Server::new(TcpListener::bind(addr).rustls(tls)).run(app).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-ceiling: {e}");
            ExitCode::from(1)
        }
    }
}
