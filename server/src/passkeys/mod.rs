//! Passkeys with webauthn-rs: enrollment (from the account page or a one-time link), sign-in
//! with a discoverable credential (no username; conditional mediation where offered) or
//! username-first, server-side ceremony state that expires and is single use.
//!
//! One RP ID (the public host) serves every tenant; a credential belongs to one user of one
//! tenant, so a passkey registered in tenant A is refused at tenant B.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::{enrollment_link, passkey, tenant, user, webauthn_ceremony};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, DiscoverableAuthentication, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use webauthn_rs_proto::ResidentKeyRequirement;

use crate::audit::{AuditEvent, RequestInfo};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secrets::{random_id, random_token, token_hash};
use crate::services::Services;
use crate::store::new_id_pub;
use crate::store::{Removal, Removed};

/// How long a challenge may be answered.
pub const CEREMONY_TTL: i64 = 300;
/// How long an enrollment link works.
pub const ENROLL_TTL: i64 = 72 * 3600;

pub fn build_webauthn(settings: &Settings) -> anyhow::Result<Webauthn> {
    let url = Url::parse(&settings.public_url)?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("public_url has no host"))?
        .to_string();
    let mut origin = url.clone();
    origin.set_path("");
    Ok(WebauthnBuilder::new(&host, &origin)?
        .rp_name("ma-idp")
        .build()?)
}

#[derive(Serialize, Deserialize)]
enum AuthState {
    Discoverable(DiscoverableAuthentication),
    /// Named the member's own credentials: started by an earlier version (a sign-in begun
    /// before an upgrade and finished after it). No longer started.
    Known(PasskeyAuthentication),
    /// Started with a username (normalized): discoverable like any other, and it must end
    /// with a passkey of the member of that name.
    Named(DiscoverableAuthentication, String),
}

/// The `amr` of a passkey sign-in: a synced (backup-eligible) passkey is a software key.
pub fn passkey_amr(backup_eligible: bool) -> [&'static str; 3] {
    let key = if backup_eligible { "swk" } else { "hwk" };
    [key, "user", "mfa"]
}

fn refused(msg: &str) -> Error {
    Error::invalid_request(msg.to_string())
}

/// What the account page shows of a passkey.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub synced: bool,
}

fn cred_flags(pk: &Passkey) -> (bool, bool, i64) {
    let v = serde_json::to_value(pk).unwrap_or_default();
    let c = &v["cred"];
    (
        c["backup_eligible"].as_bool().unwrap_or(false),
        c["backup_state"].as_bool().unwrap_or(false),
        c["counter"].as_i64().unwrap_or(0),
    )
}

impl Services {
    fn user_uuid(user: &user::Model) -> Result<Uuid> {
        Uuid::parse_str(&user.id).map_err(|_| Error::internal("user id is not a UUID"))
    }

    async fn save_ceremony(
        &self,
        tenant: &tenant::Model,
        kind: &str,
        user_id: Option<&str>,
        state: String,
    ) -> Result<String> {
        let id = random_id();
        self.store
            .insert_ceremony(webauthn_ceremony::Model {
                id: id.clone(),
                tenant_id: tenant.id.clone(),
                kind: kind.to_string(),
                user_id: user_id.map(str::to_string),
                state,
                expires_at: self.now() + CEREMONY_TTL,
            })
            .await?;
        Ok(id)
    }

    /// Start enrolling a passkey for this user (signed in, or holding an enrollment link).
    pub async fn passkey_register_start(
        &self,
        tenant: &tenant::Model,
        user: &user::Model,
    ) -> Result<(String, CreationChallengeResponse)> {
        let existing = self.store.passkeys_of_user(&tenant.id, &user.id).await?;
        let exclude: Vec<_> = existing
            .iter()
            .filter_map(|p| URL_SAFE_NO_PAD.decode(&p.cred_id).ok())
            .collect();
        let display = user
            .display_name
            .clone()
            .unwrap_or_else(|| user.username.clone());
        let (mut ccr, state) = self
            .webauthn
            .start_passkey_registration(
                Self::user_uuid(user)?,
                &user.username,
                &display,
                Some(exclude),
            )
            .map_err(|e| Error::internal(format!("webauthn: {e}")))?;
        // Discoverable credentials: sign in without typing a name.
        if let Some(sel) = ccr.public_key.authenticator_selection.as_mut() {
            sel.resident_key = Some(ResidentKeyRequirement::Required);
            sel.require_resident_key = true;
        }
        let state = serde_json::to_string(&state).map_err(Error::internal)?;
        let id = self
            .save_ceremony(tenant, "register", Some(&user.id), state)
            .await?;
        Ok((id, ccr))
    }

