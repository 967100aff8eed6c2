//! Password hashing: argon2id, PHC strings, verification with the parameters stored in the hash.

use super::{CryptoError, SecretString};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroize;

/// Argon2id cost parameters. Defaults are OWASP's: 19 MiB, t=2, p=1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

fn hasher(policy: PasswordPolicy) -> Result<Argon2<'static>, CryptoError> {
    let params = Params::new(policy.memory_kib, policy.iterations, policy.parallelism, None)
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hash a password into a PHC string.
pub fn hash(password: &SecretString, policy: PasswordPolicy) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher(policy)?
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))
}

/// A PHC string with the policy's parameters, a random salt and a random "hash" that no
/// password produces. Verifying against it costs exactly what verifying a real hash costs, so
/// an unknown account answers in the same time; making it costs nothing.
pub fn dummy(policy: PasswordPolicy) -> String {
    use argon2::password_hash::Output;
    let salt = SaltString::generate(&mut OsRng);
    let out = super::random::bytes::<32>();
    let mut buf = [0u8; 64];
    match Output::new(&out).ok().and_then(|o| o.b64_encode(&mut buf).ok().map(str::to_string)) {
        Some(encoded) => format!(
            "$argon2id$v=19$m={},t={},p={}${}${encoded}",
            policy.memory_kib,
            policy.iterations,
            policy.parallelism,
            salt.as_str()
        ),
        None => String::new(),
    }
}

thread_local! {
    /// argon2 working memory, kept per hashing thread: a fresh 19 MiB allocation for every login
    /// would be page-faulted in each time, which costs a good share of the hash itself.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verify a password against a PHC string, with the parameters recorded in the string, in
/// constant time. A malformed hash verifies as false.
pub fn verify(password: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    if parsed.algorithm.as_str() != "argon2id" {
        return Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok();
    }
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&parsed), parsed.salt, parsed.hash) else {
        return false;
    };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or(Version::V0x13);
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let need = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, version, params);
    let mut out = vec![0u8; expected.len()];
    let computed = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() < need {
            blocks.resize(need, argon2::Block::default());
        }
        argon.hash_password_into_with_memory(password.expose().as_bytes(), salt, &mut out, &mut blocks[..need])
    });
    let ok = computed.is_ok() && super::ct_eq(&out, expected.as_bytes());
    out.zeroize();
    ok
}

/// Whether a stored hash was made with other parameters than the current policy.
pub fn needs_rehash(phc: &str, policy: PasswordPolicy) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return true };
    let Ok(params) = Params::try_from(&parsed) else { return true };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() != policy.memory_kib
        || params.t_cost() != policy.iterations
        || params.p_cost() != policy.parallelism
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordPolicy {
        PasswordPolicy { memory_kib: 1024, iterations: 1, parallelism: 1 }
    }

    #[test]
    fn hash_and_verify() {
        let pw = SecretString::new("correct horse battery".into());
        let h = hash(&pw, cheap()).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&pw, &h));
        assert!(!verify(&SecretString::new("wrong horse battery".into()), &h));
        assert!(!verify(&pw, "not a phc string"));
        assert!(!needs_rehash(&h, cheap()));
        assert!(needs_rehash(&h, PasswordPolicy::default()));
        let d = dummy(cheap());
        assert!(!needs_rehash(&d, cheap()), "{d}");
        assert!(PasswordHash::new(&d).is_ok(), "{d}");
        assert!(!verify(&pw, &d));
    }
}
