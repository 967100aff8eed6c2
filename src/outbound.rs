//! Outgoing HTTP calls (the alert webhook, identity providers): the only place that names reqwest. The client
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
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Self::with_ca_pem(Some(&pem), connect, total).map_err(|e| format!("{}: {e}", path.display()))
            }
            None => Self::with_ca_pem(None, connect, total),
        }
    }

    /// The same, with the CA certificates given as PEM text.
    pub fn with_ca_pem(pem: Option<&[u8]>, connect: Duration, total: Duration) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect)
            .timeout(total)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|_| "not a PEM certificate bundle".to_string())?;
            if certs.is_empty() {
                return Err("holds no certificate".into());
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
            Err(e) => Err(reason(&e).into()),
        }
    }
}

/// Why an outgoing call got no usable answer: a short reason without the URL or the body.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutboundError(pub String);

impl HttpClient {
    /// Send `req` and read the answer, at most `max_bytes` of body (a larger answer is an error,
    /// read no further). Redirects are not followed: a 3xx is returned as it is.
    pub async fn send(
        &self,
        req: http::Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let req = reqwest::Request::try_from(req).map_err(|_| OutboundError("invalid request".into()))?;
        let mut resp = self.0.execute(req).await.map_err(|e| OutboundError(reason(&e).into()))?;
        if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(OutboundError(format!("the answer is larger than {max_bytes} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| OutboundError(reason(&e).into()))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(OutboundError(format!("the answer is larger than {max_bytes} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = http::Response::builder().status(resp.status().as_u16());
        for (name, value) in resp.headers() {
            out = out.header(name.as_str(), value.as_bytes());
        }
        out.body(body).map_err(|_| OutboundError("unreadable answer".into()))
    }
}

fn reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_builder() {
        "invalid request (check the URL)"
    } else {
        "request failed"
    }
}