    /// Finish enrolling: verify the attestation against the stored challenge and store the
    /// credential. Audited.
    pub async fn passkey_register_finish(
        &self,
        tenant: &tenant::Model,
        user: &user::Model,
        ceremony: &str,
        cred: &RegisterPublicKeyCredential,
        name: Option<&str>,
        info: &RequestInfo,
    ) -> Result<passkey::Model> {
        let now = self.now();
        let c = self
            .store
            .take_ceremony(&tenant.id, ceremony, "register", now)
            .await?
            .filter(|c| c.user_id.as_deref() == Some(user.id.as_str()))
            .ok_or_else(|| {
                refused("This passkey request expired or was already used. Try again.")
            })?;
        let state: PasskeyRegistration = serde_json::from_str(&c.state).map_err(Error::internal)?;
        let pk = self
            .webauthn
            .finish_passkey_registration(cred, &state)
            .map_err(|e| {
                tracing::info!(error = %e, "passkey registration refused");
                refused("The passkey could not be verified. Try again, or use another device.")
            })?;
        let cred_id = URL_SAFE_NO_PAD.encode(pk.cred_id());
        if self.store.passkey_by_cred_id(&cred_id).await?.is_some() {
            return Err(refused("This passkey is already registered."));
        }
        let (be, bs, counter) = cred_flags(&pk);
        let count = self
            .store
            .passkeys_of_user(&tenant.id, &user.id)
            .await?
            .len();
        let name = name
            .map(passkey_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("Passkey {}", count + 1));
        let model = passkey::Model {
            id: new_id_pub(),
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            cred_id,
            name,
            passkey: serde_json::to_string(&pk).map_err(Error::internal)?,
            sign_count: counter,
            backup_eligible: be,
            backup_state: bs,
            created_at: now,
            last_used_at: None,
        };
        self.store.insert_passkey(model.clone()).await?;
        self.store
            .insert_audit(
                AuditEvent::new("passkey_enrolled", "ok", Some(&tenant.id), info)
                    .user(&user.id)
                    .detail(serde_json::json!({"passkey": model.id, "name": model.name})),
                now,
            )
            .await?;
        Ok(model)
    }

