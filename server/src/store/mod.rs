//! Every query, for both databases. Services decide; the store only reads and writes, and
//! keeps each multi-step change in one transaction.
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

mod admin;
mod audit;
mod cache;
mod clients;
mod codes;
mod federation;
mod grants;
mod kept;
mod keys;
mod live;
mod passkeys;
mod refresh;
mod sessions;
mod tenants;
mod throttle;
mod users;

pub use admin::{AuditQuery, DayCount};
pub use clients::{ClientWithUris, NewClient};
pub use codes::{CodeOutcome, NewCode};
pub use federation::NewMember;
pub use refresh::{AccessLive, NewRefresh, RefreshOutcome, RefreshStatus};
pub use throttle::{Claim, Counter, Lock, Member, SignInSuccess};
pub use users::{Removal, Removed};

/// A lookup by a unique key. `.one()` adds a bound `LIMIT ?`, and SQLite re-prepares such a
/// statement on every execution (measured: 8–14% of the CPU of a token request); a unique
/// key needs no limit, so these statements stay in sqlx's prepared-statement cache.
pub(crate) trait SelectUnique<E: sea_orm::EntityTrait> {
    fn unique<C: sea_orm::ConnectionTrait>(
        self,
        db: &C,
    ) -> impl Future<Output = Result<Option<E::Model>, DbErr>> + Send;
}

impl<E> SelectUnique<E> for sea_orm::Select<E>
where
    E: sea_orm::EntityTrait,
    E::Model: Send + Sync,
{
    async fn unique<C: sea_orm::ConnectionTrait>(self, db: &C) -> Result<Option<E::Model>, DbErr> {
        Ok(self.all(db).await?.into_iter().next())
    }
}

/// TLS to a PostgreSQL on this machine protects nothing, and sqlx 0.9 handshakes without
/// `TCP_NODELAY`: two delayed-ACK stalls make each new connection take ~100 ms instead of
/// ~5 (launchbadge/sqlx#4335), at start-up and whenever the pool grows under load. So a
/// PostgreSQL URL naming a loopback host and no `sslmode` gets `sslmode=disable`; any
/// `sslmode` in the URL is kept as written.
fn loopback_without_tls(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    if !matches!(u.scheme(), "postgres" | "postgresql")
        || u.query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("sslmode") || k.eq_ignore_ascii_case("ssl-mode"))
    {
        return url.to_string();
    }
    // `postgres:` is not a special scheme to the url crate: an IP address is an opaque host.
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        None => false,
    };
    if !loopback {
        return url.to_string();
    }
    u.query_pairs_mut().append_pair("sslmode", "disable");
    u.to_string()
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    cache: std::sync::Arc<cache::Caches>,
    live: std::sync::Arc<live::LiveChecks>,
    /// SQLite: this process's writers take turns here, first come first served, before they
    /// ask SQLite for its write lock. Left to SQLite alone, a writer that finds the lock taken
    /// sleeps in its busy handler (1, 2, 5 … up to 100 ms between tries) while the lock,
    /// released meanwhile, stays idle. `None` on PostgreSQL (row locks, no single writer).
    writes: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// SQLite: the atomic writes waiting for the write turn, committed as groups (see
    /// `sqlite_atomic`).
    atomic_queue: AtomicQueue,
}

/// `ConnectionTrait` for `$ty` by delegation to `$conn`, holding `$turn` (evaluated first,
/// kept until the call ends) around each statement.
macro_rules! connection_via {
    ($ty:ty, $s:ident => $turn:expr, $conn:expr) => {
        #[async_trait::async_trait]
        impl sea_orm::ConnectionTrait for $ty {
            fn get_database_backend(&$s) -> DbBackend {
                $conn.get_database_backend()
            }
            async fn execute_raw(
                &$s,
                stmt: sea_orm::Statement,
            ) -> Result<sea_orm::ExecResult, DbErr> {
                let _turn = $turn;
                $conn.execute_raw(stmt).await
            }
            async fn execute_unprepared(&$s, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
                let _turn = $turn;
                $conn.execute_unprepared(sql).await
            }
            async fn query_one_raw(
                &$s,
                stmt: sea_orm::Statement,
            ) -> Result<Option<sea_orm::QueryResult>, DbErr> {
                let _turn = $turn;
                $conn.query_one_raw(stmt).await
            }
            async fn query_all_raw(
                &$s,
                stmt: sea_orm::Statement,
            ) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
                let _turn = $turn;
                $conn.query_all_raw(stmt).await
            }
            fn support_returning(&$s) -> bool {
                $conn.support_returning()
            }
        }
    };
}

/// A write transaction; on SQLite it also holds this process's write turn until it ends.
pub(crate) struct WriteTxn {
    txn: sea_orm::DatabaseTransaction,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        let WriteTxn { txn, _turn } = self;
        txn.commit().await
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        let WriteTxn { txn, _turn } = self;
        txn.rollback().await
    }
}

// Both delegate every call to a connection; they differ only in when the write turn is held.
connection_via!(WriteTxn, self => (), self.txn);

/// The database as queries see it: on PostgreSQL an HTTP worker's own pool when the thread
/// has one (see `Store::pin_to_thread`), else the shared pool. A statement outside a
/// transaction runs on a connection kept from the last one (see `kept.rs`).
#[derive(Clone)]
struct Db {
    shared: DatabaseConnection,
    /// The shared pool's kept connections.
    kept: Option<kept::KeptPool>,
    /// PostgreSQL: how to open a worker's own pool (lazy, sized per worker), and the id
    /// naming this store's pools among the threads' ones. `None` on SQLite, whose connections
    /// have threads of their own.
    workers: Option<std::sync::Arc<WorkerPools>>,
}

