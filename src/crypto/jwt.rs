//! JWT signing and verification (jsonwebtoken) and signing-key generation. Verification pins
//! the algorithm to the key named by `kid`: a token whose header asks for another algorithm
//! (`none`, HS256 "signed" with a public key, …) is refused before any signature check.
//! Time claims are checked against the caller's clock, not the system clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The signature algorithms Gatehouse signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlg {
    ES256,
    RS256,
    EdDSA,
}

impl JwtAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::ES256 => "ES256",
            JwtAlg::RS256 => "RS256",
            JwtAlg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(JwtAlg::ES256),
            "RS256" => Some(JwtAlg::RS256),
            "EdDSA" => Some(JwtAlg::EdDSA),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::ES256 => Algorithm::ES256,
            JwtAlg::RS256 => Algorithm::RS256,
            JwtAlg::EdDSA => Algorithm::EdDSA,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("signing key error: {0}")]
    Key(String),
}

/// A freshly generated key pair: the private key as PKCS#8 PEM (to be sealed) and the public
/// key as a JWK (JSON text, published in JWKS).
pub struct GeneratedKey {
    pub kid: String,
    pub alg: JwtAlg,
    pub private_pem: Zeroizing<String>,
    pub public_jwk: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeneratedKey({}, {}, _)", self.kid, self.alg.as_str())
    }
}

/// Generate a signing key. RSA keys are 2048-bit.
pub fn generate(alg: JwtAlg, kid: String) -> Result<GeneratedKey, JwtError> {
    let pair = match alg {
        JwtAlg::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        JwtAlg::RS256 => rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
        JwtAlg::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
    }
    .map_err(|e| JwtError::Key(e.to_string()))?;
    let private_pem = Zeroizing::new(pair.serialize_pem());
    let signer = Signer::from_pem(kid.clone(), alg, &private_pem)?;
    let mut jwk = match alg {
        JwtAlg::EdDSA => serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
        }),
        _ => serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&signer.key, alg.algorithm())
                .map_err(|e| JwtError::Key(e.to_string()))?,
        )
        .map_err(|e| JwtError::Key(e.to_string()))?,
    };
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), kid.clone().into());
        obj.insert("alg".into(), alg.as_str().into());
        obj.insert("use".into(), "sig".into());
    }
    Ok(GeneratedKey { kid, alg, private_pem, public_jwk: jwk.to_string() })
}

/// A private key that signs.
pub struct Signer {
    pub kid: String,
    pub alg: JwtAlg,
    key: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, {}, _)", self.kid, self.alg.as_str())
    }
}

impl Signer {
    pub fn from_pem(kid: String, alg: JwtAlg, pem: &str) -> Result<Self, JwtError> {
        let key = match alg {
            JwtAlg::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            JwtAlg::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            JwtAlg::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self { kid, alg, key })
    }

    /// Sign `claims` with `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, JwtError> {
        let mut header = Header::new(self.alg.algorithm());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| JwtError::Key(e.to_string()))
    }
}

/// A public key that verifies, pinned to one algorithm.
pub struct Verifier {
    alg: JwtAlg,
    key: DecodingKey,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({})", self.alg.as_str())
    }
}

impl Verifier {
    /// From the public JWK made by [`generate`].
    pub fn from_jwk(alg: JwtAlg, jwk_json: &str) -> Result<Self, JwtError> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(jwk_json).map_err(|e| JwtError::Key(e.to_string()))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self { alg, key })
    }
}

/// The registered claims every Gatehouse JWT carries and that [`verify`] checks.
pub trait TimeClaims {
    fn iat(&self) -> i64;
    fn exp(&self) -> i64;
}

/// The `kid` in a token's header, if the header is readable.
pub fn kid_of(token: &str) -> Result<String, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    header.kid.ok_or(JwtError::UnknownKey)
}

