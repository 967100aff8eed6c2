//! Signing in and proving who is calling: sign-up, password login (with per-account throttling,
//! per-address rate limiting and an MFA step), anonymous sessions, refresh, logout, and the
//! checks every credential goes through on every request.
//!
//! Unknown email, wrong password and disabled account give the same answer after the same
//! work (a dummy hash is verified when there is no real one). Password hashing runs off the
//! request workers, on a pool of one thread per core at a lower priority, behind a semaphore of
//! the same size.

use super::audit::{self, Actor, Event, Origin, Outcome};
use super::keys::{KeyPolicy, KeyRing};
use super::sessions::{self, AccessClaims, Lifetimes, Method, Refreshed, Revocations};
use super::{accounts, unix_ms};
use crate::config::{AuthConfig, LockoutConfig, RateLimitConfig, SignupMode};
use crate::crypto::jwt::{self, JwtAlg, JwtError};
use crate::crypto::password::{self, PasswordPolicy};
use crate::crypto::token::{self, Kind};
use crate::crypto::{ct_eq, PseudonymKey, SealingKey, SecretString};
use crate::db::{SessionRow, UserRow};
use crate::error::AppError;
use crate::state::AppState;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// The one answer to a failed password login, whatever the reason.
pub const INVALID_CREDENTIALS: &str = "The email or password is incorrect.";

/// Settings derived from `[auth]`, in the units the code uses.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub signup: SignupMode,
    pub issuer: String,
    pub audience: String,
    pub life: Lifetimes,
    pub anonymous_ms: i64,
    pub require_mfa: bool,
    pub challenge_ms: i64,
    pub pat_max_ms: i64,
    pub invite_ms: i64,
    pub jwks_max_age: u64,
    pub lockout: LockoutConfig,
    pub rate: RateLimitConfig,
    pub keys: KeyPolicy,
    pub password: PasswordPolicy,
}

impl AuthSettings {
    pub fn from_config(a: &AuthConfig) -> Self {
        let secs = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let access_ms = secs(a.access_token_ttl_seconds);
        Self {
            signup: a.signup,
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            life: Lifetimes {
                access_ms,
                refresh_ms: secs(a.refresh_token_ttl_seconds),
                max_ms: secs(a.session_max_lifetime_seconds),
            },
            anonymous_ms: secs(a.anonymous_lifetime_seconds),
            require_mfa: a.require_mfa,
            challenge_ms: secs(a.mfa_challenge_ttl_seconds),
            pat_max_ms: secs(a.pat_max_lifetime_days.saturating_mul(86_400)),
            invite_ms: secs(a.invite_ttl_hours.saturating_mul(3600)),
            jwks_max_age: a.jwks_max_age_seconds,
            lockout: a.lockout.clone(),
            rate: a.rate_limit.clone(),
            keys: KeyPolicy {
                alg: JwtAlg::parse(&a.jwt_algorithm).unwrap_or(JwtAlg::ES256),
                rotation_ms: secs(a.signing_key_rotation_days.saturating_mul(86_400)),
                publish_ahead_ms: secs(a.jwks_max_age_seconds.saturating_mul(2)),
                keep_after_retire_ms: access_ms + 60_000,
            },
            password: PasswordPolicy {
                memory_kib: a.password.memory_kib,
                iterations: a.password.iterations,
                parallelism: a.password.parallelism,
            },
        }
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Failed attempts against an email that has no account (kept in memory, by pseudonym).
#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: i64,
    last_ms: i64,
    locked_until_ms: Option<i64>,
}

/// Everything sign-in needs besides the database: settings, keys, the revocation view, the
/// hashing gate and the throttles.
#[derive(Debug)]
pub struct AuthService {
    pub settings: AuthSettings,
    pub keys: KeyRing,
    pub revocations: Revocations,
    pub sealing: SealingKey,
    pub pseudonyms: PseudonymKey,
    hashing: Semaphore,
    /// Where hashes are computed: threads at a lower priority than the request workers.
    hash_pool: crate::telemetry::LowPriorityPool,
    dummy_hash: String,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    unknown: Mutex<HashMap<String, Failures>>,
    pat_uses: Mutex<HashMap<String, (i64, Option<String>)>>,
    /// Addresses each personal access token was seen from (for `token.used_from_new_ip`),
    /// bounded by [`TABLE_CAP`] addresses in all.
    pat_ips: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// Sessions seen since the last flush: last-seen time and address, written in batches.
    session_uses: Mutex<HashMap<String, (i64, Option<String>)>>,
    /// Access tokens whose signature, issuer and audience already checked out, by SHA-256 of
    /// the token, until their expiry: a signature is verified once per token, not per request.
    /// Revocation is still looked up on every request.
    verified: std::sync::RwLock<HashMap<[u8; 32], AccessClaims>>,
}

/// Entries kept in each throttle table before the oldest are dropped.
const TABLE_CAP: usize = 100_000;

impl AuthService {
    pub fn new(
        settings: AuthSettings,
        sealing: SealingKey,
        pseudonyms: PseudonymKey,
        max_hashes: usize,
    ) -> Result<Self, AppError> {
        let permits = if max_hashes == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            max_hashes
        };
        let dummy_hash = password::dummy(settings.password);
        let hash_pool =
            crate::telemetry::LowPriorityPool::new("gatehouse-hash", permits).map_err(AppError::internal)?;
        Ok(Self {
            settings,
            keys: KeyRing::default(),
            revocations: Revocations::default(),
            sealing,
            pseudonyms,
            hashing: Semaphore::new(permits),
            hash_pool,
            dummy_hash,
            buckets: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            pat_uses: Mutex::new(HashMap::new()),
            pat_ips: Mutex::new(HashMap::new()),
            session_uses: Mutex::new(HashMap::new()),
            verified: std::sync::RwLock::new(HashMap::new()),
        })
    }