struct WorkerPools {
    id: u64,
    /// The shared pool's options but lazy (the URL may hold a password: never printed).
    opts: ConnectOptions,
    /// The workers' pools opened so far and their kept connections (for the pool metrics,
    /// and to give the kept ones back before closing).
    opened: std::sync::Mutex<Vec<(DatabaseConnection, Option<kept::KeptPool>)>>,
}

/// A thread's own PostgreSQL pool: the id of the store it belongs to, the pool, and its kept
/// connections.
type ThreadDb = (u64, DatabaseConnection, Option<kept::KeptPool>);

thread_local! {
    /// This thread's own PostgreSQL pool (see `ThreadDb`).
    static THREAD_DB: std::cell::RefCell<Option<ThreadDb>> =
        const { std::cell::RefCell::new(None) };
}

impl Db {
    fn new(shared: DatabaseConnection, workers: Option<std::sync::Arc<WorkerPools>>) -> Self {
        Self {
            kept: kept::KeptPool::of(&shared),
            shared,
            workers,
        }
    }

    /// This thread's own pool, if it has one.
    fn own<T>(&self, f: impl FnOnce(&ThreadDb) -> T) -> Option<T> {
        let w = self.workers.as_ref()?;
        THREAD_DB.with(|t| match &*t.borrow() {
            Some(own) if own.0 == w.id => Some(f(own)),
            _ => None,
        })
    }

    /// The pool for a query made on this thread.
    fn current(&self) -> DatabaseConnection {
        self.own(|o| o.1.clone())
            .unwrap_or_else(|| self.shared.clone())
    }

    /// The kept connections for a statement made on this thread.
    fn current_kept(&self) -> Option<kept::KeptPool> {
        self.own(|o| o.2.clone())
            .unwrap_or_else(|| self.kept.clone())
    }

    async fn run(&self, stmt: sea_orm::Statement, mode: kept::Mode) -> Result<kept::Answer, DbErr> {
        use sea_orm::ConnectionTrait;
        if let Some(k) = self.current_kept() {
            return k.run(stmt, mode).await;
        }
        let db = self.current();
        Ok(match mode {
            kept::Mode::Execute => kept::Answer::Done(db.execute_raw(stmt).await?),
            kept::Mode::One => {
                kept::Answer::Rows(db.query_one_raw(stmt).await?.into_iter().collect())
            }
            kept::Mode::All => kept::Answer::Rows(db.query_all_raw(stmt).await?),
        })
    }

    /// Every kept connection back to its pool (see `Store::close`).
    fn release_kept(&self) {
        if let Some(k) = &self.kept {
            k.release();
        }
        if let Some(w) = &self.workers {
            let opened = w
                .opened
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for k in opened.iter().filter_map(|(_, k)| k.as_ref()) {
                k.release();
            }
        }
    }
}

fn not_rows() -> DbErr {
    DbErr::Custom("a statement run for its rows answered none".into())
}

#[async_trait::async_trait]
impl sea_orm::ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        self.shared.get_database_backend()
    }
    async fn execute_raw(&self, stmt: sea_orm::Statement) -> Result<sea_orm::ExecResult, DbErr> {
        match self.run(stmt, kept::Mode::Execute).await? {
            kept::Answer::Done(r) => Ok(r),
            kept::Answer::Rows(_) => {
                Err(DbErr::Custom("a statement executed answered rows".into()))
            }
        }
    }
    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        self.current().execute_unprepared(sql).await
    }
    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, DbErr> {
        match self.run(stmt, kept::Mode::One).await? {
            kept::Answer::Rows(rows) => Ok(rows.into_iter().next()),
            kept::Answer::Done(_) => Err(not_rows()),
        }
    }
    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
        match self.run(stmt, kept::Mode::All).await? {
            kept::Answer::Rows(rows) => Ok(rows),
            kept::Answer::Done(_) => Err(not_rows()),
        }
    }
    fn support_returning(&self) -> bool {
        self.shared.support_returning()
    }
}

/// Several statements in one call on SQLite: sqlx runs them in order on the connection's
/// thread (plain `?` parameters number on from one statement to the next), so a write
/// transaction, which holds SQLite's only write lock, hands work to that thread once instead
/// of once per statement. With a final `SELECT`, its first row is the answer (`changes()`
/// there counts the rows of the statement before it). On PostgreSQL (the extended protocol
/// takes one statement at a time) they run one after the other.
pub(crate) async fn batch<C: sea_orm::ConnectionTrait>(
    db: &C,
    statements: Vec<sea_orm::Statement>,
) -> Result<Option<sea_orm::QueryResult>, DbErr> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Sqlite {
        let mut last = None;
        let n = statements.len();
        for (i, st) in statements.into_iter().enumerate() {
            if i + 1 == n {
                last = db.query_one_raw(st).await?;
            } else {
                db.execute_raw(st).await?;
            }
        }
        return Ok(last);
    }
    let mut sql = String::new();
    let mut values = Vec::new();
    for st in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&st.sql);
        if let Some(v) = st.values {
            values.extend(v.0);
        }
    }
    db.query_one_raw(sea_orm::Statement::from_sql_and_values(
        backend, sql, values,
    ))
    .await
}

