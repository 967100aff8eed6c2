//! SAML benchmark (issue 8), in-process, nothing on the network. Prints one JSON object:
//!
//! - `verify_assertion_per_s` / `verify_response_per_s`: `SamlProvider::verify` calls per second
//!   on a valid response (base64, as the ACS form carries it) whose Assertion is signed (what most
//!   IdPs send), and one whose Response is signed, on one thread (`_1`) and on one thread per core
//!   (`_n`). The responses are built here and signed by the `xmlsec1` CLI with an RSA-2048 IdP key
//!   (enveloped signature, exclusive c14n, RSA-SHA256, the certificate in KeyInfo), re-signed at
//!   each round so that their IssueInstant stays fresh; every call must succeed.
//! - `rsa_verify_per_s_1` / `_n`: the baseline, measured in the same rounds: plain RSA-2048
//!   PKCS#1 v1.5 SHA-256 signature verifications (openssl) over a buffer the size of the signed
//!   Assertion, the one public-key operation and digest a signed Assertion needs at the least.
//!   `ratio_*` = verify calls / RSA verifications: what the XML work (base64, scan, parse, c14n,
//!   reading the assertion) leaves of the bare signature check.
//! - `bomb_refusal_us`: median time `verify` takes to refuse a billion-laughs response (a DTD of
//!   10 entities of 10 references each), for information.
//!
//! Medians over `BENCH_SAML_ROUNDS` (3) rounds of `BENCH_SAML_SECONDS` (5) per figure; the order
//! of the three figures alternates from round to round. Run by tests/bench/run.sh (section i);
//! alone: `cargo run --release --example bench-saml`. Needs `xmlsec1` on the PATH.

use base64::Engine;
use gatehouse::config::ClaimPaths;
use gatehouse::sso::saml::{generate_key, GeneratedKey, SamlProvider, SamlSettings, SpKeys};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

const ENTITY_ID: &str = "https://idp.bench.example/saml";
const SP_ENTITY_ID: &str = "https://127.0.0.1:8443/v1/sso/saml/bench/metadata";
const ACS_URL: &str = "https://127.0.0.1:8443/v1/sso/saml/bench/acs";
const REQUEST_ID: &str = "_0b1d4c1e5a2f4e8b9c7d6e5f4a3b2c1d";
const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";

fn random_id() -> String {
    format!("_{}", hex::encode(rand::random::<[u8; 16]>()))
}

fn instant(unix: i64) -> Result<String, BoxError> {
    Ok(time::OffsetDateTime::from_unix_timestamp(unix)?.format(&time::format_description::well_known::Rfc3339)?)
}

/// The certificate as base64 DER on one line.
fn cert_b64(cert_pem: &str) -> String {
    cert_pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect()
}

fn idp_metadata(cert_pem: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="{NS_DSIG}" entityID="{ENTITY_ID}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.bench.example/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
        cert_b64(cert_pem)
    )
}

/// An enveloped-signature template for the element whose ID is `id`, to go right after its
/// Issuer; `xmlsec1 --sign` fills in the digest and the signature.
fn signature_template(id: &str, cert_pem: &str) -> String {
    format!(
        concat!(
            r#"<ds:Signature xmlns:ds="{dsig}"><ds:SignedInfo>"#,
            r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
            r#"<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>"#,
            r##"<ds:Reference URI="#{id}"><ds:Transforms>"##,
            r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>"#,
            r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>"#,
            r#"<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>"#,
            r#"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"#,
            r#"</ds:Signature>"#
        ),
        dsig = NS_DSIG,
        id = id,
        cert = cert_b64(cert_pem),
    )
}

/// Sign the one `ds:Signature` template of `xml` with `xmlsec1`; `element` is the
/// `namespace:name` of the element whose `ID` the signature references.
fn xmlsec_sign(dir: &Path, xml: &str, element: &str) -> Result<String, BoxError> {
    let input = dir.join("in.xml");
    let output = dir.join("out.xml");
    std::fs::write(&input, xml)?;
    let out = Command::new("xmlsec1")
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(dir.join("idp-key.pem"))
        .arg("--id-attr:ID")
        .arg(element)
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .output()
        .map_err(|e| format!("cannot run xmlsec1: {e}"))?;
    if !out.status.success() {
        return Err(format!("xmlsec1 --sign failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let signed = std::fs::read_to_string(&output)?;
    let signed = signed.trim();
    // xmlsec1 writes an XML declaration; the response goes without one.
    Ok(match signed.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, r)| r.trim_start().to_string()).ok_or("bad declaration")?,
        None => signed.to_string(),
    })
}

