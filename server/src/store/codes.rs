use entity::{authorization_code, grant, refresh_family, refresh_token, user};
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, ExprTrait, Query, SelectStatement, WithQuery,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryTrait,
};

use super::audit::{audit_insert, audit_insert_select};
use super::refresh::{NewRefresh, refresh_insert, refresh_row};
use super::{NewRow, SelectUnique, Store};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};

pub struct NewCode {
    pub code: authorization_code::Model,
}

/// What the service's checks decide for a code: the refresh family and token to write with
/// it (none for a client without refresh tokens) and the audit event; an error refuses it.
pub(crate) type Decision = Result<(Option<NewRefresh>, Option<AuditEvent>)>;

/// The refresh family a code starts: the code's grant, member, scope and sign-in.
fn family_row(code: &authorization_code::Model, family_id: &str, now: i64) -> NewRow {
    use refresh_family::Column as F;
    NewRow::new(refresh_family::Entity)
        .set(F::Id, family_id)
        .set(F::TenantId, code.tenant_id.clone())
        .set(F::GrantId, code.grant_id.clone())
        .set(F::ClientId, code.client_id.clone())
        .set(F::UserId, code.user_id.clone())
        .set(F::CodeId, code.id.clone())
        .set(F::Scope, code.scope.clone())
        .set(F::AuthTime, code.auth_time)
        .set(F::Amr, code.amr.clone())
        .set(F::CreatedAt, now)
}

pub enum CodeOutcome {
    /// No such code.
    Unknown,
    /// Its grant was revoked, or its member disabled or removed, since it was issued: it is
    /// used up, and nothing is issued.
    Withdrawn(authorization_code::Model),
    /// The code had been redeemed before: every token issued from it is now revoked.
    Replayed(authorization_code::Model),
    /// Redeemed now; the refresh family (if any) is committed.
    Redeemed(authorization_code::Model),
}

/// A code's grant is not revoked and its member is present and enabled (a condition on an
/// `authorization_codes` row; checked by the statement that consumes the code, so a revocation
/// committed before the redemption is always seen).
fn grant_still_live() -> Expr {
    let mut q = Query::select();
    q.expr(Expr::cust("1"))
        .from(grant::Entity)
        .inner_join(
            user::Entity,
            Expr::col((user::Entity, user::Column::Id))
                .equals((grant::Entity, grant::Column::UserId)),
        )
        .and_where(Expr::col((grant::Entity, grant::Column::Id)).equals((
            authorization_code::Entity,
            authorization_code::Column::GrantId,
        )))
        .and_where(Expr::col((grant::Entity, grant::Column::RevokedAt)).is_null())
        .and_where(Expr::col((user::Entity, user::Column::Disabled)).eq(false));
    Expr::exists(q)
}

impl Store {
    pub async fn insert_code(&self, c: NewCode) -> Result<()> {
        let m = c.code;
        authorization_code::Entity::insert(authorization_code::ActiveModel {
            id: Set(m.id),
            code_hash: Set(m.code_hash),
            tenant_id: Set(m.tenant_id),
            client_id: Set(m.client_id),
            user_id: Set(m.user_id),
            grant_id: Set(m.grant_id),
            redirect_uri: Set(m.redirect_uri),
            scope: Set(m.scope),
            nonce: Set(m.nonce),
            code_challenge: Set(m.code_challenge),
            auth_time: Set(m.auth_time),
            amr: Set(m.amr),
            created_at: Set(m.created_at),
            expires_at: Set(m.expires_at),
            consumed_at: Set(None),
        })
        .exec_without_returning(&self.w())
        .await?;
        Ok(())
    }

    /// Redeem a code. The code is consumed by one conditional update, so of two concurrent
    /// redemptions exactly one wins. `decide` (the service's checks: client, redirect URI,
    /// PKCE, expiry) sees the code; when it refuses, the code is consumed all the same (a
    /// wrong PKCE verifier gets no second guess), unless it was presented by another client
    /// than its own, which can only spoil it. When `decide` accepts, the refresh family and
    /// token it describes and its audit event are committed with the consumption. A replay
    /// revokes every family issued from the code if `holds` says the presenter holds the
    /// code's authorization request (its PKCE verifier): anyone may present a public client's
    /// code with no secret, and holding a used code alone proves no leak.
    ///
    /// The common case (an unused code that `decide` accepts) is one read and one write call
    /// (`redeem_at_once`); anything else, or losing a race for the code, goes through the
    /// transaction (`redeem_in_txn`), which calls `decide` again on the code as it is then.
    ///
    /// `client_id` (the authenticated client's id) must be the code's for a replay to revoke:
    /// any client of the tenant may present a code (a public one with no secret), and only the
    /// code's own client shows that it leaked; another client's replay is refused, as its
    /// first use is.
    ///
    /// `read` is the code as `read_code` found it: the caller may prepare its answer from it
    /// (a code's fields never change but `consumed_at`) before anything is written.
    #[allow(clippy::too_many_arguments)]
    pub async fn redeem_code<F, H>(
        &self,
        read: Option<authorization_code::Model>,
        tenant_id: &str,
        code_hash: &str,
        now: i64,
        client_id: &str,
        holds: H,
        decide: F,
    ) -> Result<CodeOutcome>
    where
        F: Fn(&authorization_code::Model) -> Decision,
        H: Fn(&authorization_code::Model) -> bool,
    {
        debug_assert!(
            read.as_ref()
                .is_none_or(|c| c.code_hash == code_hash && c.tenant_id == tenant_id),
            "redeem_code was given another code's read"
        );
        // Checks on a read outside the write hold as long as the write consumes the code only
        // if still unused.
        if let Some(code) = read
            && code.consumed_at.is_none()
            && let Ok((refresh, audit)) = decide(&code)
            && self.redeem_at_once(&code, now, refresh, audit).await?
        {
            return Ok(CodeOutcome::Redeemed(code));
        }
        self.redeem_in_txn(tenant_id, code_hash, now, client_id, holds, decide)
            .await
    }

