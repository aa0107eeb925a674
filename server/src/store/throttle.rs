use std::sync::LazyLock;

use entity::{login_throttle, user};
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, Query, UpdateStatement, WithClause, WithQuery,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    QueryTrait, Statement,
};
use serde::{Deserialize, Serialize};

use super::Store;
use super::audit::audit_insert;
use crate::audit::AuditEvent;
use crate::error::Result;

/// A member and their password hash (PHC string), if they have one.
pub type Member = (user::Model, Option<String>);

/// The answer to "may this account try a password now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; the attempt is already counted.
    Allowed,
    /// Locked until this time, by this counter.
    Locked(i64, Lock),
}

/// Which counter refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// The account, for the client network the attempt came from.
    Network,
    /// The account as a whole (failures from many networks).
    Account,
}

/// One counter of failed sign-ins: its key and how many attempts in a row it allows.
#[derive(Debug, Clone, Copy)]
pub struct Counter<'a> {
    pub key: &'a str,
    pub max_attempts: i64,
}

/// The claim of one counter: `INSERT … ON CONFLICT DO UPDATE … WHERE not locked`, with these
/// parameter numbers (`$n` on PostgreSQL; SQLite reads `?n`): the key, now, the counter's
/// most attempts, the first lockout, the steps before the full delay, the full delay, and a
/// new row's lockouts and lock. `from` makes the insert an `INSERT … SELECT … FROM from`: it
/// counts only when that relation has a row (the network's claim counted).
#[allow(clippy::too_many_arguments)]
fn claim_sql(
    key: u8,
    now: u8,
    max: u8,
    base: u8,
    steps: u8,
    full: u8,
    first_lockouts: u8,
    first_until: u8,
    from: Option<&str>,
) -> String {
    // The count after this attempt (a count that had reached the limit starts over).
    let after = format!(
        "(CASE WHEN login_throttle.attempts >= ${max} THEN 1 \
         ELSE login_throttle.attempts + 1 END)"
    );
    let row = format!("${key}, 1, ${first_lockouts}, ${first_until}, ${now}");
    let source = match from {
        Some(f) => format!("SELECT {row} FROM {f} WHERE true"),
        None => format!("VALUES ({row})"),
    };
    format!(
        "INSERT INTO login_throttle (\"key\", attempts, lockouts, locked_until, updated_at) \
         {source} \
         ON CONFLICT (\"key\") DO UPDATE SET \
         attempts = {after}, \
         lockouts = CASE WHEN {after} >= ${max} \
             THEN login_throttle.lockouts + 1 ELSE login_throttle.lockouts END, \
         locked_until = CASE WHEN {after} >= ${max} \
             THEN ${now} + (CASE WHEN login_throttle.lockouts >= ${steps} THEN ${full} \
                 ELSE (${base} << CAST(login_throttle.lockouts AS INTEGER)) END) \
             ELSE login_throttle.locked_until END, \
         updated_at = ${now} \
         WHERE login_throttle.locked_until <= ${now}"
    )
}

// Parameters of the claim statements: $1 the network's key, $2 now, $3 its most attempts,
// $4 base, $5 steps before the full delay, $6 the full delay, $7/$8 a new row's lockouts and
// lock; $9 tenant and $10 username of the member to read (NULL: none); $11 the account's key,
// $12 its most attempts, $13/$14 a new row's lockouts and lock.
//
// The network's claim counts only while the account is not locked: attempts the account
// refuses must not lock a member out of their own network after the account's lock ends.
static CLAIM_NETWORK: LazyLock<String> = LazyLock::new(|| {
    claim_sql(
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        Some(
            "(SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM login_throttle \
             WHERE \"key\" = $11 AND locked_until > $2)) AS account_free",
        ),
    )
});

/// The member and their password hash, in a row that is there whether or not they exist:
/// joined to `base`, a one-row query.
fn member_on(base: &str) -> String {
    format!(
        "users.*, password_credentials.phc AS password_phc \
         FROM ({base}) AS one \
         LEFT JOIN users ON users.tenant_id = $9 AND users.username = $10 \
         LEFT JOIN password_credentials ON password_credentials.user_id = users.id"
    )
}

