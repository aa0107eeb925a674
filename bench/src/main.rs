//! `ma-idp-bench`: builds the release `ma-idp`, runs it as a child process on SQLite and/or
//! PostgreSQL, loads it over loopback scenario by scenario, measures floors (a durable
//! transaction, an ES256 signature, an argon2id hash) in the same run, and writes a markdown
//! report.
//!
//! ```text
//! cargo run --release -p ma-idp-bench -- --backend both --duration 10 --concurrency 32 --out BENCHMARKS.md
//! ```
mod floors;
mod load;
mod raw;
mod report;
mod server;
mod sys;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, ValueEnum};
use sea_orm::{ConnectionTrait, Database, DbBackend};

use crate::floors::TxnFloor;
use crate::load::{Ctx, Kind, PhaseResult};
use crate::server::{Env, PgAdmin, PgDb, Server};

/// ma-idp's password hashing cost (server/src/config.rs defaults).
pub const ARGON2_M_KIB: u32 = 7168;
pub const ARGON2_T: u32 = 5;
pub const ARGON2_P: u32 = 1;
/// Hashes timed one after another for the single-hash floor (the median is reported).
pub const ARGON2_RUNS: usize = 15;

const TENANT: &str = "bench";
/// ma-idp's per-client-IP limits and its cap on sessions nobody signed in to
/// (server/src/config.rs `Limits`); 0 turns one off. The signed-out authorize page scenario
/// starts a session per request: tens of thousands per round.
pub const IP_LIMITS: [&str; 4] = [
    "MA_IDP_LIMITS__SIGN_INS_PER_IP_PER_MINUTE",
    "MA_IDP_LIMITS__TOKEN_PER_IP_PER_MINUTE",
    "MA_IDP_LIMITS__INTROSPECT_PER_IP_PER_MINUTE",
    "MA_IDP_LIMITS__ANONYMOUS_SESSIONS_MAX",
];
const VENDOR: &str = "MBENCH0000001";
const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "ma-idp-bench",
    about = "Load benchmark of the release ma-idp binary over loopback"
)]
struct Args {
    /// Which database(s) to run ma-idp on.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// Seconds per scenario (and per floor).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent clients (tokio tasks, each with its own keep-alive connection).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run every scenario this many times (round after round, on the same server); the
    /// report shows each scenario's median round and the spread of all rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// PostgreSQL admin URL; a scratch database is created there and dropped at the end.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Users to create (worker i signs in as user i mod N); default: one per worker, as in
    /// many households each linking their own account.
    #[arg(long)]
    users: Option<usize>,
    /// Only these scenarios (comma-separated): discovery, jwks, client-credentials,
    /// introspect, authorize-page, sign-in, refresh, authorize-redirect, code-exchange.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Record a `perf` profile of ma-idp during this scenario (timed part only), to
    /// perf-<backend>-<scenario>.data and a text summary beside it.
    #[arg(long)]
    perf: Option<String>,
    /// Benchmark this git commit instead of the working tree: it is exported with
    /// `git archive` to target/bench-src/<sha> and built there (target dir
    /// target/bench-build), so edits in progress elsewhere in the tree do not matter.
    #[arg(long, value_name = "REF")]
    git_ref: Option<String>,
    /// Do not run `cargo build --release -p ma-idp` first.
    #[arg(long)]
    no_build: bool,
    /// The ma-idp binary (default: target/release/ma-idp).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Keep ma-idp's per-client-IP rate limits on. By default the benchmark turns them off,
    /// since all of its load comes from one address (127.0.0.1) and would only measure 429s.
    #[arg(long)]
    keep_ip_limits: bool,
    /// Extra environment for ma-idp (repeat), e.g. MA_IDP_WORKERS=4 or MALLOC_ARENA_MAX=2.
    #[arg(long, value_name = "KEY=VALUE")]
    server_env: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = rt.block_on(async {
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Dropping the run's future above killed ma-idp and dropped the scratch database.
    rt.shutdown_timeout(Duration::from_secs(2));
    match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// target/release/ma-idp next to this binary's target directory.
fn default_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("release").join("ma-idp");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .map(|target| target.join("release").join("ma-idp"))
        .unwrap_or_else(|| workspace_root().join("target/release/ma-idp"))
}

/// Machine and run facts for the report header.
pub struct RunInfo {
    pub command: String,
    pub date: String,
    pub commit: String,
    pub cores: usize,
    pub cpu: String,
    pub ram_gib: Option<f64>,
    pub kernel: String,
    /// The kernel's autogroup setting (`kernel.sched_autogroup_enabled`), when readable.
    pub autogroup: Option<bool>,
    pub rustc: String,
    pub load_start: String,
    pub load_end: String,
    pub duration: Duration,
    pub concurrency: usize,
    pub rounds: usize,
    pub users: usize,
    pub es256_per_core: Option<f64>,
    pub argon2_secs: Option<f64>,
    /// argon2id hashes/s with one thread per core hashing at once.
    pub argon2_parallel: Option<f64>,
    pub perf_note: Option<String>,
    pub binary: String,
    /// Where the binary's start-up functions are (`sys::startup_layout`).
    pub startup_layout: Option<String>,
    pub server_env: Vec<String>,
    pub ip_limits_off: bool,
}

/// Everything measured on one backend.
pub struct BackendResult {
    pub backend: Backend,
    pub version: String,
    pub settings: String,
    pub ready_fresh: Duration,
    pub ready_existing: Duration,
    pub stop_after: Option<Duration>,
    pub rss_idle_fresh_kib: Option<u64>,
    pub rss_idle_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// After the load: anonymous memory (heap, stacks) and file-backed pages (the binary).
    pub rss_anon_kib: Option<u64>,
    pub rss_file_kib: Option<u64>,
    /// Every scenario's median round (by requests/s), in the order they ran.
    pub phases: Vec<PhaseResult>,
    /// Every round of every scenario (for the spread, and so no round's errors go unseen).
    pub all_phases: Vec<PhaseResult>,
    /// JWKS latency seen by one paced client: (at rest, during the password sign-in storm),
    /// one pair per round.
    pub jwks_probe: Vec<(load::Probe, load::Probe)>,
    /// The same from a second client whose thread runs under `SCHED_FIFO`, when permitted.
    pub jwks_probe_rt: Vec<(load::Probe, load::Probe)>,
    /// The same two clients (at rest, beside idle-priority argon2 threads hashing and no
    /// request but the probes'), one pair per round: the part of the storm's ratio that the
    /// hashing itself sets.
    pub jwks_probe_hashing: Vec<(load::Probe, load::Probe)>,
    pub jwks_probe_hashing_rt: Vec<(load::Probe, load::Probe)>,
    /// Hashes per second the idle-priority threads made beside the probes.
    pub idle_hash_rates: Vec<f64>,
    /// The sign-in storm the probes ran beside, per round: (sign-ins/s, errors).
    pub storm_rates: Vec<(f64, u64)>,
    pub probe_seconds: u64,
    pub floor: Option<TxnFloor>,
    pub floor_alt: Option<TxnFloor>,
    pub notes: Vec<String>,
    pub log_problems: Vec<String>,
}

/// Each scenario's median round by requests/s (the upper one of the two middle rounds when
/// there is an even number), in the order the scenarios first ran.
fn median_rounds(all: &[PhaseResult]) -> Vec<PhaseResult> {
    let mut order: Vec<Kind> = Vec::new();
    for p in all {
        if !order.contains(&p.kind) {
            order.push(p.kind);
        }
    }
    order
        .into_iter()
        .filter_map(|k| {
            let mut of: Vec<&PhaseResult> = all.iter().filter(|p| p.kind == k).collect();
            of.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
            of.get(of.len() / 2).map(|p| (*p).clone())
        })
        .collect()
}

/// How often the JWKS probe asks (one request at a time, so ~200 requests/s at most).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(5);

async fn run(args: Args) -> Result<()> {
    if args.concurrency == 0 || args.duration == 0 || args.rounds == 0 {
        bail!("--concurrency, --duration and --rounds must be positive");
    }
    let kinds: Vec<Kind> = if args.scenarios.is_empty() {
        Kind::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for s in &args.scenarios {
            v.push(Kind::parse(s).with_context(|| format!("unknown scenario {s}"))?);
        }
        Kind::ALL.into_iter().filter(|k| v.contains(k)).collect()
    };
    if let Some(p) = &args.perf
        && Kind::parse(p).is_none()
    {
        bail!("unknown scenario for --perf: {p}");
    }
    let load_start = sys::loadavg();
    let root = workspace_root();
    let from_ref = match &args.git_ref {
        Some(r) if args.bin.is_none() => Some(build_git_ref(&root, r)?),
        _ => None,
    };
    if !args.no_build && args.bin.is_none() && from_ref.is_none() {
        eprintln!("== cargo build --release -p ma-idp");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "ma-idp"])
            .current_dir(&root)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo build --release -p ma-idp failed");
        }
    }
    let bin = args
        .bin
        .clone()
        .or_else(|| from_ref.as_ref().map(|(_, b, _)| b.clone()))
        .unwrap_or_else(default_bin);
    if !bin.exists() {
        bail!(
            "{} not found; build it with cargo build --release -p ma-idp",
            bin.display()
        );
    }
    let backends: Vec<Backend> = match args.backend {
        BackendArg::Sqlite => vec![Backend::Sqlite],
        BackendArg::Postgres => vec![Backend::Postgres],
        BackendArg::Both => vec![Backend::Sqlite, Backend::Postgres],
    };
    let duration = Duration::from_secs(args.duration);
    let users = args.users.unwrap_or(args.concurrency).max(1);

    eprintln!("== floors: ES256 signing (2 s, one thread), argon2id hash");
    let es256 = tokio::task::spawn_blocking(|| floors::es256_per_core(Duration::from_secs(2)))
        .await?
        .map_err(|e| eprintln!("ES256 floor failed: {e:#}"))
        .ok();
    let argon2 = tokio::task::spawn_blocking(|| {
        floors::argon2_hash_secs(ARGON2_M_KIB, ARGON2_T, ARGON2_P, ARGON2_RUNS)
    })
    .await?
    .map_err(|e| eprintln!("argon2 floor failed: {e:#}"))
    .ok();
    let argon2_parallel = tokio::task::spawn_blocking(move || {
        floors::argon2_parallel_rate(ARGON2_M_KIB, ARGON2_T, ARGON2_P, sys::cores(), 3.0)
    })
    .await?
    .map_err(|e| eprintln!("argon2 parallel floor failed: {e:#}"))
    .ok();

    let mut results = Vec::new();
    for b in backends {
        eprintln!("== {}", b.name());
        results.push(bench_backend(b, &args, &bin, &kinds, users, duration).await?);
    }

    let info = RunInfo {
        command: format!(
            "cargo run --release -p ma-idp-bench -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
        date: sys::cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        commit: match &from_ref {
            Some((sha, _, _)) => format!("{sha} (exported with git archive and built on its own)"),
            None => git_commit(&root),
        },
        cores: sys::cores(),
        cpu: sys::cpu_model(),
        ram_gib: sys::mem_total_gib(),
        kernel: sys::cmd_out("uname", &["-r"]).unwrap_or_default(),
        autogroup: sys::autogroup(),
        rustc: sys::cmd_out("rustc", &["-V"]).unwrap_or_default(),
        load_start,
        load_end: sys::loadavg(),
        duration,
        concurrency: args.concurrency,
        rounds: args.rounds,
        users,
        es256_per_core: es256,
        argon2_secs: argon2,
        argon2_parallel,
        perf_note: args.perf.clone(),
        // The list of the tree the binary was built from.
        startup_layout: sys::startup_layout(
            &bin,
            from_ref
                .as_ref()
                .map_or(root.as_path(), |(_, _, src)| src.as_path()),
        ),
        server_env: args.server_env.clone(),
        ip_limits_off: !args.keep_ip_limits,
        binary: match (&args.bin, args.no_build) {
            (Some(b), _) => format!("{} (given with --bin)", b.display()),
            (None, _) if from_ref.is_some() => format!(
                "{} (built by this command from --git-ref {})",
                bin.display(),
                args.git_ref.as_deref().unwrap_or_default()
            ),
            (None, true) => format!("{} (not rebuilt: --no-build)", bin.display()),
            (None, false) => format!(
                "{} (built by this command: cargo build --release -p ma-idp)",
                bin.display()
            ),
        },
    };
    let md = report::render(&info, &results);
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("== wrote {}", out.display());
    }
    Ok(())
}