/// Verify `token` with the key `lookup` returns for its `kid`: algorithm pinned to that key,
/// signature, issuer, audience, then `iat`/`exp` against `now` (Unix seconds).
pub fn verify<T, F>(token: &str, lookup: F, issuer: &str, audience: &str, now: i64) -> Result<T, JwtError>
where
    T: DeserializeOwned + TimeClaims,
    F: FnOnce(&str) -> Option<std::sync::Arc<Verifier>>,
{
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    let kid = header.kid.ok_or(JwtError::UnknownKey)?;
    let verifier = lookup(&kid).ok_or(JwtError::UnknownKey)?;
    if header.alg != verifier.alg.algorithm() {
        return Err(JwtError::AlgorithmMismatch);
    }
    let mut v = Validation::new(verifier.alg.algorithm());
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.set_required_spec_claims(&["iss", "aud", "exp", "sub"]);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    let data = jsonwebtoken::decode::<T>(token, &verifier.key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
            ErrorKind::InvalidAudience => JwtError::WrongAudience,
            ErrorKind::InvalidAlgorithm => JwtError::AlgorithmMismatch,
            _ => JwtError::Malformed,
        }
    })?;
    let claims = data.claims;
    if claims.exp() <= now {
        return Err(JwtError::Expired);
    }
    // A token from the future (beyond a small skew) was not made by this server's clock.
    if claims.iat() > now + 60 {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug, Serialize, Deserialize)]
    struct C {
        iss: String,
        aud: String,
        sub: String,
        iat: i64,
        exp: i64,
    }
    impl TimeClaims for C {
        fn iat(&self) -> i64 {
            self.iat
        }
        fn exp(&self) -> i64 {
            self.exp
        }
    }

    fn claims(exp: i64) -> C {
        C { iss: "https://gh".into(), aud: "gatehouse".into(), sub: "u1".into(), iat: 1000, exp }
    }

    #[test]
    fn every_algorithm_round_trips_and_is_pinned() {
        for alg in [JwtAlg::ES256, JwtAlg::EdDSA, JwtAlg::RS256] {
            let g = generate(alg, format!("k-{}", alg.as_str())).unwrap();
            assert!(!g.public_jwk.contains("\"d\""), "no private part in the JWK");
            let signer = Signer::from_pem(g.kid.clone(), alg, &g.private_pem).unwrap();
            let ver = Arc::new(Verifier::from_jwk(alg, &g.public_jwk).unwrap());
            let t = signer.sign(&claims(2000)).unwrap();
            let look = |k: &str| (k == g.kid).then(|| ver.clone());
            let ok: C = verify(&t, look, "https://gh", "gatehouse", 1500).unwrap();
            assert_eq!(ok.sub, "u1");
            assert_eq!(verify::<C, _>(&t, look, "https://gh", "gatehouse", 2000).unwrap_err(), JwtError::Expired);
            assert_eq!(verify::<C, _>(&t, look, "https://x", "gatehouse", 1500).unwrap_err(), JwtError::WrongIssuer);
            assert_eq!(verify::<C, _>(&t, look, "https://gh", "other", 1500).unwrap_err(), JwtError::WrongAudience);
            assert_eq!(
                verify::<C, _>(&t, |_| None, "https://gh", "gatehouse", 1500).unwrap_err(),
                JwtError::UnknownKey
            );
            // A flipped signature byte.
            let mut bad = t.clone();
            let last = bad.pop().unwrap();
            bad.push(if last == 'A' { 'B' } else { 'A' });
            assert!(verify::<C, _>(&bad, look, "https://gh", "gatehouse", 1500).is_err());
        }
    }

    #[test]
    fn none_and_hs256_confusion_are_refused() {
        let g = generate(JwtAlg::ES256, "k1".into()).unwrap();
        let ver = Arc::new(Verifier::from_jwk(JwtAlg::ES256, &g.public_jwk).unwrap());
        let look = |_: &str| Some(ver.clone());
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(2000)).unwrap());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#));
        assert!(verify::<C, _>(&none, look, "https://gh", "gatehouse", 1500).is_err());
        // HS256 keyed with the public JWK text: refused before any MAC is computed.
        let hs = jsonwebtoken::encode(
            &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
            &claims(2000),
            &EncodingKey::from_secret(g.public_jwk.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify::<C, _>(&hs, look, "https://gh", "gatehouse", 1500).unwrap_err(),
            JwtError::AlgorithmMismatch
        );
    }
}
