//! TOTP (RFC 6238 over RFC 4226): HMAC-SHA1, 6 digits, 30-second steps, one step of clock
//! drift either way. The caller remembers the last step accepted so that a code is never
//! accepted twice.

use super::{ct_eq, random};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::Zeroizing;

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Steps of drift accepted either side of now.
const WINDOW: i64 = 1;

/// A new 160-bit seed.
pub fn new_seed() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(random::bytes::<20>().to_vec())
}

/// RFC 4648 base32 without padding, as authenticator apps expect.
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(char::from(ALPHABET[((buffer >> (bits - 5)) & 31) as usize]));
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The code for time step `step`.
pub fn code_at(seed: &[u8], step: i64) -> String {
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(seed) else { return String::new() };
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    format!("{:06}", bin % 10u32.pow(DIGITS))
}

/// The time step of a Unix time.
pub fn step_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The step `code` belongs to, when it is valid at `unix_seconds` and newer than `last_step`.
pub fn verify(seed: &[u8], code: &str, unix_seconds: i64, last_step: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix_seconds);
    let mut found = None;
    // Check every candidate (no early exit) so timing does not say which step matched.
    for step in (now - WINDOW)..=(now + WINDOW) {
        if ct_eq(code_at(seed, step).as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found.filter(|s| last_step.is_none_or(|last| *s > last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 appendix B, SHA1, seed "12345678901234567890", 8 digits → last 6 here.
        let seed = b"12345678901234567890";
        assert_eq!(code_at(seed, step_of(59)), "287082");
        assert_eq!(code_at(seed, step_of(1_111_111_109)), "081804");
        assert_eq!(code_at(seed, step_of(1_234_567_890)), "005924");
        assert_eq!(code_at(seed, step_of(2_000_000_000)), "279037");
    }

    #[test]
    fn window_and_replay() {
        let seed = b"12345678901234567890";
        let t = 1_234_567_890;
        let code = code_at(seed, step_of(t));
        assert_eq!(verify(seed, &code, t, None), Some(step_of(t)));
        assert_eq!(verify(seed, &code, t + 30, None), Some(step_of(t)), "one step late is fine");
        assert_eq!(verify(seed, &code, t + 90, None), None, "three steps late is not");
        assert_eq!(verify(seed, &code, t, Some(step_of(t))), None, "replay refused");
        assert_eq!(verify(seed, "12345", t, None), None);
        assert_eq!(verify(seed, "abcdef", t, None), None);
    }

    #[test]
    fn base32_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
