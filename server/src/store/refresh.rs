use entity::{client, grant, refresh_family, refresh_token, revoked_access_token, user};
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, ExprTrait, InsertStatement, Query, SelectStatement,
    WithQuery,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    Iterable, QueryFilter, QueryResult, QueryTrait,
};

use super::audit::{audit_insert, audit_insert_select};
use super::{NewRow, Store, new_id};
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

/// A new refresh token's row (a fresh id, unused).
pub(crate) fn refresh_row(r: &NewRefresh, now: i64) -> NewRow {
    use refresh_token::Column as T;
    NewRow::new(refresh_token::Entity)
        .set(T::Id, new_id())
        .set(T::FamilyId, r.family_id.clone())
        .set(T::TokenHash, r.token_hash.clone())
        .set(T::CreatedAt, now)
        .set(T::ExpiresAt, r.expires_at)
}

pub(crate) fn refresh_insert(r: &NewRefresh, now: i64) -> Result<InsertStatement> {
    Ok(refresh_row(r, now).insert()?)
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
    match db
        .query_one(&token_row_query(tenant_id, token_hash))
        .await?
    {
        Some(row) => Ok(Some(decode_token_row(&row, token_hash)?)),
        None => Ok(None),
    }
}

/// `FROM refresh_families` joined with each family's grant, member and client, keeping only
/// families that are live: the family and its grant not revoked, the member and the client
/// present and not disabled (a disabled client's tokens are inactive until it is enabled
/// again, as a disabled member's are).
pub(super) fn from_live_families(q: &mut SelectStatement) -> &mut SelectStatement {
    use refresh_family::Entity as F;
    q.from(F)
        .inner_join(
            grant::Entity,
            Expr::col((grant::Entity, grant::Column::Id))
                .equals((F, refresh_family::Column::GrantId)),
        )
        .inner_join(
            user::Entity,
            Expr::col((user::Entity, user::Column::Id)).equals((F, refresh_family::Column::UserId)),
        )
        .inner_join(
            client::Entity,
            Expr::col((client::Entity, client::Column::Id))
                .equals((F, refresh_family::Column::ClientId)),
        )
        .and_where(Expr::col((F, refresh_family::Column::RevokedAt)).is_null())
        .and_where(Expr::col((grant::Entity, grant::Column::RevokedAt)).is_null())
        .and_where(Expr::col((user::Entity, user::Column::Disabled)).eq(false))
        .and_where(Expr::col((client::Entity, client::Column::Disabled)).eq(false))
}

fn token_row_query(tenant_id: &str, token_hash: &str) -> SelectStatement {
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
        .expr_as(
            Expr::col((client::Entity, client::Column::Disabled)),
            "c_disabled",
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
    q
}

fn decode_token_row(row: &QueryResult, token_hash: &str) -> Result<TokenRow> {
    let fam = refresh_family::Model::from_query_result(row, "")?;
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
    let client_disabled: Option<bool> = row.try_get("", "c_disabled")?;
    let live = fam.revoked_at.is_none()
        && grant_id.is_some()
        && grant_revoked.is_none()
        && disabled == Some(false)
        && client_disabled == Some(false);
    Ok(TokenRow {
        tok,
        fam,
        live,
        username: row.try_get("", "u_username")?,
        client_id: row.try_get("", "c_client_id")?,
    })
}

/// Mark the presented token used (only if unused and unexpired) and read it with its family.
/// Answers whether this call marked it, and the row as it was before.
async fn mark_used_and_read(
    txn: &super::WriteTxn,
    tenant_id: &str,
    token_hash: &str,
    now: i64,
) -> Result<(bool, Option<TokenRow>)> {
    let mark = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(token_hash))
        .filter(refresh_token::Column::UsedAt.is_null())
        .filter(refresh_token::Column::ExpiresAt.gt(now));
    let backend = txn.get_database_backend();
    if backend != DbBackend::Postgres {
        // SQLite: the update and the read in one call; `changes()` says whether it marked.
        let mut select = token_row_query(tenant_id, token_hash);
        select.expr_as(Expr::cust("changes()"), "fresh");
        let Some(row) = super::batch(
            txn,
            vec![backend.build(&mark.into_query()), backend.build(&select)],
        )
        .await?
        else {
            return Ok((false, None));
        };
        let fresh: i64 = row.try_get("", "fresh")?;
        return Ok((fresh == 1, Some(decode_token_row(&row, token_hash)?)));
    }
    // PostgreSQL: one round trip. The update runs as a data-modifying CTE; the select beside
    // it reads the snapshot from before the update and learns from the CTE whether it matched.
    let mut update = mark.into_query();
    update.returning_col(refresh_token::Column::Id);
    let mut select = token_row_query(tenant_id, token_hash);
    select.expr_as(
        Expr::exists(
            Query::select()
                .expr(Expr::cust("1"))
                .from(Alias::new("marked"))
                .to_owned(),
        ),
        "fresh",
    );
    let q = WithQuery::new()
        .cte(
            CommonTableExpression::new()
                .query(update)
                .table_name(Alias::new("marked"))
                .to_owned(),
        )
        .query(select)
        .to_owned();
    let Some(row) = txn.query_one(&q).await? else {
        return Ok((false, None));
    };
    let fresh: bool = row.try_get("", "fresh")?;
    let r = decode_token_row(&row, token_hash)?;
    if !fresh && r.tok.used_at.is_none() {
        // Another rotation of this token committed while the update waited for its row
        // lock: the snapshot predates it, so read the row again to see its `used_at`.
        return Ok((false, token_row(txn, tenant_id, token_hash).await?));
    }
    Ok((fresh, Some(r)))
}