    /// Hash a password on the blocking pool, at most one per permit at a time.
    pub async fn hash_password(&self, pw: SecretString) -> Result<String, AppError> {
        let _permit = self.hashing.acquire().await.map_err(|_| AppError::internal("hashing gate closed"))?;
        let policy = self.settings.password;
        self.hash_pool
            .run(move || password::hash(&pw, policy))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::from)
    }

    /// Verify `pw` against `phc`, or against the dummy hash when there is none (same work).
    /// Returns (matches, needs rehash).
    pub async fn verify_password(&self, pw: SecretString, phc: Option<String>) -> Result<(bool, bool), AppError> {
        let _permit = self.hashing.acquire().await.map_err(|_| AppError::internal("hashing gate closed"))?;
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.clone());
        let policy = self.settings.password;
        let (ok, rehash) = self
            .hash_pool
            .run(move || {
                let ok = password::verify(&pw, &phc);
                (ok, password::needs_rehash(&phc, policy))
            })
            .await
            .map_err(AppError::internal)?;
        Ok((ok && real, rehash && real))
    }

    /// Take one token from the client address's bucket; `Err(retry_after)` when empty.
    pub fn rate_limit(&self, ip: Option<IpAddr>, now_ms: i64) -> Result<(), u64> {
        // Clients whose address is unknown (a malformed X-Forwarded-For chain) share one bucket.
        let ip = ip.unwrap_or(IpAddr::from([0u8, 0, 0, 0]));
        let rate = f64::from(self.settings.rate.per_minute) / 60_000.0;
        let burst = f64::from(self.settings.rate.burst);
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() >= TABLE_CAP {
            // Full buckets carry no information: drop them first.
            map.retain(|_, b| b.tokens + (now_ms - b.at_ms) as f64 * rate < burst);
            if map.len() >= TABLE_CAP {
                map.clear();
            }
        }
        let b = map.entry(ip).or_insert(Bucket { tokens: burst, at_ms: now_ms });
        b.tokens = (b.tokens + (now_ms - b.at_ms).max(0) as f64 * rate).min(burst);
        b.at_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / rate) / 1000.0).ceil().max(1.0) as u64)
        }
    }

    /// Remember a PAT's use; written to the database in batches by [`flush_token_uses`].
    pub fn note_pat_use(&self, token_id: &str, at_ms: i64, ip: Option<String>) {
        if let Ok(mut m) = self.pat_uses.lock() {
            m.insert(token_id.to_string(), (at_ms, ip));
        }
    }

    /// Remember that a session was used (at most one update a minute per session is kept).
    pub fn note_session_use(&self, sid: &str, at_ms: i64, ip: impl FnOnce() -> Option<String>) {
        let Ok(mut m) = self.session_uses.lock() else { return };
        let full = m.len() >= TABLE_CAP;
        match m.get_mut(sid) {
            Some(e) if at_ms - e.0 < 60_000 => {}
            Some(e) => *e = (at_ms, ip()),
            None if !full => {
                m.insert(sid.to_string(), (at_ms, ip()));
            }
            None => {}
        }
    }

    fn take_session_uses(&self) -> Vec<(String, (i64, Option<String>))> {
        match self.session_uses.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn take_pat_uses(&self) -> Vec<(String, (i64, Option<String>))> {
        match self.pat_uses.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// When the throttle lets the next attempt through, given the failures so far.
fn throttled_until(l: &LockoutConfig, failures: i64, last_ms: Option<i64>, locked_until: Option<i64>) -> Option<i64> {
    if let Some(until) = locked_until {
        return Some(until);
    }
    let over = failures - i64::from(l.backoff_after);
    if over < 0 {
        return None;
    }
    let base = i64::try_from(l.backoff_base_seconds).unwrap_or(1) * 1000;
    let max = i64::try_from(l.backoff_max_seconds).unwrap_or(60) * 1000;
    let wait = base.saturating_mul(1i64 << over.min(30)).min(max);
    last_ms.map(|t| t + wait)
}

/// What a failure leads to: (new count, lock until).
fn next_failure(l: &LockoutConfig, failures: i64, now_ms: i64) -> (i64, Option<i64>) {
    let count = failures + 1;
    let lock = (count >= i64::from(l.lock_after)).then(|| now_ms + i64::try_from(l.lock_seconds).unwrap_or(900) * 1000);
    (count, lock)
}

fn retry_after(until_ms: i64, now_ms: i64) -> u64 {
    u64::try_from((until_ms - now_ms + 999) / 1000).unwrap_or(1).max(1)
}

/// Refuse while the account is backing off or locked (any check of its password or codes).
pub fn check_account_throttle(state: &AppState, user: &UserRow) -> Result<(), AppError> {
    let now_ms = unix_ms(state.clock.now());
    let lock = &state.auth.settings.lockout;
    match throttled_until(lock, user.failed_logins, user.last_failed_at_ms, user.locked_until_ms) {
        Some(until) if until > now_ms => Err(AppError::RateLimited { retry_after: retry_after(until, now_ms) }),
        _ => Ok(()),
    }
}

/// Count a wrong password given to re-authenticate (password change, disabling TOTP) like a
/// failed login: it feeds the same back-off and lock.
pub async fn record_password_failure(
    state: &AppState,
    user: &UserRow,
    reason: &'static str,
    origin: &Origin,
) -> Result<(), AppError> {
    let pseudonym = state.auth.pseudonyms.of(user.email.as_deref().unwrap_or_default());
    record_failure(state, Some(user), &pseudonym, reason, origin, state.clock.now()).await
}

/// Tokens for a new or refreshed session.
#[derive(Debug)]
pub struct Issued {
    pub session_id: String,
    pub user_id: String,
    pub access_token: SecretString,
    pub expires_in: u64,
    pub refresh_token: SecretString,
    pub cookie: Option<SecretString>,
    pub csrf_token: Option<SecretString>,
    /// Seconds the session (and its cookie) lives at most from now.
    pub session_expires_in: u64,
}

/// What a password login leads to.
#[derive(Debug)]
pub enum LoginOutcome {
    Session(Issued),
    /// The password was right; a second factor must follow with this challenge.
    MfaRequired {
        challenge: SecretString,
        expires_in: u64,
    },
}

/// `POST /v1/auth/login`.
#[derive(Debug)]
pub struct LoginInput {
    pub email: Option<String>,
    pub password: Option<SecretString>,
    pub cookie_mode: bool,
    pub totp: Option<String>,
    pub recovery_code: Option<SecretString>,
    pub challenge: Option<SecretString>,
}

fn sign_access(state: &AppState, row: &SessionRow, now: OffsetDateTime) -> Result<(SecretString, u64), AppError> {
    let s = &state.auth.settings;
    let claims = sessions::access_claims(row, &s.issuer, &s.audience, s.life, now);
    let signer = state.auth.keys.signer().ok_or_else(|| AppError::Unavailable("no signing key".into()))?;
    let jwt = signer.sign(&claims).map_err(AppError::internal)?;
    Ok((SecretString::new(jwt), u64::try_from(claims.exp - claims.iat).unwrap_or(0)))
}

/// The tokens of a session just started (its access token signed now).
pub fn issued(state: &AppState, new: sessions::NewSession, now: OffsetDateTime) -> Result<Issued, AppError> {
    let (access_token, expires_in) = sign_access(state, &new.row, now)?;
    Ok(Issued {
        session_id: new.row.id.clone(),
        user_id: new.row.user_id.clone(),
        access_token,
        expires_in,
        refresh_token: new.refresh_token,
        cookie: new.cookie,
        csrf_token: new.csrf_token,
        session_expires_in: u64::try_from((new.row.expires_at_ms - unix_ms(now)) / 1000).unwrap_or(0),
    })
}

fn rate_limited(state: &AppState, origin: &Origin, action_ip: Option<IpAddr>, now_ms: i64) -> Result<(), AppError> {
    state.auth.rate_limit(action_ip, now_ms).map_err(|retry_after| {
        tracing::warn!(target: "gatehouse::security", client_ip = ?origin.client_ip, retry_after, "sign-in rate limit reached");
        state.metrics.security_event("auth.rate_limited");
        AppError::RateLimited { retry_after }
    })
}

/// Record a rate-limit hit in the audit trail (best effort: the answer does not wait on it
/// failing).
async fn audit_rate_limited(state: &AppState, origin: &Origin, endpoint: &'static str) {
    let event = Event::new("auth.rate_limited", Actor::Anonymous)
        .outcome(Outcome::Denied)
        .origin(origin)
        .details(serde_json::json!({ "endpoint": endpoint }));
    let r = audit::record_alone(&state.db, &state.auditor, state.clock.now(), event).await;
    if let Err(e) = r {
        tracing::error!(error = %e, "could not audit a rate-limit hit");
    }
}

/// Apply the per-address limit to a sign-in endpoint.
pub async fn check_rate(
    state: &AppState,
    origin: &Origin,
    ip: Option<IpAddr>,
    endpoint: &'static str,
) -> Result<(), AppError> {
    let now_ms = unix_ms(state.clock.now());
    if let Err(e) = rate_limited(state, origin, ip, now_ms) {
        audit_rate_limited(state, origin, endpoint).await;
        return Err(e);
    }
    Ok(())
}

/// A password login, or the second step of one.
pub async fn login(state: &AppState, input: LoginInput, origin: Origin) -> Result<LoginOutcome, AppError> {
    if let Some(challenge) = input.challenge.clone() {
        return complete_challenge(state, challenge, input, origin).await;
    }
    let (Some(email), Some(password)) = (input.email.as_deref(), input.password.clone()) else {
        return Err(AppError::Invalid(
            "email and password are required (or challenge with totp or recovery_code)".into(),
        ));
    };
    let email = accounts::normalize_email(email)?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let lookup = email.clone();
    let user = state.db.read(move |tx| tx.user_by_email(&lookup).map_err(AppError::from)).await?;
    let pseudonym = state.auth.pseudonyms.of(&email.to_lowercase());
    let lock = &state.auth.settings.lockout;

    // Throttled? Known accounts by their row, unknown emails by their pseudonym in memory.
    let throttle = match &user {
        Some(u) => throttled_until(lock, u.failed_logins, u.last_failed_at_ms, u.locked_until_ms),
        None => {
            let m = state.auth.unknown.lock().map_err(|_| AppError::internal("throttle table poisoned"))?;
            m.get(&pseudonym).and_then(|f| throttled_until(lock, f.count, Some(f.last_ms), f.locked_until_ms))
        }
    };
    if let Some(until) = throttle.filter(|u| *u > now_ms) {
        let mut event = Event::new("auth.login.throttled", Actor::Anonymous)
            .outcome(Outcome::Denied)
            .origin(&origin)
            .details(serde_json::json!({ "email_pseudonym": pseudonym, "retry_after_s": retry_after(until, now_ms) }));
        if let Some(u) = &user {
            event = event.target(u.id.clone());
        }
        audit::record_alone(&state.db, &state.auditor, now, event).await?;
        state.metrics.security_event("auth.login.throttled");
        return Err(AppError::RateLimited { retry_after: retry_after(until, now_ms) });
    }

    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let (matches, rehash) = state.auth.verify_password(password.clone(), phc).await?;
    let usable = user.as_ref().is_some_and(|u| !u.disabled && u.kind == "local");
    if !(matches && usable) {
        let reason = match &user {
            None => "unknown_email",
            Some(u) if u.disabled => "disabled",
            Some(u) if u.password_hash.is_none() => "no_password",
            Some(_) => "wrong_password",
        };
        record_failure(state, user.as_ref(), &pseudonym, reason, &origin, now).await?;
        return Err(AppError::Unauthorized(INVALID_CREDENTIALS.into()));
    }
    let Some(user) = user else { return Err(AppError::Unauthorized(INVALID_CREDENTIALS.into())) };
    let new_hash = if rehash { Some(state.auth.hash_password(password).await?) } else { None };

    if user.totp_enabled {
        // A second factor sent along with the password completes the login at once.
        if input.totp.is_some() || input.recovery_code.is_some() {
            return finish_with_factor(state, user, input, origin, new_hash).await;
        }
        let challenge = token::generate(Kind::MfaChallenge);
        let hash = token::digest(challenge.expose());
        let expires = now_ms + state.auth.settings.challenge_ms;
        let mode = if input.cookie_mode { "cookie" } else { "bearer" };
        let key = state.auditor.clone();
        let uid = user.id.clone();
        let o = origin.clone();
        state
            .db
            .write(move |tx| {
                if let Some(h) = &new_hash {
                    tx.user_set_password(&uid, h, now_ms)?;
                }
                // Failures are cleared only once the second factor passes, so that guessing
                // codes keeps counting towards the lock.
                tx.challenge_insert(&hash, &uid, mode, expires)?;
                audit::record(
                    tx,
                    &key,
                    now,
                    &Event::new("auth.mfa.challenged", Actor::User(uid.clone())).target(uid).origin(&o),
                )
                .map(|_| ())
            })
            .await?;
        return Ok(LoginOutcome::MfaRequired {
            challenge,
            expires_in: u64::try_from(state.auth.settings.challenge_ms / 1000).unwrap_or(0),
        });
    }
    open_session(state, &user, Method::Password, &["pwd"], false, input.cookie_mode, origin, new_hash, None).await
}

async fn record_failure(
    state: &AppState,
    user: Option<&UserRow>,
    pseudonym: &str,
    reason: &'static str,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<(), AppError> {
    let now_ms = unix_ms(now);
    let lock = state.auth.settings.lockout.clone();
    state.metrics.security_event("auth.login.failed");
    tracing::info!(target: "gatehouse::security", reason, "login failed");
    let key = state.auditor.clone();
    let o = origin.clone();
    let p = pseudonym.to_string();
    match user {
        Some(u) => {
            let uid = u.id.clone();
            state
                .db
                .write(move |tx| {
                    // Counted in SQL: concurrent failures each count.
                    let previous = tx.user_count_failure(&uid, now_ms)? - 1;
                    let (count, locked) = next_failure(&lock, previous, now_ms);
                    if let Some(until) = locked {
                        tx.user_lock(&uid, until)?;
                    }
                    audit::record(
                        tx,
                        &key,
                        now,
                        &Event::new("auth.login.failed", Actor::Anonymous)
                            .target(uid.clone())
                            .outcome(Outcome::Failure)
                            .origin(&o)
                            .details(serde_json::json!({ "reason": reason, "failures": count })),
                    )?;
                    if let Some(until) = locked {
                        audit::record(
                            tx,
                            &key,
                            now,
                            &Event::new("auth.account.locked", Actor::System)
                                .target(uid)
                                .outcome(Outcome::Denied)
                                .origin(&o)
                                .details(serde_json::json!({ "failures": count, "locked_until_ms": until })),
                        )?;
                    }
                    Ok::<_, AppError>(())
                })
                .await
        }
        None => {
            let (count, locked) = {
                let mut m = state.auth.unknown.lock().map_err(|_| AppError::internal("throttle table poisoned"))?;
                if m.len() >= TABLE_CAP {
                    m.clear();
                }
                let f = m.entry(p.clone()).or_default();
                let (count, locked) = next_failure(&lock, f.count, now_ms);
                *f = Failures { count, last_ms: now_ms, locked_until_ms: locked };
                (count, locked)
            };
            let event = Event::new("auth.login.failed", Actor::Anonymous).outcome(Outcome::Failure).origin(&o).details(
                serde_json::json!({ "reason": reason, "email_pseudonym": p, "failures": count, "locked": locked.is_some() }),
            );
            audit::record_alone(&state.db, &key, now, event).await.map(|_| ())
        }
    }
}

/// Create the session after every factor passed; audited as `auth.login.succeeded`.
#[allow(clippy::too_many_arguments)]
async fn open_session(
    state: &AppState,
    user: &UserRow,
    method: Method,
    amr: &'static [&'static str],
    mfa: bool,
    cookie_mode: bool,
    origin: Origin,
    new_hash: Option<String>,
    challenge: Option<[u8; 32]>,
) -> Result<LoginOutcome, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let life = state.auth.settings.life;
    let uid = user.id.clone();
    let new = state
        .db
        .write(move |tx| {
            if let Some(h) = &new_hash {
                tx.user_set_password(&uid, h, now_ms)?;
            }
            if let Some(c) = &challenge {
                tx.challenge_delete(c)?;
            }
            tx.user_clear_failures(&uid)?;
            let new = sessions::start(tx, &uid, method, amr, mfa, cookie_mode, life, &origin, now)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("auth.login.succeeded", Actor::User(uid.clone())).target(new.row.id.clone()).origin(&origin).details(
                    serde_json::json!({ "method": method.as_str(), "amr": amr, "mode": if cookie_mode { "cookie" } else { "bearer" }, "rehashed": new_hash.is_some() }),
                ),
            )?;
            Ok::<_, AppError>(new)
        })
        .await?;
    Ok(LoginOutcome::Session(issued(state, new, now)?))
}

