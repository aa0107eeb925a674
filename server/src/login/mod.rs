//! Browser sign-in: password verification, browser sessions, CSRF tokens.
pub mod account;
pub mod limits;
pub mod passwords;
pub mod session_store;

use actix_session::Session;
use entity::{tenant, user};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::{Error, Result};
use crate::secrets::{Secret, ct_eq, random_token};
use crate::services::Services;
use crate::store::{Claim, Counter, Lock, SignInSuccess};
use session_store::{KEY_REKEY, KEY_TENANT, KEY_USER};

const KEY_CSRF: &str = "csrf";
const KEY_AUTH_TIME: &str = "auth_time";
const KEY_AMR: &str = "amr";

fn session_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("session: {e}"))
}

/// The CSRF token of this browser session, created on first use.
pub fn csrf_token(session: &Session) -> Result<String> {
    if let Ok(Some(t)) = session.get::<String>(KEY_CSRF) {
        return Ok(t);
    }
    let t = random_token().expose().to_string();
    session.insert(KEY_CSRF, &t).map_err(session_err)?;
    Ok(t)
}

/// A form's CSRF token must equal the session's.
pub fn check_csrf(session: &Session, submitted: Option<&str>) -> Result<()> {
    let expected = session.get::<String>(KEY_CSRF).ok().flatten();
    match (expected, submitted) {
        (Some(e), Some(s)) if ct_eq(&e, s) => Ok(()),
        _ => Err(Error::bad_page(
            "This form has expired",
            "For your safety the form could not be submitted. Go back, reload the page and try again.",
        )),
    }
}

/// The member signed in on this browser for this tenant.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: user::Model,
    pub auth_time: i64,
    pub amr: Vec<String>,
}

pub async fn signed_in(
    svc: &Services,
    session: &Session,
    tenant: &tenant::Model,
) -> Result<Option<SignedIn>> {
    let tid = session.get::<String>(KEY_TENANT).ok().flatten();
    let uid = session.get::<String>(KEY_USER).ok().flatten();
    let (Some(tid), Some(uid)) = (tid, uid) else {
        return Ok(None);
    };
    if tid != tenant.id {
        return Ok(None);
    }
    // Read with the session (`session_store::KEY_MEMBER_ROW`) unless the session changed
    // hands in this request.
    let row = session
        .get::<user::Model>(session_store::KEY_MEMBER_ROW)
        .ok()
        .flatten()
        .filter(|u| u.id == uid && u.tenant_id == tenant.id);
    let user = match row {
        Some(u) => u,
        None => match svc.store.user_by_id(&tenant.id, &uid).await? {
            Some(u) => u,
            None => return Ok(None),
        },
    };
    if user.disabled {
        return Ok(None);
    }
    let auth_time = session
        .get::<i64>(KEY_AUTH_TIME)
        .ok()
        .flatten()
        .unwrap_or(0);
    let amr = session
        .get::<Vec<String>>(KEY_AMR)
        .ok()
        .flatten()
        .unwrap_or_default();
    Ok(Some(SignedIn {
        user,
        auth_time,
        amr,
    }))
}

pub const PASSKEY_REQUIRED: &str =
    "This household signs in with passkeys only. Use \u{201c}Sign in with a passkey\u{201d}.";

/// Record a sign-in in the session. The session key is renewed (no fixation), and so is the
/// CSRF token (whoever knew the signed-out session's token, e.g. by planting that session,
/// must not know the signed-in one's); pending authorization requests are kept.
pub fn sign_in(
    session: &Session,
    tenant: &tenant::Model,
    user: &user::Model,
    amr: &[&str],
    now: i64,
) -> Result<()> {
    // A fresh session key, written in the same statement as the sign-in (see `SESSION_REKEY`).
    session.insert(KEY_REKEY, true).map_err(session_err)?;
    session
        .insert(KEY_TENANT, &tenant.id)
        .map_err(session_err)?;
    session.insert(KEY_USER, &user.id).map_err(session_err)?;
    // The member's row for the rest of this request (the page it answers with); never stored.
    session
        .insert(session_store::KEY_MEMBER_ROW, user)
        .map_err(session_err)?;
    session.insert(KEY_AUTH_TIME, now).map_err(session_err)?;
    session.insert(KEY_AMR, amr).map_err(session_err)?;
    // A new CSRF token, stored with the sign-in: the page the browser goes to next then
    // leaves the session as it is (no second write).
    session
        .insert(KEY_CSRF, random_token().expose())
        .map_err(session_err)?;
    Ok(())
}

