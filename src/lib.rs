//! Gatehouse: a self-hosted security server for multi-tenant platforms, in one binary.
//!
//! Data flows one way: `http` (poem, poem-openapi) → `domain` (the rules) → `crypto`, `db`.
//! - `http/` extracts, calls one domain function, maps the result; it never runs SQL or crypto.
//! - `domain/` decides; it never imports poem.
//! - `crypto/` is the only place that touches argon2, aes-gcm, jsonwebtoken, hmac, hkdf and rand.
//! - `db/` is the only place that touches rusqlite; all of it runs on the blocking pool.
//! - `outbound.rs` is the only place that touches reqwest (outgoing calls: the alert webhook,
//!   identity providers); `sso/` the only place that touches openidconnect.
//! - `startup.rs` wires the pieces the same way for `gatehouse serve` and for the tests.
//!
//! Time comes from [`clock::Clock`]; secrets live in redacting newtypes from [`crypto::secret`].

// Two audited exceptions: `telemetry::LowPriorityPool` lowers its threads' priority (two
// syscalls), and `startup` hands start-up's freed heap back with glibc's `malloc_trim`.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::await_holding_lock,
        clippy::todo,
        clippy::unimplemented,
        clippy::dbg_macro
    )
)]
#![warn(rust_2018_idioms)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod sso;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
