//! The passkey pages in a real browser, on both databases: headless Chromium with a DevTools
//! WebAuthn virtual authenticator runs `tests/browser/passkeys.mjs` (playwright-core) against
//! the real `ma-idp` binary — enrollment through a one-time link, discoverable sign-in by
//! autofill and by the button, consent, the Alexa redirect and code exchange, screenshots at
//! phone and desktop width (tests/artifacts/screenshots/<backend>/) and layout checks.
//!
//! `.ci/run` installs Chromium (`apt-get install chromium`) and the Node dependencies
//! (`npm ci --prefix tests/browser`); locally a missing browser skips loudly unless
//! `REQUIRE_BROWSER=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ma_idp_tests::*;

both_backends!(passkeys_in_chromium);

const CHROMIUM: &str = "/usr/bin/chromium";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn required() -> bool {
    std::env::var("REQUIRE_BROWSER").is_ok_and(|v| v == "1" || v == "true")
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is not installed (apt-get install -y chromium)"
        ));
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some(
            "tests/browser/node_modules is not installed (npm ci --prefix tests/browser)".into(),
        );
    }
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        return Some("node is not installed".into());
    }
    None
}

async fn passkeys_in_chromium(backend: Backend) {
    if let Some(what) = missing() {
        if required() {
            panic!("REQUIRE_BROWSER=1 but {what}");
        }
        eprintln!(
            "\n!!!!! SKIPPING browser test on {backend:?}: {what} (run .ci/run to install it) !!!!!\n"
        );
        return;
    }
    let Some((db, _drop_database)) = database_for(backend).await else {
        return;
    };
    let mut cmd = Command::new("node");
    cmd.arg("tests/browser/passkeys.mjs")
        .current_dir(root())
        .env("MA_IDP_BIN", binary())
        .env("CHROMIUM", CHROMIUM)
        .env(
            "MA_IDP_TEST_BACKEND",
            match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            },
        );
    if let Some(db) = db {
        cmd.env("MA_IDP_TEST_DATABASE_URL", db);
    }
    // The blocking wait runs off the async workers.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("node runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test failed on {backend:?}:\n{text}"
    );
    eprintln!("{text}");
}