/// PostgreSQL: both claims as data-modifying CTEs (each runs once, read or not; the account's
/// counts only if the network's did), and one row: did the attempt count, and the member.
///
/// Its one-row base sets `synchronous_commit` off for this statement's own transaction
/// (`set_config(…, true)`, undone when it ends): the claim is visible to every parallel
/// attempt once committed, and the WAL writer flushes it within moments, but the sign-in does
/// not wait for that flush before it hashes (see `store::Commit::Visible`, SQLite's
/// equivalent). An attempt counted and then forgotten by a crash of the database's machine
/// costs nothing worth a flush per sign-in; every other write keeps `synchronous_commit` on.
static CLAIM_AND_MEMBER_PG: LazyLock<String> = LazyLock::new(|| {
    let member = member_on("SELECT set_config('synchronous_commit', 'off', true)");
    format!(
        "WITH net AS ({} RETURNING 1), acct AS ({} RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM acct) AS counted, {member}",
        CLAIM_NETWORK.as_str(),
        claim_sql(11, 2, 12, 4, 5, 6, 13, 14, Some("net")),
    )
});

/// SQLite: the account's claim counts only if the statement before it (the network's claim)
/// changed a row.
static CLAIM_ACCOUNT_SQLITE: LazyLock<String> = LazyLock::new(|| {
    claim_sql(
        11,
        2,
        12,
        4,
        5,
        6,
        13,
        14,
        Some("(SELECT 1 WHERE changes() > 0) AS network_counted"),
    )
});

/// SQLite: run right after the two claims in the same call, always one row: did the
/// attempt count (the account's claim changed a row), and the member if there is one.
static MEMBER_AFTER_CLAIM_SQLITE: LazyLock<String> =
    LazyLock::new(|| format!("SELECT changes() AS counted, {}", member_on("SELECT 1")));

/// SQLite: a `$n`-numbered statement with positional `?` parameters and the values they
/// take, in order. Statements sent together in one call (`sqlite_atomic`) then bind their
/// values one after the other; numbered parameters would not do: sqlx binds a numbered
/// statement's unused numbers from a counter running across the call's statements.
fn positional(sql: &str, values: &[sea_orm::Value]) -> std::result::Result<Statement, DbErr> {
    let mut out = String::with_capacity(sql.len());
    let mut vals = Vec::new();
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let digits = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let value = tail[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|n| values.get(n.checked_sub(1)?))
            .ok_or_else(|| DbErr::Custom(format!("no value for parameter ${}", &tail[..digits])))?;
        out.push('?');
        vals.push(value.clone());
        rest = &tail[digits..];
    }
    out.push_str(rest);
    Ok(Statement::from_sql_and_values(DbBackend::Sqlite, out, vals))
}

