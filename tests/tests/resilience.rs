//! Resilience: the real binary SIGKILLed under refresh load, the database SIGKILLed under
//! load (ma-idp keeps running and recovers by itself), and two instances sharing one
//! PostgreSQL database. "0 tokens lost": every client's newest refresh token still refreshes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ma_idp_tests::*;
use serde_json::Value;

both_backends!(
    server_crash_loses_no_token,
    a_wrong_master_key_is_refused_at_start,
    sigterm_after_writes_exits_cleanly
);

// ---------------------------------------------------------------------------------------
// The real binary as a child process.
// ---------------------------------------------------------------------------------------

/// The environment of one ma-idp installation: data directory, database, master key.
struct Install {
    dir: tempfile::TempDir,
    db: Option<String>,
    master_key: String,
}

impl Install {
    fn new(db: Option<String>) -> Self {
        Install {
            dir: tempfile::tempdir().unwrap(),
            db,
            master_key: STANDARD.encode([42u8; 32]),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(binary());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MA_IDP_DATA_DIR", self.dir.path())
            .env("MA_IDP_MASTER_KEY", &self.master_key)
            .env("MA_IDP_LIMITS__SIGN_INS_PER_IP_PER_MINUTE", "0")
            .env("MA_IDP_LIMITS__TOKEN_PER_IP_PER_MINUTE", "0")
            .env("MA_IDP_LIMITS__INTROSPECT_PER_IP_PER_MINUTE", "0")
            .env("MA_IDP_ARGON2__M_COST", "8192")
            .env("MA_IDP_ARGON2__T_COST", "1")
            .env("RUST_LOG", "warn");
        if let Some(db) = &self.db {
            c.env("MA_IDP_DATABASE_URL", db);
        }
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ma-idp runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let (ok, out, err) = self.run(args, stdin);
        assert!(ok, "ma-idp {args:?} failed: {err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Tenant `home`, member `alice`, an Alexa client: with the CLI, as an admin would.
    fn setup(&self) -> Setup {
        let (ok, _, err) = self.run(&["migrate"], None);
        assert!(ok, "migrate: {err}");
        self.json(&["tenant", "create", "home", "--json"], None);
        self.json(
            &[
                "user",
                "create",
                "--tenant",
                "home",
                "alice",
                "--password-stdin",
                "--json",
            ],
            Some(&format!("{PASSWORD}\n")),
        );
        let c = self.json(
            &[
                "client", "create", "--tenant", "home", "--name", "Alexa", "--alexa", VENDOR,
                "--json",
            ],
            None,
        );
        Setup {
            slug: "home".into(),
            client_id: c["client_id"].as_str().unwrap().to_string(),
            client_secret: c["client_secret"].as_str().unwrap().to_string(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// `ma-idp serve` on this port; stderr appended to `serve.log`.
    fn spawn(&self, port: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.cmd()
            .env("RUST_LOG", "warn")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &format!("http://localhost:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("serve starts")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// A served ma-idp child; killed (SIGKILL) when dropped.
struct Served {
    child: Option<Child>,
    port: u16,
}

impl Served {
    fn base(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// SIGKILL (`Child::kill` is SIGKILL on Unix) and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start (again) on the same port; waits until /ready answers 200.
    async fn start(&mut self, inst: &Install) {
        let http = plain_client();
        for _attempt in 0..5 {
            let mut child = inst.spawn(self.port);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited (e.g. the port was not free yet): try again
                }
                if let Ok(r) = http.get(format!("{}/ready", self.base())).send().await
                    && r.status() == 200
                {
                    self.child = Some(child);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("ma-idp did not become ready:\n{}", inst.log());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn fresh_browser(base: &str) -> Browser {
    Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap(),
        base: base.to_string(),
    }
}

/// A real code flow (fresh browser, password, consent) and the code exchange, as Alexa does.
async fn link(base: &str, setup: &Setup, state: &str) -> Value {
    let redirect = alexa_redirects()[1].clone();
    let b = fresh_browser(base);
    let loc = b
        .sign_in_and_consent(
            "/alexa/authorize",
            &[
                ("client_id", setup.client_id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", redirect.clone()),
                ("state", state.into()),
                ("scope", "music.control user:read".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    let (code, _) = parse_code(&loc, &redirect, state);
    let r = plain_client()
        .post(format!("{base}/alexa/token"))
        .header(
            "authorization",
            basic_header(&setup.client_id, &setup.client_secret),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "code exchange: {body}");
    body
}

// ---------------------------------------------------------------------------------------
// Refresh load.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum Outcome {
    /// The new refresh token and access token.
    Ok {
        refresh: String,
        access: String,
    },
    /// No answer (connection refused or reset, timeout, truncated body).
    Conn,
    Status(u16, String),
}

async fn refresh_once(http: &reqwest::Client, base: &str, setup: &Setup, token: &str) -> Outcome {
    let resp = http
        .post(format!("{base}/alexa/token"))
        .header(
            "authorization",
            basic_header(&setup.client_id, &setup.client_secret),
        )
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await;
    let Ok(resp) = resp else {
        return Outcome::Conn;
    };
    let status = resp.status().as_u16();
    let Ok(text) = resp.text().await else {
        return Outcome::Conn;
    };
    if status == 200 {
        let v = serde_json::from_str::<Value>(&text).unwrap_or_default();
        match (v["refresh_token"].as_str(), v["access_token"].as_str()) {
            (Some(r), Some(a)) => Outcome::Ok {
                refresh: r.to_string(),
                access: a.to_string(),
            },
            _ => Outcome::Conn,
        }
    } else {
        Outcome::Status(status, text)
    }
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    conn_errors: AtomicU64,
    unavailable: AtomicU64,
    /// Answers other than 200 / 503 / no answer: each is a bug (a lost token or a 500).
    bad: Mutex<Vec<String>>,
    /// Every status seen.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// The first 503 body from the token endpoint.
    first_503: Mutex<Option<String>>,
    /// Milliseconds since `t0` of the last successful refresh.
    last_ok_ms: AtomicU64,
}

/// One Alexa-like client: refreshes in a loop and keeps the newest refresh token it
/// received; after no answer or a 503 it retries with the same token.
async fn client_loop(
    base: String,
    setup: Setup,
    token: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    t0: Instant,
) {
    let http = plain_client();
    while !stop.load(Ordering::SeqCst) {
        let cur = token.lock().unwrap().clone();
        match refresh_once(&http, &base, &setup, &cur).await {
            Outcome::Ok { refresh: next, .. } => {
                *token.lock().unwrap() = next;
                stats.ok.fetch_add(1, Ordering::SeqCst);
                stats
                    .last_ok_ms
                    .store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
                *stats.statuses.lock().unwrap().entry(200).or_default() += 1;
            }
            Outcome::Conn => {
                stats.conn_errors.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Outcome::Status(s, body) => {
                *stats.statuses.lock().unwrap().entry(s).or_default() += 1;
                if s == 503 {
                    stats.unavailable.fetch_add(1, Ordering::SeqCst);
                    stats.first_503.lock().unwrap().get_or_insert(body);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    stats.bad.lock().unwrap().push(format!("{s}: {body}"));
                    if body.contains("invalid_grant") {
                        // The token is gone: nothing more this client can do.
                        return;
                    }
                    // A wrong answer (a 500, or a 400 that should have been a 503): the token
                    // is still good, try again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

struct Load {
    tokens: Vec<Arc<Mutex<String>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(base: &str, setup: &Setup, first: Vec<String>, t0: Instant) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let tokens: Vec<_> = first.into_iter().map(|t| Arc::new(Mutex::new(t))).collect();
    let tasks = tokens
        .iter()
        .map(|t| {
            tokio::spawn(client_loop(
                base.to_string(),
                setup.clone(),
                t.clone(),
                stop.clone(),
                stats.clone(),
                t0,
            ))
        })
        .collect();
    Load {
        tokens,
        stop,
        stats,
        tasks,
    }
}

impl Load {
    /// The newest token of every client, now.
    fn snapshot(&self) -> Vec<String> {
        self.tokens
            .iter()
            .map(|t| t.lock().unwrap().clone())
            .collect()
    }

    /// Tokens received before a crash and rotated since: inside the grace window (60 s) a
    /// retry with them still gets a successor, and the newer tokens stay valid.
    async fn assert_grace_retries(&self, base: &str, setup: &Setup, old: &[String]) {
        let http = plain_client();
        let mut refused = Vec::new();
        for (i, t) in old.iter().enumerate() {
            match refresh_once(&http, base, setup, t).await {
                Outcome::Ok { .. } => {}
                Outcome::Conn => refused.push(format!("client {i}: no answer")),
                Outcome::Status(s, b) => refused.push(format!("client {i}: {s} {b}")),
            }
        }
        assert!(
            refused.is_empty(),
            "tokens from before the crash, retried inside the grace window: {refused:#?}"
        );
    }

    async fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.await.unwrap();
        }
    }

    /// After the load: each client's newest token still refreshes (a token whose answer was
    /// lost was already rotated; it is then inside the grace window and gets a successor).
    async fn assert_none_lost(&self, base: &str, setup: &Setup) -> usize {
        let http = plain_client();
        let mut lost = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let cur = t.lock().unwrap().clone();
            match refresh_once(&http, base, setup, &cur).await {
                Outcome::Ok { refresh: next, .. } => *t.lock().unwrap() = next,
                Outcome::Conn => lost.push(format!("client {i}: no answer")),
                Outcome::Status(s, b) => lost.push(format!("client {i}: {s} {b}")),
            }
        }
        assert!(lost.is_empty(), "refresh tokens lost: {lost:#?}");
        self.tokens.len()
    }
}

// ---------------------------------------------------------------------------------------
// a. The server stopped: SIGTERM after writes, SIGKILL under load.
// ---------------------------------------------------------------------------------------

/// A new installation (database, tenant `home`, member, Alexa client) served by a child
/// process; `None` (skip) when the backend is unavailable locally. The guard drops a
/// PostgreSQL database at the end.
async fn serve_new(backend: Backend) -> Option<(DropDatabase, Install, Setup, Served)> {
    let (db, drop_database) = database_for(backend).await?;
    let inst = Install::new(db);
    let setup = inst.setup();
    let mut served = Served {
        child: None,
        port: free_port(),
    };
    served.start(&inst).await;
    Some((drop_database, inst, setup, served))
}

/// `SIGTERM` after the server has written (a linking and a refresh: one-call writes, whose
/// SQLite connection is kept from write to write): the process exits with success and logs
/// no panic. (A kept pooled connection dropped after the runtime ended panicked in sqlx.)
async fn sigterm_after_writes_exits_cleanly(backend: Backend) {
    let Some((_drop_database, inst, setup, mut served)) = serve_new(backend).await else {
        return;
    };
    let base = served.base();
    let tok = link(&base, &setup, "family").await;
    let http = plain_client();
    let token = tok["refresh_token"].as_str().unwrap();
    assert!(matches!(
        refresh_once(&http, &base, &setup, token).await,
        Outcome::Ok { .. }
    ));
    let mut child = served.child.take().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = inst.log();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// PostgreSQL: ma-idp keeps a connection from one statement to the next instead of giving it
/// back to its pool after each (whose ping at release cost a round trip per statement), and a
/// kept connection that idled a second goes back to the pool, which pings it, before it is
/// used again: connections the database ended meanwhile (`pg_terminate_backend`, as an
/// administrator or a restart does) cost no request. Three rounds: end every connection of
/// ma-idp's, pause 1.5 s, then refreshes, introspections and sign-in pages must all answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ended_while_idle_cost_no_request() {
    use sea_orm::ConnectionTrait;
    let Some((drop_database, _inst, setup, mut served)) = serve_new(Backend::Postgres).await else {
        return;
    };
    let name = drop_database
        .0
        .as_deref()
        .and_then(|u| u.rsplit_once('/'))
        .map(|(_, n)| n.to_string())
        .unwrap();
    let base = served.base();
    let mut refresh = link(&base, &setup, "family").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Refresh, introspect the new access token, load a page with a session: each answered.
    async fn rounds(base: &str, setup: &Setup, mut token: String, label: &str) -> String {
        let http = plain_client();
        let auth = basic_header(&setup.client_id, &setup.client_secret);
        for i in 0..15 {
            let access = match refresh_once(&http, base, setup, &token).await {
                Outcome::Ok { refresh, access } => {
                    token = refresh;
                    access
                }
                other => panic!("{label}: refresh {i}: {other:?}"),
            };
            let r = http
                .post(format!("{base}/t/{}/introspect", setup.slug))
                .header("authorization", &auth)
                .form(&[("token", access.as_str())])
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or_default();
            assert_eq!(status, 200, "{label}: introspection {i}: {body}");
            assert_eq!(body["active"], true, "{label}: introspection {i}: {body}");
            let r = fresh_browser(base).get("/t/home/login").await;
            assert_eq!(r.status(), 200, "{label}: sign-in page {i}");
        }
        token
    }
    refresh = rounds(&base, &setup, refresh, "before").await;
    let admin = sea_orm::Database::connect(pg_admin_url()).await.unwrap();
    for round in 1..=3 {
        let ended = admin
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ),
            ))
            .await
            .unwrap()
            .len();
        assert!(ended > 0, "round {round}: ma-idp had connections to end");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let label = format!("round {round}, after {ended} connections ended");
        refresh = rounds(&base, &setup, refresh, &label).await;
    }
    let _ = admin.close().await;
    served.kill();
}

async fn server_crash_loses_no_token(backend: Backend) {
    let Some((_drop_database, inst, setup, mut served)) = serve_new(backend).await else {
        return;
    };
    let base = served.base();

    const CLIENTS: usize = 8;
    let mut first = Vec::new();
    for i in 0..CLIENTS {
        let tok = link(&base, &setup, &format!("family-{i}")).await;
        first.push(tok["refresh_token"].as_str().unwrap().to_string());
    }
    let t0 = Instant::now();
    let mut load = start_load(&base, &setup, first, t0);
    // Kill at varied moments of the load.
    let pauses = [700u64, 450, 900, 300, 600];
    let mut downtime = Duration::ZERO;
    let mut before_first_kill = Vec::new();
    for (i, pause) in pauses.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        if i == 0 {
            before_first_kill = load.snapshot();
        }
        let before = load.stats.ok.load(Ordering::SeqCst);
        served.kill();
        let down = Instant::now();
        served.start(&inst).await;
        downtime += down.elapsed();
        eprintln!(
            "kill {}: {} refreshes before it, back after {:?}",
            i + 1,
            before,
            down.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    load.finish().await;
    let stats = &load.stats;
    let ok = stats.ok.load(Ordering::SeqCst);
    let conn = stats.conn_errors.load(Ordering::SeqCst);
    let unavailable = stats.unavailable.load(Ordering::SeqCst);
    eprintln!(
        "server_crash_loses_no_token[{backend:?}]: {CLIENTS} clients, {} kills, {ok} refreshes, \
         {conn} connection errors, {unavailable} answers 503, statuses {:?}, total downtime {:?}, \
         {:?} in all",
        pauses.len(),
        stats.statuses.lock().unwrap(),
        downtime,
        t0.elapsed(),
    );
    let bad = stats.bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "unexpected answers under crash load: {bad:#?}\nserver log:\n{}",
        inst.log()
    );
    assert!(ok > 50, "the load ran ({ok} refreshes)");
    assert!(conn > 0, "the kills happened under load");
    let checked = load.assert_none_lost(&base, &setup).await;
    load.assert_grace_retries(&base, &setup, &before_first_kill)
        .await;
    load.assert_none_lost(&base, &setup).await;
    eprintln!(
        "all {checked} refresh tokens still refresh: 0 lost; the {} tokens held before the \
         first kill still get a successor inside the grace window",
        before_first_kill.len()
    );
    let log = inst.log();
    assert!(
        !log.contains("panicked"),
        "a panic in the server log:\n{log}"
    );
    if matches!(backend, Backend::Sqlite) {
        // `restore` refuses to replace a database that is being served, and works once the
        // server is gone, even SIGKILLed (the lock dies with the process).
        let backup = inst.dir.path().join("snapshot.db");
        let backup = backup.to_str().unwrap();
        let (ok, _, err) = inst.run(&["backup", "--out", backup], None);
        assert!(ok, "online backup: {err}");
        let (ok, _, err) = inst.run(&["restore", "--from", backup], None);
        assert!(!ok, "restore under a running server");
        assert!(err.contains("stop it first"), "{err}");
        served.kill();
        let (ok, _, err) = inst.run(&["restore", "--from", backup], None);
        assert!(ok, "restore after the server stopped: {err}");
        served.start(&inst).await;
        assert_eq!(
            plain_client()
                .get(format!("{}/ready", served.base()))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    served.kill();
}

// ---------------------------------------------------------------------------------------
// b. SIGKILL the database under load; ma-idp recovers without a restart.
// ---------------------------------------------------------------------------------------

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throw-away PostgreSQL cluster in a temporary directory; stopped and removed on drop.
struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres_user: bool,
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// `None` (skip) when the PostgreSQL binaries are missing and PostgreSQL is not required.
    fn create() -> Option<PgCluster> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            let required = std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true");
            assert!(
                !required,
                "REQUIRE_POSTGRES=1 but {PG_BIN}/initdb is missing"
            );
            eprintln!("\n!!!!! SKIPPING: no PostgreSQL binaries in {PG_BIN} !!!!!\n");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("pgc").tempdir().unwrap();
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            // initdb refuses root: the cluster belongs to the postgres user.
            let st = Command::new("chown")
                .args(["postgres:postgres", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(st.success(), "chown the cluster directory");
        }
        let c = PgCluster {
            dir,
            port: free_port(),
            as_postgres_user,
        };
        let data = c.data();
        let out = c.pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(c)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let bin = Path::new(PG_BIN).join(tool);
        let mut c = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        c.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `pg_ctl start`, retried while orphaned backends of a killed postmaster still hold
    /// the shared memory.
    fn start(&self) {
        let opts = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.pg(
                "pg_ctl",
                &[
                    "-D",
                    self.data().to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "20",
                    "start",
                ],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pg_ctl start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn postmaster_pid(&self) -> Option<String> {
        let s = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        s.lines().next().map(|l| l.trim().to_string())
    }

    fn kill_postmaster(&self) {
        let pid = self.postmaster_pid().expect("postmaster.pid");
        let st = Command::new("kill").args(["-9", &pid]).status().unwrap();
        assert!(st.success(), "kill -9 {pid}");
    }

    /// Whether a new connection is accepted and answers a query.
    async fn accepts(&self) -> bool {
        use sea_orm::ConnectionTrait;
        let mut opts = sea_orm::ConnectOptions::new(self.url());
        opts.connect_timeout(Duration::from_millis(500))
            .acquire_timeout(Duration::from_millis(500))
            .max_connections(1)
            .sqlx_logging(false);
        match sea_orm::Database::connect(opts).await {
            Ok(db) => {
                let ok = db.execute_unprepared("SELECT 1").await.is_ok();
                let _ = db.close().await;
                ok
            }
            Err(_) => false,
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        if !out.status.success()
            && let Some(pid) = self.postmaster_pid()
        {
            let _ = Command::new("kill")
                .args(["-9", &pid])
                .stderr(Stdio::null())
                .status();
        }
        // The TempDir removes the directory.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_crash_recovers_without_restart() {
    let Some(pg) = PgCluster::create() else {
        return;
    };
    pg.start();
    assert!(pg.accepts().await, "the new cluster accepts connections");
    let inst = Install::new(Some(pg.url()));
    let setup = inst.setup();
    let mut served = Served {
        child: None,
        port: free_port(),
    };
    served.start(&inst).await;
    let base = served.base();
    let http = plain_client();

    const CLIENTS: usize = 6;
    let mut first = Vec::new();
    for i in 0..CLIENTS {
        let tok = link(&base, &setup, &format!("family-{i}")).await;
        first.push(tok["refresh_token"].as_str().unwrap().to_string());
    }
    // A family of its own for measuring the recovery.
    let probe = link(&base, &setup, "probe").await;
    let mut probe_token = probe["refresh_token"].as_str().unwrap().to_string();

    let t0 = Instant::now();
    let mut load = start_load(&base, &setup, first, t0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = load.stats.ok.load(Ordering::SeqCst);
    assert!(before_kill > 0, "the load runs");

    let before_crash = load.snapshot();
    pg.kill_postmaster();
    let killed_at = Instant::now();
    eprintln!("postmaster SIGKILLed after {before_kill} refreshes");

    // ma-idp notices: /ready 503; the token endpoint 503 temporarily_unavailable (JSON); a
    // page 503 (HTML). Never 500.
    // Every probe at once (each may wait for the pool's acquire timeout).
    let token_probe = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        let auth = basic_header(&setup.client_id, &setup.client_secret);
        async move {
            let started = Instant::now();
            let r = http
                .post(url)
                .header("authorization", auth)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "not-a-token"),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").is_some();
            let body = r.text().await.unwrap();
            (path, status, retry_after, body, started.elapsed())
        }
    };
    let ready_probe = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let started = Instant::now();
            let r = http.get(format!("{base}/ready")).send().await.unwrap();
            let s = r.status().as_u16();
            let body = r.text().await.unwrap();
            if s != 200 || Instant::now() > deadline {
                return (s, body, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let page_probe = async {
        let started = Instant::now();
        let r = http
            .get(format!("{base}/t/home/login"))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (s, ct, started.elapsed())
    };
    let health_probe = async {
        let started = Instant::now();
        let r = http.get(format!("{base}/health")).send().await.unwrap();
        (r.status().as_u16(), started.elapsed())
    };
    let (ready, page, health, t1, t2) = tokio::join!(
        ready_probe,
        page_probe,
        health_probe,
        token_probe("/t/home/token"),
        token_probe("/alexa/token")
    );
    eprintln!(
        "database down: GET /ready -> {} in {:?}: {}",
        ready.0, ready.2, ready.1
    );
    eprintln!(
        "database down: GET /t/home/login -> {} ({}) in {:?}",
        page.0, page.1, page.2
    );
    eprintln!(
        "database down: GET /health -> {} in {:?}",
        health.0, health.1
    );
    assert_eq!(
        ready.0, 503,
        "/ready answers 503 while the database is down: {}",
        ready.1
    );
    let v: Value = serde_json::from_str(&ready.1).unwrap();
    assert_eq!(v["status"], "not ready", "{v}");
    assert_eq!(page.0, 503, "a page while the database is down");
    assert!(
        page.1.starts_with("text/html"),
        "pages answer with a page: {}",
        page.1
    );
    assert_eq!(health.0, 200, "liveness does not depend on the database");
    // Both token endpoints (Alexa uses the alias) must say "try again later". Problems are
    // collected, so that the recovery is still measured and reported.
    let mut problems: Vec<String> = Vec::new();
    let mut slowest_503 = Duration::ZERO;
    for (path, status, retry_after, body, took) in [t1, t2] {
        eprintln!("database down: POST {path} -> {status} in {took:?}: {body}");
        slowest_503 = slowest_503.max(took);
        let error = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        if status != 503 || !retry_after || error.as_deref() != Some("temporarily_unavailable") {
            problems.push(format!(
                "POST {path} (refresh) while the database is down answered {status} \
                 (Retry-After: {retry_after}) {body}; expected 503 temporarily_unavailable"
            ));
        }
    }
    let outage_seen = killed_at.elapsed();
    // Keep it down a little longer under load.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = load.stats.ok.load(Ordering::SeqCst);

    // Bring the database back; ma-idp is not touched.
    pg.start();
    let mut up = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if pg.accepts().await {
            up = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let up = up.expect("the restarted cluster accepts connections");
    let down_for = up - killed_at;

    // Recovery: the first successful refresh of the probe family after the database is up.
    let mut recovered = None;
    let mut probe_statuses: BTreeMap<u16, u64> = BTreeMap::new();
    while up.elapsed() < Duration::from_secs(20) {
        match refresh_once(&http, &base, &setup, &probe_token).await {
            Outcome::Ok { refresh: next, .. } => {
                probe_token = next;
                recovered = Some(up.elapsed());
                break;
            }
            Outcome::Conn => *probe_statuses.entry(0).or_default() += 1,
            Outcome::Status(s, b) => {
                *probe_statuses.entry(s).or_default() += 1;
                assert_eq!(s, 503, "while recovering: {s} {b}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = recovered.expect("ma-idp serves refreshes again");
    let mut ready_again = None;
    while up.elapsed() < Duration::from_secs(20) {
        let r = http.get(format!("{base}/ready")).send().await.unwrap();
        if r.status() == 200 {
            ready_again = Some(up.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.finish().await;
    let stats = &load.stats;
    let ok = stats.ok.load(Ordering::SeqCst);
    let load_recovered_ms = stats
        .last_ok_ms
        .load(Ordering::SeqCst)
        .saturating_sub((up - t0).as_millis() as u64);
    eprintln!(
        "database_crash_recovers_without_restart: {CLIENTS} clients, {ok} refreshes \
         ({before_kill} before the kill, {} while down), {} connection errors, {} answers 503, \
         statuses {:?}; outage probes done {outage_seen:?} after the kill (slowest token answer {slowest_503:?}); database down {down_for:?}; \
         first refresh {recovered:?} after the database accepted connections (probe statuses \
         meanwhile {probe_statuses:?}); /ready 200 again after {ready_again:?}; load still \
         refreshing {load_recovered_ms} ms after the database came back",
        during - before_kill,
        stats.conn_errors.load(Ordering::SeqCst),
        stats.unavailable.load(Ordering::SeqCst),
        stats.statuses.lock().unwrap(),
    );
    let mut bad = stats.bad.lock().unwrap().clone();
    bad.sort();
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for b in bad {
        *counted.entry(b).or_default() += 1;
    }
    for (b, n) in &counted {
        problems.push(format!("load: {n} x {b}"));
    }
    let first_503 = stats.first_503.lock().unwrap().clone();
    if let Some(b) = first_503 {
        let v: Value = serde_json::from_str(&b).expect("503 answers are JSON");
        assert_eq!(v["error"], "temporarily_unavailable", "{v}");
    }
    assert!(
        recovered <= Duration::from_secs(5),
        "ma-idp took {recovered:?} (> 5 s) to serve refreshes after the database came back"
    );
    assert!(
        ready_again.is_some_and(|d| d <= Duration::from_secs(5)),
        "/ready 200 again within 5 s: {ready_again:?}"
    );
    assert!(ok > during, "the load refreshes again after the recovery");
    load.assert_none_lost(&base, &setup).await;
    load.assert_grace_retries(&base, &setup, &before_crash)
        .await;
    load.assert_none_lost(&base, &setup).await;
    match refresh_once(&http, &base, &setup, &probe_token).await {
        Outcome::Ok { .. } => {}
        _ => panic!("the probe family's newest token is lost"),
    }
    eprintln!("all {} refresh tokens still refresh: 0 lost", CLIENTS + 1);
    let log = inst.log();
    assert!(
        !log.contains("panicked"),
        "a panic in the server log:\n{log}"
    );
    served.kill();
    assert!(
        problems.is_empty(),
        "wrong answers while the database was down:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// c. Two instances on one PostgreSQL database.
// ---------------------------------------------------------------------------------------

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn login_page_csrf(b: &Browser, url: &str) -> String {
    let r = b.get(url).await;
    assert_eq!(r.status(), 200, "login page at {url}");
    hidden(&r.text().await.unwrap(), "csrf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgresql() {
    let Some(a) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let setup = a.setup("home").await;
    // B: same database, same master key, same public URL (as behind one load balancer),
    // another port, the same clock.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port_b = listener.local_addr().unwrap().port();
    let mut settings_b = a.settings.clone();
    settings_b.listen = format!("127.0.0.1:{port_b}");
    let server_b = ma_idp::start_server(settings_b, a.clock.clone(), listener).unwrap();
    let base_b = format!("http://localhost:{port_b}");
    let b_url = |p: &str| format!("{base_b}{p}");
    let http = &a.http;
    let redirect = alexa_redirects()[0].clone();

    // 1. A code issued at A is redeemed at B.
    let (code, _) = a.authorize_code(&setup, &redirect, "two", None).await;
    let r = http
        .post(b_url("/alexa/token"))
        .header(
            "authorization",
            basic_header(&setup.client_id, &setup.client_secret),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a code from A redeemed at B");
    let tok: Value = r.json().await.unwrap();
    a.verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    let rt = tok["refresh_token"].as_str().unwrap().to_string();

    // 2. Revoked at A (RFC 7009): refresh at B fails.
    let (s, body, _) = a
        .token(
            "/t/home/revoke",
            &[("token", rt.as_str()), ("token_type_hint", "refresh_token")],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "revoke at A: {body}");
    let r = http
        .post(b_url("/alexa/token"))
        .header(
            "authorization",
            basic_header(&setup.client_id, &setup.client_secret),
        )
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a grant revoked at A is refused at B");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");

    // 3. A key rotation reaches B's JWKS within its cache time, and B signs with it.
    let before: Value = http
        .get(b_url("/t/home/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = a.svc.tenant("home").await.unwrap();
    let active = a.svc.rotate_keys(&tenant, "test", true).await.unwrap();
    let expected: Value =
        serde_json::from_str(&a.svc.keys.tenant_keys(&tenant.id).await.unwrap().jwks).unwrap();
    let expected = kids(&expected);
    assert_ne!(expected, kids(&before), "the rotation published new keys");
    let rotated_at = Instant::now();
    let mut seen = None;
    while rotated_at.elapsed() < Duration::from_secs(10) {
        let j: Value = http
            .get(b_url("/t/home/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if kids(&j) == expected {
            seen = Some(rotated_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.unwrap_or_else(|| panic!("B's JWKS lacks the rotated keys after 10 s"));
    let (code, _) = a.authorize_code(&setup, &redirect, "rot", None).await;
    let r = http
        .post(b_url("/alexa/token"))
        .header(
            "authorization",
            basic_header(&setup.client_id, &setup.client_secret),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tok: Value = r.json().await.unwrap();
    let header = jsonwebtoken::decode_header(tok["access_token"].as_str().unwrap()).unwrap();
    assert!(
        active.contains(header.kid.as_ref().unwrap()),
        "B signs with the rotated key {:?}, not {:?}",
        active,
        header.kid
    );
    eprintln!("rotation at A visible in B's JWKS after {seen:?}");

    // 4. A browser session signed in at A is valid at B (and ends at both).
    let browser = a.browser();
    let csrf = login_page_csrf(&browser, "/t/home/login").await;
    let r = browser
        .post(
            "/t/home/login",
            &[
                ("csrf", csrf.as_str()),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "signed in at A");
    assert_eq!(browser.get("/t/home/account").await.status(), 200);
    let r = browser.get(&b_url("/t/home/account")).await;
    assert_eq!(r.status(), 200, "A's session is valid at B");
    assert!(r.text().await.unwrap().contains("alice"));
    let stranger = a.browser();
    let r = stranger.get(&b_url("/t/home/account")).await;
    assert_eq!(r.status(), 302, "not signed in at B without the cookie");
    assert_eq!(location(&r), "/t/home/login");
    let csrf = login_page_csrf(&browser, "/t/home/logout").await;
    let r = browser
        .post(&b_url("/t/home/logout"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(r.status(), 200, "signed out at B");
    let r = browser.get("/t/home/account").await;
    assert_eq!(r.status(), 302, "signed out at B means signed out at A");

    // 5. The per-account lockout counts attempts at both instances.
    a.add_member(&tenant, "dave").await;
    let guesser = a.browser();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let at = |p: &str| {
            if i % 2 == 0 { p.to_string() } else { b_url(p) }
        };
        let csrf = login_page_csrf(&guesser, &at("/t/home/login")).await;
        let r = guesser
            .post(
                &at("/t/home/login"),
                &[
                    ("csrf", csrf.as_str()),
                    ("username", "dave"),
                    ("password", "wrong password"),
                ],
            )
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses,
        vec![401, 401, 401, 401, 401, 429],
        "5 wrong passwords over A and B lock the account; the 6th is refused"
    );
    // Locked at both, even with the right password.
    for base in [a.base.clone(), base_b.clone()] {
        let b = fresh_browser(&base);
        let csrf = login_page_csrf(&b, "/t/home/login").await;
        let r = b
            .post(
                "/t/home/login",
                &[
                    ("csrf", csrf.as_str()),
                    ("username", "dave"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status(), 429, "locked at {base}");
    }
    server_b.stop().await;
    a.stop().await;
}

/// Started with another master key than its database was made with, `serve` refuses to start
/// and says why (it would otherwise report ready and fail every token request).
async fn a_wrong_master_key_is_refused_at_start(backend: Backend) {
    let Some((db, _drop)) = database_for(backend).await else {
        return;
    };
    let inst = Install::new(db);
    inst.setup();
    let mut child = inst
        .cmd()
        .env("MA_IDP_MASTER_KEY", STANDARD.encode([7u8; 32]))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "http://localhost:8096",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ma-idp runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not refuse a wrong master key");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("the master key does not open this database's signing keys"),
        "{err}"
    );
    // With its own key it starts.
    let mut served = Served {
        child: None,
        port: free_port(),
    };
    served.start(&inst).await;
    served.kill();
}
