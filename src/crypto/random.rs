//! Randomness from the operating system's CSPRNG.

use rand::rngs::OsRng;
use rand::RngCore;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// A random password of `len` characters from an unambiguous alphabet (≈5.9 bits each).
pub fn password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
    // Rejection sampling keeps the distribution uniform.
    let limit = 256 - (256 % ALPHABET.len());
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut b = [0u8; 1];
        OsRng.fill_bytes(&mut b);
        let v = usize::from(b[0]);
        if v < limit {
            out.push(char::from(ALPHABET[v % ALPHABET.len()]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_differ_and_have_length() {
        let a = super::password(24);
        let b = super::password(24);
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }
}