impl Store {
    /// Count one sign-in attempt against two counters, atomically across instances: first
    /// the account's for the client network it comes from (`network`), then, if that one
    /// allowed it, the account's as a whole (`account`, with a higher limit). Of many
    /// parallel attempts exactly `max_attempts` of a counter are allowed before it locks.
    /// The attempt that reaches a limit starts that lockout at once (it is lifted again if
    /// that attempt turns out to be right). Lockouts double: `base * 2^(n-1)`, at most `cap`
    /// seconds.
    ///
    /// Whoever guesses from one network locks the account for that network only; the
    /// account as a whole locks when guesses come from many. An attempt refused for its
    /// network does not count for the account.
    ///
    /// One atomic write (`INSERT … ON CONFLICT DO UPDATE … WHERE not locked` per counter):
    /// the row lock (PostgreSQL) or write lock (SQLite) it takes lines parallel attempts up,
    /// and the arithmetic runs on the rows as they are then.
    ///
    /// With `member = Some((tenant, username))` it also reads that member and their password
    /// hash, as `Store::user_with_password` does, in the same statement (PostgreSQL) or call
    /// (SQLite). The member is read only when the attempt is allowed.
    pub async fn claim_attempt(
        &self,
        network: Counter<'_>,
        account: Counter<'_>,
        now: i64,
        (base, cap): (i64, i64),
        member: Option<(&str, &str)>,
    ) -> Result<(Claim, Option<Member>)> {
        // A lockout longer than a century is as good as forever, and keeps `now + delay` far
        // from overflowing (PostgreSQL would fail the statement).
        const LONGEST: i64 = 100 * 365 * 86_400;
        let (base, cap) = (base.clamp(1, LONGEST), cap.clamp(1, LONGEST));
        let (full, full_delay) = lockout_steps(base, cap);
        // A first attempt that already reaches the limit (a limit of 1) locks at once.
        let first = |max: i64| -> (i64, i64) {
            if max <= 1 {
                (
                    1,
                    now.saturating_add(lockout_delay(0, base, full, full_delay)),
                )
            } else {
                (0, 0)
            }
        };
        let (net_max, acct_max) = (network.max_attempts.max(1), account.max_attempts.max(1));
        let (net_first, acct_first) = (first(net_max), first(acct_max));
        let (tenant_id, username) = member.unzip();
        let values: Vec<sea_orm::Value> = vec![
            network.key.into(),
            now.into(),
            net_max.into(),
            base.into(),
            full.into(),
            full_delay.into(),
            net_first.0.into(),
            net_first.1.into(),
            tenant_id.map(str::to_string).into(),
            username.map(str::to_string).into(),
            account.key.into(),
            acct_max.into(),
            acct_first.0.into(),
            acct_first.1.into(),
        ];
        let backend = self.backend();
        let row = match backend {
            DbBackend::Postgres => self
                .w()
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    CLAIM_AND_MEMBER_PG.as_str(),
                    values,
                ))
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound("claim".into()))?,
            _ => {
                // The claims and the read in one atomic call: one hand-off to a connection's
                // thread, and a commit shared with the other writes waiting then. Visible to
                // parallel attempts before the hash, without an `fsync` of its own.
                super::sqlite_atomic_as(
                    self,
                    vec![
                        positional(&CLAIM_NETWORK, &values)?,
                        positional(&CLAIM_ACCOUNT_SQLITE, &values)?,
                        positional(&MEMBER_AFTER_CLAIM_SQLITE, &values)?,
                    ],
                    super::Commit::Visible,
                )
                .await?
                .pop()
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound("claim".into()))?
            }
        };
        let counted = match backend {
            DbBackend::Postgres => row.try_get::<bool>("", "counted")?,
            _ => row.try_get::<i64>("", "counted")? > 0,
        };
        if counted {
            let member = match row.try_get::<Option<String>>("", "id")? {
                Some(_) => Some((
                    user::Model::from_query_result(&row, "")?,
                    row.try_get("", "password_phc")?,
                )),
                None => None,
            };
            return Ok((Claim::Allowed, member));
        }
        // Locked (the rare path): read by which counter, and until when.
        let rows = login_throttle::Entity::find()
            .filter(login_throttle::Column::Key.is_in([network.key, account.key]))
            .all(&self.db)
            .await?;
        let until = |key: &str| {
            rows.iter()
                .find(|r| r.key == key)
                .map_or(0, |r| r.locked_until)
        };
        let (net_until, acct_until) = (until(network.key), until(account.key));
        // Both may be locked: the later lock is the one to wait for.
        let (until, lock) = if acct_until > now && acct_until >= net_until {
            (acct_until, Lock::Account)
        } else {
            (net_until, Lock::Network)
        };
        // Lifted between the two statements (a success elsewhere, or time): still refuse
        // this attempt, which was not counted; the next one will be.
        Ok((Claim::Locked(until.max(now + 1), lock), None))
    }

    /// A successful sign-in clears its counters and any lockout they started, and records
    /// its audit event: one atomic write (a single statement with a CTE on PostgreSQL, one
    /// call and so one commit on SQLite). Browser sign-ins carry this write into the
    /// session's own (`session_update`), one write fewer.
    pub async fn sign_in_succeeded(&self, done: &SignInSuccess) -> Result<()> {
        if self.backend() == DbBackend::Postgres {
            let q = WithQuery::new()
                .with_clause(done.pg_with())
                .query(Query::select().expr(Expr::val(1)).to_owned())
                .to_owned();
            self.db.execute(&q).await?;
        } else {
            // One call to a connection's thread instead of several (`BEGIN`, the statements,
            // `COMMIT`), and a commit shared with other writes waiting then.
            super::sqlite_atomic(self, done.sqlite_statements()).await?;
        }
        Ok(())
    }
}

/// What a successful password sign-in writes: its counters cleared, and its audit event
/// (`sign_in` / `ok`). Serializable, so that a browser sign-in can hand it to the session
/// store, which writes it with the session (see `login::session_store::KEY_SIGN_IN`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignInSuccess {
    /// The counters to clear.
    pub keys: Vec<String>,
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
    /// When it happened.
    pub at: i64,
}

impl SignInSuccess {
    pub fn new(keys: Vec<String>, ev: AuditEvent, at: i64) -> Self {
        debug_assert_eq!((ev.kind, ev.outcome), ("sign_in", "ok"));
        Self {
            keys,
            tenant_id: ev.tenant_id,
            actor: ev.actor,
            user_id: ev.user_id,
            ip: ev.ip,
            user_agent: ev.user_agent,
            detail: ev.detail,
            at,
        }
    }