    /// The code whose hash is `code_hash`, used or not (for `redeem_code`).
    pub async fn read_code(
        &self,
        tenant_id: &str,
        code_hash: &str,
    ) -> Result<Option<authorization_code::Model>> {
        Ok(authorization_code::Entity::find()
            .filter(authorization_code::Column::CodeHash.eq(code_hash))
            .filter(authorization_code::Column::TenantId.eq(tenant_id))
            .unique(&self.db)
            .await?)
    }

    /// Consume `code` if it is still unused and write the refresh family, token and audit
    /// event with it, in one call: on PostgreSQL one statement (the inserts as CTEs reading
    /// the consumed row), on SQLite one `IMMEDIATE` transaction sent at once (each insert runs
    /// only if the statement before it changed one row: `changes() = 1`). True if consumed.
    async fn redeem_at_once(
        &self,
        code: &authorization_code::Model,
        now: i64,
        refresh: Option<NewRefresh>,
        audit: Option<AuditEvent>,
    ) -> Result<bool> {
        let postgres = self.backend() == DbBackend::Postgres;
        let consumed = Alias::new("consumed");
        let mut consume = authorization_code::Entity::update_many()
            .col_expr(authorization_code::Column::ConsumedAt, Expr::value(now))
            .filter(authorization_code::Column::Id.eq(code.id.clone()))
            .filter(authorization_code::Column::ConsumedAt.is_null())
            .filter(grant_still_live())
            .into_query();
        // The rows of each insert: on PostgreSQL one per consumed row, on SQLite one if the
        // statement before changed one row.
        let gated = |values: Vec<Expr>| -> SelectStatement {
            let mut q = Query::select();
            q.exprs(values);
            if postgres {
                q.from(consumed.clone());
            } else {
                q.and_where(Expr::cust("changes() = 1"));
            }
            q
        };
        let mut writes = Vec::new();
        if let Some(r) = refresh {
            writes.push(family_row(code, &r.family_id, now).insert_from(gated)?);
            writes.push(refresh_row(&r, now).insert_from(gated)?);
        }
        if let Some(ev) = audit {
            let user = ev.user_id.clone();
            writes.push(audit_insert_select(
                ev,
                now,
                Expr::val(user),
                gated(vec![]),
            )?);
        }
        let row = if postgres {
            consume.returning_col(authorization_code::Column::Id);
            let mut q = WithQuery::new();
            q.cte(
                CommonTableExpression::new()
                    .query(consume)
                    .table_name(consumed.clone())
                    .to_owned(),
            );
            for (i, w) in writes.into_iter().enumerate() {
                q.cte(
                    CommonTableExpression::new()
                        .query(w)
                        .table_name(Alias::new(format!("w{i}")))
                        .to_owned(),
                );
            }
            q.query(
                Query::select()
                    .expr_as(Expr::cust("COUNT(*)"), "won")
                    .from(consumed)
                    .to_owned(),
            );
            self.db.query_one(&q).await?
        } else {
            let b = DbBackend::Sqlite;
            let mut statements = vec![b.build(&consume)];
            statements.extend(writes.iter().map(|w| b.build(w)));
            statements.push(b.build(Query::select().expr_as(Expr::cust("changes()"), "won")));
            super::sqlite_atomic(self, statements)
                .await?
                .into_iter()
                .next()
        };
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "won")? == 1,
            None => false,
        })
    }

    /// `redeem_code` in one transaction: consume, read, decide, write.
    async fn redeem_in_txn<F, H>(
        &self,
        tenant_id: &str,
        code_hash: &str,
        now: i64,
        client_id: &str,
        holds: H,
        decide: F,
    ) -> Result<CodeOutcome>
    where
        F: Fn(&authorization_code::Model) -> Decision,
        H: Fn(&authorization_code::Model) -> bool,
    {
        let txn = self.write_txn().await?;
        // Write first: takes the row (PostgreSQL) or database (SQLite) write lock before any
        // read, so a concurrent redemption waits for our commit.
        let consume = authorization_code::Entity::update_many()
            .col_expr(authorization_code::Column::ConsumedAt, Expr::value(now))
            .filter(authorization_code::Column::CodeHash.eq(code_hash))
            .filter(authorization_code::Column::TenantId.eq(tenant_id))
            .filter(authorization_code::Column::ConsumedAt.is_null())
            .filter(grant_still_live());
        let read = authorization_code::Entity::find()
            .filter(authorization_code::Column::CodeHash.eq(code_hash))
            .filter(authorization_code::Column::TenantId.eq(tenant_id));
        let b = txn.get_database_backend();
        let (won, code) = if b == DbBackend::Sqlite {
            // One call (see `batch`): `changes()` says whether the update consumed it.
            let mut select = read.into_query();
            select.expr_as(Expr::cust("changes()"), "won");
            match super::batch(&txn, vec![b.build(&consume.into_query()), b.build(&select)]).await?
            {
                Some(row) => (
                    row.try_get::<i64>("", "won")? == 1,
                    Some(authorization_code::Model::from_query_result(&row, "")?),
                ),
                None => (false, None),
            }
        } else {
            let won = consume.exec(&txn).await?.rows_affected == 1;
            (won, read.unique(&txn).await?)
        };
        let Some(code) = code else {
            txn.rollback().await?;
            return Ok(CodeOutcome::Unknown);
        };
        if !won && code.consumed_at.is_none() {
            // Unused, yet not consumed: its grant or member is no longer live. Use it up.
            authorization_code::Entity::update_many()
                .col_expr(authorization_code::Column::ConsumedAt, Expr::value(now))
                .filter(authorization_code::Column::Id.eq(code.id.clone()))
                .filter(authorization_code::Column::ConsumedAt.is_null())
                .exec(&txn)
                .await?;
            txn.commit().await?;
            // The service's own refusal (another client's code, a wrong verifier) first.
            decide(&code)?;
            return Ok(CodeOutcome::Withdrawn(code));
        }
        if code.client_id != client_id {
            // Another client's code, used or not: refused, and left as it was.
            txn.rollback().await?;
            return Err(crate::error::Error::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if !won && !holds(&code) {
            txn.rollback().await?;
            return Ok(CodeOutcome::Unknown);
        }
        if !won {
            refresh_family::Entity::update_many()
                .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
                .col_expr(
                    refresh_family::Column::RevokedReason,
                    Expr::value("code_replay"),
                )
                .filter(refresh_family::Column::CodeId.eq(code.id.clone()))
                .filter(refresh_family::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
            txn.commit().await?;
            return Ok(CodeOutcome::Replayed(code));
        }
        match decide(&code) {
            Err(e) => {
                txn.commit().await?;
                Err(e)
            }
            Ok((refresh, audit)) => {
                let mut writes = Vec::new();
                if let Some(r) = refresh {
                    writes.push(b.build(&family_row(&code, &r.family_id, now).insert()?));
                    writes.push(b.build(&refresh_insert(&r, now)?));
                }
                if let Some(ev) = audit {
                    writes.push(b.build(&audit_insert(ev, now)));
                }
                // One call on SQLite (see `batch`).
                if !writes.is_empty() {
                    super::batch(&txn, writes).await?;
                }
                txn.commit().await.map_err(Error::from)?;
                Ok(CodeOutcome::Redeemed(code))
            }
        }
    }

    /// Delete codes and tokens that expired long ago, ended sessions and idle sign-in
    /// attempt counters.
    pub async fn purge_expired(&self, now: i64) -> Result<()> {
        authorization_code::Entity::delete_many()
            .filter(authorization_code::Column::ExpiresAt.lt(now - 86_400))
            .exec(&self.w())
            .await?;
        refresh_token::Entity::delete_many()
            .filter(refresh_token::Column::ExpiresAt.lt(now - 86_400))
            .exec(&self.w())
            .await?;
        entity::revoked_access_token::Entity::delete_many()
            .filter(entity::revoked_access_token::Column::ExpiresAt.lt(now))
            .exec(&self.w())
            .await?;
        entity::browser_session::Entity::delete_many()
            .filter(entity::browser_session::Column::ExpiresAt.lt(now))
            .exec(&self.w())
            .await?;
        // Sign-in attempt counters (per tried username, existing or not, and per username and
        // client network) unused for a day
        // and with no lockout running. Forgetting one costs at most one more round of
        // `login_max_attempts` guesses a day, and restarts its lockout doubling.
        entity::login_throttle::Entity::delete_many()
            .filter(entity::login_throttle::Column::UpdatedAt.lt(now - 86_400))
            .filter(entity::login_throttle::Column::LockedUntil.lt(now))
            .exec(&self.w())
            .await?;
        Ok(())
    }
}