/// A statement of `sqlite_atomic` must be one statement and must not control the transaction
/// itself: the group wraps each call in `SAVEPOINT atomic`, and a `COMMIT`, `ROLLBACK`,
/// `RELEASE` or second statement inside it would commit or undo other calls' writes. The
/// statements come from sea-query with bound values, so a `;` never appears in them.
fn check_atomic_statement(sql: &str) -> Result<(), DbErr> {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let controls = matches!(
        first.as_str(),
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE"
    );
    if controls || sql.contains(';') || first.is_empty() {
        return Err(DbErr::Custom(format!(
            "sqlite_atomic: not a single data statement: {}",
            sql.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// SQLite: `statements` as one atomic, durable write, run while this process's write turn is
/// held. Returns the rows the statements answered (a `SELECT` among them reads what the ones
/// before it wrote).
///
/// Group commit: calls that queue while the turn is taken are run together by whichever of
/// them gets it next, in the order they came, in one `IMMEDIATE` transaction with one commit
/// (one `fsync` for the group instead of one each). Each call's statements run inside a
/// savepoint of their own: one that fails is undone alone and answers its error, the others
/// commit. No call is answered before the commit that holds its writes; if the commit fails,
/// every call of the group answers the error. A call alone is sent as one `BEGIN IMMEDIATE;
/// …; COMMIT`, one hand-off to the connection's thread. PostgreSQL needs none of this: its
/// backends flush the WAL of concurrent commits together.
///
/// The group runs on a task of its own: a request dropped half-way (its client went away)
/// must not cancel it between its `BEGIN` and its `COMMIT` or `ROLLBACK`, leaving a pooled
/// connection inside a transaction holding SQLite's write lock. Whatever fails, the
/// connection is rolled back or closed, never returned to the pool inside a transaction.
pub(crate) async fn sqlite_atomic(
    store: &Store,
    statements: Vec<sea_orm::Statement>,
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    sqlite_atomic_as(store, statements, Commit::Durable).await
}

/// How a write is committed on SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// On disk before the call returns (`synchronous=FULL`: the WAL is synced at commit).
    /// Tokens, codes, grants, sessions, and everything else by default.
    Durable,
    /// Visible to every connection and instance before the call returns, and kept across a
    /// crash of this process, but synced to disk only with the next durable commit or
    /// checkpoint (`synchronous=NORMAL` in WAL mode): an OS crash or power cut may forget the
    /// last such writes. Only for a sign-in attempt's claim on its lockout counters, which
    /// must be seen by parallel guesses at once but need not outlive a power cut (forgetting
    /// a few counted attempts then costs nothing worth an `fsync` per sign-in).
    Visible,
}

/// `sqlite_atomic`, committed as `commit` says. A group holding any `Durable` write is
/// committed durably; only a group of `Visible` writes alone is not.
pub(crate) async fn sqlite_atomic_as(
    store: &Store,
    statements: Vec<sea_orm::Statement>,
    commit: Commit,
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    let mut sql = String::new();
    let mut values = Vec::new();
    for st in statements {
        check_atomic_statement(&st.sql)?;
        sql.push_str(&st.sql);
        sql.push_str(";\n");
        if let Some(v) = st.values {
            values.extend(v.0);
        }
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let taken = std::sync::Arc::new(tokio::sync::Notify::new());
    store.atomic_queue.push(AtomicJob {
        sql,
        values,
        commit,
        reply,
        taken: taken.clone(),
    });
    let pool = store.db.shared.get_sqlite_connection_pool().clone();
    let turns = store.writes.clone();
    let queue = store.atomic_queue.clone();
    tokio::spawn(async move {
        // Wait for the write turn, unless another call's task takes this call's job into its
        // group first: then this task leaves the line at once (a line of tasks each taking
        // the turn only to find their jobs gone would grow faster than it moves).
        let _turn = match turns {
            Some(m) => tokio::select! {
                biased;
                _ = taken.notified() => return,
                turn = m.lock_owned() => Some(turn),
            },
            None => None,
        };
        // Groups are of one kind of commit (`AtomicQueue::take`): the oldest waiting job's
        // group may leave this call's job for the next, which this task then runs too.
        loop {
            let jobs = queue.take(MAX_GROUP);
            if jobs.is_empty() {
                break;
            }
            let mine = jobs
                .iter()
                .any(|j| std::sync::Arc::ptr_eq(&j.taken, &taken));
            run_group(&pool, &queue, jobs).await;
            if mine {
                break;
            }
        }
    });
    answer
        .await
        .map_err(|_| DbErr::Custom("SQLite write task ended without an answer".into()))?
}

/// At most this many atomic writes share one commit (the write turn is held while they run).
const MAX_GROUP: usize = 64;

/// One `sqlite_atomic` call waiting for its group.
struct AtomicJob {
    /// The statements, each followed by `;\n`.
    sql: String,
    values: Vec<sea_orm::Value>,
    commit: Commit,
    reply: tokio::sync::oneshot::Sender<Result<Vec<sea_orm::QueryResult>, DbErr>>,
    /// Told when a group takes this job (its own task then stops waiting for the turn).
    taken: std::sync::Arc<tokio::sync::Notify>,
}

/// The `sqlite_atomic` calls waiting for the write turn, and how they were committed.
#[derive(Clone, Default)]
pub(crate) struct AtomicQueue(std::sync::Arc<AtomicQueueInner>);

#[derive(Default)]
struct AtomicQueueInner {
    jobs: std::sync::Mutex<Vec<AtomicJob>>,
    /// The connection the last group ran on, kept for the next (only the holder of the write
    /// turn runs a group): a connection taken from sqlx's pool and given back for each group
    /// cost two more hand-offs to its thread, sqlx's pings at acquire and at release.
    writer: std::sync::Mutex<Option<SqliteConn>>,
    /// Groups run (one commit each) and the atomic writes they held.
    groups: std::sync::atomic::AtomicU64,
    grouped: std::sync::atomic::AtomicU64,
}

impl Drop for AtomicQueueInner {
    /// A pooled connection, dropped, goes back to its pool on a task spawned on the current
    /// runtime, and sqlx panics where there is none: the last `Store` may be dropped after
    /// the runtime ended (at the end of `main`). The kept writer is then let go without going
    /// back (its thread ends with the process).
    fn drop(&mut self) {
        let kept = self
            .writer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(conn) = kept
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(conn);
        }
    }
}

impl AtomicQueue {
    fn push(&self, job: AtomicJob) {
        self.0
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
    }

    /// The next group: the oldest waiting job and, in the order they came, the others of its
    /// kind of commit (`Commit`), at most `max`. A group of one kind lets a group of claims
    /// commit without an `fsync` while durable writes wait beside it; the calls waiting
    /// together are concurrent (none has been answered), so any order between them is one
    /// they could have run in.
    fn take(&self, max: usize) -> Vec<AtomicJob> {
        use std::sync::atomic::Ordering::Relaxed;
        let jobs: Vec<AtomicJob> = {
            let mut q = self.0.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match q.first().map(|j| j.commit) {
                Some(kind) => q.extract_if(.., |j| j.commit == kind).take(max).collect(),
                None => Vec::new(),
            }
        };
        for j in &jobs {
            j.taken.notify_one();
        }
        if !jobs.is_empty() {
            self.0.groups.fetch_add(1, Relaxed);
            self.0.grouped.fetch_add(jobs.len() as u64, Relaxed);
            metrics::counter!("ma_idp_sqlite_group_commits_total").increment(1);
            metrics::counter!("ma_idp_sqlite_grouped_writes_total").increment(jobs.len() as u64);
        }
        jobs
    }

    /// The kept connection, if any (see `AtomicQueueInner::writer`).
    fn take_writer(&self) -> Option<SqliteConn> {
        self.0
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn keep_writer(&self, conn: SqliteConn) {
        *self.0.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
    }
}

type SqlxErr = std::sync::Arc<sea_orm::sqlx::Error>;
type SqliteConn = sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Sqlite>;

fn sqlx_err(e: &SqlxErr) -> DbErr {
    DbErr::Query(sea_orm::RuntimeErr::SqlxError(e.clone()))
}

/// `sql` (one or more statements) with `values` on `conn`: the rows they answered.
async fn fetch(
    conn: &mut SqliteConn,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<Vec<sea_orm::QueryResult>, SqlxErr> {
    use sea_orm::sqlx;
    sqlx::query_with(
        sqlx::AssertSqlSafe(sql),
        sea_query_sqlx::SqlxValues(sea_orm::sea_query::Values(values)),
    )
    .fetch_all(&mut **conn)
    .await
    .map(|rows| rows.into_iter().map(sea_orm::QueryResult::from).collect())
    .map_err(std::sync::Arc::new)
}

/// After a failure inside `BEGIN`: roll back; if even that fails (other than because SQLite
/// already did), the connection is closed instead of going back to the pool.
async fn roll_back(conn: &mut SqliteConn) {
    if let Err(r) = fetch(conn, "ROLLBACK", Vec::new()).await
        && !r.to_string().contains("no transaction is active")
    {
        tracing::error!(error = %r, "rollback failed; closing the connection");
        conn.close_on_drop();
    }
}

/// Run `jobs` (see `sqlite_atomic`) and answer each, on the connection the group before ran
/// on (or one from the pool). The connection is kept for the next group while every statement
/// succeeds; after an error it goes back to the pool (where sqlx's ping at release closes a
/// broken one), or is closed if even its rollback failed.
async fn run_group(pool: &sea_orm::sqlx::SqlitePool, queue: &AtomicQueue, jobs: Vec<AtomicJob>) {
    let mut conn = match queue.take_writer() {
        Some(c) => c,
        None => match pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                let e = std::sync::Arc::new(e);
                for j in jobs {
                    let _ = j.reply.send(Err(sqlx_err(&e)));
                }
                return;
            }
        },
    };
    // A pool of one keeps nothing: its only connection is every other query's too.
    if run_jobs(&mut conn, jobs).await && pool.options().get_max_connections() > 1 {
        queue.keep_writer(conn);
    }
}

/// After a failure in a group committed at `synchronous=NORMAL`: set the connection back to
/// FULL, or close it. A connection left at NORMAL must never run another write: the kept
/// writer runs every group, and one back in the pool runs any statement.
async fn restore_full(conn: &mut SqliteConn) {
    if let Err(e) = fetch(conn, "PRAGMA synchronous = FULL", Vec::new()).await {
        tracing::error!(error = %e, "setting synchronous back to FULL failed; closing the connection");
        conn.close_on_drop();
    }
}

/// After a failure inside a group: roll back, and set a `Visible` group's connection back to
/// FULL.
async fn undo(conn: &mut SqliteConn, visible: bool) {
    roll_back(conn).await;
    if visible {
        restore_full(conn).await;
    }
}

/// `run_group` on `conn`: whether every statement succeeded (the connection may be kept).
///
/// A group of `Commit::Visible` writes alone sets `synchronous=NORMAL` just before its
/// `BEGIN` (SQLite refuses to change it inside a transaction) and FULL again right after its
/// `COMMIT`, in the same calls; after any failure it is set back on its own (`restore_full`).
/// Should the `COMMIT` succeed and setting FULL after it fail, the group answers an error for
/// writes that stand: for a sign-in attempt's claim, an attempt counted without an answer.
async fn run_jobs(conn: &mut SqliteConn, mut jobs: Vec<AtomicJob>) -> bool {
    type Reply = tokio::sync::oneshot::Sender<Result<Vec<sea_orm::QueryResult>, DbErr>>;
    fn fail_all(replies: impl IntoIterator<Item = Reply>, e: &SqlxErr) {
        for r in replies {
            let _ = r.send(Err(sqlx_err(e)));
        }
    }
    let conn = &mut *conn;
    let visible = jobs.iter().all(|j| j.commit == Commit::Visible);
    let (begin, commit) = if visible {
        (
            "PRAGMA synchronous = NORMAL;\nBEGIN IMMEDIATE",
            "COMMIT;\nPRAGMA synchronous = FULL",
        )
    } else {
        ("BEGIN IMMEDIATE", "COMMIT")
    };
    if jobs.len() == 1
        && let Some(job) = jobs.pop()
    {
        let sql = format!("{begin};\n{}{commit}", job.sql);
        let answer = fetch(conn, &sql, job.values).await;
        let ok = answer.is_ok();
        if !ok {
            undo(conn, visible).await;
        }
        let _ = job.reply.send(answer.map_err(|e| sqlx_err(&e)));
        return ok;
    }
    if let Err(e) = fetch(conn, begin, Vec::new()).await {
        undo(conn, visible).await;
        fail_all(jobs.into_iter().map(|j| j.reply), &e);
        return false;
    }
    let mut clean = true;
    let mut done: Vec<(Reply, Result<Vec<sea_orm::QueryResult>, DbErr>)> =
        Vec::with_capacity(jobs.len());
    for job in jobs {
        let sql = format!("SAVEPOINT atomic;\n{}RELEASE atomic", job.sql);
        match fetch(conn, &sql, job.values).await {
            Ok(rows) => done.push((job.reply, Ok(rows))),
            Err(e) => {
                // Undo this call's statements only. If SQLite has rolled back the whole
                // transaction itself (an I/O error, a full disk), the savepoint is gone and
                // nothing of the group stands.
                if let Err(u) = fetch(conn, "ROLLBACK TO atomic; RELEASE atomic", Vec::new()).await
                {
                    tracing::warn!(error = %u, "undoing one write of a group failed; rolling the group back");
                    undo(conn, visible).await;
                    let replies = done.into_iter().map(|(r, _)| r);
                    fail_all(replies.chain([job.reply]), &e);
                    return false;
                }
                clean = false;
                done.push((job.reply, Err(sqlx_err(&e))));
            }
        }
    }
    match fetch(conn, commit, Vec::new()).await {
        Ok(_) => {
            for (reply, answer) in done {
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            undo(conn, visible).await;
            fail_all(done.into_iter().map(|(r, _)| r), &e);
            clean = false;
        }
    }
    clean
}

/// See `Store::pool_stats`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub pools: usize,
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

/// The pool for one write statement outside a transaction: on SQLite each statement waits
/// for this process's write turn (see `Store::writes`).
pub(crate) struct Writes<'a>(&'a Store);

impl Writes<'_> {
    async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.0.writes {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        }
    }
}

connection_via!(Writes<'_>, self => self.turn().await, self.0.db);

fn write_turns(db: &DatabaseConnection) -> Option<std::sync::Arc<tokio::sync::Mutex<()>>> {
    (db.get_database_backend() == DbBackend::Sqlite).then(Default::default)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.db.shared.get_database_backend())
    }
}

impl Store {
    /// Connect to SQLite (WAL, `synchronous=FULL`: a token is on disk before it is returned)
    /// or PostgreSQL.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        cache_ttl: Duration,
    ) -> Result<Self, DbErr> {
        let mut opts = ConnectOptions::new(loopback_without_tls(url));
        opts.sqlx_logging(false)
            .max_connections(max_connections.max(1))
            .min_connections(1)
            // Alexa gives a token request about 4.5 s: during a database outage a request
            // must get its 503 well before that, not wait out a long pool timeout.
            .connect_timeout(Duration::from_secs(2))
            .acquire_timeout(Duration::from_secs(2))
            // sqlx pings a pooled connection on every acquire by default (and on every
            // release, always): a round trip per query to SQLite's connection thread or to the
            // PostgreSQL backend. The release's ping already keeps a broken connection out of
            // the pool; a connection that broke while idle (a restarted server, a dropped
            // socket) is caught by a ping at acquire once it has been idle a second.
            .test_before_acquire_if_idle_for(Duration::from_secs(1))
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    // Each connection's page cache: 512 KiB (SQLite's default is 2 MB, up to
                    // 32 MB over a full pool, growing with the database). In WAL mode a
                    // connection drops its cache whenever another one has committed, so under
                    // writes a large cache holds memory more than it saves reads; the OS page
                    // cache serves the rest.
                    .pragma("cache_size", "-512")
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        let db = Database::connect(opts.clone()).await?;
        let workers = (db.get_database_backend() == DbBackend::Postgres).then(|| {
            static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            opts.connect_lazy(true);
            std::sync::Arc::new(WorkerPools {
                id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                opts,
                opened: Default::default(),
            })
        });
        Ok(Self {
            writes: write_turns(&db),
            atomic_queue: AtomicQueue::default(),
            db: Db::new(db, workers),
            cache: std::sync::Arc::new(cache::Caches::new(cache_ttl)),
            live: Default::default(),
        })
    }

    /// PostgreSQL: give the calling thread, an HTTP worker (a single-threaded runtime), a pool
    /// of its own, sized `max_connections / workers` (at least 2) and opened lazily on this
    /// thread's runtime; its queries use it from then on, every other thread the shared pool.
    ///
    /// A connection is a socket registered with the runtime that opened it. Shared between
    /// workers, a connection opened on the main thread or on another worker had each of its
    /// answers wake that thread first, which then woke the worker waiting for it: on a
    /// PostgreSQL sign-in storm about 2 of every 5 answers took that extra hop (measured with
    /// the scheduler's trace, BENCHMARKS.md). No-op on SQLite, or off a runtime.
    pub fn pin_to_thread(&self, workers: usize) {
        use futures_util::FutureExt;
        let Some(w) = &self.db.workers else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        THREAD_DB.with(|t| {
            let mut t = t.borrow_mut();
            if t.as_ref().is_some_and(|(id, ..)| *id == w.id) {
                return;
            }
            let share = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
            let total = w.opts.get_max_connections().unwrap_or(1);
            let size = total.div_ceil(share).max(2);
            let mut opts = w.opts.clone();
            opts.max_connections(size).min_connections(1);
            // Lazy: nothing to wait for, the pool is made at once and connects on first use.
            match Database::connect(opts).now_or_never() {
                Some(Ok(db)) => {
                    let kept = kept::KeptPool::of(&db);
                    w.opened
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((db.clone(), kept.clone()));
                    *t = Some((w.id, db, kept));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "worker's own database pool: using the shared one")
                }
                None => tracing::warn!("worker's own database pool: using the shared one"),
            }
        });
    }

    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self {
            writes: write_turns(&db),
            atomic_queue: AtomicQueue::default(),
            db: Db::new(db, None),
            cache: std::sync::Arc::new(cache::Caches::new(Duration::ZERO)),
            live: Default::default(),
        }
    }

    pub fn backend(&self) -> DbBackend {
        self.db.shared.get_database_backend()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db.shared
    }

    /// A transaction that writes. On SQLite it starts `IMMEDIATE`: it takes the write lock at
    /// once (waiting up to `busy_timeout`) instead of failing with "database is locked" when a
    /// read is later upgraded to a write under contention.
    ///
    /// On SQLite it first waits for this process's write turn (`Store::writes`) and holds it
    /// until the transaction ends.
    pub(crate) async fn write_txn(&self) -> Result<WriteTxn, DbErr> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        let opts = match self.backend() {
            DbBackend::Sqlite => TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            },
            _ => TransactionOptions::default(),
        };
        let turn = Writes(self).turn().await;
        Ok(WriteTxn {
            txn: self.db.current().begin_with_options(opts).await?,
            _turn: turn,
        })
    }

    /// SQLite: how many commits the atomic writes (`sqlite_atomic`: refresh grants and code
    /// exchanges) took so far, and how many writes they held: `(commits, writes)`, equal
    /// when no two writes shared a commit. Zero on PostgreSQL.
    pub fn group_commit_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let q = &self.atomic_queue.0;
        (q.groups.load(Relaxed), q.grouped.load(Relaxed))
    }

    /// Where a write statement outside a transaction goes (see `Writes`).
    pub(crate) fn w(&self) -> Writes<'_> {
        Writes(self)
    }

    /// PostgreSQL with autovacuum off: tables bloat and cached query plans go stale as they
    /// grow (a refresh grant's join turns into sequential scans). False on SQLite or when the
    /// setting cannot be read.
    pub async fn autovacuum_off(&self) -> bool {
        use sea_orm::ConnectionTrait;
        if self.backend() != DbBackend::Postgres {
            return false;
        }
        let q = sea_orm::Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('autovacuum') AS v",
        );
        match self.db.query_one_raw(q).await {
            Ok(Some(row)) => row.try_get::<String>("", "v").is_ok_and(|v| v == "off"),
            _ => false,
        }
    }

    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db.shared, None).await
    }

    /// Database reachable and every migration applied, through the pool this thread's queries
    /// use (an HTTP worker's own on PostgreSQL).
    pub async fn ready(&self) -> Result<bool, DbErr> {
        let db = self.db.current();
        db.ping().await?;
        Ok(Migrator::get_pending_migrations(&db).await?.is_empty())
    }

    /// The connection pools (the shared one, and on PostgreSQL each HTTP worker's own): how
    /// many, connections open, of which idle, and the most they may open.
    pub fn pool_stats(&self) -> PoolStats {
        fn stats<DB: sea_orm::sqlx::Database>(pools: &[&sea_orm::sqlx::Pool<DB>]) -> PoolStats {
            PoolStats {
                pools: pools.len(),
                size: pools.iter().map(|p| p.size()).sum(),
                idle: pools.iter().map(|p| p.num_idle()).sum(),
                max: pools
                    .iter()
                    .map(|p| p.options().get_max_connections())
                    .sum(),
            }
        }
        // Kept connections (`kept.rs`) wait for a statement as idle ones do.
        let kept = |k: &Option<kept::KeptPool>| k.as_ref().map_or(0, kept::KeptPool::len);
        let mut s = if self.backend() != DbBackend::Postgres {
            stats(&[self.db.shared.get_sqlite_connection_pool()])
        } else {
            let opened = self.db.workers.as_ref().map(|w| {
                w.opened
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            });
            let pools: Vec<_> = std::iter::once(&self.db.shared)
                .chain(opened.iter().flat_map(|o| o.iter().map(|(d, _)| d)))
                .map(|d| d.get_postgres_connection_pool())
                .collect();
            let mut s = stats(&pools);
            s.idle += opened
                .iter()
                .flat_map(|o| o.iter())
                .map(|(_, k)| kept(k))
                .sum::<usize>();
            s
        };
        s.idle += kept(&self.db.kept);
        s
    }

    /// A consistent copy of a SQLite database, taken while it is in use (`VACUUM INTO`).
    pub async fn backup_sqlite(&self, out: &std::path::Path) -> Result<(), DbErr> {
        use sea_orm::ConnectionTrait;
        if self.backend() != DbBackend::Sqlite {
            return Err(DbErr::Custom(
                "backup is for SQLite; for PostgreSQL use pg_dump (see the README)".into(),
            ));
        }
        let path = out.to_string_lossy().replace('\'', "''");
        self.db
            .execute_unprepared(&format!("VACUUM INTO '{path}'"))
            .await?;
        Ok(())
    }

    pub async fn has_table(&self, name: &str) -> Result<bool, DbErr> {
        use sea_orm::ConnectionTrait;
        let sql = match self.backend() {
            DbBackend::Postgres => {
                format!("SELECT 1 FROM information_schema.tables WHERE table_name = '{name}'")
            }
            _ => format!("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{name}'"),
        };
        Ok(self
            .db
            .query_one_raw(sea_orm::Statement::from_string(self.backend(), sql))
            .await?
            .is_some())
    }

    pub async fn close(self) -> Result<(), DbErr> {
        // The pool's close waits for every connection to come back: the kept ones first.
        drop(self.atomic_queue.take_writer());
        self.db.release_kept();
        self.db.shared.close().await
    }
}

