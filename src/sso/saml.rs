//! SAML 2.0 service provider: SP-initiated login by HTTP-Redirect, responses at the
//! assertion consumer service (HTTP-POST), on samael with its xmlsec feature.
//!
//! A response goes through three gates before anything in it is believed:
//! 1. [`scan`] reads the XML as a stream (quick-xml, which expands no entity and reads no DTD)
//!    and refuses a DTD, a comment or a processing instruction anywhere, more than one
//!    assertion, an assertion anywhere but directly under the Response, a signature anywhere
//!    but directly in the Response or the Assertion, a signature whose one reference is not
//!    its own parent's ID, and signature, digest, canonicalization and transform algorithms
//!    outside the allow-list (SHA-1 only when the provider allows it).
//! 2. An encrypted assertion is decrypted with the SP's encryption key (RSA-OAEP key transport;
//!    AES-CBC or AES-GCM content) and put in place of its `EncryptedAssertion`; a Response
//!    signed around the encrypted assertion is verified before that.
//! 3. samael verifies every signature with the IdP certificates of the configuration (never a
//!    key the message carries), keeps only what they cover, and checks `Destination`, `Issuer`,
//!    `InResponseTo`, status, `Audience`, `Recipient` and the validity window with the skew.
//!
//! Every failure is a short [`SamlError`] reason that never carries the message's content.

use super::ExternalIdentity;
use crate::config::ClaimPaths;
use base64::Engine;
use openssl::pkey::{PKey, Private};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode};
use samael::metadata::{
    EncryptionMethod, EntityDescriptor, IndexedEndpoint, KeyDescriptor, SpSsoDescriptor, HTTP_POST_BINDING,
    HTTP_REDIRECT_BINDING,
};
use samael::schema::Assertion;
use samael::service_provider::ServiceProvider;
use samael::traits::ToXml;
use serde_json::{Map, Value};
use std::ffi::{c_char, c_int};
use std::time::Duration;

const NS_PROTOCOL: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const NS_ASSERTION: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const NS_DSIG: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";
const NS_XENC: &[u8] = b"http://www.w3.org/2001/04/xmlenc#";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const NAME_ID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Largest decoded response Gatehouse reads (the form field is capped at the HTTP layer).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Most elements, deepest nesting and most children of one element a response may have (xmlsec's
/// reduction through samael costs the square of the siblings it keeps: 1000 group values are
/// about 60 MB for a moment; 3000, half a gigabyte).
const MAX_ELEMENTS: usize = 5_000;
const MAX_DEPTH: usize = 48;
const MAX_CHILDREN: usize = 1_000;
/// How old a Response or Assertion may be when it arrives (its IssueInstant), before the skew.
const MAX_ISSUE_DELAY_SECONDS: i64 = 300;

const SIG_SHA2: [&str; 6] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
const DIGEST_SHA2: [&str; 3] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
const SIG_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const DIGEST_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
/// Canonicalization and transforms a signature may use: no XPath, no XSLT.
const TRANSFORMS: [&str; 7] = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/2006/12/xml-c14n11#WithComments",
];

/// Why a SAML login failed: a short reason, safe to show and to audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SamlError(pub String);

fn err(reason: impl Into<String>) -> SamlError {
    SamlError(reason.into())
}

/// Attribute names (short names or URIs) that carry the user's email, name and groups.
pub type AttributeNames = ClaimPaths;

/// What a provider needs besides its keys.
#[derive(Debug, Clone)]
pub struct SamlSettings {
    pub id: String,
    pub idp_metadata_xml: String,
    /// This SP's entity id: the metadata URL unless configured.
    pub sp_entity_id: String,
    pub acs_url: String,
    pub name_id_format: Option<String>,
    pub attributes: AttributeNames,
    pub sign_requests: bool,
    pub allow_sha1: bool,
    pub allow_unsolicited: bool,
    pub skew: Duration,
}

/// The SP's two key pairs: one signs AuthnRequests, the other decrypts assertions.
pub struct SpKeys {
    pub signing_key: PKey<Private>,
    pub signing_cert_der: Vec<u8>,
    pub encryption_key: PKey<Private>,
    pub encryption_cert_der: Vec<u8>,
}

impl std::fmt::Debug for SpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpKeys").field("keys", &"[redacted]").finish()
    }
}

/// A key pair in PEM: the private key (PKCS#8) and its self-signed certificate.
pub struct GeneratedKey {
    pub key_pem: zeroize::Zeroizing<String>,
    pub cert_pem: String,
}

/// A new RSA-2048 key and a self-signed certificate for it (ten years; SAML peers trust the
/// certificate pinned in metadata, not its chain or dates).
pub fn generate_key(common_name: &str) -> Result<GeneratedKey, SamlError> {
    let build = || -> Result<GeneratedKey, openssl::error::ErrorStack> {
        let rsa = openssl::rsa::Rsa::generate(2048)?;
        let key = PKey::from_rsa(rsa)?;
        let mut name = openssl::x509::X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        let name = name.build();
        let mut serial = openssl::bn::BigNum::new()?;
        serial.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
        let mut b = openssl::x509::X509::builder()?;
        b.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let (from, until) = (openssl::asn1::Asn1Time::days_from_now(0)?, openssl::asn1::Asn1Time::days_from_now(3650)?);
        b.set_not_before(&from)?;
        b.set_not_after(&until)?;
        b.sign(&key, openssl::hash::MessageDigest::sha256())?;
        let cert = b.build();
        Ok(GeneratedKey {
            key_pem: zeroize::Zeroizing::new(String::from_utf8_lossy(&key.private_key_to_pem_pkcs8()?).into_owned()),
            cert_pem: String::from_utf8_lossy(&cert.to_pem()?).into_owned(),
        })
    };
    build().map_err(|e| err(format!("cannot generate the SP key: {e}")))
}

impl SpKeys {
    pub fn from_pem(
        signing_key: &str,
        signing_cert: &str,
        encryption_key: &str,
        encryption_cert: &str,
    ) -> Result<Self, SamlError> {
        let key = |pem: &str| PKey::private_key_from_pem(pem.as_bytes()).map_err(|_| err("unreadable SP key"));
        Ok(Self {
            signing_key: key(signing_key)?,
            signing_cert_der: cert_der(signing_cert)?,
            encryption_key: key(encryption_key)?,
            encryption_cert_der: cert_der(encryption_cert)?,
        })
    }
}

