use std::sync::LazyLock;

use entity::{login_throttle, user};
use sea_orm::sea_query::{Alias, CommonTableExpression, Expr, WithQuery};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryTrait,
    Statement,
};

use super::audit::audit_insert;
use super::{SelectUnique, Store};
use crate::audit::AuditEvent;
use crate::error::Result;

/// A member and their password hash (PHC string), if they have one.
pub type Member = (user::Model, Option<String>);

/// The answer to "may this account try a password now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; the attempt is already counted.
    Allowed,
    /// Locked until this time.
    Locked(i64),
}

// The claim statement, built once. $1 key, $2 now, $3 max attempts, $4 base, $5 steps before
// the full delay, $6 the full delay, $7/$8 the new row's lockouts and lock.
static CLAIM_PG: LazyLock<String> =
    LazyLock::new(|| format!("{} RETURNING locked_until", CLAIM_QUIET_PG.as_str()));

/// The claim without its `RETURNING`.
static CLAIM_QUIET_PG: LazyLock<String> = LazyLock::new(|| {
    // The count after this attempt (a count that had reached the limit starts over).
    const AFTER: &str = "(CASE WHEN login_throttle.attempts >= $3 THEN 1 \
         ELSE login_throttle.attempts + 1 END)";
    format!(
        "INSERT INTO login_throttle (\"key\", attempts, lockouts, locked_until, updated_at) \
         VALUES ($1, 1, $7, $8, $2) \
         ON CONFLICT (\"key\") DO UPDATE SET \
         attempts = {AFTER}, \
         lockouts = CASE WHEN {AFTER} >= $3 \
             THEN login_throttle.lockouts + 1 ELSE login_throttle.lockouts END, \
         locked_until = CASE WHEN {AFTER} >= $3 \
             THEN $2 + (CASE WHEN login_throttle.lockouts >= $5 THEN $6 \
                 ELSE ($4 << CAST(login_throttle.lockouts AS INTEGER)) END) \
             ELSE login_throttle.locked_until END, \
         updated_at = $2 \
         WHERE login_throttle.locked_until <= $2"
    )
});

/// SQLite's numbered parameters are `?N`.
static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| CLAIM_PG.replace('$', "?"));

/// SQLite: the claim without its `RETURNING` (whether it counted is read by `changes()` in
/// the statement after it, `MEMBER_AFTER_CLAIM_SQLITE`).
static CLAIM_SQLITE_QUIET: LazyLock<String> = LazyLock::new(|| CLAIM_QUIET_PG.replace('$', "?"));

/// SQLite: run right after `CLAIM_SQLITE_QUIET` in the same call, always one row: did the
/// claim count (it changed a row), and the member (?9 tenant, ?10 username) if there is one.
/// The parameters are numbered, so they index the call's values whatever came before.
const MEMBER_AFTER_CLAIM_SQLITE: &str = "SELECT changes() AS counted, users.*, \
     password_credentials.phc AS password_phc \
     FROM (SELECT 1) AS one \
     LEFT JOIN users ON users.tenant_id = ?9 AND users.username = ?10 \
     LEFT JOIN password_credentials ON password_credentials.user_id = users.id";

/// PostgreSQL: the claim as a data-modifying CTE (it runs once, whether or not the row is
/// read); the outer query always gives one row: did the claim count, and the member ($9
/// tenant, $10 username) if there is one.
static CLAIM_AND_MEMBER_PG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH claim AS ({}) \
         SELECT EXISTS (SELECT 1 FROM claim) AS counted, users.*, \
         password_credentials.phc AS password_phc \
         FROM (SELECT 1) AS one \
         LEFT JOIN users ON users.tenant_id = $9 AND users.username = $10 \
         LEFT JOIN password_credentials ON password_credentials.user_id = users.id",
        CLAIM_PG.as_str()
    )
});