/// Check a TOTP code or a recovery code for `user`, consuming it. `Ok(None)` when wrong.
async fn check_factor(
    state: &AppState,
    user: &UserRow,
    totp: Option<String>,
    recovery: Option<SecretString>,
) -> Result<Option<&'static [&'static str]>, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let uid = user.id.clone();
    if let Some(code) = totp {
        let Some(sealed) = user.totp_seed.clone() else { return Ok(None) };
        let seed = state.auth.sealing.open(&sealed, &super::mfa::seed_aad(&uid))?;
        let Some(step) = crate::crypto::totp::verify(&seed, &code, now.unix_timestamp(), user.totp_last_step) else {
            return Ok(None);
        };
        // Record the step in its own transaction before anything else: a replay racing this
        // request sees it (the UPDATE only moves forward).
        let used = state
            .db
            .write(move |tx| {
                let fresh = tx.user_by_id(&uid)?.is_some_and(|u| u.totp_last_step.is_none_or(|s| s < step));
                if fresh {
                    tx.user_set_totp_step(&uid, step)?;
                }
                Ok::<_, AppError>(fresh)
            })
            .await?;
        return Ok(used.then_some(&["pwd", "otp"][..]));
    }
    if let Some(code) = recovery {
        let hash = super::mfa::recovery_hash(code.expose());
        let used = state.db.write(move |tx| tx.recovery_code_use(&uid, &hash, now_ms).map_err(AppError::from)).await?;
        return Ok(used.then_some(&["pwd", "otp"][..]));
    }
    Ok(None)
}