/// The DER of a PEM certificate.
pub fn cert_der(pem: &str) -> Result<Vec<u8>, SamlError> {
    openssl::x509::X509::from_pem(pem.as_bytes()).and_then(|c| c.to_der()).map_err(|_| err("unreadable certificate"))
}

/// What the IdP's metadata says.
#[derive(Debug, Clone)]
pub struct IdpInfo {
    pub entity_id: String,
    /// The SingleSignOnService with the HTTP-Redirect binding.
    pub sso_url: String,
    /// SHA-256 fingerprints (hex) of the signing certificates, for the admin view.
    pub cert_fingerprints: Vec<String>,
    metadata: EntityDescriptor,
    certs: Vec<CertificateDer>,
}

/// Read and check IdP metadata: an EntityDescriptor with an IDPSSODescriptor, an entity id, an
/// HTTP-Redirect SingleSignOnService (https, or http on loopback), and at least one signing
/// certificate. The metadata passes the same scan as a response (no DTD, no comments' tricks).
pub fn parse_idp_metadata(xml: &str) -> Result<IdpInfo, SamlError> {
    if xml.len() > 1 << 20 {
        return Err(err("idp_metadata: at most 1 MiB"));
    }
    refuse_dtd(xml).map_err(|e| err(format!("idp_metadata: {}", e.0)))?;
    let metadata: EntityDescriptor =
        xml.parse().map_err(|_| err("idp_metadata: not SAML metadata (an md:EntityDescriptor is expected)"))?;
    let entity_id = metadata
        .entity_id
        .clone()
        .filter(|e| !e.is_empty() && e.len() <= 1024)
        .ok_or_else(|| err("idp_metadata: the EntityDescriptor has no entityID"))?;
    let descriptors = metadata.idp_sso_descriptors.as_ref().ok_or_else(|| err("idp_metadata: no IDPSSODescriptor"))?;
    let sso_url = descriptors
        .iter()
        .flat_map(|d| d.single_sign_on_services.iter())
        .find(|s| s.binding == HTTP_REDIRECT_BINDING)
        .map(|s| s.location.clone())
        .ok_or_else(|| err("idp_metadata: no SingleSignOnService with the HTTP-Redirect binding"))?;
    if !crate::config::https_or_loopback_http(&sso_url) || sso_url.contains(char::is_whitespace) {
        return Err(err("idp_metadata: the SingleSignOnService must be an https:// URL"));
    }
    let sp = ServiceProvider { idp_metadata: metadata.clone(), ..ServiceProvider::default() };
    let certs = sp
        .idp_signing_certs()
        .map_err(|_| err("idp_metadata: a signing certificate is not valid base64 DER"))?
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(err("idp_metadata: no signing certificate (KeyDescriptor use=\"signing\")"));
    }
    let mut cert_fingerprints = Vec::new();
    for c in &certs {
        let x509 = openssl::x509::X509::from_der(c.der_data())
            .map_err(|_| err("idp_metadata: a signing certificate is not an X.509 certificate"))?;
        let fp = x509
            .digest(openssl::hash::MessageDigest::sha256())
            .map_err(|_| err("idp_metadata: a signing certificate cannot be read"))?;
        cert_fingerprints.push(hex::encode(fp));
    }
    Ok(IdpInfo { entity_id, sso_url, cert_fingerprints, metadata, certs })
}

/// A login's start: the URL to send the browser to and the request id to expect back.
#[derive(Debug)]
pub struct AuthnStart {
    pub url: String,
    pub request_id: String,
}

/// An assertion that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: ExternalIdentity,
    pub assertion_id: String,
    /// When the assertion stops being usable (unix ms): how long its id is remembered.
    pub expires_at_ms: i64,
}

/// xmlsec reports what it refuses (a signature that does not match, a key it cannot find, a
/// reference it cannot follow) through an errors callback whose default writes a line to stderr.
/// That line would bypass the log: its level, its format (a JSON log would get a plain-text
/// line), and its escaping, with values from the document in it (a reference's URI, where
/// `&#10;` is a newline: a forged log line). These reports go to the log instead, at debug under
/// `gatehouse::sso::xmlsec`, escaped like every field. `verify` turns the refusal into its own
/// short reason (which the ACS answers and audits). Installed once, when the first provider is
/// made (before any verification), with one of its certificates.
fn route_xmlsec_errors(certs: &[CertificateDer]) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // samael starts xmlsec on first use, and xmlsec's OpenSSL backend installs a callback of
        // its own as it starts: start it now (checking a document without a signature loads the
        // certificate, which starts it, and fails without a report), then install ours.
        if let Some(cert) = certs.first() {
            let _ = <Crypto as CryptoProvider>::verify_signed_xml(b"<unsigned/>", cert, None);
        }
        // SAFETY: xmlsec keeps the callback in a plain global and calls it on the thread that hit
        // the error. It is set here once, before the first provider exists, so before any
        // verification reads it; `xmlsec_error` has the C signature xmlsec declares
        // (`xmlSecErrorsCallback`, xmlsec/errors.h), and libxmlsec1 is linked by samael.
        #[allow(unsafe_code)]
        unsafe {
            xmlSecErrorsSetCallback(Some(xmlsec_error));
        }
    });
}

type XmlSecErrorsCallback = unsafe extern "C" fn(
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
);

#[allow(unsafe_code)]
extern "C" {
    fn xmlSecErrorsSetCallback(callback: Option<XmlSecErrorsCallback>);
}

/// xmlsec's errors callback: one debug line per report. Never unwinds into C.
#[allow(unsafe_code)]
unsafe extern "C" fn xmlsec_error(
    _file: *const c_char,
    _line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: xmlsec passes NUL-terminated strings (or NULL, handled above) that live
            // for the duration of the call; they are copied before it returns.
            unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let _ = std::panic::catch_unwind(|| {
        tracing::debug!(
            target: "gatehouse::sso::xmlsec",
            func = %text(func),
            object = %text(error_object),
            subject = %text(error_subject),
            reason,
            detail = %text(msg),
            "xmlsec refused"
        );
    });
}

/// One SAML identity provider, as this SP sees it.
#[derive(Debug)]
pub struct SamlProvider {
    settings: SamlSettings,
    idp: IdpInfo,
    keys: SpKeys,
}

impl SamlProvider {
    pub fn new(settings: SamlSettings, keys: SpKeys) -> Result<Self, SamlError> {
        let idp = parse_idp_metadata(&settings.idp_metadata_xml)?;
        route_xmlsec_errors(&idp.certs);
        Ok(Self { settings, idp, keys })
    }

