//! The benchmark ceiling: the smallest poem HTTPS server that answers `GET /healthz` with
//! `{"status":"ok"}`, built from the same dependencies as Gatehouse (poem with rustls, tokio) and
//! with the same rustls crypto provider, so that `tests/bench/run.sh` can report Gatehouse's
//! `/healthz` throughput as a ratio of what the stack itself allows on this machine.
//!
//! Usage: `bench-ceiling CERT_PEM KEY_PEM 127.0.0.1:PORT [--headers] [--cpu-us N]`. Loopback
//! addresses only. It prints `ceiling listening on https://ADDR` once bound. Without options it
//! must not grow: no middleware, no logging.
//!
//! The two options make the benchmark's calibration servers, never the ceiling itself:
//! `--headers` adds the headers Gatehouse sends on a data answer such as `/healthz` (a fresh
//! `X-Request-Id` and `gatehouse::http::edge::security_headers` of `Answer::Data`); `--cpu-us N`
//! spends about N µs of CPU on each request (a loop timed at start). With them, `run.sh` shows
//! which ratio a server reaches that does N µs more work per request than the ceiling, on this
//! machine, in the same rounds.

use poem::http::HeaderValue;
use poem::listener::{Listener, RustlsCertificate, RustlsConfig, TcpListener};
use poem::web::Json;
use poem::{get, handler, IntoResponse, Response, Route, Server};
use serde_json::json;
use std::hint::black_box;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// `--headers`.
static HEADERS: AtomicBool = AtomicBool::new(false);
/// Loop turns per request for `--cpu-us`; 0 without it.
static TURNS: AtomicU64 = AtomicU64::new(0);

#[handler]
fn healthz() -> Response {
    let turns = TURNS.load(Ordering::Relaxed);
    if turns > 0 {
        black_box(spin(turns));
    }
    let mut resp = Json(json!({ "status": "ok" })).into_response();
    if HEADERS.load(Ordering::Relaxed) {
        let h = resp.headers_mut();
        h.reserve(12);
        let mut buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        if let Ok(v) = HeaderValue::from_str(id) {
            h.insert(gatehouse::http::edge::REQUEST_ID, v);
        }
        gatehouse::http::edge::security_headers(h, gatehouse::http::edge::Answer::Data, true);
    }
    resp
}

/// `turns` steps of a multiply-add chain the optimiser cannot remove: CPU work, no memory.
fn spin(turns: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..turns {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// Loop turns per µs: the fastest of five timed runs of 2 million turns (the fastest is the one
/// least disturbed by other work on the machine).
fn turns_per_us() -> f64 {
    const TURNS_TIMED: u64 = 2_000_000;
    let fastest = (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(spin(TURNS_TIMED));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    TURNS_TIMED as f64 / (fastest * 1e6)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench-ceiling CERT_PEM KEY_PEM 127.0.0.1:PORT [--headers] [--cpu-us N]";
    let (Some([cert_path, key_path, addr]), options) = (args.get(..3), args.get(3..).unwrap_or_default()) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match (option.as_str(), options.clone().next().map(|n| n.parse::<f64>())) {
            ("--headers", _) => HEADERS.store(true, Ordering::Relaxed),
            ("--cpu-us", Some(Ok(us))) if (0.0..=10_000.0).contains(&us) => {
                options.next();
                let turns = (us * turns_per_us()).round() as u64;
                TURNS.store(turns, Ordering::Relaxed);
                println!("ceiling spends {us} us of CPU per request: {turns} loop turns");
            }
            _ => {
                eprintln!("bench-ceiling: bad option {option}; {usage}");
                return ExitCode::from(2);
            }
        }
    }
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