async fn finish_with_factor(
    state: &AppState,
    user: UserRow,
    input: LoginInput,
    origin: Origin,
    new_hash: Option<String>,
) -> Result<LoginOutcome, AppError> {
    match check_factor(state, &user, input.totp.clone(), input.recovery_code.clone()).await? {
        Some(amr) => {
            open_session(state, &user, Method::Password, amr, true, input.cookie_mode, origin, new_hash, None).await
        }
        None => {
            let pseudonym = state.auth.pseudonyms.of(user.email.as_deref().unwrap_or_default());
            record_failure(state, Some(&user), &pseudonym, "wrong_second_factor", &origin, state.clock.now()).await?;
            Err(AppError::Unauthorized("The one-time code is incorrect or was already used.".into()))
        }
    }
}

/// Maximum wrong codes per challenge.
const CHALLENGE_ATTEMPTS: i64 = 5;

async fn complete_challenge(
    state: &AppState,
    challenge: SecretString,
    input: LoginInput,
    origin: Origin,
) -> Result<LoginOutcome, AppError> {
    let now_ms = unix_ms(state.clock.now());
    let invalid = || AppError::Unauthorized("The MFA challenge is invalid or has expired; sign in again.".into());
    if !token::well_formed(challenge.expose(), Kind::MfaChallenge) {
        return Err(invalid());
    }
    if input.totp.is_none() && input.recovery_code.is_none() {
        return Err(AppError::Invalid("challenge needs totp or recovery_code".into()));
    }
    let hash = token::digest(challenge.expose());
    let found = state
        .db
        .read(move |tx| {
            let Some(c) = tx.challenge_lookup(&hash)? else { return Ok::<_, AppError>(None) };
            Ok(tx.user_by_id(&c.user_id)?.map(|u| (c, u)))
        })
        .await?;
    let Some((c, user)) = found else { return Err(invalid()) };
    if c.expires_at_ms <= now_ms || user.disabled {
        return Err(invalid());
    }
    // The account's throttle applies to codes as it does to passwords.
    check_account_throttle(state, &user)?;
    // Each try is counted before the code is looked at, atomically: parallel guesses cannot
    // share one attempt.
    let counted = state
        .db
        .write(move |tx| tx.challenge_attempt(&hash, CHALLENGE_ATTEMPTS, now_ms).map_err(AppError::from))
        .await?;
    if !counted {
        return Err(invalid());
    }
    let cookie_mode = c.mode == "cookie";
    match check_factor(state, &user, input.totp.clone(), input.recovery_code.clone()).await? {
        Some(amr) => {
            open_session(state, &user, Method::Password, amr, true, cookie_mode, origin, None, Some(hash)).await
        }
        None => {
            let pseudonym = state.auth.pseudonyms.of(user.email.as_deref().unwrap_or_default());
            record_failure(state, Some(&user), &pseudonym, "wrong_second_factor", &origin, state.clock.now()).await?;
            Err(AppError::Unauthorized("The one-time code is incorrect or was already used.".into()))
        }
    }
}