/// The two signed responses of a round and the size of the signed Assertion.
struct Responses {
    assertion_signed_b64: String,
    response_signed_b64: String,
    assertion_signed_bytes: usize,
    signed_assertion_bytes: usize,
}

/// A response to `REQUEST_ID` for alice, issued now, valid for an hour, with the attributes an
/// IdP commonly sends (email, name, three groups); `signed` chooses what carries the signature.
fn response(dir: &Path, cert_pem: &str, sign_response: bool) -> Result<(String, usize), BoxError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (issued, not_before, until) = (instant(now)?, instant(now - 5)?, instant(now + 3600)?);
    let (response_id, assertion_id) = (random_id(), random_id());
    let ns_a = "urn:oasis:names:tc:SAML:2.0:assertion";
    let ns_p = "urn:oasis:names:tc:SAML:2.0:protocol";
    let head = format!(
        r#"<saml:Assertion xmlns:saml="{ns_a}" ID="{assertion_id}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{ENTITY_ID}</saml:Issuer>"#
    );
    let mut body = String::new();
    body += r#"<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">alice@corp.example</saml:NameID>"#;
    body += &format!(
        r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData InResponseTo="{REQUEST_ID}" NotOnOrAfter="{until}" Recipient="{ACS_URL}"/></saml:SubjectConfirmation></saml:Subject>"#
    );
    body += &format!(
        r#"<saml:Conditions NotBefore="{not_before}" NotOnOrAfter="{until}"><saml:AudienceRestriction><saml:Audience>{SP_ENTITY_ID}</saml:Audience></saml:AudienceRestriction></saml:Conditions>"#
    );
    body += &format!(
        r#"<saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="{}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"#,
        random_id()
    );
    body += "<saml:AttributeStatement>";
    for (name, values) in [
        ("email", &["alice@corp.example"][..]),
        ("name", &["Alice Example"][..]),
        ("groups", &["engineering", "admins", "corp-all"][..]),
    ] {
        body += &format!(
            r#"<saml:Attribute Name="{name}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">"#
        );
        for v in values {
            body += &format!("<saml:AttributeValue>{v}</saml:AttributeValue>");
        }
        body += "</saml:Attribute>";
    }
    body += "</saml:AttributeStatement></saml:Assertion>";
    let assertion = if sign_response {
        format!("{head}{body}")
    } else {
        let template = signature_template(&assertion_id, cert_pem);
        xmlsec_sign(dir, &format!("{head}{template}{body}"), &format!("{ns_a}:Assertion"))?
    };
    let assertion_bytes = assertion.len();
    let response_head = format!(
        r#"<samlp:Response xmlns:samlp="{ns_p}" xmlns:saml="{ns_a}" ID="{response_id}" Version="2.0" IssueInstant="{issued}" Destination="{ACS_URL}" InResponseTo="{REQUEST_ID}"><saml:Issuer>{ENTITY_ID}</saml:Issuer>"#
    );
    let response_body = format!(
        r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{assertion}</samlp:Response>"#
    );
    let xml = if sign_response {
        let template = signature_template(&response_id, cert_pem);
        xmlsec_sign(dir, &format!("{response_head}{template}{response_body}"), &format!("{ns_p}:Response"))?
    } else {
        format!("{response_head}{response_body}")
    };
    Ok((xml, assertion_bytes))
}

fn responses(dir: &Path, cert_pem: &str) -> Result<Responses, BoxError> {
    let (a, signed_assertion_bytes) = response(dir, cert_pem, false)?;
    let (r, _) = response(dir, cert_pem, true)?;
    let b64 = |x: &str| base64::engine::general_purpose::STANDARD.encode(x.as_bytes());
    Ok(Responses {
        assertion_signed_b64: b64(&a),
        response_signed_b64: b64(&r),
        assertion_signed_bytes: a.len(),
        signed_assertion_bytes,
    })
}

