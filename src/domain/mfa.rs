//! TOTP second factor: enrolment (seed sealed at rest, `otpauth://` URI and a QR code as SVG),
//! activation by a first valid code, ten one-time recovery codes stored hashed, and disabling
//! (password and a current code). Every change is audited.

use super::audit::{self, Event, Origin};
use super::auth::Principal;
use super::unix_ms;
use crate::crypto::token::digest;
use crate::crypto::{random, totp, SecretString};
use crate::error::AppError;
use crate::state::AppState;

/// The AAD a user's sealed seed is bound to.
pub fn seed_aad(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// How recovery codes are stored: SHA-256 of the code without dashes, upper case.
pub fn recovery_hash(code: &str) -> [u8; 32] {
    let canonical: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    digest(&canonical)
}

/// What enrolment shows once.
#[derive(Debug)]
pub struct Enrolment {
    pub secret: SecretString,
    pub otpauth_uri: SecretString,
    pub qr_svg: SecretString,
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Start (or restart) enrolment: a new seed, not active until verified.
pub async fn enroll(state: &AppState, who: &Principal, origin: &Origin) -> Result<Enrolment, AppError> {
    let uid = who.user_id.clone();
    let lookup = uid.clone();
    let user =
        state.db.read(move |tx| tx.user_by_id(&lookup).map_err(AppError::from)).await?.ok_or(AppError::NotFound)?;
    if user.kind != "local" {
        return Err(AppError::Forbidden("Anonymous users cannot enrol a second factor; sign up first.".into()));
    }
    if user.totp_enabled {
        return Err(AppError::Conflict("TOTP is already active; disable it first to enrol a new device.".into()));
    }
    let seed = totp::new_seed();
    let sealed = state.auth.sealing.seal(&seed, &seed_aad(&uid))?;
    let secret = totp::base32(&seed);
    let label = user.email.clone().unwrap_or_else(|| uid.clone());
    let issuer = "Gatehouse";
    let uri = format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={}&period={}",
        url_encode(issuer),
        url_encode(&label),
        url_encode(issuer),
        totp::DIGITS,
        totp::STEP_SECONDS
    );
    let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(AppError::internal)?;
    let svg = qr.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build();
    let now = state.clock.now();
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    state
        .db
        .write(move |tx| {
            tx.user_set_totp(&uid, Some(&sealed), false, unix_ms(now))?;
            audit::record(tx, &key, now, &Event::new("auth.mfa.totp.enrolment_started", actor).target(uid).origin(&o))
                .map(|_| ())
        })
        .await?;
    Ok(Enrolment {
        secret: SecretString::new(secret),
        otpauth_uri: SecretString::new(uri),
        qr_svg: SecretString::new(svg),
    })
}

fn new_recovery_codes() -> Vec<SecretString> {
    (0..10)
        .map(|_| {
            let raw = totp::base32(&random::bytes::<7>()); // 12 characters, 56 bits
            SecretString::new(format!("{}-{}", &raw[..5], &raw[5..10]))
        })
        .collect()
}

/// Activate TOTP with a first valid code; answers the ten recovery codes, once.
pub async fn verify(
    state: &AppState,
    who: &Principal,
    code: &str,
    origin: &Origin,
) -> Result<Vec<SecretString>, AppError> {
    let uid = who.user_id.clone();
    let lookup = uid.clone();
    let user =
        state.db.read(move |tx| tx.user_by_id(&lookup).map_err(AppError::from)).await?.ok_or(AppError::NotFound)?;
    if user.totp_enabled {
        return Err(AppError::Conflict("TOTP is already active.".into()));
    }
    let Some(sealed) = user.totp_seed else {
        return Err(AppError::Conflict("Start enrolment first (POST /v1/auth/mfa/totp/enroll).".into()));
    };
    let seed = state.auth.sealing.open(&sealed, &seed_aad(&uid))?;
    let now = state.clock.now();
    let Some(step) = totp::verify(&seed, code, now.unix_timestamp(), user.totp_last_step) else {
        return Err(AppError::Invalid("The code is not valid; check the device's clock and try the next code.".into()));
    };
    let codes = new_recovery_codes();
    let hashes: Vec<[u8; 32]> = codes.iter().map(|c| recovery_hash(c.expose())).collect();
    let session = who.session_id().map(str::to_string);
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    state
        .db
        .write(move |tx| {
            tx.user_set_totp(&uid, Some(&sealed), true, unix_ms(now))?;
            tx.user_set_totp_step(&uid, step)?;
            tx.recovery_codes_replace(&uid, &hashes)?;
            // The session that proved the code now counts as a two-factor session (its next
            // refreshed token says so).
            if let Some(sid) = &session {
                tx.session_set_mfa(sid, r#"["pwd","otp"]"#)?;
            }
            audit::record(tx, &key, now, &Event::new("auth.mfa.totp.enabled", actor).target(uid).origin(&o)).map(|_| ())
        })
        .await?;
    Ok(codes)
}

/// Turn TOTP off: needs the password and a current code (or a recovery code).
pub async fn disable(
    state: &AppState,
    who: &Principal,
    password: SecretString,
    code: &str,
    origin: &Origin,
) -> Result<(), AppError> {
    let uid = who.user_id.clone();
    let lookup = uid.clone();
    let user =
        state.db.read(move |tx| tx.user_by_id(&lookup).map_err(AppError::from)).await?.ok_or(AppError::NotFound)?;
    if !user.totp_enabled {
        return Err(AppError::Conflict("TOTP is not active.".into()));
    }
    super::auth::check_account_throttle(state, &user)?;
    let (ok, _) = state.auth.verify_password(password, user.password_hash.clone()).await?;
    if !ok {
        super::auth::record_password_failure(state, &user, "wrong_password_disabling_totp", origin).await?;
    }
    let now = state.clock.now();
    let seed = match &user.totp_seed {
        Some(s) => Some(state.auth.sealing.open(s, &seed_aad(&uid))?),
        None => None,
    };
    let step = seed.as_ref().and_then(|seed| totp::verify(seed, code, now.unix_timestamp(), user.totp_last_step));
    let recovery = recovery_hash(code);
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    let done = state
        .db
        .write(move |tx| {
            let code_ok = step.is_some() || (ok && tx.recovery_code_use(&uid, &recovery, unix_ms(now))?);
            if !(ok && code_ok) {
                audit::record(
                    tx,
                    &key,
                    now,
                    &Event::new("auth.mfa.totp.disable_failed", actor)
                        .target(uid)
                        .outcome(audit::Outcome::Failure)
                        .origin(&o),
                )?;
                return Ok::<_, AppError>(false);
            }
            tx.user_set_totp(&uid, None, false, unix_ms(now))?;
            tx.recovery_codes_replace(&uid, &[])?;
            audit::record(tx, &key, now, &Event::new("auth.mfa.totp.disabled", actor).target(uid).origin(&o))?;
            Ok(true)
        })
        .await?;
    if done {
        Ok(())
    } else {
        Err(AppError::Forbidden("The password or the code is incorrect.".into()))
    }
}
