//! RFC 7662 token introspection. Answers `active: false` for anything that is not a live
//! token of this tenant: unknown, expired, revoked, of another tenant, malformed.
use entity::tenant;
use serde::Serialize;

use crate::error::Result;
use crate::oauth::params::Params;
use crate::secrets::token_hash;
use crate::services::Services;
use crate::store::{AccessLive, ClientWithUris};
use crate::tokens::jwt::AccessClaims;

#[derive(Serialize, Default)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// RFC 6749 §7.1's type, as RFC 7662 §2.2 asks: `Bearer` for an access token; none for a
    /// refresh token, which has no such type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Which kind of token this is, `access_token` or `refresh_token` (an extension member,
    /// RFC 7662 §2.2; Ory Hydra's name for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_use: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Services {
    /// A live access token of this tenant with its member's username, or `None`.
    pub async fn live_access_token(
        &self,
        tenant: &tenant::Model,
        token: &str,
    ) -> Result<Option<(AccessClaims, AccessLive)>> {
        let keys = self.keys.tenant_keys(&tenant.id).await?;
        let Ok(claims) = self.keys.verify_access_token(
            &tenant.id,
            &keys,
            &self.issuer(tenant),
            token,
            self.now(),
        ) else {
            return Ok(None);
        };
        Ok(self
            .store
            .access_token_live(
                &tenant.id,
                &claims.jti,
                &claims.client_id,
                claims.fam.as_deref(),
            )
            .await?
            .map(|live| (claims, live)))
    }

    pub async fn introspect(
        &self,
        tenant: &tenant::Model,
        _client: &ClientWithUris,
        params: &Params,
    ) -> Result<Introspection> {
        let token = params.required("token")?;
        let looks_like_jwt = token.bytes().filter(|b| *b == b'.').count() == 2;
        if looks_like_jwt {
            if let Some((c, live)) = self.live_access_token(tenant, token).await? {
                let username = live.username;
                return Ok(Introspection {
                    active: true,
                    scope: Some(c.scope),
                    client_id: Some(c.client_id),
                    username,
                    token_type: Some("Bearer"),
                    token_use: Some("access_token"),
                    exp: Some(c.exp),
                    iat: Some(c.iat),
                    sub: Some(c.sub),
                    aud: Some(c.aud),
                    iss: Some(c.iss),
                    jti: Some(c.jti),
                });
            }
            return Ok(Introspection::default());
        }
        let now = self.now();
        if let Some(r) = self
            .store
            .refresh_status(&tenant.id, &token_hash(token), now)
            .await?
        {
            return Ok(Introspection {
                active: true,
                scope: Some(r.fam.scope),
                client_id: r.client_id,
                username: r.username,
                token_type: None,
                token_use: Some("refresh_token"),
                exp: Some(r.tok.expires_at),
                iat: Some(r.tok.created_at),
                sub: Some(r.fam.user_id),
                aud: None,
                iss: Some(self.issuer(tenant)),
                jti: None,
            });
        }
        Ok(Introspection::default())
    }
}