/// An unsigned response behind a billion-laughs DTD (`&lol9;`, 10^9 "lol", as the NameID).
fn bomb() -> String {
    let mut dtd = String::from("<!DOCTYPE samlp:Response [\n<!ENTITY lol0 \"lol\">\n");
    for i in 1..10 {
        dtd += &format!("<!ENTITY lol{i} \"{}\">\n", format!("&lol{};", i - 1).repeat(10));
    }
    dtd += "]>\n";
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
{dtd}<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{}" Version="2.0" IssueInstant="2026-01-01T00:00:00Z" Destination="{ACS_URL}" InResponseTo="{REQUEST_ID}"><saml:Issuer>{ENTITY_ID}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="{}" Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>{ENTITY_ID}</saml:Issuer><saml:Subject><saml:NameID>&lol9;</saml:NameID></saml:Subject></saml:Assertion></samlp:Response>"#,
        random_id(),
        random_id()
    );
    base64::engine::general_purpose::STANDARD.encode(xml.as_bytes())
}

/// CPU time this process has used (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    } else {
        f64::NAN
    }
}

/// Calls of `f` per second by `threads` threads, each calling it in a loop for `secs`, and the
/// cores they got (CPU time / wall time: below `threads` when the machine was busy); the first
/// failure ends the run with it.
fn rate<F>(threads: usize, secs: f64, f: &F) -> Result<(f64, f64), String>
where
    F: Fn() -> Result<(), String> + Sync,
{
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let results: Vec<Result<(u64, f64), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let start = Instant::now();
                    let end = start + Duration::from_secs_f64(secs);
                    let mut n = 0u64;
                    while Instant::now() < end {
                        f()?;
                        n += 1;
                    }
                    Ok((n, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into()))).collect()
    });
    let mut calls = 0u64;
    let mut longest = 0f64;
    for r in results {
        let (n, t) = r?;
        calls += n;
        longest = longest.max(t);
    }
    Ok((calls as f64 / longest, (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64()))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    let rounds: usize = env_or("BENCH_SAML_ROUNDS", 3).max(1);
    let secs: f64 = env_or("BENCH_SAML_SECONDS", 5.0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let dir = tempfile::tempdir()?;

    // The IdP's key and certificate, its metadata, and the SP's own two keys.
    let idp: GeneratedKey = generate_key("bench-idp")?;
    std::fs::write(dir.path().join("idp-key.pem"), idp.key_pem.as_bytes())?;
    let (signing, encryption) = (generate_key("bench-sp")?, generate_key("bench-sp")?);
    let keys = SpKeys::from_pem(&signing.key_pem, &signing.cert_pem, &encryption.key_pem, &encryption.cert_pem)?;
    let settings = SamlSettings {
        id: "bench".into(),
        idp_metadata_xml: idp_metadata(&idp.cert_pem),
        sp_entity_id: SP_ENTITY_ID.into(),
        acs_url: ACS_URL.into(),
        name_id_format: None,
        attributes: ClaimPaths::default(),
        sign_requests: true,
        allow_sha1: false,
        allow_unsolicited: false,
        skew: Duration::from_secs(60),
    };
    let provider = SamlProvider::new(settings, keys)?;

    // The baseline's key pair and signature: the same kind of key, over the same many bytes.
    let rsa_key = openssl::pkey::PKey::private_key_from_pem(idp.key_pem.as_bytes())?;
    let rsa_pub = openssl::x509::X509::from_pem(idp.cert_pem.as_bytes())?.public_key()?;

    let check = |b64: &str| -> Result<(), String> {
        let v = provider.verify(b64, Some(REQUEST_ID)).map_err(|e| format!("verify refused: {e}"))?;
        if v.identity.subject != "alice@corp.example" || v.identity.groups.len() != 3 {
            return Err(format!("verify read the wrong identity: {:?}", v.identity.subject));
        }
        Ok(())
    };

    let mut series: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut sizes = (0, 0, 0, 0);
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    for round in 0..rounds {
        // Fresh responses each round: the IssueInstant may be at most 5 minutes (plus skew) old.
        let r = responses(dir.path(), &idp.cert_pem)?;
        check(&r.assertion_signed_b64)?;
        check(&r.response_signed_b64)?;
        let buffer: Vec<u8> = (0..r.signed_assertion_bytes).map(|i| (i % 251) as u8).collect();
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &rsa_key)?;
        let signature = signer.sign_oneshot_to_vec(&buffer)?;
        let rsa_check = || -> Result<(), String> {
            let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &rsa_pub)
                .map_err(|e| e.to_string())?;
            match v.verify_oneshot(&signature, &buffer) {
                Ok(true) => Ok(()),
                _ => Err("the baseline signature did not verify".into()),
            }
        };
        sizes = (
            r.assertion_signed_bytes,
            r.assertion_signed_b64.len(),
            r.signed_assertion_bytes,
            r.response_signed_b64.len(),
        );
        let mut order = ["rsa", "assertion", "response"];
        if round % 2 == 1 {
            order.reverse();
        }
        for &threads in &thread_counts {
            for what in order {
                let (per_s, cores_used) = match what {
                    "rsa" => rate(threads, secs, &rsa_check)?,
                    "assertion" => rate(threads, secs, &|| check(&r.assertion_signed_b64))?,
                    _ => rate(threads, secs, &|| check(&r.response_signed_b64))?,
                };
                let suffix = if threads == 1 { "1" } else { "n" };
                let key = match what {
                    "rsa" => format!("rsa_verify_per_s_{suffix}"),
                    other => format!("verify_{other}_per_s_{suffix}"),
                };
                eprintln!(
                    "bench-saml: round {}/{rounds}, {threads} thread(s), {what}: {per_s:.0}/s on {cores_used:.2} cores",
                    round + 1
                );
                series.entry(format!("{key}_cores")).or_default().push(cores_used);
                series.entry(key).or_default().push(per_s);
            }
        }
    }

    // A refused bomb, for information: the median of 200 refusals.
    let bomb = bomb();
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        if provider.verify(&bomb, Some(REQUEST_ID)).is_ok() {
            return Err("the DTD bomb was accepted".into());
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let bomb_reason = provider.verify(&bomb, Some(REQUEST_ID)).err().map(|e| e.0).unwrap_or_default();

    let mut out = serde_json::Map::new();
    for (k, v) in &series {
        if k.ends_with("_cores") {
            out.insert(k.clone(), serde_json::json!((median(v) * 100.0).round() / 100.0));
            continue;
        }
        out.insert(k.clone(), serde_json::json!(median(v).round()));
        out.insert(format!("{k}_rounds"), serde_json::json!(v.iter().map(|x| x.round()).collect::<Vec<_>>()));
    }
    for suffix in ["1", "n"] {
        if let Some(rsa) = series.get(&format!("rsa_verify_per_s_{suffix}")).map(|v| median(v)) {
            for what in ["assertion", "response"] {
                if let Some(v) = series.get(&format!("verify_{what}_per_s_{suffix}")).map(|v| median(v)) {
                    let ratio = (v / rsa * 10_000.0).round() / 10_000.0;
                    out.insert(format!("ratio_{what}_{suffix}"), serde_json::json!(ratio));
                }
            }
        }
    }
    out.insert("threads_n".into(), serde_json::json!(cores));
    out.insert("rounds".into(), serde_json::json!(rounds));
    out.insert("seconds".into(), serde_json::json!(secs));
    out.insert("response_bytes".into(), serde_json::json!(sizes.0));
    out.insert("response_b64_bytes".into(), serde_json::json!(sizes.1));
    out.insert("signed_assertion_bytes".into(), serde_json::json!(sizes.2));
    out.insert("response_signed_b64_bytes".into(), serde_json::json!(sizes.3));
    out.insert("bomb_refusal_us".into(), serde_json::json!((median(&times) * 10.0).round() / 10.0));
    out.insert("bomb_reason".into(), serde_json::json!(bomb_reason));
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
