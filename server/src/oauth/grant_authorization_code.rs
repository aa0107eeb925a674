//! The `authorization_code` grant (RFC 6749 §4.1.3, PKCE per RFC 7636).
use entity::{authorization_code, tenant};

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::{Error, Result};
use crate::oauth::issue::{TokenResponse, UserGrant, refresh_ttl};
use crate::oauth::params::Params;
use crate::oauth::pkce;
use crate::secrets::{random_token, token_hash};
use crate::services::Services;
use crate::store::{ClientWithUris, CodeOutcome, NewRefresh, new_id_pub};

impl Services {
    pub async fn grant_authorization_code(
        &self,
        tenant: &tenant::Model,
        client: &ClientWithUris,
        params: &Params,
        req: &RequestInfo,
    ) -> Result<TokenResponse> {
        let code = params.required("code")?;
        let redirect_uri = params.get("redirect_uri");
        let verifier = params.get("code_verifier");
        let now = self.now();
        let c = &client.client;
        let refresh = random_token();
        let family_id = new_id_pub();
        let refresh_hash = token_hash(refresh.expose());
        let expires_at = now + refresh_ttl(tenant, c);
        let audit = AuditEvent::new("token_granted", "ok", Some(&tenant.id), req)
            .client(&c.client_id)
            .detail(serde_json::json!({"grant_type": "authorization_code"}));
        let code_hash = token_hash(code);
        // Whether the presenter holds the code's authorization request, as a replay must to
        // revoke what the code gave: the PKCE verifier, where there was a challenge (a public
        // client's code always has one; a confidential client also proves itself by its
        // secret).
        let holds = |code: &authorization_code::Model| match (&code.code_challenge, verifier) {
            (Some(ch), Some(v)) => pkce::verify_s256(v, ch),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let read = self.store.read_code(&tenant.id, &code_hash).await?;
        // The answer is made (keys loaded, member read, tokens signed) before the code is used
        // up, so nothing that can fail comes after: a code consumed without its tokens
        // reaching the client would turn the client's retry into a replay, which revokes. If
        // making it fails (503), the code is left unused, even one the checks below would
        // refuse; tokens made for a code that is then refused are dropped unsent.
        let prepared = match &read {
            Some(code) if code.consumed_at.is_none() && code.client_id == c.id => Some((
                code.id.clone(),
                self.user_token_response(tenant, c, grant_of(code, &family_id), Some(&refresh))
                    .await?,
            )),
            _ => None,
        };
        let outcome = self
            .store
            .redeem_code(read, &tenant.id, &code_hash, now, &c.id, holds, |code| {
                if code.client_id != c.id {
                    return Err(Error::invalid_grant(
                        "the code was issued to another client",
                    ));
                }
                if code.expires_at <= now {
                    return Err(Error::invalid_grant("the code has expired"));
                }
                match (code.redirect_uri.as_str(), redirect_uri) {
                    ("", None) => {}
                    (stored, Some(given)) if !stored.is_empty() && stored == given => {}
                    ("", Some(given))
                        if client.redirect_uris.len() == 1 && client.redirect_uris[0] == given => {}
                    _ => {
                        return Err(Error::invalid_grant(
                            "redirect_uri does not match the authorization request",
                        ));
                    }
                }
                match (&code.code_challenge, verifier) {
                    (Some(ch), Some(v)) if pkce::verify_s256(v, ch) => {}
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid_grant("code_verifier does not match"));
                    }
                    (Some(_), None) => {
                        return Err(Error::invalid_grant("code_verifier is required"));
                    }
                    (None, Some(_)) => {
                        return Err(Error::invalid_grant(
                            "code_verifier sent but no code_challenge was",
                        ));
                    }
                    (None, None) if c.require_pkce || c.public => {
                        return Err(Error::invalid_grant("PKCE is required for this client"));
                    }
                    (None, None) => {}
                }
                Ok((
                    Some(NewRefresh {
                        family_id: family_id.clone(),
                        token_hash: refresh_hash.clone(),
                        expires_at,
                    }),
                    Some(audit.clone().user(&code.user_id)),
                ))
            })
            .await;
        let code = match outcome {
            Ok(CodeOutcome::Redeemed(code)) => code,
            Ok(CodeOutcome::Unknown) => {
                return Err(Error::invalid_grant("unknown, expired or used code"));
            }
            Ok(CodeOutcome::Withdrawn(_)) => {
                return Err(Error::invalid_grant(
                    "the authorization was revoked since the code was issued",
                ));
            }
            Ok(CodeOutcome::Replayed(code)) => {
                self.store
                    .insert_audit(
                        AuditEvent::new("code_replay", "revoked", Some(&tenant.id), req)
                            .client(&c.client_id)
                            .user(&code.user_id),
                        now,
                    )
                    .await?;
                return Err(Error::invalid_grant(
                    "the code was already used; tokens issued from it are revoked",
                ));
            }
            Err(e) => return Err(e),
        };
        match prepared {
            Some((id, response)) if id == code.id => Ok(response),
            // Not reached: a code is redeemed only if unused and this client's, as read.
            _ => {
                self.user_token_response(tenant, c, grant_of(&code, &family_id), Some(&refresh))
                    .await
            }
        }
    }
}

/// What the tokens issued for `code` say.
fn grant_of<'a>(code: &'a authorization_code::Model, family_id: &'a str) -> UserGrant<'a> {
    UserGrant {
        user_id: &code.user_id,
        scope: &code.scope,
        auth_time: code.auth_time,
        amr: &code.amr,
        family_id,
        nonce: code.nonce.as_deref(),
    }
}
