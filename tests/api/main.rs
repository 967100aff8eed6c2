//! Gatehouse's one integration test binary. Every test starts the real server: in-process from
//! the same `Application::build` that `gatehouse serve` uses (on 127.0.0.1:0, a temporary data
//! folder, a fixed clock), or as the real binary for what only a process shows (signals,
//! stdout, exit codes, systemd notification).

mod helpers;
mod saml;
mod saml_forge;

mod accounts;
mod audit;
mod browser;
mod catalogue;
mod cli;
mod config_doc;
mod errors;
mod health;
mod logs;
mod monitoring;
mod openapi;
mod siem;
mod sso;
mod tls;
mod vault;
mod workspaces;
