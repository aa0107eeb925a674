//! actix-session's server-side store, in the database, so admins can list and end sessions
//! and several instances share them. The cookie carries a random key; the database keeps only
//! its hash.
use std::collections::HashMap;
use std::sync::Arc;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;

use crate::clock::SharedClock;
use crate::login::limits::AnonymousSessions;
use crate::secrets::{random_token, token_hash};
use crate::store::{SignInSuccess, Store};

/// The session keys naming the signed-in account (shared with the admin UI's sessions, so
/// admins can list and end every session of an account).
pub const KEY_TENANT: &str = admin_ui::SESSION_TENANT;
pub const KEY_USER: &str = admin_ui::SESSION_USER;
/// Asks for a fresh key at a sign-in (see `admin_ui::SESSION_REKEY`); never stored.
pub const KEY_REKEY: &str = admin_ui::SESSION_REKEY;
/// The signed-in member's row (JSON), read with the session (`Store::session_load`) so that
/// a page need not ask the database for it again; never stored.
pub const KEY_MEMBER_ROW: &str = "_member_row";
/// A password sign-in's own write (`store::SignInSuccess`: its attempt counters cleared, its
/// audit event), made in the same statement or call as the session's: one write fewer per
/// sign-in. Never stored.
pub const KEY_SIGN_IN: &str = "_sign_in";

/// Take the sign-in write out of a session's state.
fn take_sign_in(state: &mut State) -> Result<Option<SignInSuccess>, serde_json::Error> {
    state
        .remove(KEY_SIGN_IN)
        .map(|v| serde_json::from_str(&v))
        .transpose()
}

#[derive(Clone)]
pub struct DbSessionStore {
    store: Store,
    clock: SharedClock,
    anonymous: Arc<AnonymousSessions>,
}

impl DbSessionStore {
    pub fn new(store: Store, clock: SharedClock, anonymous: Arc<AnonymousSessions>) -> Self {
        Self {
            store,
            clock,
            anonymous,
        }
    }
}

type State = HashMap<String, String>;

/// A session nobody has signed in to (a sign-in page's CSRF token, a pending authorization
/// request: those last 30 minutes) is kept an hour at most, not the signed-in lifetime:
/// visitors who never sign in must not fill the table for a day.
const ANONYMOUS_TTL: i64 = 3600;

/// How long the row of a session lives, in seconds: the whole lifetime once signed in.
fn row_ttl(signed_in: bool, ttl: &Duration) -> i64 {
    let ttl = ttl.whole_seconds();
    if signed_in { ttl } else { anonymous_ttl(ttl) }
}

fn anonymous_ttl(ttl: i64) -> i64 {
    ttl.min(ANONYMOUS_TTL)
}

/// Session values are JSON-encoded by actix-session; read a string value back.
fn json_str(state: &State, key: &str) -> Option<String> {
    state
        .get(key)
        .and_then(|v| serde_json::from_str::<String>(v).ok())
}

impl SessionStore for DbSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let id = token_hash(session_key.as_ref());
        let now = self.clock.now();
        let Some((text, member)) = self
            .store
            .session_load(&id, now)
            .await
            .map_err(|e| LoadError::Other(e.into()))?
        else {
            return Ok(None);
        };
        let mut state: State =
            serde_json::from_str(&text).map_err(|e| LoadError::Deserialization(e.into()))?;
        state.remove(KEY_MEMBER_ROW);
        state.remove(KEY_SIGN_IN);
        if let Some(row) = member.and_then(|m| serde_json::to_string(&m).ok()) {
            state.insert(KEY_MEMBER_ROW.into(), row);
        }
        Ok(Some(state))
    }

    async fn save(&self, mut state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        // A new session has a new key anyway.
        state.remove(KEY_REKEY);
        state.remove(KEY_MEMBER_ROW);
        let sign_in = take_sign_in(&mut state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = random_token();
        let id = token_hash(key.expose());
        let now = self.clock.now();
        let text = serde_json::to_string(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let user = json_str(&state, KEY_USER);
        let signed_in = user.is_some();
        self.store
            .session_insert(
                &id,
                json_str(&state, KEY_TENANT),
                user,
                text,
                now,
                now + row_ttl(signed_in, ttl),
                sign_in.as_ref(),
            )
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        if !signed_in {
            self.anonymous.started();
        }
        session_key_of(key.expose()).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        mut state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        // At a sign-in the row moves to a fresh key in the same statement: the old key (which
        // may have been planted) stops working.
        let fresh = state.remove(KEY_REKEY).map(|_| random_token());
        state.remove(KEY_MEMBER_ROW);
        let sign_in = take_sign_in(&mut state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let id = token_hash(session_key.as_ref());
        let now = self.clock.now();
        let text =
            serde_json::to_string(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let user = json_str(&state, KEY_USER);
        let expires = now + row_ttl(user.is_some(), ttl);
        let updated = self
            .store
            .session_update(
                &id,
                fresh.as_ref().map(|k| token_hash(k.expose())).as_deref(),
                json_str(&state, KEY_TENANT),
                user,
                text,
                now,
                expires,
                sign_in.as_ref(),
            )
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        if updated {
            return match fresh {
                Some(k) => session_key_of(k.expose()).map_err(UpdateError::Other),
                None => Ok(session_key),
            };
        }
        if fresh.is_none() {
            // Ended meanwhile: never resurrect it, nor its sign-in, under any key. (A sign-in
            // made in this request stands on its own: it is saved whole below.)
            for k in [KEY_TENANT, KEY_USER, "auth_time", "amr"] {
                state.remove(k);
            }
        }
        self.save(state, ttl).await.map_err(|e| match e {
            SaveError::Serialization(e) => UpdateError::Serialization(e),
            SaveError::Other(e) => UpdateError::Other(e),
        })
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &Duration,
    ) -> Result<(), anyhow::Error> {
        let now = self.clock.now();
        self.store
            .session_touch(
                &token_hash(session_key.as_ref()),
                now,
                now + ttl.whole_seconds(),
                now + anonymous_ttl(ttl.whole_seconds()),
            )
            .await
            .map_err(Into::into)
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.store
            .session_delete(&token_hash(session_key.as_ref()))
            .await
            .map_err(Into::into)
    }
}

fn session_key_of(key: &str) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(key.to_string()).map_err(Into::into)
}
