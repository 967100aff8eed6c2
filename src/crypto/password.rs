//! Password hashing: argon2id, PHC strings, verification with the parameters stored in the hash.

use super::{CryptoError, SecretString};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

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

/// Verify a password against a PHC string, with the parameters recorded in the string.
/// A malformed hash verifies as false.
pub fn verify(password: &SecretString, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
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
    }
}