/// [`sign_in`] after a password check: the success's own write (`done`) goes with the
/// session's, in one statement or call (see `session_store::KEY_SIGN_IN`).
pub fn sign_in_with_password(
    session: &Session,
    tenant: &tenant::Model,
    user: &user::Model,
    now: i64,
    done: &SignInSuccess,
) -> Result<()> {
    sign_in(session, tenant, user, &["pwd"], now)?;
    session
        .insert(session_store::KEY_SIGN_IN, done)
        .map_err(session_err)
}

pub fn sign_out(session: &Session) {
    session.purge();
}

/// A pending authorization request, kept in the session between the sign-in and consent
/// pages so that nothing in a hidden field can be tampered with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending<T> {
    pub value: T,
    pub created_at: i64,
}

/// A pending request's session key: per tenant, so a request made at one tenant is never
/// continued (signed in, approved) at another's pages.
fn pending_key(tenant_id: &str, id: &str) -> String {
    format!("ar.{tenant_id}.{id}")
}

/// A pending request stored less than this long ago is not stored again when a page shows it
/// unchanged (a consent page after the sign-in): the session stays as it is and is not
/// written. Stored again later, its age restarts, so a request is kept for at least its
/// maximum age less this after the last page that showed it.
const PENDING_RESTAMP_AFTER: i64 = 5 * 60;

pub fn put_pending<T: Serialize>(
    session: &Session,
    tenant_id: &str,
    id: &str,
    value: T,
    now: i64,
) -> Result<()> {
    let key = pending_key(tenant_id, id);
    if let Ok(Some(held)) = session.get::<Pending<serde_json::Value>>(&key)
        && (0..PENDING_RESTAMP_AFTER).contains(&(now - held.created_at))
        && serde_json::to_value(&value).is_ok_and(|v| v == held.value)
    {
        return Ok(());
    }
    // Keep at most a handful of pending requests per browser.
    let keys: Vec<String> = session
        .entries()
        .keys()
        .filter(|k| k.starts_with("ar."))
        .cloned()
        .collect();
    if keys.len() >= 8 {
        for k in keys {
            session.remove(&k);
        }
    }
    session
        .insert(
            key,
            Pending {
                value,
                created_at: now,
            },
        )
        .map_err(session_err)
}

pub fn get_pending<T: for<'de> Deserialize<'de>>(
    session: &Session,
    tenant_id: &str,
    id: &str,
    now: i64,
    max_age: i64,
) -> Option<T> {
    let p: Pending<T> = session.get(&pending_key(tenant_id, id)).ok().flatten()?;
    (now - p.created_at <= max_age).then_some(p.value)
}

pub fn remove_pending(session: &Session, tenant_id: &str, id: &str) {
    session.remove(&pending_key(tenant_id, id));
}

/// How a password sign-in ended.
#[derive(Debug)]
pub enum PasswordOutcome {
    /// Signed in. The success's own write (counters cleared, audit event) is not made yet:
    /// hand it to [`sign_in_with_password`] (written with the browser session) or
    /// [`Services::record_sign_in`].
    Ok(user::Model, Box<SignInSuccess>),
    /// Unknown user, wrong password or disabled account: one answer for all.
    Wrong,
    /// The tenant accepts passkeys only.
    PasskeyRequired,
    /// Too many failures: locked until this time.
    Locked(i64),
}

impl PasswordOutcome {
    /// What the sign-in page says.
    pub fn message(&self, now: i64) -> Option<String> {
        match self {
            PasswordOutcome::Ok(..) => None,
            PasswordOutcome::Wrong => Some("Wrong username or password.".into()),
            PasswordOutcome::PasskeyRequired => Some(PASSKEY_REQUIRED.into()),
            PasswordOutcome::Locked(until) => {
                let mins = ((until - now).max(1) + 59) / 60;
                Some(format!(
                    "Too many failed attempts for this account. Try again in {mins} minute{}.",
                    if mins == 1 { "" } else { "s" }
                ))
            }
        }
    }

    pub fn status(&self) -> actix_web::http::StatusCode {
        match self {
            PasswordOutcome::Locked(_) => actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            _ => actix_web::http::StatusCode::UNAUTHORIZED,
        }
    }
}

