//! Self-service: a member's consents and browser sessions.
use entity::{browser_session, tenant};

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::Result;
use crate::services::Services;

pub struct GrantView {
    pub id: String,
    pub client_name: String,
    pub scope: String,
    pub created_at: i64,
    pub last_refreshed_at: Option<i64>,
}

impl Services {
    pub async fn my_grants(&self, tenant: &tenant::Model, user_id: &str) -> Result<Vec<GrantView>> {
        let mut out = Vec::new();
        for g in self.store.grants_of_user(&tenant.id, user_id).await? {
            let name = self
                .store
                .client_by_pk(&tenant.id, &g.client_id)
                .await?
                .map(|c| c.name)
                .unwrap_or_else(|| "(removed application)".into());
            out.push(GrantView {
                id: g.id,
                client_name: name,
                scope: g.scope,
                created_at: g.created_at,
                last_refreshed_at: g.last_refreshed_at,
            });
        }
        Ok(out)
    }

    /// Revoke one of the member's own grants (and its refresh tokens). Audited.
    pub async fn revoke_my_grant(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
        grant_id: &str,
        info: &RequestInfo,
    ) -> Result<bool> {
        let now = self.now();
        let done = self
            .store
            .revoke_grant(&tenant.id, grant_id, Some(user_id), now)
            .await?;
        if done {
            self.store
                .insert_audit(
                    AuditEvent::new("grant_revoked", "ok", Some(&tenant.id), info)
                        .user(user_id)
                        .actor("self")
                        .detail(serde_json::json!({"grant": grant_id})),
                    now,
                )
                .await?;
        }
        Ok(done)
    }

    pub async fn my_sessions(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
    ) -> Result<Vec<browser_session::Model>> {
        self.store
            .sessions_of_user(&tenant.id, user_id, self.now())
            .await
    }

    pub async fn end_my_session(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
        id: &str,
        info: &RequestInfo,
    ) -> Result<bool> {
        let done = self.store.end_user_session(&tenant.id, user_id, id).await?;
        if done {
            self.store
                .insert_audit(
                    AuditEvent::new("session_ended", "ok", Some(&tenant.id), info)
                        .user(user_id)
                        .actor("self"),
                    self.now(),
                )
                .await?;
        }
        Ok(done)
    }
}
