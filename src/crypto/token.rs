//! Opaque bearer secrets (personal access tokens, refresh tokens, session cookies, MFA
//! challenges): `<prefix>_<30 random base62 characters><6 base62 characters of CRC-32>`.
//! The prefix tells a secret scanner what it found; the checksum lets it rule out false
//! positives offline. Only the SHA-256 of a token is ever stored.

use super::{random, SecretString};
use sha2::{Digest, Sha256};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS: usize = 30; // ≈178 bits
const CHECK_CHARS: usize = 6;

/// What a token is, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PersonalAccessToken,
    RefreshToken,
    SessionCookie,
    CsrfToken,
    MfaChallenge,
    Invite,
    ApiKey,
    /// A one-time SSO code an API client exchanges for tokens.
    SsoCode,
    /// Binds an SSO login in flight to the browser that started it.
    SsoBrowser,
    /// A SAML login's RelayState: an opaque handle to the login in flight.
    SamlRelayState,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::PersonalAccessToken => "gthp",
            Kind::RefreshToken => "gthr",
            Kind::SessionCookie => "gths",
            Kind::CsrfToken => "gthx",
            Kind::MfaChallenge => "gthm",
            Kind::Invite => "gthi",
            Kind::ApiKey => "gthk",
            Kind::SsoCode => "gthc",
            Kind::SsoBrowser => "gthb",
            Kind::SamlRelayState => "gthl",
        }
    }
}

/// CRC-32 (IEEE 802.3, the one zlib and secret scanners use).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A new token of `kind`.
pub fn generate(kind: Kind) -> SecretString {
    let limit = 256 - (256 % BASE62.len());
    let mut body = String::with_capacity(RANDOM_CHARS + CHECK_CHARS);
    while body.len() < RANDOM_CHARS {
        for b in random::bytes::<32>() {
            if usize::from(b) < limit && body.len() < RANDOM_CHARS {
                body.push(char::from(BASE62[usize::from(b) % BASE62.len()]));
            }
        }
    }
    let check = base62_fixed(u64::from(crc32(body.as_bytes())), CHECK_CHARS);
    SecretString::new(format!("{}_{body}{check}", kind.prefix()))
}

/// Whether `token` has the shape and checksum of a token of `kind` (no secret is checked here).
pub fn well_formed(token: &str, kind: Kind) -> bool {
    let Some(rest) = token.strip_prefix(kind.prefix()).and_then(|r| r.strip_prefix('_')) else { return false };
    if rest.len() != RANDOM_CHARS + CHECK_CHARS || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, check) = rest.split_at(RANDOM_CHARS);
    base62_fixed(u64::from(crc32(body.as_bytes())), CHECK_CHARS) == check
}

/// The SHA-256 a token is stored and looked up by.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The PKCE S256 challenge of a verifier (RFC 7636): base64url(SHA-256(verifier)), unpadded.
pub fn pkce_s256(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest(verifier))
}

/// A PKCE verifier or challenge: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~` (RFC 7636).
pub fn pkce_well_formed(value: &str) -> bool {
    (43..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// A short, safe-to-show reminder of a token: its prefix and last four characters.
pub fn hint(token: &str) -> String {
    let tail: String = token.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    match token.split_once('_') {
        Some((prefix, _)) => format!("{prefix}_…{tail}"),
        None => format!("…{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn tokens_have_prefix_and_checksum() {
        let t = generate(Kind::PersonalAccessToken);
        let s = t.expose();
        assert!(s.starts_with("gthp_"));
        assert_eq!(s.len(), 5 + 36);
        assert!(well_formed(s, Kind::PersonalAccessToken));
        assert!(!well_formed(s, Kind::RefreshToken));
        // One changed character breaks the checksum.
        let mut bad = s.to_string().into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(std::str::from_utf8(&bad).unwrap(), Kind::PersonalAccessToken));
        assert_ne!(generate(Kind::PersonalAccessToken).expose(), s);
        assert_eq!(hint(s).len(), "gthp_…".len() + 4);
    }
}