/// `POST /v1/auth/anonymous`: a new anonymous user and its session.
pub async fn anonymous(state: &AppState, cookie_mode: bool, origin: Origin) -> Result<Issued, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let s = state.auth.settings.clone();
    let new = state
        .db
        .write(move |tx| {
            let mut user = UserRow::new(uuid::Uuid::now_v7().to_string(), "anonymous", None, now_ms);
            user.expires_at_ms = Some(now_ms + s.anonymous_ms);
            tx.user_insert(&user)?;
            // The session cannot outlive its user.
            let life = Lifetimes {
                access_ms: s.life.access_ms,
                refresh_ms: s.life.refresh_ms.min(s.anonymous_ms),
                max_ms: s.life.max_ms.min(s.anonymous_ms),
            };
            let new =
                sessions::start(tx, &user.id, Method::Anonymous, &["anon"], false, cookie_mode, life, &origin, now)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("user.anonymous.created", Actor::User(user.id.clone()))
                    .target(user.id.clone())
                    .origin(&origin)
                    .details(serde_json::json!({ "session": new.row.id, "expires_at_ms": user.expires_at_ms })),
            )?;
            Ok::<_, AppError>(new)
        })
        .await?;
    issued(state, new, now)
}

/// `POST /v1/auth/signup`.
#[derive(Debug)]
pub struct SignupInput {
    pub email: String,
    pub password: SecretString,
    pub name: Option<String>,
    pub invite: Option<SecretString>,
    pub cookie_mode: bool,
    /// The anonymous user signing up, when the caller holds an anonymous session.
    pub anonymous_user: Option<String>,
}

