//! Interoperability suites in other languages, run against the real server on both
//! databases: the Python validator for Music Assistant and Authlib (interop/python), and
//! panva's openid-client (interop/js). Their dependencies are installed by `.ci/run`;
//! locally a missing toolchain skips loudly unless `REQUIRE_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use ma_idp_tests::*;

both_backends!(python_validator_and_authlib, javascript_openid_client);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn required() -> bool {
    std::env::var("REQUIRE_INTEROP").is_ok_and(|v| v == "1" || v == "true")
}

fn skip(what: &str) {
    if required() {
        panic!("REQUIRE_INTEROP=1 but {what}");
    }
    eprintln!("\n!!!!! SKIPPING interop suite: {what} (run .ci/run to install it) !!!!!\n");
}

async fn database(backend: Backend) -> Option<Option<String>> {
    match backend {
        Backend::Sqlite => Some(None),
        Backend::Postgres => fresh_pg_database().await.map(Some),
    }
}

fn run(mut cmd: Command, backend: Backend, db: Option<String>) {
    let _drop_database = DropDatabase(db.clone());
    cmd.current_dir(root()).env("MA_IDP_BIN", binary()).env(
        "MA_IDP_TEST_BACKEND",
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        },
    );
    if let Some(db) = db {
        cmd.env("MA_IDP_TEST_DATABASE_URL", db);
    }
    let out = cmd.output().expect("the suite runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "interop suite failed on {backend:?}:\n{text}"
    );
    eprintln!("{text}");
}

async fn python_validator_and_authlib(backend: Backend) {
    let ok = Command::new("python3")
        .args(["-c", "import jwt, authlib, pytest, requests, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return skip("python3 with PyJWT[crypto], authlib, pytest and requests is not installed");
    }
    let Some(db) = database(backend).await else {
        return;
    };
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "interop/python",
    ]);
    run(cmd, backend, db);
}

async fn javascript_openid_client(backend: Backend) {
    if !root()
        .join("interop/js/node_modules/openid-client")
        .exists()
    {
        return skip("interop/js/node_modules is not installed (npm ci --prefix interop/js)");
    }
    let Some(db) = database(backend).await else {
        return;
    };
    let mut cmd = Command::new("node");
    cmd.arg("interop/js/test.mjs");
    run(cmd, backend, db);
}
