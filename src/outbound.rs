//! Outgoing HTTP calls (the alert webhook): the only place that names reqwest. The client
//! follows no redirects, bounds the connection and the whole call in time, and trusts the
//! built-in web roots plus an optional CA file. Error messages never carry the URL (it may
//! hold a token) or anything from the answer's body.

use std::path::Path;
use std::time::Duration;

/// An HTTP client for outgoing calls.
#[derive(Clone)]
pub struct HttpClient(reqwest::Client);

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client with `connect` and `total` time limits that also trusts the CA certificates in
    /// the PEM file `ca_file`. The error names the file and what is wrong with it.
    pub fn new(ca_file: Option<&Path>, connect: Duration, total: Duration) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect)
            .timeout(total)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| format!("{} is not a PEM certificate bundle", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map(Self).map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))
    }

    /// POST `body` as JSON with extra `headers`. `Ok(status)` when an answer came (whatever its
    /// status); `Err(reason)` when none did (a short reason without the URL).
    pub async fn post_json(&self, url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Result<u16, String> {
        let mut req = self.0.post(url).header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        match req.body(body).send().await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) if e.is_timeout() => Err("timed out".into()),
            Err(e) if e.is_connect() => Err("connection failed".into()),
            Err(e) if e.is_builder() => Err("invalid request (check the URL)".into()),
            Err(_) => Err("request failed".into()),
        }
    }
}