pub async fn signup(state: &AppState, input: SignupInput, origin: Origin) -> Result<Issued, AppError> {
    let settings = &state.auth.settings;
    if settings.signup == SignupMode::Disabled {
        return Err(AppError::Forbidden(
            "Sign-up is disabled on this server; ask an administrator for an account.".into(),
        ));
    }
    let email = accounts::normalize_email(&input.email)?;
    accounts::check_new_password(input.password.expose(), &email)?;
    let invite_hash = match (settings.signup, &input.invite) {
        (SignupMode::Invite, None) => {
            return Err(AppError::Forbidden("Sign-up needs an invitation (invite_token).".into()));
        }
        (SignupMode::Invite, Some(t)) => Some(token::digest(t.expose())),
        _ => None,
    };
    let hash = state.auth.hash_password(input.password.clone()).await?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let life = settings.life;
    let anonymous = input.anonymous_user.clone();
    let name = input.name.clone();
    let st = state.clone();
    let cookie_mode = input.cookie_mode;
    let new = state
        .db
        .write(move |tx| {
            if let Some(h) = &invite_hash {
                if !tx.invite_use(h, &email, now_ms)? {
                    return Err(AppError::Forbidden("The invitation is invalid, used, expired or for another email.".into()));
                }
            }
            if tx.user_by_email(&email)?.is_some() {
                return Err(AppError::Conflict("An account with this email already exists.".into()));
            }
            let (uid, upgraded) = match anonymous.as_deref().map(|id| tx.user_by_id(id)).transpose()?.flatten() {
                Some(anon) if anon.kind == "anonymous" && !anon.disabled => {
                    tx.user_upgrade_anonymous(&anon.id, &email, &hash, now_ms)?;
                    // The anonymous sessions end: the account continues with the session
                    // sign-up opens (and under auth.require_mfa it must not keep an "anon" one).
                    sessions::end_all(tx, &st.auth.revocations, &anon.id, None, now_ms, "signed up")?;
                    (anon.id, true)
                }
                _ => {
                    let mut row = UserRow::new(uuid::Uuid::now_v7().to_string(), "local", Some(email.clone()), now_ms);
                    row.password_hash = Some(hash);
                    tx.user_insert(&row)?;
                    (row.id, false)
                }
            };
            if let Some(n) = name {
                tx.user_patch(&uid, &crate::db::UserPatch { name: Some(Some(n)), ..Default::default() }, now_ms)?;
            }
            let new = sessions::start(tx, &uid, Method::Password, &["pwd"], false, cookie_mode, life, &origin, now)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("user.signed_up", Actor::User(uid.clone())).target(uid.clone()).origin(&origin).details(
                    serde_json::json!({ "from_anonymous": upgraded, "invited": invite_hash.is_some(), "session": new.row.id }),
                ),
            )?;
            Ok(new)
        })
        .await
        .map_err(|e| match e {
            AppError::Db(crate::db::DbError::Unique) => AppError::Conflict("An account with this email already exists.".into()),
            other => other,
        })?;
    issued(state, new, now)
}

/// `POST /v1/auth/refresh`.
pub async fn refresh(state: &AppState, presented: SecretString, origin: Origin) -> Result<Issued, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let life = state.auth.settings.life;
    let auth = state.clone();
    let o = origin.clone();
    let outcome = state
        .db
        .write(move |tx| {
            // Mark a reused token's session revoked in memory before the transaction commits.
            let r = sessions::refresh(tx, &key, &presented, life, &o, now)?;
            if let Refreshed::Reused { session_id, .. } = &r {
                auth.auth.revocations.revoke_sessions([session_id.as_str()], now_ms);
            }
            Ok::<_, AppError>(r)
        })
        .await?;
    let invalid = || AppError::Unauthorized("The refresh token is invalid, expired or revoked.".into());
    match outcome {
        Refreshed::Rotated { row, refresh_token } => {
            if state.auth.revocations.user_blocked(&row.user_id) || state.auth.revocations.session_revoked(&row.id) {
                return Err(invalid());
            }
            let (access_token, expires_in) = sign_access(state, &row, now)?;
            Ok(Issued {
                session_id: row.id.clone(),
                user_id: row.user_id.clone(),
                access_token,
                expires_in,
                refresh_token,
                cookie: None,
                csrf_token: None,
                session_expires_in: u64::try_from((row.expires_at_ms - now_ms) / 1000).unwrap_or(0),
            })
        }
        Refreshed::Reused { .. } => {
            state.metrics.security_event("auth.refresh.reused");
            tracing::warn!(target: "gatehouse::security", "refresh token reused; session revoked");
            Err(invalid())
        }
        Refreshed::Invalid => Err(invalid()),
    }
}