    /// Start a passkey sign-in, with or without a username. Every start is discoverable
    /// (registration requires discoverable credentials) and names no credential: the answer
    /// is the same whatever name is given, and tells nothing of whether that member exists
    /// or has passkeys (no database is read to give it). A start with a username must end
    /// with a passkey of the member of that name (`passkey_login_check`).
    pub async fn passkey_login_start(
        &self,
        tenant: &tenant::Model,
        username: Option<&str>,
    ) -> Result<(String, RequestChallengeResponse)> {
        let named = username
            .map(crate::login::normalize_username)
            .filter(|u| !u.is_empty());
        let (rcr, st) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| Error::internal(format!("webauthn: {e}")))?;
        let state = match named {
            // A name no member can have (too long) is not kept: an empty one, which is no
            // member's either, stands for it.
            Some(name) if name.len() > 128 => AuthState::Named(st, String::new()),
            Some(name) => AuthState::Named(st, name),
            None => AuthState::Discoverable(st),
        };
        let state = serde_json::to_string(&state).map_err(Error::internal)?;
        let id = self
            .save_ceremony(tenant, "authenticate", None, state)
            .await?;
        Ok((id, rcr))
    }

    /// Finish a passkey sign-in. Refuses expired or replayed challenges, wrong origins or RP
    /// IDs, removed credentials and credentials of another tenant. Returns the user and the
    /// RFC 8176 `amr` values. Audited.
    pub async fn passkey_login_finish(
        &self,
        tenant: &tenant::Model,
        ceremony: &str,
        cred: &PublicKeyCredential,
        info: &RequestInfo,
    ) -> Result<(user::Model, Vec<&'static str>)> {
        let result = self.passkey_login_check(tenant, ceremony, cred).await;
        let now = self.now();
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("ma_idp_sign_ins_total", "method" => "passkey", "outcome" => outcome)
            .increment(1);
        let mut ev = AuditEvent::new("sign_in", outcome, Some(&tenant.id), info);
        ev = match &result {
            Ok((u, _)) => ev
                .user(&u.id)
                .actor(&u.username)
                .detail(serde_json::json!({"method": "passkey"})),
            Err(e) => ev.detail(serde_json::json!({"method": "passkey", "reason": e.to_string()})),
        };
        self.store.insert_audit(ev, now).await?;
        result
    }

    async fn passkey_login_check(
        &self,
        tenant: &tenant::Model,
        ceremony: &str,
        cred: &PublicKeyCredential,
    ) -> Result<(user::Model, Vec<&'static str>)> {
        let now = self.now();
        let c = self
            .store
            .take_ceremony(&tenant.id, ceremony, "authenticate", now)
            .await?
            .ok_or_else(|| {
                refused("This sign-in request expired or was already used. Try again.")
            })?;
        let state: AuthState = serde_json::from_str(&c.state).map_err(Error::internal)?;
        let cred_id = URL_SAFE_NO_PAD.encode(cred.get_credential_id());
        let stored = self
            .store
            .passkey_by_cred_id(&cred_id)
            .await?
            .filter(|p| p.tenant_id == tenant.id)
            .ok_or_else(|| refused("This passkey is not registered here. Sign in with your password, or ask an admin."))?;
        let mut pk: Passkey = serde_json::from_str(&stored.passkey).map_err(Error::internal)?;
        let (verified, named) = match state {
            AuthState::Discoverable(st) => {
                (self.finish_discoverable(cred, st, &pk, &stored)?, None)
            }
            AuthState::Named(st, name) => (
                self.finish_discoverable(cred, st, &pk, &stored)?,
                Some(name),
            ),
            AuthState::Known(st) => (self.webauthn.finish_passkey_authentication(cred, &st), None),
        };
        let verified = verified.map_err(|e| {
            tracing::info!(error = %e, "passkey sign-in refused");
            refused("The passkey could not be verified. Try again, or sign in another way.")
        })?;
        if !verified.user_verified() {
            return Err(refused(
                "The passkey did not verify you (fingerprint, face or PIN).",
            ));
        }
        // A named sign-in's state holds the credential as it was at the start; its signature
        // counter is checked again against the stored one (WebAuthn §7.2 step 21): a use since
        // then must not let a copy's lower counter pass.
        let (_, _, stored_counter) = cred_flags(&pk);
        let counter = i64::from(verified.counter());
        if (counter > 0 || stored_counter > 0) && counter <= stored_counter {
            tracing::warn!(
                passkey = %stored.id,
                "passkey sign-in refused: its signature counter did not increase (a copy?)"
            );
            return Err(refused(
                "The passkey could not be verified. Try again, or sign in another way.",
            ));
        }
        let user = self
            .store
            .user_by_id(&tenant.id, &stored.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| refused("This account is disabled."))?;
        // Started with a name: the passkey must be that member's (the name may be anyone's,
        // or no one's; the passkey says whose it is).
        if let Some(name) = named
            && crate::login::normalize_username(&user.username) != name
        {
            return Err(refused(
                "This passkey is for another account. Use a passkey of the account you named, \
                 or sign in without typing a name.",
            ));
        }
        pk.update_credential(&verified);
        let (_, bs, counter) = cred_flags(&pk);
        self.store
            .record_passkey_use(
                &stored.id,
                serde_json::to_string(&pk).map_err(Error::internal)?,
                counter,
                bs,
                now,
            )
            .await?;
        Ok((
            user,
            passkey_amr(stored.backup_eligible || verified.backup_eligible()).to_vec(),
        ))
    }

    /// A discoverable sign-in's assertion checked against the stored passkey it names, which
    /// must be the one whose user the authenticator says it is.
    fn finish_discoverable(
        &self,
        cred: &PublicKeyCredential,
        st: DiscoverableAuthentication,
        pk: &Passkey,
        stored: &entity::passkey::Model,
    ) -> Result<std::result::Result<AuthenticationResult, WebauthnError>> {
        let (uuid, _) = self
            .webauthn
            .identify_discoverable_authentication(cred)
            .map_err(|_| refused("The passkey did not say whose it is."))?;
        if uuid.to_string() != stored.user_id {
            return Err(refused("This passkey is not registered here."));
        }
        Ok(self
            .webauthn
            .finish_discoverable_authentication_v2(cred, st, pk))
    }

    pub async fn my_passkeys(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
    ) -> Result<Vec<PasskeyView>> {
        Ok(self
            .store
            .passkeys_of_user(&tenant.id, user_id)
            .await?
            .into_iter()
            .map(|p| PasskeyView {
                id: p.id,
                name: p.name,
                created_at: p.created_at,
                last_used_at: p.last_used_at,
                synced: p.backup_eligible,
            })
            .collect())
    }

    pub async fn rename_passkey(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
        id: &str,
        name: &str,
    ) -> Result<bool> {
        let name = passkey_name(name);
        if name.is_empty() {
            return Err(refused("A passkey needs a name."));
        }
        self.store
            .rename_passkey(&tenant.id, user_id, id, &name)
            .await
    }

    /// Remove one of a member's passkeys. `removal` says whether it may be the member's last
    /// way to sign in (see [`Services::own_removal`]). Audited when done.
    pub async fn remove_passkey(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
        id: &str,
        removal: Removal,
        actor: &str,
        info: &RequestInfo,
    ) -> Result<Removed> {
        let done = self
            .store
            .delete_passkey(&tenant.id, user_id, id, removal)
            .await?;
        if done == Removed::Done {
            self.store
                .insert_audit(
                    AuditEvent::new("passkey_removed", "ok", Some(&tenant.id), info)
                        .user(user_id)
                        .actor(actor)
                        .detail(serde_json::json!({"passkey": id})),
                    self.now(),
                )
                .await?;
        }
        Ok(done)
    }

    /// A one-time link that lets a member enroll a passkey without a password.
    pub async fn create_enrollment_link(
        &self,
        tenant: &tenant::Model,
        user: &user::Model,
        by: impl Into<crate::services::By>,
    ) -> Result<(String, i64)> {
        let by = by.into();
        let token = random_token();
        let now = self.now();
        let expires_at = now + ENROLL_TTL;
        self.store
            .insert_enrollment_link(enrollment_link::Model {
                id: new_id_pub(),
                token_hash: token_hash(token.expose()),
                tenant_id: tenant.id.clone(),
                user_id: user.id.clone(),
                created_at: now,
                expires_at,
                used_at: None,
            })
            .await?;
        self.store
            .insert_audit(
                AuditEvent::new("enrollment_link_created", "ok", Some(&tenant.id), &by.req)
                    .user(&user.id)
                    .actor(&by.actor),
                now,
            )
            .await?;
        Ok((
            format!("{}/enroll/{}", self.issuer(tenant), token.expose()),
            expires_at,
        ))
    }

    /// The link's user, if the link is usable.
    pub async fn enrollment_target(
        &self,
        tenant: &tenant::Model,
        token: &str,
    ) -> Result<(enrollment_link::Model, user::Model)> {
        let expired = || {
            Error::bad_page(
                "This enrollment link does not work",
                "It has expired or was already used. Ask your admin for a new link.",
            )
        };
        if token.len() > 100 {
            return Err(expired());
        }
        let link = self
            .store
            .enrollment_link(&tenant.id, &token_hash(token), self.now())
            .await?
            .ok_or_else(expired)?;
        let user = self
            .store
            .user_by_id(&tenant.id, &link.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(expired)?;
        Ok((link, user))
    }
}

/// A passkey's name as kept: without control characters, trimmed, at most 100 characters
/// (empty when nothing is left).
fn passkey_name(name: &str) -> String {
    let kept: String = name.chars().filter(|c| !c.is_control()).collect();
    kept.trim().chars().take(100).collect()
}
