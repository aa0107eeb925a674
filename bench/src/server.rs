//! The ma-idp binary as a child process, its command line, and a scratch PostgreSQL database.
//! Every guard here cleans up on drop, so an error or Ctrl-C leaves nothing behind.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How to run `ma-idp` against one backend: the binary and its environment.
#[derive(Clone)]
pub struct Env {
    pub bin: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        // Nothing from the caller's environment may point ma-idp elsewhere.
        for (k, _) in std::env::vars() {
            if k.starts_with("MA_IDP_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Run a CLI command; its standard output on success.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut c = self.command();
        c.args(args)
            .env("RUST_LOG", "warn")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "ma-idp {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

/// A free TCP port on the loopback interface (bound and released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `ma-idp serve` as a child process. Killed on drop if still running.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    /// From spawn to the first 200 on /ready.
    pub ready_after: Duration,
    log: PathBuf,
}

impl Server {
    pub async fn start(env: &Env, port: u16, log: &Path) -> Result<Server> {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut c = env.command();
        c.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--public-url",
            &format!("http://localhost:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone()?))
        .stderr(Stdio::from(logf));
        let probe = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://127.0.0.1:{port}/ready");
        let t0 = Instant::now();
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {}", env.bin.display()))?;
        let mut server = Server {
            pid: child.id(),
            child: Some(child),
            ready_after: Duration::ZERO,
            log: log.to_path_buf(),
        };
        loop {
            if let Ok(r) = probe.get(&url).send().await
                && r.status() == 200
            {
                server.ready_after = t0.elapsed();
                return Ok(server);
            }
            if let Some(ch) = server.child.as_mut()
                && let Some(status) = ch.try_wait()?
            {
                server.child = None;
                bail!(
                    "ma-idp serve exited with {status} before it was ready:\n{}",
                    server.log_tail(20)
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "ma-idp serve not ready after 60 s:\n{}",
                    server.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stop gracefully (SIGTERM), killing after 30 s. Returns how long it took.
    pub async fn stop(mut self) -> Result<Duration> {
        let t0 = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        loop {
            if child.try_wait()?.is_some() {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("ma-idp did not stop within 30 s of SIGTERM; killed");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the PostgreSQL admin connection points: a `postgres://user[:password]@host:port/db`
/// URL, kept whole (password, `sslmode` and other parameters) for every connection made from
/// it, by psql, pgbench and ma-idp alike. Its `Debug` leaves out the password.
#[derive(Clone)]
pub struct PgAdmin {
    url: url::Url,
    pub db: String,
}

impl std::fmt::Debug for PgAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut u = self.url.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        f.debug_struct("PgAdmin").field("url", &u.as_str()).finish()
    }
}

impl PgAdmin {
    pub fn parse(u: &str) -> Result<PgAdmin> {
        let mut url = url::Url::parse(u).context("bad PostgreSQL URL")?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            bail!("a PostgreSQL URL starts with postgres://");
        }
        if url.host_str().is_none() {
            bail!("a PostgreSQL URL needs a host");
        }
        if url.username().is_empty() {
            let _ = url.set_username("postgres");
        }
        let db = match url.path().trim_start_matches('/') {
            "" => "postgres".to_string(),
            d => d.to_string(),
        };
        Ok(PgAdmin { url, db })
    }

    /// Run SQL with psql in database `db`; its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new("psql")
            .args([
                "-d",
                &self.url_for(db),
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-tA",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The same server and settings, database `db`.
    pub fn url_for(&self, db: &str) -> String {
        let mut u = self.url.clone();
        u.set_path(&format!("/{db}"));
        u.to_string()
    }
}

/// A fresh PostgreSQL database, dropped on drop.
pub struct PgDb {
    pub admin: PgAdmin,
    pub name: String,
}

impl PgDb {
    pub fn create(admin: &PgAdmin) -> Result<PgDb> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("ma_idp_bench_{}_{nanos}", std::process::id());
        admin.psql(&admin.db, &format!("CREATE DATABASE {name}"))?;
        Ok(PgDb {
            admin: admin.clone(),
            name,
        })
    }

    pub fn url(&self) -> String {
        self.admin.url_for(&self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Err(e) = self.admin.psql(
            &self.admin.db,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("warning: could not drop database {}: {e:#}", self.name);
        }
    }
}

/// The server's log lines at WARN or ERROR (the server runs with RUST_LOG=warn).
pub fn log_problems(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
        .map(str::to_string)
        .collect()
}
