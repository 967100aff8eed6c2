//! Webhook signatures: `X-Gatehouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key,
//! "<t>.<body>")>`. The receiver recomputes the MAC over the timestamp and the raw body with the
//! shared key, compares in constant time and refuses old timestamps (replays).

use super::secret::{ct_eq, SecretString};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Gatehouse-Signature";

fn mac(key: &SecretString, timestamp: i64, body: &[u8]) -> Option<[u8; 32]> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).ok()?;
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m.finalize().into_bytes().into())
}

/// The signature header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(key: &SecretString, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: `mac` cannot fail.
    let v1 = mac(key, timestamp, body).map(hex::encode).unwrap_or_default();
    format!("t={timestamp},v1={v1}")
}

/// Check a signature header against `body`: a well-formed header, a timestamp at most
/// `tolerance_s` away from `now_s`, and a MAC that matches (compared in constant time).
pub fn verify(key: &SecretString, header: &str, body: &[u8], now_s: i64, tolerance_s: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(given)) = (t, v1) else { return false };
    if (now_s - t).abs() > tolerance_s {
        return false;
    }
    mac(key, t, body).is_some_and(|expected| ct_eq(&expected, &given))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let key = SecretString::new("whsec-test-key".into());
        let h = sign(&key, 1_800_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1800000000,v1="), "{h}");
        assert!(verify(&key, &h, b"{\"a\":1}", 1_800_000_010, 300));
        assert!(!verify(&key, &h, b"{\"a\":2}", 1_800_000_010, 300), "another body");
        assert!(!verify(&SecretString::new("other".into()), &h, b"{\"a\":1}", 1_800_000_010, 300), "another key");
        assert!(!verify(&key, &h, b"{\"a\":1}", 1_800_001_000, 300), "too old");
        assert!(!verify(&key, "v1=00", b"{\"a\":1}", 1_800_000_000, 300), "no timestamp");
        let moved = h.replace("t=1800000000", "t=1800000001");
        assert!(!verify(&key, &moved, b"{\"a\":1}", 1_800_000_000, 300), "another timestamp");
    }
}
