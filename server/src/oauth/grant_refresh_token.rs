//! The `refresh_token` grant (RFC 6749 §6): rotation on every use, reuse detection with a
//! grace window for retries, a sliding per-client lifetime, and no tie to browser sessions.
//!
//! Design note — why a grace window. Alexa refreshes from Amazon's servers and retries after
//! a timeout with the same refresh token. If the first response was lost, strict reuse
//! detection would revoke the family and Alexa would unlink the household. So a rotated
//! token presented again within `refresh_grace` seconds (per tenant, default 60) gets another
//! successor; the earlier successor stays valid. After the window, presenting a rotated token
//! is treated as theft: the whole family is revoked, including the live successor, and the
//! household must link again. The window is short and requires client authentication, which
//! bounds what a thief of an old token could do within it: a public client (a native app,
//! with no secret) has none, so its rotated tokens get no window at all (RFC 9700 §4.14.2:
//! any second use of one revokes the family).
use entity::tenant;

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::{Error, Result};
use crate::oauth::issue::{TokenResponse, UserGrant, refresh_ttl};
use crate::oauth::params::Params;
use crate::oauth::scopes;
use crate::secrets::{random_token, token_hash};
use crate::services::Services;
use crate::store::{ClientWithUris, NewRefresh, RefreshOutcome};

/// The scope a refreshed token carries: the grant's (or the narrower one asked for) less what
/// the client may no longer have. An admin who takes a scope off a client's list takes it off
/// every token refreshed from then on; the grant keeps it, so putting it back restores it.
fn still_allowed(scope: &str, client_scopes: &str) -> String {
    let allowed = scopes::split(client_scopes);
    scopes::split(scope)
        .into_iter()
        .filter(|s| allowed.contains(s))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Services {
    pub async fn grant_refresh_token(
        &self,
        tenant: &tenant::Model,
        client: &ClientWithUris,
        params: &Params,
        req: &RequestInfo,
    ) -> Result<TokenResponse> {
        let presented = params.required("refresh_token")?;
        let requested = match params.get("scope") {
            Some(s) => {
                Some(scopes::parse(s).ok_or_else(|| Error::invalid_scope("malformed scope"))?)
            }
            None => None,
        };
        let c = &client.client;
        let now = self.now();
        let next = random_token();
        let next_hash = token_hash(next.expose());
        let expires_at = now + refresh_ttl(tenant, c);
        let audit =
            AuditEvent::new("token_refreshed", "ok", Some(&tenant.id), req).client(&c.client_id);
        // The common case (a live token presented once, no narrower scope asked for) in one
        // call to the database; everything else below.
        if requested.is_none() {
            let at_once = self
                .store
                .rotate_refresh_at_once(
                    &tenant.id,
                    &token_hash(presented),
                    &c.id,
                    now,
                    &next_hash,
                    expires_at,
                    audit.clone(),
                )
                .await?;
            if let Some(family) = at_once {
                return self
                    .user_token_response(
                        tenant,
                        c,
                        UserGrant {
                            user_id: &family.user_id,
                            scope: &still_allowed(&family.scope, &c.scopes),
                            auth_time: family.auth_time,
                            amr: &family.amr,
                            family_id: &family.id,
                            nonce: None,
                        },
                        Some(&next),
                    )
                    .await;
            }
        }
        let mut scope_out = String::new();
        let outcome = self
            .store
            .rotate_refresh(
                &tenant.id,
                &token_hash(presented),
                &c.id,
                now,
                // No window without client authentication (see the design note above).
                (!c.public).then_some(tenant.refresh_grace),
                |fam| {
                    scope_out = match &requested {
                        Some(r) if !scopes::subset(r, &fam.scope) => {
                            return Err(Error::invalid_scope("scope exceeds what was granted"));
                        }
                        Some(r) if !r.is_empty() => still_allowed(&r.join(" "), &c.scopes),
                        _ => still_allowed(&fam.scope, &c.scopes),
                    };
                    Ok(NewRefresh {
                        family_id: fam.id.clone(),
                        token_hash: next_hash.clone(),
                        expires_at,
                    })
                },
                audit,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated { family, retry } => {
                if retry {
                    tracing::info!(family = %family.id, "refresh retried within the grace window");
                }
                self.user_token_response(
                    tenant,
                    c,
                    UserGrant {
                        user_id: &family.user_id,
                        scope: &scope_out,
                        auth_time: family.auth_time,
                        amr: &family.amr,
                        family_id: &family.id,
                        nonce: None,
                    },
                    Some(&next),
                )
                .await
            }
            RefreshOutcome::Replayed(family) => {
                self.store
                    .insert_audit(
                        AuditEvent::new("refresh_replay", "revoked", Some(&tenant.id), req)
                            .client(&c.client_id)
                            .user(&family.user_id),
                        now,
                    )
                    .await?;
                Err(Error::invalid_grant(
                    "refresh token reused; this link has been revoked",
                ))
            }
            RefreshOutcome::Unknown | RefreshOutcome::WrongClient => {
                Err(Error::invalid_grant("unknown refresh token"))
            }
            RefreshOutcome::Expired => Err(Error::invalid_grant("refresh token expired")),
            RefreshOutcome::Revoked => Err(Error::invalid_grant("refresh token revoked")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refreshed_scope_keeps_only_what_the_client_may_still_have() {
        use super::still_allowed;
        let client = "openid music.control music.read";
        assert_eq!(
            still_allowed("music.control user:read", client),
            "music.control"
        );
        assert_eq!(
            still_allowed("openid music.read", client),
            "openid music.read"
        );
        assert_eq!(still_allowed("user:read", client), "");
        assert_eq!(still_allowed("music.control", ""), "");
    }
}