    pub fn idp(&self) -> &IdpInfo {
        &self.idp
    }

    /// samael's view of this provider, trusting `cert` alone, or no certificate (`None`: only
    /// after Gatehouse verified the signature around an encrypted assertion itself).
    fn service_provider(&self, cert: Option<&CertificateDer>, unsolicited: bool) -> ServiceProvider {
        let mut idp_metadata = self.idp.metadata.clone();
        if let Some(ds) = idp_metadata.idp_sso_descriptors.as_mut() {
            for d in ds.iter_mut() {
                d.key_descriptors = cert
                    .map(|c| KeyDescriptor {
                        key_use: Some("signing".to_string()),
                        key_info: samael::key_info::KeyInfo {
                            id: None,
                            x509_data: Some(samael::key_info::X509Data {
                                certificates: vec![base64::engine::general_purpose::STANDARD.encode(c.der_data())],
                            }),
                        },
                        encryption_methods: None,
                    })
                    .into_iter()
                    .collect();
            }
        }
        let skew = self.skew();
        ServiceProvider {
            entity_id: Some(self.settings.sp_entity_id.clone()),
            acs_url: Some(self.settings.acs_url.clone()),
            idp_metadata,
            authn_name_id_format: self.settings.name_id_format.clone(),
            allow_idp_initiated: unsolicited,
            max_issue_delay: chrono::Duration::seconds(MAX_ISSUE_DELAY_SECONDS) + skew,
            max_clock_skew: skew,
            allowed_signature_algorithms: self.allowed_algorithms(),
            ..ServiceProvider::default()
        }
    }

