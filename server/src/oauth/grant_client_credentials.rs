//! The `client_credentials` grant (RFC 6749 §4.4): a confidential client acting for itself.
//! Allowed only for clients registered with it; the token's `sub` is the client_id and it
//! never carries user scopes.
use entity::tenant;

use crate::error::{Error, Result};
use crate::oauth::issue::{TokenResponse, access_ttl};
use crate::oauth::params::Params;
use crate::oauth::scopes::{self, USER_SCOPES};
use crate::secrets::random_id;
use crate::services::Services;
use crate::store::ClientWithUris;
use crate::tokens::jwt::{self, AccessClaims};
use crate::tokens::keys::SigningAlg;

impl Services {
    pub async fn grant_client_credentials(
        &self,
        tenant: &tenant::Model,
        client: &ClientWithUris,
        params: &Params,
    ) -> Result<TokenResponse> {
        let c = &client.client;
        if c.public || !scopes::split(&c.grant_types).contains(&"client_credentials") {
            return Err(Error::unauthorized_client(
                "this client may not use client_credentials",
            ));
        }
        let allowed: Vec<&str> = scopes::split(&c.scopes)
            .into_iter()
            .filter(|s| !USER_SCOPES.contains(s))
            .collect();
        let scope = match params.get("scope") {
            Some(s) => {
                let r = scopes::parse(s).ok_or_else(|| Error::invalid_scope("malformed scope"))?;
                if !r.iter().all(|x| allowed.contains(&x.as_str())) {
                    return Err(Error::invalid_scope("scope not allowed for this client"));
                }
                r.join(" ")
            }
            None => allowed.join(" "),
        };
        let now = self.now();
        let ttl = access_ttl(tenant, c);
        let keys = self.keys.tenant_keys(&tenant.id).await?;
        let claims = AccessClaims {
            iss: self.issuer(tenant),
            sub: c.client_id.clone(),
            aud: c.audience.clone(),
            client_id: c.client_id.clone(),
            scope: scope.clone(),
            exp: now + ttl,
            iat: now,
            jti: random_id(),
            auth_time: None,
            fam: None,
        };
        let alg = SigningAlg::parse(&c.access_token_alg).unwrap_or(SigningAlg::ES256);
        Ok(TokenResponse {
            access_token: jwt::sign_access_token(&keys, alg, &claims)?,
            token_type: "Bearer",
            expires_in: ttl,
            refresh_token: None,
            scope,
            id_token: None,
        })
    }
}
