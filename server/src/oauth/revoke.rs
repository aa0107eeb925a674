//! RFC 7009 token revocation. Revoking a refresh token revokes its whole family, so the
//! access tokens issued from it turn inactive at introspection at once. Unknown tokens are
//! answered with 200, as the RFC asks.
use entity::tenant;

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::{Error, Result};
use crate::oauth::params::Params;
use crate::secrets::token_hash;
use crate::services::Services;
use crate::store::ClientWithUris;
use crate::tokens::jwt;

impl Services {
    pub async fn revoke(
        &self,
        tenant: &tenant::Model,
        client: &ClientWithUris,
        params: &Params,
        req: &RequestInfo,
    ) -> Result<()> {
        let token = params.required("token")?;
        let now = self.now();
        let c = &client.client;
        // Refresh token?
        if let Some(fam) = self
            .store
            .family_of_refresh(&tenant.id, &token_hash(token))
            .await?
        {
            if fam.client_id != c.id {
                return Err(Error::unauthorized_client(
                    "this token was issued to another client",
                ));
            }
            self.store
                .revoke_family(&fam.id, now, "revoked_by_client")
                .await?;
            self.store
                .insert_audit(
                    AuditEvent::new("token_revoked", "ok", Some(&tenant.id), req)
                        .client(&c.client_id)
                        .user(&fam.user_id)
                        .detail(serde_json::json!({"token_type": "refresh_token"})),
                    now,
                )
                .await?;
            return Ok(());
        }
        // Access token?
        let keys = self.keys.tenant_keys(&tenant.id).await?;
        if let Ok((claims, _)) = jwt::verify_access_token(&keys, &self.issuer(tenant), token, now) {
            if claims.client_id != c.client_id {
                return Err(Error::unauthorized_client(
                    "this token was issued to another client",
                ));
            }
            self.store
                .revoke_access_token(&tenant.id, &claims.jti, claims.exp)
                .await?;
            self.store
                .insert_audit(
                    AuditEvent::new("token_revoked", "ok", Some(&tenant.id), req)
                        .client(&c.client_id)
                        .detail(serde_json::json!({"token_type": "access_token"})),
                    now,
                )
                .await?;
        }
        Ok(())
    }
}