/// Revoke sessions (in the view first, then in the database) and audit.
pub async fn revoke_sessions(
    state: &AppState,
    actor: Actor,
    user_id: &str,
    only: Option<String>,
    action: &'static str,
    origin: &Origin,
) -> Result<usize, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let uid = user_id.to_string();
    let o = origin.clone();
    let st = state.clone();
    state
        .db
        .write(move |tx| {
            let ids: Vec<String> = match &only {
                Some(id) => match tx.session_by_id(id)? {
                    Some(s) if s.user_id == uid && s.revoked_at_ms.is_none() => {
                        st.auth.revocations.revoke_sessions([s.id.as_str()], now_ms);
                        tx.session_revoke(&s.id, now_ms, action)?;
                        vec![s.id]
                    }
                    _ => return Err(AppError::NotFound),
                },
                None => sessions::end_all(tx, &st.auth.revocations, &uid, None, now_ms, action)?,
            };
            audit::record(
                tx,
                &key,
                now,
                &Event::new(action, actor)
                    .target(uid.clone())
                    .origin(&o)
                    .details(serde_json::json!({ "sessions": ids })),
            )?;
            Ok(ids.len())
        })
        .await
}

/// Who is calling, once a credential checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub credential: Credential,
}

#[derive(Debug, Clone)]
pub enum Credential {
    /// A session, by access token or by cookie.
    Session { session_id: String, cookie: bool, amr: Vec<String> },
    /// A personal access token.
    PersonalAccessToken { token_id: String },
    /// A workspace API key; `Principal::user_id` is the key's creator, whose current rights
    /// bound the key's.
    ApiKey { key_id: String, workspace_id: String },
}

