//! The benchmark itself still works: every scenario runs without errors (1 s each, debug
//! binaries) on SQLite, and on PostgreSQL when it is reachable at `MA_IDP_TEST_PG` (as the
//! other tests; default `postgres://postgres@127.0.0.1:5432/postgres`; required with
//! `REQUIRE_POSTGRES=1`). Speed is not judged here (BENCHMARKS.md is the place); this only
//! catches a scenario the server stopped accepting, as when sign-ins began renewing the CSRF
//! token and every repeated sign-in of the benchmark was refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The debug `ma-idp` binary, built if needed.
fn server_binary() -> PathBuf {
    let root = workspace();
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "ma-idp", "--bin", "ma-idp"])
        .current_dir(&root)
        .status()
        .expect("cargo build runs");
    assert!(status.success(), "building ma-idp failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("debug").join("ma-idp")
}

/// The PostgreSQL admin URL the tests use.
fn pg_admin_url() -> String {
    std::env::var("MA_IDP_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether something answers at the URL's host and port.
fn postgres_reachable(admin_url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(u) = url::Url::parse(admin_url) else {
        return false;
    };
    let host = u.host_str().unwrap_or("127.0.0.1").to_string();
    let port = u.port().unwrap_or(5432);
    let Ok(mut addrs) = (host.as_str(), port).to_socket_addrs() else {
        return false;
    };
    addrs.any(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
    })
}

/// The scenario rows of a report (its tables of 11 columns, headers aside): (scenario,
/// req/s, errors).
fn scenario_rows(report: &str) -> Vec<(String, f64, u64)> {
    report
        .lines()
        .filter(|l| l.starts_with("| "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            // A scenario table's row: scenario, req/s, p50, p99, errors, and six more.
            if cells.len() != 11 {
                return None;
            }
            let rate = cells[1].parse::<f64>().ok()?;
            let errors = cells[4].parse::<u64>().ok()?;
            Some((cells[0].to_string(), rate, errors))
        })
        .collect()
}

#[test]
fn every_scenario_runs_without_errors() {
    let required = std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true");
    let pg = pg_admin_url();
    let backend = if postgres_reachable(&pg) {
        "both"
    } else {
        assert!(
            !required,
            "REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {pg}"
        );
        eprintln!("\n!!!!! PostgreSQL not reachable: the benchmark runs on SQLite only !!!!!\n");
        "sqlite"
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let run = Command::new(env!("CARGO_BIN_EXE_ma-idp-bench"))
        .args([
            "--backend",
            backend,
            "--duration",
            "1",
            "--rounds",
            "1",
            "--no-build",
        ])
        .args(["--pg-url", &pg])
        .arg("--bin")
        .arg(server_binary())
        .arg("--out")
        .arg(&out)
        .current_dir(workspace())
        .output()
        .expect("the benchmark runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "the benchmark failed:\n{log}");
    let report = std::fs::read_to_string(&out).unwrap();
    let rows = scenario_rows(&report);
    let backends = if backend == "both" { 2 } else { 1 };
    // discovery, JWKS, client_credentials, introspection, authorize page, sign-in, refresh,
    // authorize redirect, code exchange.
    assert_eq!(rows.len(), 9 * backends, "scenario rows:\n{report}");
    for (scenario, rate, errors) in &rows {
        assert_eq!(*errors, 0, "{scenario}: errors\n{report}\n{log}");
        assert!(*rate > 0.0, "{scenario}: no successful request\n{report}");
    }
    assert!(
        report.contains("password sign-in"),
        "the sign-in scenario ran: {report}"
    );
}