    /// The audit event this records.
    pub fn event(&self) -> AuditEvent {
        AuditEvent {
            tenant_id: self.tenant_id.clone(),
            kind: "sign_in",
            outcome: "ok",
            actor: self.actor.clone(),
            user_id: self.user_id.clone(),
            client_id: None,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            detail: self.detail.clone(),
        }
    }

    /// Clearing each counter, in the order the claim takes them (network, then account).
    fn clears(&self) -> Vec<UpdateStatement> {
        self.keys
            .iter()
            .map(|key| {
                login_throttle::Entity::update_many()
                    .col_expr(login_throttle::Column::Attempts, Expr::value(0))
                    .col_expr(login_throttle::Column::Lockouts, Expr::value(0))
                    .col_expr(login_throttle::Column::LockedUntil, Expr::value(0))
                    .col_expr(login_throttle::Column::UpdatedAt, Expr::value(self.at))
                    .filter(login_throttle::Column::Key.eq(key.as_str()))
                    .into_query()
            })
            .collect()
    }

    /// SQLite: the statements, for one atomic call (which takes the write lock first).
    pub(crate) fn sqlite_statements(&self) -> Vec<Statement> {
        let b = DbBackend::Sqlite;
        let mut v: Vec<Statement> = self.clears().iter().map(|c| b.build(c)).collect();
        v.push(b.build(&audit_insert(self.event(), self.at)));
        v
    }

    /// PostgreSQL: the statements as data-modifying CTEs (each runs once, read or not), to
    /// go before a statement of the caller's. Each counter's clear waits for the one before
    /// it (it reads that one's result): rows are locked in the claim's order, so a sign-in's
    /// clear and a parallel attempt's claim on the same rows cannot deadlock.
    pub(crate) fn pg_with(&self) -> WithClause {
        let mut with = WithClause::new();
        for (i, mut clear) in self.clears().into_iter().enumerate() {
            if i > 0 {
                clear.and_where(Expr::cust(format!(
                    "(SELECT count(*) FROM sign_in_cleared_{}) >= 0",
                    i - 1
                )));
            }
            clear.returning_col(login_throttle::Column::Key);
            with.cte(
                CommonTableExpression::new()
                    .query(clear)
                    .table_name(Alias::new(format!("sign_in_cleared_{i}")))
                    .to_owned(),
            );
        }
        with.cte(
            CommonTableExpression::new()
                .query(audit_insert(self.event(), self.at))
                .table_name(Alias::new("sign_in_audited"))
                .to_owned(),
        );
        with
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
    #![allow(clippy::unwrap_used)]
    use super::{lockout_delay, lockout_steps};

    /// The rule as it was written before it moved into SQL: `min(base * 2^min(n, 30), cap)`.
    fn reference(previous: i64, base: i64, cap: i64) -> i64 {
        let factor = 1i64
            .checked_shl(previous.clamp(0, 30) as u32)
            .unwrap_or(i64::MAX);
        base.saturating_mul(factor).min(cap)
    }

    #[test]
    fn numbered_parameters_become_positional_in_order() {
        let v: Vec<sea_orm::Value> = vec![1i64.into(), "a".into(), 3i64.into()];
        let st = super::positional("SELECT $2, $1 + $3, $2", &v).unwrap();
        assert_eq!(st.sql, "SELECT ?, ? + ?, ?");
        let got = st.values.unwrap().0;
        let want: Vec<sea_orm::Value> = vec!["a".into(), 1i64.into(), 3i64.into(), "a".into()];
        assert_eq!(got, want);
        assert!(super::positional("SELECT $4", &v).is_err());
        assert!(super::positional("SELECT $0", &v).is_err());
        assert!(super::positional("SELECT $", &v).is_err());
        // The claim statements: every parameter number has a value (14 in all).
        let all: Vec<sea_orm::Value> = (1..=14i64).map(Into::into).collect();
        for sql in [
            super::CLAIM_NETWORK.as_str(),
            super::CLAIM_ACCOUNT_SQLITE.as_str(),
            super::MEMBER_AFTER_CLAIM_SQLITE.as_str(),
        ] {
            let st = super::positional(sql, &all).unwrap();
            assert!(!st.sql.contains('$'), "{}", st.sql);
        }
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