impl Principal {
    /// Under `auth.require_mfa`, a password session without a second factor may only enrol one
    /// (anonymous and SSO sessions are not password sessions).
    pub fn mfa_pending(&self, require_mfa: bool) -> bool {
        match &self.credential {
            Credential::Session { amr, .. } => {
                // An SSO session's factors are the identity provider's business.
                require_mfa && !amr.iter().any(|m| m == "otp" || m == "anon" || m == "sso")
            }
            Credential::PersonalAccessToken { .. } | Credential::ApiKey { .. } => false,
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { session_id, .. } => Some(session_id),
            Credential::PersonalAccessToken { .. } | Credential::ApiKey { .. } => None,
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        match &self.credential {
            Credential::PersonalAccessToken { token_id } => Actor::Token(self.user_id.clone(), token_id.clone()),
            Credential::Session { .. } => Actor::User(self.user_id.clone()),
            Credential::ApiKey { key_id, .. } => Actor::ApiKey(key_id.clone()),
        }
    }

    /// What a log line may say about the caller.
    pub fn describe(&self) -> String {
        match &self.credential {
            Credential::Session { session_id, cookie: false, .. } => {
                format!("user:{} session:{session_id}", self.user_id)
            }
            Credential::Session { session_id, cookie: true, .. } => {
                format!("user:{} cookie:{session_id}", self.user_id)
            }
            Credential::PersonalAccessToken { token_id } => format!("user:{} pat:{token_id}", self.user_id),
            Credential::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}

fn unauthorized(detail: &str) -> AppError {
    AppError::Unauthorized(detail.to_string())
}

/// Check a session access token: signature with the key its `kid` names (algorithm pinned),
/// issuer, audience, expiry; then the revocation view. No database access.
pub fn authenticate_jwt(state: &AppState, token: &str, ip: Option<IpAddr>) -> Result<Principal, AppError> {
    let now = state.clock.now().unix_timestamp();
    let digest = token::digest(token);
    let cached = state.auth.verified.read().ok().and_then(|m| m.get(&digest).cloned()).filter(|c| c.exp > now);
    let claims = match cached {
        Some(c) => c,
        None => {
            let c = verify_jwt(state, token, now)?;
            if let Ok(mut m) = state.auth.verified.write() {
                if m.len() >= TABLE_CAP {
                    m.retain(|_, c| c.exp > now);
                    if m.len() >= TABLE_CAP {
                        m.clear();
                    }
                }
                m.insert(digest, c.clone());
            }
            c
        }
    };
    if state.auth.revocations.session_revoked(&claims.sid) || state.auth.revocations.user_blocked(&claims.sub) {
        state.metrics.security_event("auth.token.revoked");
        return Err(unauthorized("The session has ended."));
    }
    state.auth.note_session_use(&claims.sid, unix_ms(state.clock.now()), || ip.map(|i| i.to_string()));
    Ok(Principal {
        user_id: claims.sub,
        credential: Credential::Session { session_id: claims.sid, cookie: false, amr: claims.amr },
    })
}

fn verify_jwt(state: &AppState, token: &str, now: i64) -> Result<AccessClaims, AppError> {
    let s = &state.auth.settings;
    jwt::verify(token, |kid| state.auth.keys.verifier(kid), &s.issuer, &s.audience, now).map_err(|e| {
        state.metrics.security_event("auth.token.rejected");
        tracing::info!(target: "gatehouse::security", reason = %e, "access token rejected");
        match e {
            JwtError::Expired => unauthorized("The access token has expired; refresh it."),
            _ => unauthorized("The access token is invalid."),
        }
    })
}

/// Check a personal access token against the database (revocation, expiry and the owner's
/// state are read fresh each time); its last use is recorded in batches.
pub async fn authenticate_pat(
    state: &AppState,
    token: SecretString,
    ip: Option<String>,
    origin: impl FnOnce() -> Origin,
) -> Result<Principal, AppError> {
    if !token::well_formed(token.expose(), Kind::PersonalAccessToken) {
        state.metrics.security_event("auth.token.rejected");
        return Err(unauthorized("The personal access token is invalid."));
    }
    let hash = token::digest(token.expose());
    let found = state.db.pat_cached(hash).await?;
    let now_ms = unix_ms(state.clock.now());
    match found {
        Some(f)
            if f.pat.revoked_at_ms.is_none()
                && f.pat.expires_at_ms > now_ms
                && !f.user_disabled
                && !state.auth.revocations.user_blocked(&f.pat.user_id) =>
        {
            if let Some(ip) = &ip {
                note_pat_ip(state, &f.pat.user_id, &f.pat.id, ip, now_ms, origin).await?;
            }
            state.auth.note_pat_use(&f.pat.id, now_ms, ip);
            Ok(Principal { user_id: f.pat.user_id, credential: Credential::PersonalAccessToken { token_id: f.pat.id } })
        }
        _ => {
            state.metrics.security_event("auth.token.rejected");
            Err(unauthorized("The personal access token is invalid, expired or revoked."))
        }
    }
}

/// Audit a token's first use from an address (`token.used_from_new_ip`), once per address: the
/// addresses are kept in `pat_ips`, and the ones seen lately in memory so that a known address
/// costs no write.
async fn note_pat_ip(
    state: &AppState,
    user_id: &str,
    token_id: &str,
    ip: &str,
    now_ms: i64,
    origin: impl FnOnce() -> Origin,
) -> Result<(), AppError> {
    let seen = state.auth.pat_ips.lock().is_ok_and(|s| s.get(token_id).is_some_and(|ips| ips.contains(ip)));
    if seen {
        return Ok(());
    }
    let event = Event::new("token.used_from_new_ip", Actor::Token(user_id.to_string(), token_id.to_string()))
        .target(token_id.to_string())
        .origin(&origin());
    let (key, now) = (state.auditor.clone(), state.clock.now());
    let (tid, addr) = (token_id.to_string(), ip.to_string());
    state
        .db
        .write(move |tx| {
            if let Some(known) = tx.pat_ip_first_seen(&tid, &addr, now_ms)? {
                // `first_address`: the token's very first use, which the monitor does not alert on.
                let event = event.details(serde_json::json!({ "ip": addr, "first_address": known == 0 }));
                audit::record(tx, &key, now, &event)?;
            }
            Ok::<_, AppError>(())
        })
        .await?;
    if let Ok(mut s) = state.auth.pat_ips.lock() {
        // Bounded by addresses, not tokens: one token seen from many addresses must not grow it.
        if s.values().map(std::collections::HashSet::len).sum::<usize>() >= TABLE_CAP {
            s.clear();
        }
        s.entry(token_id.to_string()).or_default().insert(ip.to_string());
    }
    Ok(())
}

/// Check a session cookie; a request that changes state must also carry the session's CSRF
/// token in `X-CSRF-Token`.
pub async fn authenticate_cookie(
    state: &AppState,
    cookie: SecretString,
    csrf: Option<SecretString>,
    changes_state: bool,
    ip: Option<IpAddr>,
) -> Result<Principal, AppError> {
    if !token::well_formed(cookie.expose(), Kind::SessionCookie) {
        return Err(unauthorized("The session cookie is invalid."));
    }
    let hash = token::digest(cookie.expose());
    let found = state.db.read(move |tx| tx.session_by_cookie(&hash).map_err(AppError::from)).await?;
    let now_ms = unix_ms(state.clock.now());
    let Some(s) = found.filter(|s| {
        s.revoked_at_ms.is_none()
            && s.expires_at_ms > now_ms
            && !state.auth.revocations.session_revoked(&s.id)
            && !state.auth.revocations.user_blocked(&s.user_id)
    }) else {
        return Err(unauthorized("The session has ended."));
    };
    if changes_state {
        let ok = match (&csrf, &s.csrf_hash) {
            (Some(given), Some(stored)) => ct_eq(&token::digest(given.expose()), stored),
            _ => false,
        };
        if !ok {
            state.metrics.security_event("auth.csrf.rejected");
            tracing::warn!(target: "gatehouse::security", session = %s.id, "cookie request without a valid CSRF token");
            return Err(AppError::Forbidden("This request needs the session's CSRF token in X-CSRF-Token.".into()));
        }
    }
    state.auth.note_session_use(&s.id, now_ms, || ip.map(|i| i.to_string()));
    Ok(Principal {
        user_id: s.user_id,
        credential: Credential::Session {
            session_id: s.id,
            cookie: true,
            amr: serde_json::from_str(&s.amr).unwrap_or_default(),
        },
    })
}

/// Write the batched last-use times of personal access tokens and sessions.
pub async fn flush_token_uses(state: &AppState) -> Result<(), AppError> {
    let pats = state.auth.take_pat_uses();
    let sessions = state.auth.take_session_uses();
    if pats.is_empty() && sessions.is_empty() {
        return Ok(());
    }
    state
        .db
        .write(move |tx| {
            for (id, (at, ip)) in &pats {
                tx.pat_touch(id, *at, ip.as_deref())?;
            }
            for (id, (at, ip)) in &sessions {
                tx.session_seen(id, *at, ip.as_deref())?;
            }
            Ok::<_, AppError>(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_then_lock() {
        let l = LockoutConfig::default(); // back-off after 3, 1 s doubling to 60 s, lock at 10 for 900 s
        assert_eq!(throttled_until(&l, 2, Some(0), None), None);
        assert_eq!(throttled_until(&l, 3, Some(0), None), Some(1000));
        assert_eq!(throttled_until(&l, 4, Some(0), None), Some(2000));
        assert_eq!(throttled_until(&l, 9, Some(0), None), Some(60_000), "capped");
        assert_eq!(next_failure(&l, 8, 0), (9, None));
        assert_eq!(next_failure(&l, 9, 0), (10, Some(900_000)));
        assert_eq!(throttled_until(&l, 10, Some(0), Some(900_000)), Some(900_000));
        assert_eq!(retry_after(1500, 0), 2);
    }
}