    /// The clock skew tolerated on assertion times.
    fn skew(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.settings.skew.as_secs()).unwrap_or(300))
    }

    /// What xmlsec accepts (samael's allow-list has no SHA-1: with it allowed, no list, and the
    /// scan is what keeps the rest out).
    fn allowed_algorithms(&self) -> Option<Vec<AllowedSignatureAlgorithm>> {
        (!self.settings.allow_sha1).then(|| {
            vec![
                AllowedSignatureAlgorithm::RsaSha256,
                AllowedSignatureAlgorithm::RsaSha384,
                AllowedSignatureAlgorithm::RsaSha512,
                AllowedSignatureAlgorithm::EcdsaSha256,
                AllowedSignatureAlgorithm::EcdsaSha384,
                AllowedSignatureAlgorithm::EcdsaSha512,
            ]
        })
    }

    /// The SP metadata: entity id, ACS (HTTP-POST), NameID format, the signing certificate and
    /// the encryption certificate with the algorithms Gatehouse decrypts.
    pub fn sp_metadata(&self) -> Result<String, SamlError> {
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        let key = |usage: &str, der: &[u8], methods: Option<Vec<EncryptionMethod>>| KeyDescriptor {
            key_use: Some(usage.to_string()),
            key_info: samael::key_info::KeyInfo {
                id: None,
                x509_data: Some(samael::key_info::X509Data { certificates: vec![b64(der)] }),
            },
            encryption_methods: methods,
        };
        let methods = [
            "http://www.w3.org/2009/xmlenc11#aes256-gcm",
            "http://www.w3.org/2009/xmlenc11#aes128-gcm",
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
        ]
        .map(|a| EncryptionMethod { algorithm: a.to_string() })
        .to_vec();
        let descriptor = SpSsoDescriptor {
            protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".to_string()),
            key_descriptors: Some(vec![
                key("signing", &self.keys.signing_cert_der, None),
                key("encryption", &self.keys.encryption_cert_der, Some(methods)),
            ]),
            name_id_formats: self.settings.name_id_format.clone().map(|f| vec![f]),
            authn_requests_signed: Some(self.settings.sign_requests),
            want_assertions_signed: Some(true),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.to_string(),
                location: self.settings.acs_url.clone(),
                index: 0,
                is_default: Some(true),
                ..IndexedEndpoint::default()
            }],
            ..SpSsoDescriptor::default()
        };
        let entity = EntityDescriptor {
            entity_id: Some(self.settings.sp_entity_id.clone()),
            sp_sso_descriptors: Some(vec![descriptor]),
            ..EntityDescriptor::default()
        };
        entity.to_string().map_err(|_| err("cannot write the SP metadata"))
    }

    /// An AuthnRequest by HTTP-Redirect, signed (RSA-SHA256 over the query) when configured.
    /// `request_id` must be unguessable: it is what the response must answer.
    pub fn authn_request(&self, relay_state: &str, request_id: &str) -> Result<AuthnStart, SamlError> {
        let sp = self.service_provider(None, false);
        let mut request =
            sp.make_authentication_request(&self.idp.sso_url).map_err(|_| err("cannot build the AuthnRequest"))?;
        request.id = request_id.to_string();
        request.force_authn = None;
        let url = if self.settings.sign_requests {
            request.signed_redirect(relay_state, &self.keys.signing_key)
        } else {
            request.redirect(relay_state)
        }
        .map_err(|_| err("cannot encode the AuthnRequest"))?
        .ok_or_else(|| err("the IdP has no SingleSignOnService"))?;
        Ok(AuthnStart { url: url.to_string(), request_id: request_id.to_string() })
    }

    /// Check a `SAMLResponse` form value (base64) that must answer `request_id` (or, with
    /// `None`, is unsolicited: accepted only when the provider allows it), and read who it says
    /// signed in. Blocking (XML signature work): run it on the blocking pool.
    pub fn verify(&self, saml_response: &str, request_id: Option<&str>) -> Result<Verified, SamlError> {
        let compact: String = saml_response.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if compact.len() > MAX_RESPONSE_BYTES * 4 / 3 + 4 {
            return Err(err("the response is too large"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| err("SAMLResponse is not base64"))?;
        let xml = String::from_utf8(bytes).map_err(|_| err("the response is not UTF-8 XML"))?;
        if request_id.is_none() && !self.settings.allow_unsolicited {
            return Err(err("unsolicited responses are not accepted from this provider"));
        }
        let first = scan(&xml, self.settings.allow_sha1)?;
        // An encrypted assertion must carry its own signature: what is finally checked is always
        // a signature over the assertion Gatehouse reads, never a conclusion drawn from another
        // parse of the message.
        let (xml, scan, uniform) = match first.encrypted.clone() {
            None => (xml, first, None),
            Some(_) if first.response_signed => {
                // The Response's signature covers the ciphertext: verified first (no decryption
                // oracle), and decryption works on what xmlsec verified, not on the text sent.
                let verified = self.verified_text(&xml)?;
                let base = scan(&verified, self.settings.allow_sha1)?;
                let span =
                    base.encrypted.clone().ok_or_else(|| err("the signed Response holds no encrypted assertion"))?;
                let spliced = self.decrypt_into(&verified, span, base.response_signature.clone())?;
                (spliced.0, spliced.1, None)
            }
            Some(span) => {
                // Unauthenticated ciphertext: every failure from decryption to the signature
                // check has one answer, so the answers are no padding oracle.
                let same = "the encrypted assertion cannot be decrypted, or is not signed by the IdP";
                let (spliced, rescan) = self.decrypt_into(&xml, span, None).map_err(|_| err(same))?;
                (spliced, rescan, Some(same))
            }
        };
        let hide = |e: SamlError| uniform.map_or(e, err);
        if !scan.response_signed && !scan.assertion_signed {
            return Err(hide(err("the response is not signed")));
        }
        if scan.assertions != 1 {
            return Err(hide(err("a response must carry exactly one assertion")));
        }
        // The Response's own fields are checked by samael when the Response is signed; when only
        // the Assertion is, they are still required to be right.
        if let Some(d) = &scan.destination {
            if d != &self.settings.acs_url {
                return Err(hide(err("Destination is not this service's ACS URL")));
            }
        }
        if scan.status.as_deref() != Some(STATUS_SUCCESS) {
            return Err(hide(err("the IdP answered with an error status")));
        }
        match (request_id, scan.in_response_to.as_deref()) {
            (Some(expected), Some(got)) if expected != got => {
                return Err(hide(err("InResponseTo does not name the request Gatehouse sent")));
            }
            // An unsolicited response answers nothing: a solicited one, carried to another
            // browser, is refused here rather than accepted as unsolicited.
            (None, Some(_)) => return Err(err("a response to a request is accepted only by the login that sent it")),
            _ => {}
        }
        let ids: Vec<&str> = request_id.into_iter().collect();
        let possible = if request_id.is_some() { Some(ids.as_slice()) } else { None };
        // One certificate at a time: xmlsec answers a key of another type (an RSA certificate
        // for an ECDSA signature) with an error rather than a mismatch, which would end a try
        // of the whole list at its first certificate.
        let mut result = Err(samael::service_provider::Error::FailedToValidateSignature);
        for cert in &self.idp.certs {
            result = self.service_provider(Some(cert), request_id.is_none()).parse_xml_response_with_mode(
                &xml,
                possible,
                ReduceMode::ValidateAndMarkNoAncestors,
            );
            if !matches!(result, Err(samael::service_provider::Error::FailedToValidateSignature)) {
                break;
            }
        }
        let assertion = result.map_err(reason_of).map_err(hide)?;
        if request_id.is_none() {
            let answers = assertion
                .subject
                .iter()
                .flat_map(|s| s.subject_confirmations.iter().flatten())
                .any(|c| c.subject_confirmation_data.as_ref().is_some_and(|d| d.in_response_to.is_some()));
            if answers {
                return Err(err("a response to a request is accepted only by the login that sent it"));
            }
        }
        self.read(assertion)
    }

    /// What xmlsec verified of `xml` with one of the IdP certificates: its own serialization of
    /// the signed element.
    fn verified_text(&self, xml: &str) -> Result<String, SamlError> {
        let algorithms = self.allowed_algorithms();
        self.idp
            .certs
            .iter()
            .find_map(|cert| {
                Crypto::reduce_xml_to_signed_with_allowed_algorithms(
                    xml,
                    std::slice::from_ref(cert),
                    ReduceMode::ValidateAndMarkNoAncestors,
                    algorithms.as_deref(),
                )
                .ok()
            })
            .ok_or_else(|| err("the signature is not valid with the IdP's certificates"))
    }

    /// `xml` with the encrypted assertion at `span` replaced by its plaintext and the Response's
    /// signature at `drop` (which covered the ciphertext) taken out; scanned again, and the
    /// assertion must be signed itself.
    fn decrypt_into(
        &self,
        xml: &str,
        span: std::ops::Range<usize>,
        drop: Option<std::ops::Range<usize>>,
    ) -> Result<(String, Scan), SamlError> {
        let element = xml.get(span.clone()).ok_or_else(|| err("not well-formed XML"))?;
        let plain = self.decrypt(element)?;
        let mut out = String::with_capacity(xml.len() + plain.len());
        let mut at = 0;
        if let Some(d) = drop.filter(|d| d.end <= span.start) {
            out.push_str(xml.get(..d.start).ok_or_else(|| err("not well-formed XML"))?);
            at = d.end;
        }
        out.push_str(xml.get(at..span.start).ok_or_else(|| err("not well-formed XML"))?);
        out.push_str(&plain);
        out.push_str(xml.get(span.end..).ok_or_else(|| err("not well-formed XML"))?);
        let rescan = scan(&out, self.settings.allow_sha1)?;
        if rescan.encrypted.is_some() {
            return Err(err("an encrypted assertion inside an encrypted assertion"));
        }
        if !rescan.assertion_signed {
            return Err(err("an encrypted assertion must carry its own signature"));
        }
        Ok((out, rescan))
    }

    /// Decrypt an `EncryptedAssertion` element. Every failure has the same reason, so the
    /// answer tells nothing about where decryption went wrong.
    fn decrypt(&self, element: &str) -> Result<String, SamlError> {
        let failed = || err("the encrypted assertion cannot be decrypted with this service's key");
        let parts = encrypted_parts(element).ok_or_else(failed)?;
        let (key_cipher, key_method) = (&parts.key_cipher, parts.key_method.as_str());
        let (value_cipher, value_method) = (&parts.data_cipher, parts.data_method.as_str());
        if key_method != "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p" {
            // RSA PKCS#1 v1.5 key transport is an oracle (Bleichenbacher): never.
            return Err(err("the assertion's key transport is not rsa-oaep-mgf1p"));
        }
        let b64 = |s: &str| {
            let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| failed())
        };
        let wrapped = b64(key_cipher)?;
        let rsa = self.keys.encryption_key.rsa().map_err(|_| failed())?;
        let mut key = zeroize::Zeroizing::new(vec![0u8; rsa.size() as usize]);
        let n = rsa.private_decrypt(&wrapped, &mut key, openssl::rsa::Padding::PKCS1_OAEP).map_err(|_| failed())?;
        key.truncate(n);
        let data = b64(value_cipher)?;
        let plain = decrypt_content(value_method, &key, &data).ok_or_else(failed)?;
        let text = String::from_utf8(plain).map_err(|_| failed())?;
        let text = text.trim();
        // Drop an XML declaration, if the IdP encrypted one.
        let text = match text.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map(|(_, r)| r.trim_start()).ok_or_else(failed)?,
            None => text,
        };
        Ok(text.to_string())
    }

    /// The identity in a verified assertion.
    fn read(&self, assertion: Assertion) -> Result<Verified, SamlError> {
        let conditions = assertion.conditions.as_ref().ok_or_else(|| err("the assertion has no Conditions"))?;
        let audiences = conditions.audience_restrictions.as_deref().unwrap_or_default();
        if audiences.is_empty()
            || !audiences.iter().all(|r| r.audience.iter().any(|a| a == &self.settings.sp_entity_id))
        {
            return Err(err("the assertion's Audience is not this service"));
        }
        let subject = assertion.subject.as_ref().ok_or_else(|| err("the assertion has no Subject"))?;
        let name_id = subject.name_id.as_ref().ok_or_else(|| err("the assertion has no NameID"))?;
        let value = name_id.value.trim();
        if value.is_empty() || value.len() > 512 {
            return Err(err("the NameID is empty or too long"));
        }
        let skew = self.skew();
        if assertion.issue_instant > chrono::Utc::now() + skew {
            return Err(err("the assertion was issued in the future"));
        }
        // Its id is remembered as long as any part of it could still be accepted: the latest of
        // its limits, and no less than the IssueInstant's own window.
        let mut until = assertion.issue_instant + chrono::Duration::seconds(MAX_ISSUE_DELAY_SECONDS);
        let limits = conditions.not_on_or_after.into_iter().chain(
            subject
                .subject_confirmations
                .iter()
                .flatten()
                .filter_map(|c| c.subject_confirmation_data.as_ref().and_then(|d| d.not_on_or_after)),
        );
        for t in limits {
            until = until.max(t);
        }
        let mut claims = Map::new();
        for statement in assertion.attribute_statements.iter().flatten() {
            for a in &statement.attributes {
                let values: Vec<Value> = a
                    .values
                    .iter()
                    .filter_map(|v| v.value.as_ref())
                    .map(|v| Value::String(v.trim().to_string()))
                    .take(1000)
                    .collect();
                for key in [a.name.as_ref(), a.friendly_name.as_ref()].into_iter().flatten() {
                    if !key.is_empty() && key.len() <= 256 && !claims.contains_key(key) {
                        claims.insert(key.clone(), Value::Array(values.clone()));
                    }
                }
            }
        }
        let format = name_id.format.clone().unwrap_or_default();
        let identity = self.identity(value, &format, claims);
        Ok(Verified { identity, assertion_id: assertion.id, expires_at_ms: (until + skew + skew).timestamp_millis() })
    }
}

