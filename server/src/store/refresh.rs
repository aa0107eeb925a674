use entity::{grant, refresh_family, refresh_token, revoked_access_token, user};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::audit::insert_audit;
use super::{Store, new_id};
use crate::audit::AuditEvent;
use crate::error::Result;

/// A refresh token to store (only its hash).
pub struct NewRefresh {
    pub family_id: String,
    pub token_hash: String,
    pub expires_at: i64,
}

pub enum RefreshOutcome {
    Unknown,
    Expired,
    /// The family, its grant or its user was revoked or disabled.
    Revoked,
    /// The token belongs to another client.
    WrongClient,
    /// A rotated token was presented after the grace window: the family is now revoked.
    Replayed(refresh_family::Model),
    /// A new token was committed. `retry` is true when the presented token had already been
    /// rotated within the grace window (a client retrying after a lost response).
    Rotated {
        family: refresh_family::Model,
        retry: bool,
    },
}

pub(crate) async fn insert_refresh<C: ConnectionTrait>(
    db: &C,
    r: &NewRefresh,
    now: i64,
) -> Result<()> {
    refresh_token::Entity::insert(refresh_token::ActiveModel {
        id: Set(new_id()),
        family_id: Set(r.family_id.clone()),
        token_hash: Set(r.token_hash.clone()),
        created_at: Set(now),
        expires_at: Set(r.expires_at),
        used_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

async fn family_live<C: ConnectionTrait>(db: &C, fam: &refresh_family::Model) -> Result<bool> {
    if fam.revoked_at.is_some() {
        return Ok(false);
    }
    let g = grant::Entity::find_by_id(fam.grant_id.clone())
        .one(db)
        .await?;
    if g.is_none_or(|g| g.revoked_at.is_some()) {
        return Ok(false);
    }
    let u = user::Entity::find_by_id(fam.user_id.clone())
        .one(db)
        .await?;
    Ok(u.is_some_and(|u| !u.disabled))
}

impl Store {
    /// Rotate a refresh token in one transaction: the presented token is marked used by one
    /// conditional update and its successor is inserted. A token already rotated inside the
    /// grace window gets another successor (a retry); outside it, the family is revoked.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_refresh(
        &self,
        tenant_id: &str,
        token_hash: &str,
        client_pk: &str,
        now: i64,
        grace: i64,
        successor: impl FnOnce(&refresh_family::Model) -> Result<NewRefresh>,
        audit: AuditEvent,
    ) -> Result<RefreshOutcome> {
        let txn = self.write_txn().await?;
        let fresh = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .filter(refresh_token::Column::UsedAt.is_null())
            .filter(refresh_token::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        let Some(tok) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(RefreshOutcome::Unknown);
        };
        let Some(fam) = refresh_family::Entity::find_by_id(tok.family_id.clone())
            .filter(refresh_family::Column::TenantId.eq(tenant_id))
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(RefreshOutcome::Unknown);
        };
        if fam.client_id != client_pk {
            txn.rollback().await?;
            return Ok(RefreshOutcome::WrongClient);
        }
        if !family_live(&txn, &fam).await? {
            txn.rollback().await?;
            return Ok(RefreshOutcome::Revoked);
        }
        let retry = if fresh {
            false
        } else if tok.expires_at <= now && tok.used_at.is_none() {
            txn.rollback().await?;
            return Ok(RefreshOutcome::Expired);
        } else if tok.used_at.is_some_and(|used| now - used <= grace) {
            true
        } else {
            refresh_family::Entity::update_many()
                .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
                .col_expr(
                    refresh_family::Column::RevokedReason,
                    Expr::value("refresh_replay"),
                )
                .filter(refresh_family::Column::Id.eq(fam.id.clone()))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            return Ok(RefreshOutcome::Replayed(fam));
        };
        let next = match successor(&fam) {
            Ok(n) => n,
            Err(e) => {
                txn.rollback().await?;
                return Err(e);
            }
        };
        insert_refresh(&txn, &next, now).await?;
        grant::Entity::update_many()
            .col_expr(grant::Column::LastRefreshedAt, Expr::value(now))
            .filter(grant::Column::Id.eq(fam.grant_id.clone()))
            .exec(&txn)
            .await?;
        insert_audit(&txn, audit.user(&fam.user_id), now).await?;
        txn.commit().await?;
        Ok(RefreshOutcome::Rotated { family: fam, retry })
    }

    /// The family a refresh token belongs to, if the token exists in this tenant.
    pub async fn family_of_refresh(
        &self,
        tenant_id: &str,
        token_hash: &str,
    ) -> Result<Option<refresh_family::Model>> {
        let Some(tok) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(refresh_family::Entity::find_by_id(tok.family_id)
            .filter(refresh_family::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// Whether a refresh token is usable now (for introspection), with its family.
    pub async fn refresh_status(
        &self,
        tenant_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(refresh_token::Model, refresh_family::Model)>> {
        let Some(tok) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        if tok.used_at.is_some() || tok.expires_at <= now {
            return Ok(None);
        }
        let Some(fam) = refresh_family::Entity::find_by_id(tok.family_id.clone())
            .filter(refresh_family::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        if !family_live(&self.db, &fam).await? {
            return Ok(None);
        }
        Ok(Some((tok, fam)))
    }

    pub async fn revoke_family(&self, family_id: &str, now: i64, reason: &str) -> Result<()> {
        refresh_family::Entity::update_many()
            .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
            .col_expr(refresh_family::Column::RevokedReason, Expr::value(reason))
            .filter(refresh_family::Column::Id.eq(family_id))
            .filter(refresh_family::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn revoke_access_token(
        &self,
        tenant_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        let exists = revoked_access_token::Entity::find_by_id(jti.to_string())
            .one(&txn)
            .await?;
        if exists.is_none() {
            revoked_access_token::Entity::insert(revoked_access_token::ActiveModel {
                jti: Set(jti.to_string()),
                tenant_id: Set(tenant_id.to_string()),
                expires_at: Set(expires_at),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// An access token is live unless its `jti` was revoked or, for a token issued from a
    /// grant, its family, grant or user was revoked or disabled.
    pub async fn access_token_live(
        &self,
        tenant_id: &str,
        jti: &str,
        family_id: Option<&str>,
    ) -> Result<bool> {
        if revoked_access_token::Entity::find_by_id(jti.to_string())
            .one(&self.db)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let Some(fid) = family_id else {
            return Ok(true);
        };
        let Some(fam) = refresh_family::Entity::find_by_id(fid.to_string())
            .filter(refresh_family::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        family_live(&self.db, &fam).await
    }
}
