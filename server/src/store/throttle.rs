use entity::login_throttle;
use sea_orm::sea_query::{Alias, CommonTableExpression, Expr, OnConflict, WithQuery};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait,
};

use super::audit::{audit_insert, insert_audit};
use super::{SelectUnique, Store};
use crate::audit::AuditEvent;
use crate::error::Result;

/// The answer to "may this account try a password now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; the attempt is already counted.
    Allowed,
    /// Locked until this time.
    Locked(i64),
}

impl Store {
    /// Count one sign-in attempt for `key`, atomically across instances: of many parallel
    /// attempts exactly `max_attempts` are allowed before the account locks. The attempt that
    /// reaches the limit starts the lockout at once (it is lifted again if that attempt turns
    /// out to be right). Lockouts double: `base * 2^(n-1)`, at most `cap` seconds.
    pub async fn claim_attempt(
        &self,
        key: &str,
        now: i64,
        max_attempts: i64,
        base: i64,
        cap: i64,
    ) -> Result<Claim> {
        let txn = self.write_txn().await?;
        // Write first: create the row or touch it. This takes the row (PostgreSQL) or
        // database (SQLite) lock, so parallel attempts line up here, in one transaction.
        login_throttle::Entity::insert(login_throttle::ActiveModel {
            key: Set(key.to_string()),
            attempts: Set(0),
            lockouts: Set(0),
            locked_until: Set(0),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(login_throttle::Column::Key)
                .update_column(login_throttle::Column::UpdatedAt)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        let Some(row) = login_throttle::Entity::find_by_id(key.to_string())
            .unique(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(Claim::Allowed);
        };
        if row.locked_until > now {
            txn.rollback().await?;
            return Ok(Claim::Locked(row.locked_until));
        }
        let mut attempts = row.attempts;
        let mut lockouts = row.lockouts;
        if attempts >= max_attempts {
            // The last lockout is over: a fresh round.
            attempts = 0;
        }
        attempts += 1;
        let mut locked_until = row.locked_until;
        if attempts >= max_attempts {
            lockouts += 1;
            let factor = 1i64
                .checked_shl((lockouts - 1).clamp(0, 30) as u32)
                .unwrap_or(i64::MAX);
            locked_until = now + base.saturating_mul(factor).min(cap);
        }
        login_throttle::Entity::update_many()
            .col_expr(login_throttle::Column::Attempts, Expr::value(attempts))
            .col_expr(login_throttle::Column::Lockouts, Expr::value(lockouts))
            .col_expr(
                login_throttle::Column::LockedUntil,
                Expr::value(locked_until),
            )
            .filter(login_throttle::Column::Key.eq(key))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Claim::Allowed)
    }

    /// A successful sign-in clears the counter and any lockout it started, and records its
    /// audit event: one atomic write (a single statement with a CTE on PostgreSQL, one
    /// transaction and so one commit on SQLite).
    pub async fn sign_in_succeeded(&self, key: &str, audit: AuditEvent, now: i64) -> Result<()> {
        let clear = login_throttle::Entity::update_many()
            .col_expr(login_throttle::Column::Attempts, Expr::value(0))
            .col_expr(login_throttle::Column::Lockouts, Expr::value(0))
            .col_expr(login_throttle::Column::LockedUntil, Expr::value(0))
            .col_expr(login_throttle::Column::UpdatedAt, Expr::value(now))
            .filter(login_throttle::Column::Key.eq(key));
        if self.backend() == DbBackend::Postgres {
            let q = WithQuery::new()
                .cte(
                    CommonTableExpression::new()
                        .query(clear.into_query())
                        .table_name(Alias::new("cleared"))
                        .to_owned(),
                )
                .query(audit_insert(audit, now))
                .to_owned();
            self.db.execute(&q).await?;
        } else {
            let txn = self.write_txn().await?;
            clear.exec(&txn).await?;
            insert_audit(&txn, audit, now).await?;
            txn.commit().await?;
        }
        Ok(())
    }
}
