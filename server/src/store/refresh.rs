use entity::{client, grant, refresh_family, refresh_token, revoked_access_token, user};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Iterable,
    QueryFilter,
};

use super::audit::insert_audit;
use super::{SelectUnique, Store, new_id};
use crate::audit::AuditEvent;
use crate::error::Result;

/// A refresh token to store (only its hash).
pub struct NewRefresh {
    pub family_id: String,
    pub token_hash: String,
    pub expires_at: i64,
}

/// A live access token: the username of its grant's member (none for `client_credentials`).
pub struct AccessLive {
    pub username: Option<String>,
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

/// A refresh token with its family, read in one query (token, family, grant, user and
/// client joined by primary key), so a refresh or an introspection makes one round trip
/// where it used to make four.
struct TokenRow {
    tok: refresh_token::Model,
    fam: refresh_family::Model,
    /// The family, its grant and its user are live (not revoked, not disabled, present).
    live: bool,
    username: Option<String>,
    client_id: Option<String>,
}

async fn token_row<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    token_hash: &str,
) -> Result<Option<TokenRow>> {
    use refresh_family::Entity as F;
    use refresh_token::Entity as T;
    let mut q = Query::select();
    q.columns(refresh_family::Column::iter().map(|c| (F, c)))
        .expr_as(Expr::col((T, refresh_token::Column::Id)), "t_id")
        .expr_as(
            Expr::col((T, refresh_token::Column::CreatedAt)),
            "t_created_at",
        )
        .expr_as(
            Expr::col((T, refresh_token::Column::ExpiresAt)),
            "t_expires_at",
        )
        .expr_as(Expr::col((T, refresh_token::Column::UsedAt)), "t_used_at")
        .expr_as(Expr::col((grant::Entity, grant::Column::Id)), "g_id")
        .expr_as(
            Expr::col((grant::Entity, grant::Column::RevokedAt)),
            "g_revoked_at",
        )
        .expr_as(
            Expr::col((user::Entity, user::Column::Disabled)),
            "u_disabled",
        )
        .expr_as(
            Expr::col((user::Entity, user::Column::Username)),
            "u_username",
        )
        .expr_as(
            Expr::col((client::Entity, client::Column::ClientId)),
            "c_client_id",
        )
        .from(T)
        .inner_join(
            F,
            Expr::col((F, refresh_family::Column::Id)).equals((T, refresh_token::Column::FamilyId)),
        )
        .left_join(
            grant::Entity,
            Expr::col((grant::Entity, grant::Column::Id))
                .equals((F, refresh_family::Column::GrantId)),
        )
        .left_join(
            user::Entity,
            Expr::col((user::Entity, user::Column::Id)).equals((F, refresh_family::Column::UserId)),
        )
        .left_join(
            client::Entity,
            Expr::col((client::Entity, client::Column::Id))
                .equals((F, refresh_family::Column::ClientId)),
        )
        .and_where(Expr::col((T, refresh_token::Column::TokenHash)).eq(token_hash))
        .and_where(Expr::col((F, refresh_family::Column::TenantId)).eq(tenant_id));
    let Some(row) = db.query_one(&q).await? else {
        return Ok(None);
    };
    let fam = refresh_family::Model::from_query_result(&row, "")?;
    let tok = refresh_token::Model {
        id: row.try_get("", "t_id")?,
        family_id: fam.id.clone(),
        token_hash: token_hash.to_string(),
        created_at: row.try_get("", "t_created_at")?,
        expires_at: row.try_get("", "t_expires_at")?,
        used_at: row.try_get("", "t_used_at")?,
    };
    let grant_id: Option<String> = row.try_get("", "g_id")?;
    let grant_revoked: Option<i64> = row.try_get("", "g_revoked_at")?;
    let disabled: Option<bool> = row.try_get("", "u_disabled")?;
    let live = fam.revoked_at.is_none()
        && grant_id.is_some()
        && grant_revoked.is_none()
        && disabled == Some(false);
    Ok(Some(TokenRow {
        tok,
        fam,
        live,
        username: row.try_get("", "u_username")?,
        client_id: row.try_get("", "c_client_id")?,
    }))
}

/// What introspection reports of a live refresh token.
pub struct RefreshStatus {
    pub tok: refresh_token::Model,
    pub fam: refresh_family::Model,
    pub username: Option<String>,
    pub client_id: Option<String>,
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
        let Some(TokenRow { tok, fam, live, .. }) = token_row(&txn, tenant_id, token_hash).await?
        else {
            txn.rollback().await?;
            return Ok(RefreshOutcome::Unknown);
        };
        if fam.client_id != client_pk {
            txn.rollback().await?;
            return Ok(RefreshOutcome::WrongClient);
        }
        if !live {
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
        Ok(token_row(&self.db, tenant_id, token_hash)
            .await?
            .map(|r| r.fam))
    }

    /// A refresh token usable now (for introspection), with its family, its member's username
    /// and its client's `client_id`: one query.
    pub async fn refresh_status(
        &self,
        tenant_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<RefreshStatus>> {
        let Some(r) = token_row(&self.db, tenant_id, token_hash).await? else {
            return Ok(None);
        };
        if !r.live || r.tok.used_at.is_some() || r.tok.expires_at <= now {
            return Ok(None);
        }
        Ok(Some(RefreshStatus {
            tok: r.tok,
            fam: r.fam,
            username: r.username,
            client_id: r.client_id,
        }))
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
            .unique(&txn)
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
    /// grant, its family, grant or user was revoked, disabled or removed. Answers `None` for a
    /// token that is not live, else the username of a grant's member: one query either way.
    pub async fn access_token_live(
        &self,
        tenant_id: &str,
        jti: &str,
        family_id: Option<&str>,
    ) -> Result<Option<AccessLive>> {
        use refresh_family::Entity as F;
        let not_revoked = Expr::exists(
            Query::select()
                .expr(Expr::cust("1"))
                .from(revoked_access_token::Entity)
                .and_where(
                    Expr::col((
                        revoked_access_token::Entity,
                        revoked_access_token::Column::Jti,
                    ))
                    .eq(jti),
                )
                .to_owned(),
        )
        .not();
        let Some(fid) = family_id else {
            let mut q = Query::select();
            q.expr_as(Expr::cust("1"), "live").and_where(not_revoked);
            return Ok(self
                .db
                .query_one(&q)
                .await?
                .map(|_| AccessLive { username: None }));
        };
        let mut q = Query::select();
        q.expr_as(
            Expr::col((user::Entity, user::Column::Username)),
            "username",
        )
        .from(F)
        .inner_join(
            grant::Entity,
            Expr::col((grant::Entity, grant::Column::Id))
                .equals((F, refresh_family::Column::GrantId)),
        )
        .inner_join(
            user::Entity,
            Expr::col((user::Entity, user::Column::Id)).equals((F, refresh_family::Column::UserId)),
        )
        .and_where(Expr::col((F, refresh_family::Column::Id)).eq(fid))
        .and_where(Expr::col((F, refresh_family::Column::TenantId)).eq(tenant_id))
        .and_where(Expr::col((F, refresh_family::Column::RevokedAt)).is_null())
        .and_where(Expr::col((grant::Entity, grant::Column::RevokedAt)).is_null())
        .and_where(Expr::col((user::Entity, user::Column::Disabled)).eq(false))
        .and_where(not_revoked);
        let Some(row) = self.db.query_one(&q).await? else {
            return Ok(None);
        };
        Ok(Some(AccessLive {
            username: Some(row.try_get("", "username")?),
        }))
    }
}
