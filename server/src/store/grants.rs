use entity::{grant, refresh_family};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::{Store, new_id};
use crate::error::Result;

impl Store {
    /// The user's standing consent to a client, if not revoked.
    pub async fn active_grant(
        &self,
        user_id: &str,
        client_pk: &str,
    ) -> Result<Option<grant::Model>> {
        Ok(grant::Entity::find()
            .filter(grant::Column::UserId.eq(user_id))
            .filter(grant::Column::ClientId.eq(client_pk))
            .filter(grant::Column::RevokedAt.is_null())
            .order_by_desc(grant::Column::CreatedAt)
            .one(&self.db)
            .await?)
    }

    /// Record consent: widen the active grant's scopes, or create a grant. Returns its id.
    pub async fn upsert_grant(
        &self,
        tenant_id: &str,
        user_id: &str,
        client_pk: &str,
        scope: &str,
        now: i64,
    ) -> Result<String> {
        let txn = self.write_txn().await?;
        let existing = grant::Entity::find()
            .filter(grant::Column::UserId.eq(user_id))
            .filter(grant::Column::ClientId.eq(client_pk))
            .filter(grant::Column::RevokedAt.is_null())
            .order_by_desc(grant::Column::CreatedAt)
            .one(&txn)
            .await?;
        let id = if let Some(g) = existing {
            let mut scopes: Vec<&str> = g.scope.split(' ').filter(|s| !s.is_empty()).collect();
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
            grant::Entity::update_many()
                .col_expr(grant::Column::Scope, Expr::value(scopes.join(" ")))
                .col_expr(grant::Column::UpdatedAt, Expr::value(now))
                .filter(grant::Column::Id.eq(g.id.clone()))
                .exec(&txn)
                .await?;
            g.id
        } else {
            let id = new_id();
            grant::Entity::insert(grant::ActiveModel {
                id: Set(id.clone()),
                tenant_id: Set(tenant_id.to_string()),
                user_id: Set(user_id.to_string()),
                client_id: Set(client_pk.to_string()),
                scope: Set(scope.to_string()),
                created_at: Set(now),
                updated_at: Set(now),
                last_refreshed_at: Set(None),
                revoked_at: Set(None),
            })
            .exec_without_returning(&txn)
            .await?;
            id
        };
        txn.commit().await?;
        Ok(id)
    }

    pub async fn grants_of_user(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<Vec<grant::Model>> {
        Ok(grant::Entity::find()
            .filter(grant::Column::TenantId.eq(tenant_id))
            .filter(grant::Column::UserId.eq(user_id))
            .filter(grant::Column::RevokedAt.is_null())
            .order_by_desc(grant::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// Revoke a grant of this tenant (optionally only if it belongs to `user_id`) and its
    /// refresh families. Returns whether a grant was revoked.
    pub async fn revoke_grant(
        &self,
        tenant_id: &str,
        grant_id: &str,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let mut q = grant::Entity::update_many()
            .col_expr(grant::Column::RevokedAt, Expr::value(now))
            .filter(grant::Column::Id.eq(grant_id))
            .filter(grant::Column::TenantId.eq(tenant_id))
            .filter(grant::Column::RevokedAt.is_null());
        if let Some(u) = user_id {
            q = q.filter(grant::Column::UserId.eq(u));
        }
        let n = q.exec(&txn).await?.rows_affected;
        if n == 1 {
            refresh_family::Entity::update_many()
                .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
                .col_expr(
                    refresh_family::Column::RevokedReason,
                    Expr::value("grant_revoked"),
                )
                .filter(refresh_family::Column::GrantId.eq(grant_id))
                .filter(refresh_family::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(n == 1)
    }
}