impl Services {
    /// Check a username and password. Unknown users, wrong passwords and disabled accounts
    /// take the same time and give the same answer. Audited.
    pub async fn password_sign_in(
        &self,
        tenant: &tenant::Model,
        username: &str,
        password: &Secret,
        req: &RequestInfo,
    ) -> Result<PasswordOutcome> {
        let username = normalize_username(username);
        if tenant.passkeys_required {
            self.store
                .insert_audit(
                    AuditEvent::new("sign_in", "failed", Some(&tenant.id), req)
                        .actor(&username)
                        .detail(
                            serde_json::json!({"method": "password", "reason": "passkey required"}),
                        ),
                    self.now(),
                )
                .await?;
            return Ok(PasswordOutcome::PasskeyRequired);
        }
        // A sign-in refused for load (the hash queue is full) is not an attempt on the account.
        if !self.passwords.has_room() {
            return Err(crate::login::passwords::busy());
        }
        // Count the attempt before checking it: parallel guesses cannot overtake the limit.
        // Two counters: the account's for the client's network, and the account's as a
        // whole (guesses from many networks), so that guessing from elsewhere does not lock
        // a member out of their own network.
        let account = format!(
            "{}:{}",
            tenant.id,
            username.chars().take(128).collect::<String>()
        );
        let network = network_key(&account, req);
        let lim = &self.settings.limits;
        // The member is read with the claim; a username no member could have is not looked
        // up.
        let lookup = (!username.is_empty() && username.len() <= 128)
            .then_some((tenant.id.as_str(), username.as_str()));
        let (claim, member) = self
            .store
            .claim_attempt(
                Counter {
                    key: &network,
                    max_attempts: lim.login_max_attempts,
                },
                Counter {
                    key: &account,
                    max_attempts: lim.login_account_max_attempts,
                },
                self.now(),
                (lim.login_lockout_seconds, lim.login_lockout_max_seconds),
                lookup,
            )
            .await?;
        if let Claim::Locked(until, lock) = claim {
            metrics::counter!("ma_idp_sign_ins_total", "method" => "password", "outcome" => "locked").increment(1);
            let lock = match lock {
                Lock::Network => "network",
                Lock::Account => "account",
            };
            self.store
                .insert_audit(
                    AuditEvent::new("sign_in", "failed", Some(&tenant.id), req)
                        .actor(&username)
                        .detail(serde_json::json!({"method": "password", "reason": "locked", "lock": lock})),
                    self.now(),
                )
                .await?;
            return Ok(PasswordOutcome::Locked(until));
        }
        let (user, phc) = match member {
            Some((u, phc)) => (Some(u), phc),
            None => (None, None),
        };
        let stale = phc
            .as_deref()
            .is_some_and(|p| self.passwords.needs_rehash(p));
        let ok = !password.is_empty() && self.passwords.verify(password, phc).await?;
        let now = self.clock.now();
        let result = match user {
            Some(u) if ok && !u.disabled => Some(u),
            _ => None,
        };
        let outcome = if result.is_some() { "ok" } else { "failed" };
        metrics::counter!("ma_idp_sign_ins_total", "method" => "password", "outcome" => outcome)
            .increment(1);
        let ev = AuditEvent::new("sign_in", outcome, Some(&tenant.id), req)
            .actor(&username)
            .detail(serde_json::json!({"method": "password"}));
        match result {
            Some(u) => {
                if stale {
                    self.rehash_password(tenant, &u, password, now).await;
                }
                let done = Box::new(SignInSuccess::new(
                    vec![network, account],
                    ev.user(&u.id),
                    now,
                ));
                Ok(PasswordOutcome::Ok(u, done))
            }
            None => {
                self.store.insert_audit(ev, now).await?;
                Ok(PasswordOutcome::Wrong)
            }
        }
    }
}

impl Services {
    /// Write a successful password sign-in's record (counters cleared, audit event) on its
    /// own, where no browser session carries it (see [`sign_in_with_password`]).
    pub async fn record_sign_in(&self, done: &SignInSuccess) -> Result<()> {
        self.store.sign_in_succeeded(done).await
    }

    /// Replace a hash made with other argon2 parameters than the configured ones (after a
    /// change of `argon2.*`), with the password the member just proved. A failure here is
    /// logged and does not fail the sign-in: the old hash still works.
    async fn rehash_password(
        &self,
        tenant: &tenant::Model,
        u: &user::Model,
        password: &Secret,
        now: i64,
    ) {
        let done = match self.passwords.hash(password).await {
            Ok(phc) => {
                self.store
                    .set_password(&tenant.id, &u.id, phc, now, false)
                    .await
            }
            Err(e) => Err(e),
        };
        match done {
            Ok(_) => {
                tracing::info!(user = %u.id, "password hash upgraded to the configured argon2 cost")
            }
            Err(e) => tracing::warn!(user = %u.id, error = %e, "password hash upgrade failed"),
        }
    }
}

/// The key of an account's counter for the client network a request comes from: the IPv4
/// address, or the IPv6 /64 (`limits::limit_key`), as the per-IP limits count. A network
/// string never holds `/`, so the key reads back one way only, and it cannot be an account's
/// key (those start with the tenant's id).
fn network_key(account: &str, req: &RequestInfo) -> String {
    let net = req
        .ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .map_or_else(|| "-".to_string(), |ip| limits::limit_key(ip).to_string());
    format!("net:{net}/{account}")
}

pub fn normalize_username(u: &str) -> String {
    u.trim().to_lowercase()
}