/// What introspection reports of a live refresh token.
pub struct RefreshStatus {
    pub tok: refresh_token::Model,
    pub fam: refresh_family::Model,
    pub username: Option<String>,
    pub client_id: Option<String>,
}

impl Store {
    /// The common case of a refresh in one call to the database: the presented token is
    /// marked used only if it is unused, unexpired and its family (this tenant's, this
    /// client's) and the family's grant and member are live; its successor, the grant's last
    /// use and the audit event are written with it. Returns the family, or `None` when nothing
    /// was written (any other case): then `rotate_refresh` works out the answer (unknown, wrong
    /// client, revoked, expired, a retry within the grace window, a replay).
    ///
    /// PostgreSQL: one statement of data-modifying CTEs, no transaction around it. SQLite: the
    /// same writes as one `IMMEDIATE` transaction sent in one call (`store::sqlite_atomic`):
    /// the successor is inserted only if the mark matched (`changes() = 1`), and the statements
    /// after it find the family through the successor's id. Four or more round trips become
    /// one.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_refresh_at_once(
        &self,
        tenant_id: &str,
        token_hash: &str,
        client_pk: &str,
        now: i64,
        next_hash: &str,
        expires_at: i64,
        audit: AuditEvent,
    ) -> Result<Option<refresh_family::Model>> {
        use refresh_family::Entity as F;
        use refresh_token::Column as T;
        let postgres = self.backend() == DbBackend::Postgres;
        // The presented token's own family is live, this tenant's and this client's: a
        // correlated EXISTS, so SQLite looks up that one family by its key (an `IN` over all
        // live families of the client made SQLite build the whole list on every refresh:
        // refreshes fell from 2,160 to 55 per second as code exchanges added families).
        let mut own_live_family = Query::select();
        own_live_family.expr(Expr::cust("1"));
        from_live_families(&mut own_live_family)
            .and_where(
                Expr::col((F, refresh_family::Column::Id))
                    .equals((refresh_token::Entity, T::FamilyId)),
            )
            .and_where(Expr::col((F, refresh_family::Column::TenantId)).eq(tenant_id))
            .and_where(Expr::col((F, refresh_family::Column::ClientId)).eq(client_pk));
        let mut mark = refresh_token::Entity::update_many()
            .col_expr(T::UsedAt, Expr::value(now))
            .filter(T::TokenHash.eq(token_hash))
            .filter(T::UsedAt.is_null())
            .filter(T::ExpiresAt.gt(now))
            .filter(Expr::exists(own_live_family))
            .into_query();
        // PostgreSQL: the marked token's family_id comes from the `marked` CTE. SQLite: from
        // the presented token, read only if the mark just matched.
        let marked = Alias::new("marked");
        let marked_family = if postgres {
            mark.returning_col(T::FamilyId);
            Query::select()
                .column((marked.clone(), T::FamilyId))
                .from(marked.clone())
                .to_owned()
        } else {
            Query::select()
                .column(T::FamilyId)
                .from(refresh_token::Entity)
                .and_where(Expr::col(T::TokenHash).eq(token_hash))
                .and_where(Expr::cust("changes() = 1"))
                .to_owned()
        };
        // The family now written to (one row, or none). On SQLite: the successor's family,
        // found by the successor's id (new for this call), only if it was inserted.
        let successor_id = new_id();
        let family_written = || {
            let mut q = Query::select();
            q.from(F);
            if postgres {
                q.inner_join(
                    marked.clone(),
                    Expr::col((F, refresh_family::Column::Id))
                        .equals((marked.clone(), T::FamilyId)),
                );
            } else {
                q.inner_join(
                    refresh_token::Entity,
                    Expr::col((F, refresh_family::Column::Id))
                        .equals((refresh_token::Entity, T::FamilyId)),
                )
                .and_where(Expr::col((refresh_token::Entity, T::Id)).eq(successor_id.as_str()));
            }
            q
        };
        let mut successor_source = marked_family;
        successor_source
            .expr(Expr::val(successor_id.as_str()))
            .expr(Expr::val(next_hash))
            .expr(Expr::val(now))
            .expr(Expr::val(expires_at));
        let successor = Query::insert()
            .into_table(refresh_token::Entity)
            .columns([T::FamilyId, T::Id, T::TokenHash, T::CreatedAt, T::ExpiresAt])
            .select_from(successor_source)
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
            .to_owned();
        let touch_grant = grant::Entity::update_many()
            .col_expr(grant::Column::LastRefreshedAt, Expr::value(now))
            .filter(
                grant::Column::Id.in_subquery(
                    family_written()
                        .column((F, refresh_family::Column::GrantId))
                        .to_owned(),
                ),
            )
            .into_query();
        let audited = audit_insert_select(
            audit,
            now,
            Expr::col((F, refresh_family::Column::UserId)),
            family_written(),
        )?;
        let answer = family_written()
            .columns(refresh_family::Column::iter().map(|c| (F, c)))
            .to_owned();
        let row = if postgres {
            let cte = |name: &str, q: sea_orm::sea_query::SubQueryStatement| {
                let mut c = CommonTableExpression::new();
                c.table_name(Alias::new(name));
                c.query(q);
                c
            };
            let q = WithQuery::new()
                .cte(cte("marked", mark.into()))
                .cte(cte("successor", successor.into()))
                .cte(cte("touched", touch_grant.into()))
                .cte(cte("audited", audited.into()))
                .query(answer)
                .to_owned();
            self.db.query_one(&q).await?
        } else {
            let b = DbBackend::Sqlite;
            super::sqlite_atomic(
                self,
                vec![
                    b.build(&mark),
                    b.build(&successor),
                    b.build(&touch_grant),
                    b.build(&audited),
                    b.build(&answer),
                ],
            )
            .await?
            .into_iter()
            .next()
        };
        match row {
            Some(row) => Ok(Some(refresh_family::Model::from_query_result(&row, "")?)),
            None => Ok(None),
        }
    }

    /// Rotate a refresh token in one transaction: the presented token is marked used by one
    /// conditional update and its successor is inserted. A token already rotated inside the
    /// grace window (`grace` seconds; none if `None`) gets another successor (a retry);
    /// outside it, the family is revoked.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_refresh(
        &self,
        tenant_id: &str,
        token_hash: &str,
        client_pk: &str,
        now: i64,
        grace: Option<i64>,
        successor: impl FnOnce(&refresh_family::Model) -> Result<NewRefresh>,
        audit: AuditEvent,
    ) -> Result<RefreshOutcome> {
        let txn = self.write_txn().await?;
        let (fresh, row) = mark_used_and_read(&txn, tenant_id, token_hash, now).await?;
        let Some(TokenRow { tok, fam, live, .. }) = row else {
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
        } else if let Some(grace) = grace
            && tok.used_at.is_some_and(|used| now - used <= grace)
        {
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
        let touch_grant = grant::Entity::update_many()
            .col_expr(grant::Column::LastRefreshedAt, Expr::value(now))
            .filter(grant::Column::Id.eq(fam.grant_id.clone()));
        let audit = audit.user(&fam.user_id);
        if txn.get_database_backend() == DbBackend::Postgres {
            // One round trip for the successor, the grant's last use and the audit event.
            let q = WithQuery::new()
                .cte(
                    CommonTableExpression::new()
                        .query(touch_grant.into_query())
                        .table_name(Alias::new("touched"))
                        .to_owned(),
                )
                .cte(
                    CommonTableExpression::new()
                        .query(audit_insert(audit, now))
                        .table_name(Alias::new("audited"))
                        .to_owned(),
                )
                .query(refresh_insert(&next, now)?)
                .to_owned();
            txn.execute(&q).await?;
        } else {
            let b = txn.get_database_backend();
            super::batch(
                &txn,
                vec![
                    b.build(&refresh_insert(&next, now)?),
                    b.build(&touch_grant.into_query()),
                    b.build(&audit_insert(audit, now)),
                ],
            )
            .await?;
        }
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
            .exec(&self.w())
            .await?;
        Ok(())
    }

    pub async fn revoke_access_token(
        &self,
        tenant_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<()> {
        // One statement: two revocations of the same token at once both succeed (a read
        // then an insert would let the second fail on the key under PostgreSQL).
        revoked_access_token::Entity::insert(revoked_access_token::ActiveModel {
            jti: Set(jti.to_string()),
            tenant_id: Set(tenant_id.to_string()),
            expires_at: Set(expires_at),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(revoked_access_token::Column::Jti)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.w())
        .await?;
        Ok(())
    }

    /// An access token is live unless its `jti` was revoked or its client (`client_id`, the
    /// token's claim) was disabled or removed, or, for a token issued from a grant, its
    /// family, grant or user was revoked, disabled or removed. Answers `None` for a token that
    /// is not live, else the username of a grant's member. Concurrent checks share one query
    /// (see `live.rs`).
    pub async fn access_token_live(
        &self,
        tenant_id: &str,
        jti: &str,
        client_id: &str,
        family_id: Option<&str>,
    ) -> Result<Option<AccessLive>> {
        self.live
            .check(&self.db, tenant_id, jti, client_id, family_id)
            .await
    }
}