/// One new row as columns and values, so the same row can be inserted by value or, in a
/// one-call write, from a `SELECT` that yields it only if an earlier statement matched.
pub(crate) struct NewRow {
    table: sea_orm::sea_query::DynIden,
    columns: Vec<sea_orm::sea_query::DynIden>,
    values: Vec<sea_orm::sea_query::Expr>,
}

impl NewRow {
    pub(crate) fn new(table: impl sea_orm::sea_query::IntoIden) -> Self {
        Self {
            table: table.into_iden(),
            columns: Vec::new(),
            values: Vec::new(),
        }
    }

    pub(crate) fn set(
        mut self,
        column: impl sea_orm::sea_query::IntoIden,
        value: impl Into<sea_orm::Value>,
    ) -> Self {
        self.columns.push(column.into_iden());
        self.values.push(sea_orm::sea_query::Expr::val(value));
        self
    }

    /// `INSERT … VALUES (…)`.
    pub(crate) fn insert(self) -> Result<sea_orm::sea_query::InsertStatement, DbErr> {
        sea_orm::sea_query::Query::insert()
            .into_table(self.table)
            .columns(self.columns)
            .values(self.values)
            .map(|q| q.to_owned())
            .map_err(|e| DbErr::Custom(e.to_string()))
    }

    /// `INSERT … SELECT <values> …`, the `SELECT` made by `gate` from the row's values (it
    /// adds the `FROM`/`WHERE` that decides whether the row is inserted).
    pub(crate) fn insert_from(
        self,
        gate: impl FnOnce(Vec<sea_orm::sea_query::Expr>) -> sea_orm::sea_query::SelectStatement,
    ) -> Result<sea_orm::sea_query::InsertStatement, DbErr> {
        sea_orm::sea_query::Query::insert()
            .into_table(self.table)
            .columns(self.columns)
            .select_from(gate(self.values))
            .map(|q| q.to_owned())
            .map_err(|e| DbErr::Custom(e.to_string()))
    }
}