impl SamlProvider {
    /// The identity a NameID and attributes (name → list of values) stand for; also what the
    /// dry-run preview reads.
    pub fn identity(&self, name_id: &str, format: &str, attributes: Map<String, Value>) -> ExternalIdentity {
        let mut claims = attributes;
        claims.insert("name_id".into(), Value::String(name_id.to_string()));
        claims.insert("name_id_format".into(), Value::String(format.to_string()));
        // An email-format NameID is the email when no attribute carries one.
        let paths = &self.settings.attributes;
        if format == NAME_ID_EMAIL && !claims.contains_key(&paths.email) {
            claims.insert(paths.email.clone(), Value::Array(vec![Value::String(name_id.to_string())]));
        }
        let mut identity =
            ExternalIdentity::from_claims(&self.settings.id, &self.idp.entity_id, name_id, claims, paths);
        // A single-valued attribute arrives as a list of one.
        if identity.email.is_none() {
            identity.email = first_value(&identity.raw_claims, &paths.email);
        }
        if identity.name.is_none() {
            identity.name = first_value(&identity.raw_claims, &paths.name);
        }
        if !identity.email_verified {
            identity.email_verified = first_value(&identity.raw_claims, &paths.email_verified)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        }
        identity
    }
}

fn first_value(claims: &Map<String, Value>, path: &str) -> Option<String> {
    super::claim_at(claims, path)
        .map(super::values_of)
        .and_then(|v| v.into_iter().next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// samael's error as a short reason: which check failed, never the values.
fn reason_of(e: samael::service_provider::Error) -> SamlError {
    use samael::service_provider::Error as E;
    err(match e {
        E::DestinationValidationError { .. } => "Destination is not this service's ACS URL",
        E::AssertionExpired { .. } | E::ResponseExpired { .. } => "the response was issued too long ago",
        E::AssertionBearerSubjectConfirmationMissing | E::AssertionSubjectConfirmationMissing => {
            "the assertion has no usable bearer SubjectConfirmation"
        }
        E::AssertionSubjectConfirmationExpired { .. } | E::AssertionConditionExpired { .. } => {
            "the assertion has expired"
        }
        E::AssertionSubjectConfirmationExpiredBefore { .. } | E::AssertionConditionExpiredBefore { .. } => {
            "the assertion is not valid yet"
        }
        E::AssertionIssuerMismatch { .. } | E::ResponseIssuerMismatch { .. } => "the Issuer is not the IdP",
        E::AssertionConditionAudienceRestrictionFailed { .. } => "the assertion's Audience is not this service",
        E::AssertionRecipientMismatch { .. } => "the assertion's Recipient is not this service's ACS URL",
        E::AssertionInResponseToInvalid { .. } | E::ResponseInResponseToInvalid { .. } => {
            "InResponseTo does not name the request Gatehouse sent"
        }
        E::ResponseBadStatusCode { .. } => "the IdP answered with an error status",
        E::FailedToValidateSignature | E::CryptoXmlError(_) => "the signature is not valid with the IdP's certificates",
        _ => "the response is not a SAML response Gatehouse can read",
    })
}

/// Decrypt XML Encryption content: the IV first; CBC with the ISO 10126 padding XML Encryption
/// uses (the last byte says how many to drop), or GCM with its 16-byte tag last.
fn decrypt_content(method: &str, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    use openssl::symm::{decrypt_aead, Cipher, Crypter, Mode};
    let (cipher, gcm) = match method {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => (Cipher::aes_128_cbc(), false),
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => (Cipher::aes_192_cbc(), false),
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => (Cipher::aes_256_cbc(), false),
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => (Cipher::aes_128_gcm(), true),
        "http://www.w3.org/2009/xmlenc11#aes192-gcm" => (Cipher::aes_192_gcm(), true),
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => (Cipher::aes_256_gcm(), true),
        _ => return None,
    };
    if key.len() != cipher.key_len() {
        return None;
    }
    if gcm {
        let (iv_len, tag_len) = (12, 16);
        if data.len() < iv_len + tag_len {
            return None;
        }
        let (iv, rest) = data.split_at(iv_len);
        let (body, tag) = rest.split_at(rest.len() - tag_len);
        return decrypt_aead(cipher, key, Some(iv), &[], body, tag).ok();
    }
    let block = cipher.block_size();
    if data.len() < 2 * block || !data.len().is_multiple_of(block) {
        return None;
    }
    let (iv, body) = data.split_at(block);
    let mut c = Crypter::new(cipher, Mode::Decrypt, key, Some(iv)).ok()?;
    c.pad(false);
    let mut out = vec![0u8; body.len() + block];
    let mut n = c.update(body, &mut out).ok()?;
    n += c.finalize(&mut out[n..]).ok()?;
    out.truncate(n);
    let pad = usize::from(*out.last()?);
    if pad == 0 || pad > block || pad > out.len() {
        return None;
    }
    out.truncate(out.len() - pad);
    Some(out)
}

/// What an `EncryptedAssertion` holds: the content's algorithm and ciphertext, and the wrapped
/// key's (the `EncryptedKey` inside `EncryptedData/KeyInfo`, or next to `EncryptedData`).
struct EncryptedParts {
    data_method: String,
    data_cipher: String,
    key_method: String,
    key_cipher: String,
}

/// Read an `EncryptedAssertion` element: exactly one `EncryptedData` and one `EncryptedKey`;
/// an OAEP digest other than SHA-1 (the only one rsa-oaep-mgf1p knows) is refused.
fn encrypted_parts(element: &str) -> Option<EncryptedParts> {
    let mut reader = NsReader::from_str(element);
    reader.config_mut().expand_empty_elements = true;
    let (mut data_method, mut data_cipher, mut key_method, mut key_cipher) = (None, None, None, None);
    let (mut datas, mut keys) = (0, 0);
    // Local names of the open xenc/ds elements ("" for others).
    let mut stack: Vec<&'static str> = Vec::new();
    loop {
        match reader.read_resolved_event().ok()? {
            (ns, Event::Start(e)) => {
                let ns: &[u8] = match ns {
                    ResolveResult::Bound(n) => n.into_inner(),
                    _ => b"",
                };
                let name: &'static str = match (ns, e.local_name().as_ref()) {
                    (NS_XENC, b"EncryptedData") => "EncryptedData",
                    (NS_XENC, b"EncryptedKey") => "EncryptedKey",
                    (NS_XENC, b"EncryptionMethod") => "EncryptionMethod",
                    (NS_XENC, b"CipherData") => "CipherData",
                    (NS_XENC, b"CipherValue") => "CipherValue",
                    (NS_DSIG, b"DigestMethod") => "DigestMethod",
                    _ => "",
                };
                let algorithm = || {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == b"Algorithm")
                        .and_then(|a| a.unescape_value().ok())
                        .map(|v| v.into_owned())
                };
                let parent = stack.last().copied();
                match (name, parent) {
                    ("EncryptedData", _) => datas += 1,
                    ("EncryptedKey", _) => keys += 1,
                    ("EncryptionMethod", Some("EncryptedData")) => data_method = algorithm(),
                    ("EncryptionMethod", Some("EncryptedKey")) => key_method = algorithm(),
                    ("DigestMethod", Some("EncryptionMethod"))
                        if algorithm().as_deref() != Some("http://www.w3.org/2000/09/xmldsig#sha1") =>
                    {
                        return None
                    }
                    _ => {}
                }
                stack.push(name);
            }
            (_, Event::Text(t)) => {
                let n = stack.len();
                if n >= 3 && stack[n - 1] == "CipherValue" && stack[n - 2] == "CipherData" {
                    let text = t.unescape().ok()?.into_owned();
                    match stack[n - 3] {
                        "EncryptedData" => data_cipher = Some(text),
                        "EncryptedKey" => key_cipher = Some(text),
                        _ => {}
                    }
                }
            }
            (_, Event::End(_)) => {
                stack.pop()?;
            }
            (_, Event::Eof) => break,
            _ => {}
        }
    }
    if datas != 1 || keys != 1 {
        return None;
    }
    Some(EncryptedParts {
        data_method: data_method?,
        data_cipher: data_cipher?,
        key_method: key_method?,
        key_cipher: key_cipher?,
    })
}

