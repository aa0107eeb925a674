//! Floors measured in the same run: what the database, the signature and the password hash
//! alone can do on this machine, to judge how close ma-idp gets to them.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use hdrhistogram::Histogram;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};

use crate::server::PgAdmin;

/// ES256 signatures per second on one thread.
pub fn es256_per_core(duration: Duration) -> Result<f64> {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    // About the size of a JWT signing input (header.claims, base64url).
    let mut msg = [0u8; 300];
    rng.fill(&mut msg)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let t0 = Instant::now();
    let mut n: u64 = 0;
    while t0.elapsed() < duration {
        for _ in 0..64 {
            let sig = key
                .sign(&rng, &msg)
                .map_err(|_| anyhow::anyhow!("signing failed"))?;
            std::hint::black_box(sig);
            n += 1;
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// One argon2id hasher as ma-idp's hash threads run it: the memory is allocated once and
/// reused from hash to hash (`hash_password_into_with_memory`), so a hash pays no allocation,
/// page faults or zeroing. Measuring the crate's allocating `hash_password` instead would
/// make each hash ~1 ms slower alone and much slower with several threads (concurrent page
/// faults), a lower ceiling than the server's own hashing has to meet.
struct Hasher {
    argon2: argon2::Argon2<'static>,
    memory: Vec<argon2::Block>,
    out: [u8; 32],
}

impl Hasher {
    fn new(m_kib: u32, t: u32, p: u32) -> Result<Hasher> {
        use argon2::{Algorithm, Argon2, Block, Params, Version};
        let params = Params::new(m_kib, t, p, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let blocks = params.block_count();
        let mut h = Hasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            memory: vec![Block::default(); blocks],
            out: [0; 32],
        };
        // The first hash touches the memory; ma-idp's threads keep theirs during a storm.
        h.hash(0)?;
        Ok(h)
    }

    fn hash(&mut self, i: usize) -> Result<()> {
        let salt = [i as u8; 16];
        self.argon2
            .hash_password_into_with_memory(
                b"correct horse battery staple",
                &salt,
                &mut self.out,
                &mut self.memory,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(&self.out);
        Ok(())
    }
}

/// Seconds per argon2id hash at ma-idp's configured cost, one thread alone, memory reused as
/// ma-idp's hash threads reuse it (median of `runs`).
pub fn argon2_hash_secs(m_kib: u32, t: u32, p: u32, runs: usize) -> Result<f64> {
    let mut h = Hasher::new(m_kib, t, p)?;
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs.max(1) {
        let t0 = Instant::now();
        h.hash(i)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// argon2id hashes per second with `threads` threads hashing at once for `secs` seconds,
/// each reusing its memory: what the machine can do when every core hashes (memory
/// bandwidth and shared caches can make parallel hashes slower than one alone).
pub fn argon2_parallel_rate(m_kib: u32, t: u32, p: u32, threads: usize, secs: f64) -> Result<f64> {
    let mut hashers = (0..threads.max(1))
        .map(|_| Hasher::new(m_kib, t, p))
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = hashers
            .iter_mut()
            .map(|h| {
                s.spawn(move || {
                    let mut n = 0usize;
                    while t0.elapsed().as_secs_f64() < secs {
                        if h.hash(n).is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    Ok(counts.iter().sum::<usize>() as f64 / t0.elapsed().as_secs_f64())
}

/// `threads` argon2id hashers at the lowest priority (`SCHED_IDLE`, as ma-idp's hash threads
/// run), hashing until stopped: the CPU and cache pressure of a password sign-in storm
/// without any of its requests. What the JWKS probe shows beside them is the part of the
/// storm's latency that the hashing itself sets, which no request handling can remove.
pub struct IdleHashers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<(usize, bool)>>>,
    started: Instant,
}

/// Put the calling thread under `SCHED_IDLE`. False where that is refused.
fn make_idle() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's policy; `param` is a valid sched_param.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

impl IdleHashers {
    /// Start the threads. Each takes `SCHED_IDLE` before it allocates its memory and hashes
    /// its first hash, so nothing of theirs runs at normal priority (nor on the caller's
    /// thread, which may be an async runtime's).
    pub fn start(m_kib: u32, t: u32, p: u32, threads: usize) -> Result<IdleHashers> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let flag = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("idle-argon2-{i}"))
                .spawn(move || {
                    let idle = make_idle();
                    let mut h = Hasher::new(m_kib, t, p)?;
                    let mut n = 0usize;
                    while !flag.load(Ordering::Relaxed) {
                        h.hash(n)?;
                        n += 1;
                    }
                    Ok((n, idle))
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // Stop the ones already running before giving up.
                    stop.store(true, Ordering::Relaxed);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e).context("starting an idle-priority hash thread");
                }
            }
        }
        Ok(IdleHashers {
            stop,
            threads: handles,
            started: Instant::now(),
        })
    }

    /// Stop the hashers: (hashes per second, whether every thread ran under `SCHED_IDLE`).
    pub fn stop(self) -> Result<(f64, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let mut total = 0;
        let mut all_idle = true;
        let mut failed = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok((n, idle))) => {
                    total += n;
                    all_idle &= idle;
                }
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(anyhow::anyhow!("an idle-priority hash thread panicked")),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((total as f64 / secs, all_idle)),
        }
    }
}

/// Throughput and latency of one durable transaction, at some concurrency.
pub struct TxnFloor {
    pub how: String,
    pub tps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
    pub error_sample: Option<String>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn random_hex(rng: &SystemRandom) -> String {
    let mut b = [0u8; 32];
    let _ = rng.fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `BEGIN; UPDATE one row; INSERT one row; COMMIT` at `concurrency`, through sea-orm/sqlx
/// configured like ma-idp's store (SQLite: WAL, synchronous=FULL, busy timeout 10 s).
pub async fn txn_floor_seaorm(
    url: &str,
    backend: DbBackend,
    concurrency: usize,
    pool: u32,
    duration: Duration,
) -> Result<TxnFloor> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.sqlx_logging(false)
        .max_connections(pool)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(30))
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    let db = Arc::new(Database::connect(opts).await?);
    db.execute_unprepared(
        "CREATE TABLE floor_row (id INTEGER PRIMARY KEY, n BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    )
    .await?;
    db.execute_unprepared(
        "CREATE TABLE floor_log (id VARCHAR(64) PRIMARY KEY, k INTEGER NOT NULL, \
         created_at BIGINT NOT NULL, token_hash VARCHAR(64) NOT NULL UNIQUE)",
    )
    .await?;
    for i in 0..concurrency {
        db.execute_unprepared(&format!(
            "INSERT INTO floor_row (id, n, updated_at) VALUES ({i}, 0, 0)"
        ))
        .await?;
    }
    let (upd, ins) = match backend {
        DbBackend::Postgres => (
            "UPDATE floor_row SET n = n + 1, updated_at = $1 WHERE id = $2",
            "INSERT INTO floor_log (id, k, created_at, token_hash) VALUES ($1, $2, $3, $4)",
        ),
        _ => (
            "UPDATE floor_row SET n = n + 1, updated_at = ? WHERE id = ?",
            "INSERT INTO floor_log (id, k, created_at, token_hash) VALUES (?, ?, ?, ?)",
        ),
    };
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let rng = SystemRandom::new();
            let mut h = hist();
            let mut n: u64 = 0;
            let mut errors: u64 = 0;
            let mut sample: Option<String> = None;
            loop {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let r: Result<(), sea_orm::DbErr> = async {
                    let txn = db.begin().await?;
                    txn.execute_raw(Statement::from_sql_and_values(
                        backend,
                        upd,
                        [now.into(), (i as i32).into()],
                    ))
                    .await?;
                    txn.execute_raw(Statement::from_sql_and_values(
                        backend,
                        ins,
                        [
                            format!("{i}-{n}").into(),
                            (i as i32).into(),
                            now.into(),
                            random_hex(&rng).into(),
                        ],
                    ))
                    .await?;
                    txn.commit().await
                }
                .await;
                let done = Instant::now();
                if done > deadline {
                    break;
                }
                match r {
                    Ok(()) => {
                        n += 1;
                        let _ = h.record((done.duration_since(t).as_micros() as u64).max(1));
                    }
                    Err(e) => {
                        errors += 1;
                        n += 1;
                        sample.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (h, errors, sample)
        }));
    }
    let mut all = hist();
    let mut errors = 0;
    let mut error_sample = None;
    for t in tasks {
        let (h, e, s) = t.await?;
        let _ = all.add(&h);
        errors += e;
        if error_sample.is_none() {
            error_sample = s;
        }
    }
    let secs = duration.as_secs_f64();
    let q = |x: f64| (!all.is_empty()).then(|| all.value_at_quantile(x) as f64 / 1000.0);
    if let Ok(db) = Arc::try_unwrap(db) {
        let _ = db.close().await;
    }
    Ok(TxnFloor {
        how: match backend {
            DbBackend::Postgres => format!("sea-orm/sqlx, {concurrency} tasks, pool {pool}"),
            _ => format!(
                "sea-orm/sqlx, WAL, synchronous=FULL, {concurrency} tasks, pool {pool}, same file system as ma-idp's database"
            ),
        },
        tps: all.len() as f64 / secs,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        errors,
        error_sample,
    })
}

/// The same transaction with `pgbench` (`-c concurrency -j 2 -T duration -n -f script`),
/// latencies from its per-transaction log.
pub fn txn_floor_pgbench(
    admin: &PgAdmin,
    db: &str,
    dir: &Path,
    concurrency: usize,
    duration: Duration,
) -> Result<TxnFloor> {
    admin.psql(
        db,
        &format!(
            "CREATE TABLE pgb_row (id INTEGER PRIMARY KEY, n BIGINT NOT NULL, updated_at BIGINT NOT NULL); \
             INSERT INTO pgb_row SELECT g, 0, 0 FROM generate_series(0, {concurrency}) g; \
             CREATE TABLE pgb_log (id TEXT PRIMARY KEY, k INTEGER NOT NULL, created_at BIGINT NOT NULL, token_hash TEXT NOT NULL UNIQUE);"
        ),
    )?;
    let script = dir.join("floor.sql");
    std::fs::write(
        &script,
        "BEGIN;\n\
         UPDATE pgb_row SET n = n + 1, updated_at = extract(epoch from now())::bigint WHERE id = :client_id;\n\
         INSERT INTO pgb_log (id, k, created_at, token_hash) VALUES (gen_random_uuid()::text, :client_id, extract(epoch from now())::bigint, md5(random()::text) || md5(random()::text));\n\
         COMMIT;\n",
    )?;
    let logdir = dir.join("pgbench-log");
    std::fs::create_dir_all(&logdir)?;
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &duration.as_secs().max(1).to_string(),
            "-f",
        ])
        .arg(&script)
        .arg("-l")
        .arg(format!("--log-prefix={}", logdir.join("pgb").display()))
        .arg(admin.url_for(db))
        .output()
        .context("cannot run pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "pgbench failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .context("no tps in pgbench output")?;
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Log lines: client_id transaction_no time_us script_no epoch epoch_us
    let mut h = hist();
    for entry in std::fs::read_dir(&logdir)? {
        let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                let _ = h.record(us.max(1));
            }
        }
    }
    let q = |x: f64| (!h.is_empty()).then(|| h.value_at_quantile(x) as f64 / 1000.0);
    Ok(TxnFloor {
        how: format!(
            "pgbench -c {concurrency} -j 2 -T {} -n, custom script",
            duration.as_secs()
        ),
        tps,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        errors: failed,
        error_sample: None,
    })
}