pub fn new_id_pub() -> String {
    new_id()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An insert refused by a unique index (a concurrent writer committed the same key first).
pub(crate) fn unique_violation(e: &DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::loopback_without_tls as f;

    #[test]
    fn atomic_statements_are_single_data_statements() {
        use super::check_atomic_statement as check;
        for ok in [
            "UPDATE \"login_throttle\" SET \"attempts\" = ? WHERE \"key\" = ?",
            "INSERT INTO \"audit_log\" (\"id\") VALUES (?)",
            "  select 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "COMMIT",
            "commit transaction",
            "ROLLBACK TO atomic",
            "release atomic",
            "SAVEPOINT s",
            "BEGIN IMMEDIATE",
            "END",
            "UPDATE t SET a = 1; COMMIT",
            "",
            "   ",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }

    /// `synchronous` as the statement runs (1 NORMAL, 2 FULL).
    fn level() -> sea_orm::Statement {
        sea_orm::Statement::from_string(
            super::DbBackend::Sqlite,
            "SELECT synchronous AS level FROM pragma_synchronous",
        )
    }

    async fn level_in(store: &super::Store, commit: super::Commit) -> i64 {
        let rows = super::sqlite_atomic_as(store, vec![level()], commit)
            .await
            .unwrap();
        rows[0].try_get("", "level").unwrap()
    }

    /// The level of every connection of `store`'s pool outside a group (all of them held at
    /// once, so none is missed).
    async fn pool_levels(store: &super::Store) -> Vec<i64> {
        use sea_orm::sqlx::Row;
        let pool = store.connection().get_sqlite_connection_pool().clone();
        // A connection comes back to the pool on a task of its own after its group answered:
        // wait until every one is back but the kept writer.
        let kept = usize::from(store.atomic_queue.0.writer.lock().unwrap().is_some());
        for _ in 0..5_000 {
            if pool.num_idle() + kept >= pool.size() as usize {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let mut held = Vec::new();
        while let Some(c) = pool.try_acquire() {
            held.push(c);
        }
        let mut levels = Vec::new();
        for c in &mut held {
            let row = sea_orm::sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            levels.push(row.get::<i64, _>(0));
        }
        assert!(!levels.is_empty(), "no connection came back to the pool");
        levels
    }

    /// A claim's group commits at NORMAL; every other group, a group mixing both kinds, and
    /// every connection afterwards (kept writer or back in the pool, after success or
    /// failure) are at FULL.
    #[tokio::test]
    async fn visible_groups_alone_commit_at_normal_and_leave_full_behind() {
        use super::Commit::{Durable, Visible};
        use sea_orm::ConnectionTrait;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("ma-idp-commit-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A pool of one keeps no writer (the group's connection is everyone's); a pool of four
        // keeps it for the next group.
        for (name, size) in [("one.db", 1), ("four.db", 4)] {
            let url = format!("sqlite://{}?mode=rwc", dir.join(name).display());
            let store = super::Store::connect(&url, size, std::time::Duration::ZERO)
                .await
                .unwrap();
            store
                .connection()
                .execute_unprepared("CREATE TABLE t (x INTEGER NOT NULL)")
                .await
                .unwrap();
            assert_eq!(level_in(&store, Visible).await, 1, "{name}");
            assert!(pool_levels(&store).await.iter().all(|l| *l == 2), "{name}");
            assert_eq!(level_in(&store, Durable).await, 2, "{name}");
            assert_eq!(level_in(&store, Visible).await, 1, "{name}");
            assert_eq!(level_in(&store, Durable).await, 2, "{name}");

            // A claim group that fails after its BEGIN (a constraint, at run time).
            let bad = sea_orm::Statement::from_string(
                super::DbBackend::Sqlite,
                "INSERT INTO t (x) VALUES (NULL)",
            );
            let failed = super::sqlite_atomic_as(&store, vec![level(), bad], Visible).await;
            assert!(failed.is_err(), "{name}");
            let levels = pool_levels(&store).await;
            assert!(levels.iter().all(|l| *l == 2), "{name}: {levels:?}");
            assert_eq!(level_in(&store, Durable).await, 2, "{name}");

            // Groups: hold the write turn while two calls queue, then let them run together.
            // Groups are of one kind: claims together at NORMAL, the durable write alone
            // (the task of the first claim runs both groups).
            for (kinds, want, groups_run) in [
                (vec![Visible, Durable, Visible], vec![1, 2, 1], 2),
                (vec![Durable, Visible, Durable], vec![2, 1, 2], 2),
                (vec![Visible, Visible], vec![1, 1], 1),
            ] {
                let turn = store.writes.clone().unwrap().lock_owned().await;
                let groups = store
                    .atomic_queue
                    .0
                    .groups
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut calls = Vec::new();
                for (i, &k) in kinds.iter().enumerate() {
                    let s = store.clone();
                    calls.push(tokio::spawn(async move { level_in(&s, k).await }));
                    // Queued in this order.
                    while store.atomic_queue.0.jobs.lock().unwrap().len() <= i {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                drop(turn);
                let mut got = Vec::new();
                for c in calls {
                    got.push(c.await.unwrap());
                }
                assert_eq!(got, want, "{name}: {kinds:?}");
                let after = store
                    .atomic_queue
                    .0
                    .groups
                    .load(std::sync::atomic::Ordering::Relaxed);
                assert_eq!(after, groups + groups_run, "{name}: {kinds:?}");
                assert!(pool_levels(&store).await.iter().all(|l| *l == 2), "{name}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn loopback_postgres_goes_without_tls_unless_asked() {
        assert_eq!(
            f("postgres://u:p%40ss@127.0.0.1:5432/db"),
            "postgres://u:p%40ss@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            f("postgresql://localhost/db?application_name=x"),
            "postgresql://localhost/db?application_name=x&sslmode=disable"
        );
        assert_eq!(
            f("postgres://[::1]:5432/db"),
            "postgres://[::1]:5432/db?sslmode=disable"
        );
        for kept in [
            "postgres://u@127.0.0.1/db?sslmode=require",
            "postgres://u@localhost/db?sslmode=verify-full",
            "postgres://u@db.example.org/db",
            "postgres://u@10.0.0.5:5432/db",
            "postgres://u@postgres:5432/db",
            "sqlite:///var/lib/ma-idp/ma-idp.db?mode=rwc",
            "not a url",
        ] {
            assert_eq!(f(kept), kept);
        }
    }
}
