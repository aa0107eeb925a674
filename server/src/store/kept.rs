//! Connections kept out of sqlx's pool between single statements.
//!
//! sqlx 0.9 pings a pooled connection every time it goes back to its pool (always; no
//! option turns it off): on PostgreSQL a round trip to the backend, on SQLite a hand-off to
//! the connection's thread, and on both a task spawned to do it. A statement outside a
//! transaction (most reads, and most of the hot path's writes, each one statement) thus cost
//! two round trips instead of one. Here a connection that answered a statement is kept for
//! the next one (at most `MAX_KEPT` per pool, the most recently used first) instead of going
//! back; a statement takes a kept connection if there is one, else one from the pool.
//!
//! What the pool's pings were for still holds:
//! - A connection that failed a statement, or whose statement was cancelled half-way (its
//!   request went away), is not kept: it goes back to the pool, whose ping at release puts a
//!   broken one out or brings a half-read one back to a clean state.
//! - A connection idle for a second goes back to the pool before it is used again (the
//!   pool pings it at its next acquire, as it would have), so one that broke while idle (a
//!   restarted database) is never used; the least recently used one goes back as soon as it
//!   has idled a second, so at rest no more connections are held than the pool would keep.
//! - A connection goes back to the pool a minute after it was taken, however busy, so the
//!   pool's own rules (its maximum lifetime) still apply to it.
//! - Transactions take their connections from the pool as before; at most `MAX_KEPT` of a
//!   pool's connections are held here, and never the last one (on SQLite, never the last two:
//!   the one-call writes keep one of their own), so a small pool keeps fewer or none. No store
//!   function runs a statement outside its transaction while it holds one, so a task waiting
//!   in the pool always waits for a connection that comes back. (Giving a kept connection
//!   back whenever the pool had no other free, as a precaution, made PostgreSQL's code
//!   exchanges and authorize redirects, whose pools are then always busy, 13–24% dearer in
//!   CPU and 15% slower in a benchmark.)
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, pool::PoolConnection};
use sea_orm::{DbErr, ExecResult, QueryResult, RuntimeErr, Statement};

/// Kept connections per pool at most.
const MAX_KEPT: usize = 2;
/// A kept connection idle this long goes back to the pool before it is used again.
const IDLE: Duration = Duration::from_secs(1);
/// A kept connection goes back to the pool this long after it was taken from it.
const TURN: Duration = Duration::from_secs(60);

struct KeptConn<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    taken: Instant,
    used: Instant,
}

/// One pool's kept connections, least recently used first.
pub(crate) struct Kept<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    conns: Mutex<Vec<KeptConn<DB>>>,
    /// How many may be kept: `MAX_KEPT`, less if the pool is small (see `KeptPool::of`).
    max: usize,
}

impl<DB: sqlx::Database> Kept<DB> {
    /// Kept connections of `pool`, leaving `reserve` of its connections to others.
    fn new(pool: sqlx::Pool<DB>, reserve: u32) -> Arc<Self> {
        let room = pool.options().get_max_connections().saturating_sub(reserve);
        Arc::new(Self {
            max: MAX_KEPT.min(usize::try_from(room).unwrap_or(0)),
            pool,
            conns: Mutex::new(Vec::new()),
        })
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Vec<KeptConn<DB>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used kept connection that has not idled, else one from the pool.
    /// Connections found idle go back to the pool (dropped outside the lock).
    async fn take(&self) -> Result<KeptConn<DB>, sqlx::Error> {
        let (fresh, stale) = {
            let mut v = self.conns();
            let stale = idled(&mut v);
            (v.pop(), stale)
        };
        drop(stale);
        if let Some(c) = fresh {
            return Ok(c);
        }
        let conn = self.pool.acquire().await?;
        let now = Instant::now();
        Ok(KeptConn {
            conn,
            taken: now,
            used: now,
        })
    }

    /// After a statement that succeeded: keep the connection for the next one, unless its
    /// turn is over or enough are kept (then it goes back to the pool).
    fn keep(&self, mut c: KeptConn<DB>) {
        if c.taken.elapsed() >= TURN {
            return;
        }
        c.used = Instant::now();
        let back = {
            let mut v = self.conns();
            let mut back = idled(&mut v);
            if v.len() < self.max {
                v.push(c);
            } else {
                back.push(c);
            }
            back
        };
        drop(back);
    }

    /// Every kept connection, back to the pool (before the pool closes: its close waits for
    /// every connection to come back).
    pub(crate) fn release(&self) {
        let all = std::mem::take(&mut *self.conns());
        drop(all);
    }

    /// How many connections are kept (idle for the pool's statistics).
    pub(crate) fn len(&self) -> usize {
        self.conns().len()
    }
}

/// The kept connections that idled `IDLE`, taken out (they are the first ones: least
/// recently used first).
fn idled<DB: sqlx::Database>(v: &mut Vec<KeptConn<DB>>) -> Vec<KeptConn<DB>> {
    let n = v.iter().take_while(|c| c.used.elapsed() >= IDLE).count();
    v.drain(..n).collect()
}

impl<DB: sqlx::Database> Drop for Kept<DB> {
    /// A pooled connection, dropped, goes back to its pool on a task spawned on the current
    /// runtime, and sqlx panics where there is none (an HTTP worker's thread locals, or the
    /// last `Store`, dropped after their runtime ended). They are then dropped inside a
    /// runtime made for it, whose end cancels those tasks: each connection is closed (its
    /// socket shut, so a PostgreSQL backend ends) instead of going back.
    fn drop(&mut self) {
        let all = std::mem::take(self.conns.get_mut().unwrap_or_else(PoisonError::into_inner));
        if all.is_empty() || tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => {
                let _inside = rt.enter();
                drop(all);
            }
            Err(_) => {
                for c in all {
                    std::mem::forget(c.conn);
                }
            }
        }
    }
}