/// Export `git_ref` to target/bench-src/<sha> and build its release ma-idp in
/// target/bench-build. Returns the full commit hash and the binary.
/// The commit's sha, the binary built from it, and the tree it was built from.
fn build_git_ref(root: &Path, git_ref: &str) -> Result<(String, PathBuf, PathBuf)> {
    let r = root.to_string_lossy().to_string();
    let sha = sys::cmd_out(
        "git",
        &[
            "-C",
            &r,
            "rev-parse",
            "--verify",
            &format!("{git_ref}^{{commit}}"),
        ],
    )
    .with_context(|| format!("{git_ref} is not a commit"))?;
    let target = default_bin()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let src = target.join("bench-src").join(&sha);
    if !src.join("Cargo.toml").exists() {
        eprintln!("== git archive {sha} → {}", src.display());
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .args(["-C", &r, "archive", "--format=tar", &sha])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run git archive")?;
        let status = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&src)
            .stdin(archive.stdout.context("no pipe from git archive")?)
            .status()
            .context("cannot run tar")?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&src);
            bail!("extracting {sha} failed");
        }
    }
    let build_dir = target.join("bench-build");
    eprintln!("== cargo build --release -p ma-idp (commit {sha})");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "ma-idp", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &build_dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building commit {sha} failed");
    }
    Ok((sha, build_dir.join("release").join("ma-idp"), src))
}