/// What the stream scan found in a response.
#[derive(Debug, Default)]
pub struct Scan {
    pub assertions: usize,
    pub response_signed: bool,
    pub assertion_signed: bool,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    pub status: Option<String>,
    /// Byte range of the one `EncryptedAssertion`, if the assertion is encrypted.
    pub encrypted: Option<std::ops::Range<usize>>,
    /// Byte range of the Response's own `ds:Signature`.
    pub response_signature: Option<std::ops::Range<usize>>,
}

/// Refuse a DTD before any XML parser that could act on it sees the text.
fn refuse_dtd(xml: &str) -> Result<(), SamlError> {
    let mut reader = NsReader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::DocType(_)) => return Err(err("a DTD is not accepted")),
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(_) => return Err(err("not well-formed XML")),
        }
    }
}

/// One open element on the scan's stack.
struct Open {
    kind: Kind,
    id: Option<String>,
    children: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Response,
    Assertion,
    Status,
    Signature,
    SignedInfo,
    Reference,
    Encrypted,
    Other,
}

/// A signature being read: its parent's kind and ID, its references and algorithms.
struct SigScan {
    parent: Kind,
    parent_id: Option<String>,
    start: usize,
    references: Vec<String>,
    algorithms_ok: bool,
    canonicalizations: usize,
    /// Transforms of the reference being read.
    transforms: usize,
}