/// What a statement is run for.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    Execute,
    One,
    All,
}

pub(crate) enum Answer {
    Done(ExecResult),
    Rows(Vec<QueryResult>),
}

/// A kept pool of either database.
#[derive(Clone)]
pub(crate) enum KeptPool {
    Sqlite(Arc<Kept<sqlx::Sqlite>>),
    Postgres(Arc<Kept<sqlx::Postgres>>),
}

impl KeptPool {
    /// The kept connections of `db`'s pool; `None` for a connection that is not a sqlx pool.
    /// A pool always keeps a connection for transactions (and on SQLite one more for the
    /// one-call writes' kept writer, `AtomicQueueInner::writer`): a pool of one or two keeps
    /// none here.
    pub(crate) fn of(db: &sea_orm::DatabaseConnection) -> Option<Self> {
        use sea_orm::DatabaseConnectionType as T;
        match &db.inner {
            T::SqlxSqlitePoolConnection(_) => Some(Self::Sqlite(Kept::new(
                db.get_sqlite_connection_pool().clone(),
                2,
            ))),
            T::SqlxPostgresPoolConnection(_) => Some(Self::Postgres(Kept::new(
                db.get_postgres_connection_pool().clone(),
                1,
            ))),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    pub(crate) fn release(&self) {
        match self {
            Self::Sqlite(k) => k.release(),
            Self::Postgres(k) => k.release(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Sqlite(k) => k.len(),
            Self::Postgres(k) => k.len(),
        }
    }

    /// Run one statement on a kept connection (see the module's doc).
    pub(crate) async fn run(&self, stmt: Statement, mode: Mode) -> Result<Answer, DbErr> {
        macro_rules! on_kept {
            ($kept:expr) => {{
                let kept = $kept;
                let mut c = kept.take().await.map_err(acquire_err)?;
                let values = stmt.values.unwrap_or_else(|| sea_orm::Values(Vec::new()));
                let q = sqlx::query_with(
                    sqlx::AssertSqlSafe(stmt.sql),
                    sea_query_sqlx::SqlxValues(values),
                );
                let answer = match mode {
                    Mode::Execute => q
                        .execute(&mut *c.conn)
                        .await
                        .map(|r| Answer::Done(r.into())),
                    Mode::One => q
                        .fetch_optional(&mut *c.conn)
                        .await
                        .map(|r| Answer::Rows(r.into_iter().map(QueryResult::from).collect())),
                    Mode::All => q
                        .fetch_all(&mut *c.conn)
                        .await
                        .map(|r| Answer::Rows(r.into_iter().map(QueryResult::from).collect())),
                };
                match answer {
                    Ok(a) => {
                        kept.keep(c);
                        Ok(a)
                    }
                    // Back to the pool (dropped), whose ping at release checks it.
                    Err(e) => Err(match mode {
                        Mode::Execute => DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e))),
                        _ => DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))),
                    }),
                }
            }};
        }
        match self {
            Self::Sqlite(k) => on_kept!(k),
            Self::Postgres(k) => on_kept!(k),
        }
    }
}

/// As sea-orm reports a failed acquire.
fn acquire_err(e: sqlx::Error) -> DbErr {
    match e {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => {
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
        }
        e => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
    }
}