impl Store {
    /// Count one sign-in attempt for `key`, atomically across instances: of many parallel
    /// attempts exactly `max_attempts` are allowed before the account locks. The attempt that
    /// reaches the limit starts the lockout at once (it is lifted again if that attempt turns
    /// out to be right). Lockouts double: `base * 2^(n-1)`, at most `cap` seconds.
    ///
    /// One statement (`INSERT … ON CONFLICT DO UPDATE … WHERE not locked … RETURNING`): the
    /// row lock (PostgreSQL) or write lock (SQLite) it takes lines parallel attempts up, and
    /// the arithmetic runs on the row as it is then. No row comes back when the account is
    /// locked: the update's `WHERE` left it alone.
    ///
    /// With `member = Some((tenant, username))` it also reads that member and their password
    /// hash, as `Store::user_with_password` does; on PostgreSQL in the same statement (one
    /// round trip fewer per sign-in), on SQLite after the claim. The member is read only
    /// when the attempt is allowed.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_attempt(
        &self,
        key: &str,
        now: i64,
        max_attempts: i64,
        base: i64,
        cap: i64,
        member: Option<(&str, &str)>,
    ) -> Result<(Claim, Option<Member>)> {
        let max_attempts = max_attempts.max(1);
        // A lockout longer than a century is as good as forever, and keeps `now + delay` far
        // from overflowing (PostgreSQL would fail the statement).
        const LONGEST: i64 = 100 * 365 * 86_400;
        let (base, cap) = (base.clamp(1, LONGEST), cap.clamp(1, LONGEST));
        let (full, full_delay) = lockout_steps(base, cap);
        // A first attempt that already reaches the limit (a limit of 1) locks at once.
        let (first_lockouts, first_until) = if max_attempts <= 1 {
            (
                1,
                now.saturating_add(lockout_delay(0, base, full, full_delay)),
            )
        } else {
            (0, 0)
        };
        let backend = self.backend();
        let mut values: Vec<sea_orm::Value> = vec![
            key.into(),
            now.into(),
            max_attempts.into(),
            base.into(),
            full.into(),
            full_delay.into(),
            first_lockouts.into(),
            first_until.into(),
        ];
        // One row: did the claim count, and the member if there is one.
        let read = |row: sea_orm::QueryResult, counted: bool| -> Result<Option<Member>> {
            if !counted || row.try_get::<Option<String>>("", "id")?.is_none() {
                return Ok(None);
            }
            Ok(Some((
                user::Model::from_query_result(&row, "")?,
                row.try_get("", "password_phc")?,
            )))
        };
        let (counted, member) = match (backend, member) {
            (DbBackend::Postgres, Some((tenant_id, username))) => {
                // `CLAIM_AND_MEMBER_PG`: one statement.
                values.push(tenant_id.into());
                values.push(username.into());
                let sql = CLAIM_AND_MEMBER_PG.as_str();
                let row = self
                    .w()
                    .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?
                    .ok_or_else(|| sea_orm::DbErr::RecordNotFound("claim".into()))?;
                let counted: bool = row.try_get("", "counted")?;
                (counted, read(row, counted)?)
            }
            (DbBackend::Sqlite, Some((tenant_id, username))) => {
                // The claim and the read in one atomic call: one hand-off to a connection's
                // thread, and a commit shared with the other writes waiting then.
                values.push(tenant_id.into());
                values.push(username.into());
                let mut rows = super::sqlite_atomic(
                    self,
                    vec![
                        Statement::from_sql_and_values(
                            backend,
                            CLAIM_SQLITE_QUIET.as_str(),
                            values,
                        ),
                        Statement::from_string(backend, MEMBER_AFTER_CLAIM_SQLITE),
                    ],
                )
                .await?;
                let row = rows
                    .pop()
                    .ok_or_else(|| sea_orm::DbErr::RecordNotFound("claim".into()))?;
                let counted = row.try_get::<i64>("", "counted")? > 0;
                (counted, read(row, counted)?)
            }
            _ => {
                let sql = match backend {
                    DbBackend::Postgres => CLAIM_PG.as_str(),
                    _ => CLAIM_SQLITE.as_str(),
                };
                let counted = self
                    .w()
                    .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?
                    .is_some();
                let member = match member {
                    Some((tenant_id, username)) if counted => {
                        self.user_with_password(tenant_id, username).await?
                    }
                    _ => None,
                };
                (counted, member)
            }
        };
        if counted {
            return Ok((Claim::Allowed, member));
        }
        // Locked (the rare path): read until when.
        let until = login_throttle::Entity::find_by_id(key.to_string())
            .unique(&self.db)
            .await?
            .map_or(0, |r| r.locked_until);
        // Lifted between the two statements (a success elsewhere, or time): still refuse
        // this attempt, which was not counted; the next one will be.
        Ok((Claim::Locked(until.max(now + 1)), None))
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
            // One call to a connection's thread instead of four (`BEGIN`, two statements,
            // `COMMIT`), and a commit shared with other writes waiting then.
            let b = DbBackend::Sqlite;
            super::sqlite_atomic(
                self,
                vec![
                    b.build(&clear.into_query()),
                    b.build(&audit_insert(audit, now)),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

/// The lockout after `previous` lockouts lasts `base * 2^previous` seconds, at most `cap`, and
/// at most `base * 2^30`. Returns `(steps, full)`: from `steps` previous lockouts on, the delay
/// is `full`; below that, `base << previous` cannot pass `cap` (so SQL needs no `min`, and no
/// multiplication can overflow).
fn lockout_steps(base: i64, cap: i64) -> (i64, i64) {
    // The largest k ≤ 30 with base * 2^k ≤ cap, if any.
    let fits = (0..=30).rev().find(|&k| {
        base.checked_shl(k)
            .is_some_and(|d| d >> k == base && d <= cap)
    });
    match fits {
        Some(30) => (30, base << 30),
        Some(k) => (i64::from(k) + 1, cap),
        None => (0, cap),
    }
}

/// The same rule in Rust (for a new row, and for the tests of the SQL).
fn lockout_delay(previous: i64, base: i64, steps: i64, full: i64) -> i64 {
    if previous >= steps {
        full
    } else {
        base << previous
    }
}

#[cfg(test)]
mod tests {
    use super::{lockout_delay, lockout_steps};

    /// The rule as it was written before it moved into SQL: `min(base * 2^min(n, 30), cap)`.
    fn reference(previous: i64, base: i64, cap: i64) -> i64 {
        let factor = 1i64
            .checked_shl(previous.clamp(0, 30) as u32)
            .unwrap_or(i64::MAX);
        base.saturating_mul(factor).min(cap)
    }

    #[test]
    fn lockout_delays_match_the_doubling_rule() {
        let bases = [1, 2, 3, 60, 900, 86_400, 1 << 40, i64::MAX / 3, i64::MAX];
        let caps = [1, 59, 60, 3_600, 86_400, 1 << 45, i64::MAX];
        for base in bases {
            for cap in caps {
                let (steps, full) = lockout_steps(base, cap);
                assert!(full <= cap, "base {base} cap {cap}");
                for previous in 0..70 {
                    assert_eq!(
                        lockout_delay(previous, base, steps, full),
                        reference(previous, base, cap),
                        "base {base} cap {cap} previous {previous}"
                    );
                }
            }
        }
    }
}