/// The structural gate every response (and the plaintext of an encrypted one) passes: see the
/// module comment. Reads the text once, as a stream, with bounded depth and element count.
pub fn scan(xml: &str, allow_sha1: bool) -> Result<Scan, SamlError> {
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().expand_empty_elements = true;
    let mut out = Scan::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut sig: Option<SigScan> = None;
    let mut elements = 0usize;
    let mut encrypted_start: Option<usize> = None;
    let mut seen_root = false;
    let sig_ok = |a: &str| SIG_SHA2.contains(&a) || (allow_sha1 && a == SIG_SHA1);
    let digest_ok = |a: &str| DIGEST_SHA2.contains(&a) || (allow_sha1 && a == DIGEST_SHA1);
    // What libxml2 (which xmlsec uses, in recovery mode) and this reader could read differently
    // is refused up front: characters XML does not allow (a NUL ends libxml2's reading),
    // declarations of another encoding (libxml2 decodes UTF-7), `<` in attribute values,
    // entity references in namespace names, text outside the root.
    if xml
        .chars()
        .any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
    {
        return Err(err("the message holds characters XML does not allow"));
    }
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_resolved_event().map_err(|_| err("not well-formed XML"))?;
        match event {
            (ns, Event::Start(e)) => {
                elements += 1;
                if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(err("the response is too large or too deeply nested"));
                }
                if let Some(parent) = stack.last_mut() {
                    parent.children += 1;
                    if parent.children > MAX_CHILDREN {
                        return Err(err("an element of the response has too many children"));
                    }
                }
                for a in e.attributes() {
                    let a = a.map_err(|_| err("not well-formed XML"))?;
                    let namespace = a.key.as_ref() == b"xmlns" || a.key.as_ref().starts_with(b"xmlns:");
                    if a.value.contains(&b'<') || (namespace && a.value.contains(&b'&')) {
                        return Err(err("an attribute value holds markup"));
                    }
                    a.unescape_value().map_err(|_| err("not well-formed XML"))?;
                }
                let ns: &[u8] = match ns {
                    ResolveResult::Bound(n) => n.into_inner(),
                    _ => b"",
                };
                let local = e.local_name();
                let local = local.as_ref();
                let mut id = None;
                let attr = |name: &[u8]| -> Result<Option<String>, SamlError> {
                    for a in e.attributes() {
                        let a = a.map_err(|_| err("not well-formed XML"))?;
                        if a.key.as_ref() == name {
                            let v = a.unescape_value().map_err(|_| err("not well-formed XML"))?;
                            return Ok(Some(v.into_owned()));
                        }
                    }
                    Ok(None)
                };
                let depth = stack.len();
                let parent = stack.last().map(|o| o.kind);
                let kind = match (ns, local) {
                    (NS_PROTOCOL, b"Response") if depth == 0 => {
                        out.destination = attr(b"Destination")?;
                        out.in_response_to = attr(b"InResponseTo")?;
                        id = attr(b"ID")?;
                        Kind::Response
                    }
                    (NS_ASSERTION, b"Assertion") => {
                        if parent != Some(Kind::Response) || depth != 1 {
                            return Err(err("an assertion is somewhere other than directly in the Response"));
                        }
                        out.assertions += 1;
                        id = attr(b"ID")?;
                        Kind::Assertion
                    }
                    (NS_ASSERTION, b"EncryptedAssertion") => {
                        if parent != Some(Kind::Response) || depth != 1 || encrypted_start.is_some() {
                            return Err(err("an encrypted assertion is misplaced or repeated"));
                        }
                        out.assertions += 1;
                        encrypted_start = Some(before);
                        Kind::Encrypted
                    }
                    (NS_PROTOCOL, b"Status") if parent == Some(Kind::Response) => Kind::Status,
                    (NS_PROTOCOL, b"StatusCode") if parent == Some(Kind::Status) => {
                        if out.status.is_none() {
                            out.status = attr(b"Value")?;
                        }
                        Kind::Other
                    }
                    (NS_DSIG, b"Signature") => {
                        let Some(p @ (Kind::Response | Kind::Assertion)) = parent else {
                            return Err(err("a signature is somewhere other than in the Response or the Assertion"));
                        };
                        if sig.is_some() {
                            return Err(err("a signature inside a signature"));
                        }
                        sig = Some(SigScan {
                            parent: p,
                            parent_id: stack.last().and_then(|o| o.id.clone()),
                            start: before,
                            references: Vec::new(),
                            algorithms_ok: true,
                            canonicalizations: 0,
                            transforms: 0,
                        });
                        Kind::Signature
                    }
                    (NS_DSIG, b"SignedInfo") if parent == Some(Kind::Signature) => Kind::SignedInfo,
                    (NS_DSIG, b"Reference") if parent == Some(Kind::SignedInfo) => {
                        if let Some(s) = sig.as_mut() {
                            s.references.push(attr(b"URI")?.unwrap_or_default());
                            s.transforms = 0;
                        }
                        Kind::Reference
                    }
                    (NS_DSIG, b"SignatureMethod") if parent == Some(Kind::SignedInfo) => {
                        let a = attr(b"Algorithm")?.unwrap_or_default();
                        if let Some(s) = sig.as_mut() {
                            s.algorithms_ok &= sig_ok(&a);
                        }
                        Kind::Other
                    }
                    (NS_DSIG, b"CanonicalizationMethod") if parent == Some(Kind::SignedInfo) => {
                        let a = attr(b"Algorithm")?.unwrap_or_default();
                        if let Some(s) = sig.as_mut() {
                            s.algorithms_ok &= TRANSFORMS[1..].contains(&a.as_str());
                            s.canonicalizations += 1;
                        }
                        Kind::Other
                    }
                    (NS_DSIG, b"DigestMethod") if parent == Some(Kind::Reference) => {
                        let a = attr(b"Algorithm")?.unwrap_or_default();
                        if let Some(s) = sig.as_mut() {
                            s.algorithms_ok &= digest_ok(&a);
                        }
                        Kind::Other
                    }
                    (NS_DSIG, b"Transform") if sig.is_some() => {
                        let a = attr(b"Algorithm")?.unwrap_or_default();
                        if let Some(s) = sig.as_mut() {
                            s.algorithms_ok &= TRANSFORMS.contains(&a.as_str());
                            // Enveloped-signature and one canonicalization: each transform is
                            // work xmlsec does before it checks the signature value.
                            s.transforms += 1;
                            s.algorithms_ok &= s.transforms <= 2;
                        }
                        Kind::Other
                    }
                    (NS_PROTOCOL | NS_ASSERTION | NS_DSIG | NS_XENC, _) if depth == 0 => {
                        return Err(err("the message is not a SAML Response"))
                    }
                    _ if depth == 0 => return Err(err("the message is not a SAML Response")),
                    _ => Kind::Other,
                };
                if depth == 0 {
                    if seen_root {
                        return Err(err("more than one root element"));
                    }
                    seen_root = true;
                }
                stack.push(Open { kind, id, children: 0 });
            }
            (_, Event::End(_)) => {
                let open = stack.pop().ok_or_else(|| err("not well-formed XML"))?;
                let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
                if open.kind == Kind::Signature {
                    let s = sig.take().ok_or_else(|| err("not well-formed XML"))?;
                    if !s.algorithms_ok || s.canonicalizations != 1 {
                        return Err(err(
                            "the signature uses an algorithm that is not allowed (SHA-1, XPath, XSLT, a chain of transforms…)",
                        ));
                    }
                    let own = s.parent_id.as_ref().map(|id| format!("#{id}"));
                    if s.references.len() != 1 || own.is_none() || s.references.first() != own.as_ref() {
                        return Err(err("the signature does not cover the element that carries it"));
                    }
                    match s.parent {
                        Kind::Response => {
                            out.response_signed = true;
                            out.response_signature = Some(s.start..end);
                        }
                        _ => out.assertion_signed = true,
                    }
                }
                if let (Kind::Encrypted, Some(start)) = (open.kind, encrypted_start) {
                    out.encrypted = Some(start..end);
                }
            }
            (_, Event::Text(t)) => {
                let text = t.unescape().map_err(|_| err("not well-formed XML"))?;
                if stack.is_empty() && !text.trim().is_empty() {
                    return Err(err("text outside the root element"));
                }
            }
            (_, Event::CData(_)) if !stack.is_empty() => {}
            (_, Event::CData(_)) => return Err(err("text outside the root element")),
            (_, Event::Decl(d)) if !seen_root && elements == 0 => {
                let utf8 = match d.encoding() {
                    None => true,
                    Some(Ok(enc)) => enc.eq_ignore_ascii_case(b"utf-8"),
                    Some(Err(_)) => false,
                };
                let v1 = d.version().is_ok_and(|v| v.as_ref() == b"1.0");
                if !utf8 || !v1 {
                    return Err(err("only XML 1.0 in UTF-8 is accepted"));
                }
            }
            (_, Event::DocType(_)) => return Err(err("a DTD is not accepted")),
            (_, Event::Comment(_)) => return Err(err("comments are not accepted in a SAML message")),
            (_, Event::PI(_) | Event::Decl(_)) => return Err(err("processing instructions are not accepted")),
            (_, Event::Empty(_)) => return Err(err("not well-formed XML")),
            (_, Event::Eof) => break,
        }
    }
    if !seen_root || !stack.is_empty() {
        return Err(err("the message is not a SAML Response"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_refuses_what_a_response_never_holds() {
        let ok = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1" Destination="https://sp/acs"><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="a1"/></samlp:Response>"#;
        let s = scan(ok, false).unwrap();
        assert_eq!(s.assertions, 1);
        assert_eq!(s.destination.as_deref(), Some("https://sp/acs"));
        assert_eq!(s.status.as_deref(), Some(STATUS_SUCCESS));
        assert!(!s.response_signed && !s.assertion_signed);
        let bomb = format!("<!DOCTYPE r [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;\">]>{ok}");
        assert_eq!(scan(&bomb, false).unwrap_err().0, "a DTD is not accepted");
        let comment = ok.replace("<saml:Assertion", "<!-- x --><saml:Assertion");
        assert!(scan(&comment, false).is_err());
        let nested = ok.replace(
            "<samlp:Status>",
            "<samlp:Extensions><saml:Assertion ID=\"a0\"/></samlp:Extensions><samlp:Status>",
        );
        assert!(scan(&nested, false).is_err());
        let two = ok.replace("<saml:Assertion ID=\"a1\"/>", "<saml:Assertion ID=\"a1\"/><saml:Assertion ID=\"a2\"/>");
        assert_eq!(scan(&two, false).unwrap().assertions, 2);
        assert!(scan("<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"/>", false).is_err());
        let pi = ok.replace("<samlp:Status>", "<?evil x?><samlp:Status>");
        assert!(scan(&pi, false).is_err());
    }

    #[test]
    fn scan_checks_what_a_signature_covers_and_how() {
        let sig = |uri: &str, alg: &str| {
            format!(
                r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="{alg}"/><ds:Reference URI="{uri}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>x</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>x</ds:SignatureValue></ds:Signature>"#
            )
        };
        let doc = |s: &str| {
            format!(
                r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1"><saml:Assertion ID="a1"><saml:Issuer>i</saml:Issuer>{s}</saml:Assertion></samlp:Response>"#
            )
        };
        let good = doc(&sig("#a1", SIG_SHA2[0]));
        let s = scan(&good, false).unwrap();
        assert!(s.assertion_signed && !s.response_signed);
        assert!(scan(&doc(&sig("#r1", SIG_SHA2[0])), false).is_err(), "covers another element");
        assert!(scan(&doc(&sig("", SIG_SHA2[0])), false).is_err(), "covers the whole document");
        assert!(scan(&doc(&sig("#a1", SIG_SHA1)), false).is_err(), "SHA-1 off by default");
        assert!(scan(&doc(&sig("#a1", SIG_SHA1)), true).is_ok());
        let xslt = good.replace(
            "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
        );
        assert!(scan(&xslt, false).is_err());
    }

    #[test]
    fn content_decryption_checks_lengths_and_padding() {
        let key = [7u8; 16];
        let iv = [1u8; 16];
        let mut plain = b"<a/>".to_vec();
        plain.extend_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 12]);
        let enc = openssl::symm::Cipher::aes_128_cbc();
        let mut c = openssl::symm::Crypter::new(enc, openssl::symm::Mode::Encrypt, &key, Some(&iv)).unwrap();
        c.pad(false);
        let mut out = vec![0u8; 32];
        let n = c.update(&plain, &mut out).unwrap();
        out.truncate(n);
        let mut data = iv.to_vec();
        data.extend_from_slice(&out);
        let m = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
        assert_eq!(decrypt_content(m, &key, &data).unwrap(), b"<a/>");
        assert!(decrypt_content(m, &key, &data[..20]).is_none());
        assert!(decrypt_content(m, &key, &[]).is_none());
        assert!(decrypt_content("http://www.w3.org/2009/xmlenc11#aes128-gcm", &key, &[1, 2, 3]).is_none());
        assert!(decrypt_content(m, &[1u8; 5], &data).is_none());
    }
}
