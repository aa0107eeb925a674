//! Building token responses: the RFC 9068 access token, the ID token, and the JSON answer.
use entity::{client, tenant};
use serde::Serialize;

use crate::error::Result;
use crate::oauth::scopes;
use crate::secrets::{Secret, random_id};
use crate::services::Services;
use crate::tokens::jwt::{self, AccessClaims, IdClaims};
use crate::tokens::keys::SigningAlg;

/// RFC 6749 §5.1. `expires_in` is always an integer (Alexa schedules refreshes from it).
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Who and what a user token is for.
pub struct UserGrant<'a> {
    pub user_id: &'a str,
    pub scope: &'a str,
    pub auth_time: i64,
    pub amr: &'a str,
    pub family_id: &'a str,
    pub nonce: Option<&'a str>,
}

/// The shortest access-token lifetime issued: Alexa requires at least 360 s.
pub const MIN_ACCESS_TTL: i64 = 360;

/// The longest access-token lifetime a tenant or client may be given (the admin UI's limit).
pub const MAX_ACCESS_TTL: i64 = 86_400;

pub fn access_ttl(tenant: &tenant::Model, client: &client::Model) -> i64 {
    client
        .access_token_ttl
        .unwrap_or(tenant.access_token_ttl)
        .max(MIN_ACCESS_TTL)
}

pub fn refresh_ttl(tenant: &tenant::Model, client: &client::Model) -> i64 {
    client
        .refresh_token_ttl
        .unwrap_or(tenant.refresh_token_ttl)
        .max(3600)
}

fn alg(name: &str, default: SigningAlg) -> SigningAlg {
    SigningAlg::parse(name).unwrap_or(default)
}

impl Services {
    /// Sign the access token (and ID token when `openid` was granted) for a user grant.
    pub async fn user_token_response(
        &self,
        tenant: &tenant::Model,
        client: &client::Model,
        g: UserGrant<'_>,
        refresh: Option<&Secret>,
    ) -> Result<TokenResponse> {
        let now = self.now();
        let ttl = access_ttl(tenant, client);
        let issuer = self.issuer(tenant);
        let keys = self.keys.tenant_keys(&tenant.id).await?;
        let claims = AccessClaims {
            iss: issuer.clone(),
            sub: g.user_id.to_string(),
            aud: client.audience.clone(),
            client_id: client.client_id.clone(),
            scope: g.scope.to_string(),
            exp: now + ttl,
            iat: now,
            jti: random_id(),
            auth_time: Some(g.auth_time),
            fam: Some(g.family_id.to_string()),
        };
        let at_alg = alg(&client.access_token_alg, SigningAlg::ES256);
        let access_token = jwt::sign_access_token(&keys, at_alg, &claims)?;
        let granted = scopes::split(g.scope);
        let id_token = if granted.contains(&"openid") {
            let want_profile = granted.contains(&"profile");
            let want_email = granted.contains(&"email");
            let user = if want_profile || want_email {
                self.store.user_by_id(&tenant.id, g.user_id).await?
            } else {
                None
            };
            let id_alg = alg(&client.id_token_alg, SigningAlg::RS256);
            let id = IdClaims {
                iss: issuer,
                sub: g.user_id.to_string(),
                aud: client.client_id.clone(),
                exp: now + ttl,
                iat: now,
                auth_time: g.auth_time,
                nonce: g.nonce.map(str::to_string),
                amr: g
                    .amr
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                at_hash: Some(jwt::at_hash(&access_token, id_alg)),
                azp: client.client_id.clone(),
                preferred_username: user
                    .as_ref()
                    .filter(|_| want_profile)
                    .map(|u| u.username.clone()),
                name: user
                    .as_ref()
                    .filter(|_| want_profile)
                    .and_then(|u| u.display_name.clone()),
                email: user
                    .as_ref()
                    .filter(|_| want_email)
                    .and_then(|u| u.email.clone()),
            };
            Some(jwt::sign_id_token(&keys, id_alg, &id)?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            refresh_token: refresh.map(|r| r.expose().to_string()),
            scope: g.scope.to_string(),
            id_token,
        })
    }
}