fn git_commit(root: &Path) -> String {
    let root = root.to_string_lossy().to_string();
    let hash = sys::cmd_out("git", &["-C", &root, "rev-parse", "--short=12", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty = sys::cmd_out(
        "git",
        &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!(
            "{hash} + uncommitted changes in the working tree (the binary was built from the working tree)"
        )
    } else {
        hash
    }
}

fn random_key() -> String {
    let mut k = [0u8; 32];
    let _ = SystemRandom::new().fill(&mut k);
    STANDARD.encode(k)
}

async fn db_version(url: &str, backend: Backend) -> Option<String> {
    let db = Database::connect(url).await.ok()?;
    let sql = match backend {
        Backend::Sqlite => "SELECT sqlite_version() AS v",
        Backend::Postgres => "SELECT current_setting('server_version') AS v",
    };
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .ok()??;
    let v: String = row.try_get("", "v").ok()?;
    let _ = db.close().await;
    Some(v)
}

async fn bench_backend(
    backend: Backend,
    args: &Args,
    bin: &Path,
    kinds: &[Kind],
    users: usize,
    duration: Duration,
) -> Result<BackendResult> {
    let tmp = tempfile::Builder::new().prefix("ma-idp-bench-").tempdir()?;
    let log = tmp.path().join("ma-idp.log");
    let r = bench_backend_in(backend, args, bin, kinds, users, duration, tmp.path(), &log).await;
    if r.is_err() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "ma-idp's log (last lines):\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn bench_backend_in(
    backend: Backend,
    args: &Args,
    bin: &Path,
    kinds: &[Kind],
    users: usize,
    duration: Duration,
    tmp: &Path,
    log: &Path,
) -> Result<BackendResult> {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data)?;
    let admin = PgAdmin::parse(&args.pg_url)?;
    // Declared before the server so that it is dropped after it.
    let pg = match backend {
        Backend::Postgres => Some(PgDb::create(&admin)?),
        Backend::Sqlite => None,
    };
    let mut vars = vec![
        ("MA_IDP_DATA_DIR".to_string(), data.display().to_string()),
        ("MA_IDP_MASTER_KEY".to_string(), random_key()),
    ];
    if let Some(pg) = &pg {
        vars.push(("MA_IDP_DATABASE_URL".into(), pg.url()));
    }
    if !args.keep_ip_limits {
        for k in IP_LIMITS {
            vars.push((k.to_string(), "0".into()));
        }
    }
    for kv in &args.server_env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--server-env {kv}: expected KEY=VALUE"))?;
        vars.push((k.to_string(), v.to_string()));
    }
    let env = Env {
        bin: bin.to_path_buf(),
        vars,
    };
    let mut notes = Vec::new();

    // First start: an empty database, so start-up includes the migrations.
    let s = Server::start(&env, server::free_port()?, log).await?;
    let ready_fresh = s.ready_after;
    eprintln!("   start to /ready on an empty database: {ready_fresh:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_fresh_kib = sys::proc_status_kib(s.pid, "VmRSS");
    s.stop().await?;

    eprintln!("   set-up: tenant, {users} users, client (CLI)");
    env.cli(
        &["tenant", "create", TENANT, "--name", "Bench home", "--json"],
        None,
    )?;
    let user_names: Vec<String> = (0..users).map(|i| format!("member{i}")).collect();
    for u in &user_names {
        env.cli(
            &["user", "create", "--tenant", TENANT, u, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        )?;
    }
    let out = env.cli(
        &[
            "client",
            "create",
            "--tenant",
            TENANT,
            "--name",
            "Alexa (bench)",
            "--client-id",
            "bench-alexa",
            "--alexa",
            VENDOR,
            "--client-credentials",
            "--json",
        ],
        None,
    )?;
    let client: serde_json::Value =
        serde_json::from_str(out.trim()).context("client create --json output")?;
    let client_id = client["client_id"]
        .as_str()
        .context("no client_id")?
        .to_string();
    let client_secret = client["client_secret"]
        .as_str()
        .context("no client_secret")?
        .to_string();
    let redirect_uri = client["redirect_uris"][0]
        .as_str()
        .context("no redirect_uri")?
        .to_string();

    // Second start: the existing database.
    let port = server::free_port()?;
    let server = Server::start(&env, port, log).await?;
    let ready_existing = server.ready_after;
    eprintln!("   start to /ready on the existing database: {ready_existing:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = sys::proc_status_kib(server.pid, "VmRSS");

    let ctx = Arc::new(Ctx {
        base: format!("http://127.0.0.1:{port}"),
        slug: TENANT.into(),
        client_id,
        client_secret,
        redirect_uri,
        users: user_names,
        password: PASSWORD.into(),
        access_token: Mutex::new(String::new()),
        codes: Mutex::new(Vec::new()),
    });
    let (at, _) = load::user_tokens(&ctx, &ctx.users[0], "prepare").await?;
    if let Ok(mut t) = ctx.access_token.lock() {
        *t = at;
    }

    let mut phases = Vec::new();
    let mut jwks_probe = Vec::new();
    let mut jwks_probe_rt = Vec::new();
    let mut jwks_probe_hashing = Vec::new();
    let mut jwks_probe_hashing_rt = Vec::new();
    let mut idle_hash_rates = Vec::new();
    let mut storm_rates = Vec::new();
    // Each scenario restarts VmHWM to measure its own peak; the run's peak is the largest of
    // those and of what VmHWM held before and between them.
    let mut hwm_kib = sys::proc_status_kib(server.pid, "VmHWM");
    if !kinds.contains(&Kind::AuthorizeRedirect) && kinds.contains(&Kind::CodeExchange) {
        notes
            .push("code exchange skipped: it needs the authorize-redirect scenario's codes".into());
    }
    let rounds: Vec<usize> = (1..=args.rounds).collect();
    for (round, &kind) in rounds
        .iter()
        .flat_map(|r| kinds.iter().map(move |k| (*r, k)))
    {
        if kind == Kind::CodeExchange && !kinds.contains(&Kind::AuthorizeRedirect) {
            continue;
        }
        if kind == kinds[0] && args.rounds > 1 {
            eprintln!("   round {round} of {}", args.rounds);
            // Between rounds on a PostgreSQL without autovacuum, do what autovacuum would
            // have done meanwhile: without fresh statistics, cached plans made when the
            // tables were small stay sequential scans (ma-idp warns about this at start).
            if let Some(pg) = pg.as_ref().filter(|_| round > 1) {
                let off = admin
                    .psql(&pg.name, "SHOW autovacuum")
                    .is_ok_and(|v| v.trim() == "off");
                if off {
                    let n = "PostgreSQL's autovacuum is off on this server: the benchmark runs VACUUM ANALYZE on its database between rounds, as autovacuum would";
                    note_once(&mut notes, n);
                    if let Err(e) = admin.psql(&pg.name, "VACUUM ANALYZE") {
                        notes.push(format!("VACUUM ANALYZE failed: {e:#}"));
                    }
                }
            }
        }
        let perf = (args.perf.as_deref() == Some(kind.key())).then(|| {
            std::env::current_dir().unwrap_or_default().join(format!(
                "perf-{}-{}.data",
                backend.name().to_lowercase(),
                kind.key()
            ))
        });
        // Issue 8: "while a sign-in storm runs, JWKS p99 stays within 2x its value at rest".
        // The same paced probes (normal priority and SCHED_FIFO) run alone first, then beside
        // idle-priority hashing alone, then beside a sign-in storm of their own; the timed
        // sign-in scenario below then runs alone, like every other scenario.
        if kind == Kind::SignIn {
            let rest = load::jwks_probes(ctx.clone(), duration, PROBE_INTERVAL).await;
            // Beside the hashing alone: one SCHED_IDLE argon2 thread per core, as ma-idp's
            // hash threads run in the storm, and no request but the probes'.
            let beside_hashing =
                match floors::IdleHashers::start(ARGON2_M_KIB, ARGON2_T, ARGON2_P, sys::cores()) {
                    Ok(hashers) => {
                        let probes = load::jwks_probes(ctx.clone(), duration, PROBE_INTERVAL).await;
                        hashers
                            .stop()
                            .map(|(rate, all_idle)| (probes, rate, all_idle))
                    }
                    Err(e) => Err(e),
                };
            match beside_hashing {
                Ok(((normal, rt), rate, all_idle)) => {
                    eprintln!(
                        "   JWKS probe p99 beside {} idle-priority argon2 threads ({rate:.0} hashes/s): {:.2} ms",
                        sys::cores(),
                        normal.quantile_ms(0.99).unwrap_or(f64::NAN)
                    );
                    if !all_idle {
                        let n = "the idle-priority argon2 threads beside the JWKS probe could not take SCHED_IDLE: they ran at normal priority";
                        note_once(&mut notes, n);
                    }
                    idle_hash_rates.push(rate);
                    jwks_probe_hashing.push((rest.0.clone(), normal));
                    if let (Some(r), Some(h)) = (rest.1.clone(), rt) {
                        jwks_probe_hashing_rt.push((r, h));
                    }
                }
                Err(e) => notes.push(format!("idle-priority argon2 threads failed: {e:#}")),
            }
            let (rest, rest_rt) = rest;
            let probes = tokio::spawn(load::jwks_probes(ctx.clone(), duration, PROBE_INTERVAL));
            hwm_kib = hwm_kib.max(sys::proc_status_kib(server.pid, "VmHWM"));
            let storm = load::run_phase(
                kind,
                ctx.clone(),
                args.concurrency,
                duration,
                server.pid,
                None,
            )
            .await;
            hwm_kib = hwm_kib.max(storm.peak_kib);
            storm_rates.push((storm.rate(), storm.error_count()));
            match probes.await {
                Ok((during, during_rt)) => {
                    eprintln!(
                        "   JWKS probe p99: at rest {:.2} ms, during the sign-in storm ({:.1} sign-ins/s) {:.2} ms",
                        rest.quantile_ms(0.99).unwrap_or(f64::NAN),
                        storm.rate(),
                        during.quantile_ms(0.99).unwrap_or(f64::NAN)
                    );
                    jwks_probe.push((rest, during));
                    match (rest_rt, during_rt) {
                        (Some(r), Some(s)) => {
                            eprintln!(
                                "   JWKS real-time probe p99: at rest {:.2} ms, during the sign-in storm {:.2} ms",
                                r.quantile_ms(0.99).unwrap_or(f64::NAN),
                                s.quantile_ms(0.99).unwrap_or(f64::NAN)
                            );
                            jwks_probe_rt.push((r, s));
                        }
                        _ => {
                            let n = "the real-time JWKS probe did not run: SCHED_FIFO was refused (run as root or raise RLIMIT_RTPRIO)";
                            note_once(&mut notes, n);
                        }
                    }
                }
                Err(e) => notes.push(format!("JWKS probe failed: {e}")),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The ceiling of this round: one hash timed now (the host's speed drifts during a run).
        let hash_floor_secs = if kind == Kind::SignIn {
            tokio::task::spawn_blocking(|| {
                floors::argon2_hash_secs(ARGON2_M_KIB, ARGON2_T, ARGON2_P, ARGON2_RUNS).ok()
            })
            .await
            .ok()
            .flatten()
        } else {
            None
        };
        eprint!("   {:<20} ", kind.key());
        hwm_kib = hwm_kib.max(sys::proc_status_kib(server.pid, "VmHWM"));
        let mut r = load::run_phase(
            kind,
            ctx.clone(),
            args.concurrency,
            duration,
            server.pid,
            perf,
        )
        .await;
        r.hash_floor_secs = hash_floor_secs;
        eprintln!(
            "{:>8.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}  cpu {:.2} ms/req  rss {} KiB  peak {} KiB  threads {}",
            r.rate(),
            r.quantile_ms(0.5).unwrap_or(f64::NAN),
            r.quantile_ms(0.99).unwrap_or(f64::NAN),
            r.error_count(),
            r.cpu_ms_per_request().unwrap_or(f64::NAN),
            r.rss_after_kib.unwrap_or(0),
            r.peak_kib.unwrap_or(0),
            r.threads_after.unwrap_or(0)
        );
        for s in &r.samples {
            eprintln!("      {s}");
        }
        if kind == Kind::CodeExchange {
            // Codes left now would be past their 60 s lifetime by the next round's code
            // exchange (which would then measure "expired" answers): dropped.
            let left = ctx
                .codes
                .lock()
                .map(|mut q| std::mem::take(&mut *q).len())
                .unwrap_or(0);
            if left > 0 {
                notes.push(format!(
                    "code exchange: {left} collected codes were left unexchanged when the time was up (dropped)"
                ));
            }
        }
        hwm_kib = hwm_kib.max(r.peak_kib);
        phases.push(r);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss_after_kib = sys::proc_status_kib(server.pid, "VmRSS");
    let hwm_kib = hwm_kib.max(sys::proc_status_kib(server.pid, "VmHWM"));
    let rss_anon_kib = sys::proc_status_kib(server.pid, "RssAnon");
    let rss_file_kib = sys::proc_status_kib(server.pid, "RssFile");
    drop(ctx);
    let stop_after = match server.stop().await {
        Ok(d) => Some(d),
        Err(e) => {
            notes.push(format!("stopping ma-idp: {e:#}"));
            None
        }
    };
    let log_problems = server::log_problems(log);

    // The database floor, with ma-idp stopped.
    eprintln!("   transaction floor");
    let (version, settings, floor, floor_alt) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}?mode=rwc", tmp.join("floor.db").display());
            let version = db_version(&url, backend).await.unwrap_or_default();
            let f = floors::txn_floor_seaorm(
                &url,
                DbBackend::Sqlite,
                args.concurrency,
                args.concurrency as u32,
                duration,
            )
            .await
            .map_err(|e| notes.push(format!("SQLite transaction floor failed: {e:#}")))
            .ok();
            (
                version,
                "WAL, synchronous=FULL (as ma-idp's store sets them)".to_string(),
                f,
                None,
            )
        }
        Backend::Postgres => {
            let pg = pg.as_ref().context("no database")?;
            let version = db_version(&pg.url(), backend).await.unwrap_or_default();
            let settings = admin
                .psql(
                    &pg.name,
                    "SELECT 'synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync') || ', shared_buffers=' || current_setting('shared_buffers') || ', max_connections=' || current_setting('max_connections')",
                )
                .unwrap_or_default();
            let f = if sys::cmd_out("which", &["pgbench"]).is_some() {
                floors::txn_floor_pgbench(&admin, &pg.name, tmp, args.concurrency, duration)
                    .map_err(|e| notes.push(format!("pgbench floor failed: {e:#}")))
                    .ok()
            } else {
                notes.push("pgbench not installed: only the sea-orm floor".into());
                None
            };
            let alt = floors::txn_floor_seaorm(
                &pg.url(),
                DbBackend::Postgres,
                args.concurrency,
                args.concurrency as u32,
                duration,
            )
            .await
            .map_err(|e| notes.push(format!("sea-orm PostgreSQL floor failed: {e:#}")))
            .ok();
            (version, settings, f, alt)
        }
    };
    // pgbench missing: the sea-orm floor is the floor.
    let (floor, floor_alt) = match (floor, floor_alt) {
        (None, Some(a)) => (Some(a), None),
        x => x,
    };
    drop(pg);
    Ok(BackendResult {
        backend,
        version,
        settings,
        ready_fresh,
        ready_existing,
        stop_after,
        rss_idle_fresh_kib,
        rss_idle_kib,
        rss_after_kib,
        hwm_kib,
        rss_anon_kib,
        rss_file_kib,
        phases: median_rounds(&phases),
        all_phases: phases,
        jwks_probe,
        jwks_probe_rt,
        jwks_probe_hashing,
        jwks_probe_hashing_rt,
        idle_hash_rates,
        storm_rates,
        probe_seconds: duration.as_secs(),
        floor,
        floor_alt,
        notes,
        log_problems,
    })
}

/// Add a note to the report unless it is there already (notes repeat from round to round).
fn note_once(notes: &mut Vec<String>, n: &str) {
    if !notes.iter().any(|x| x == n) {
        notes.push(n.into());
    }
}
