//! The admin UI in a real browser, on both databases: headless Chromium runs
//! `tests/browser/admin-journey.mjs` (playwright-core) against the real server started here on
//! a fresh database with no tenant and no operator. The operator opens the one-time setup link,
//! creates a tenant, adds an Alexa skill and reads the account-linking values off the page,
//! creates a member; the member (another browser) links the account with those values; the
//! operator revokes the grant, and reads the audit log. Screenshots of every admin page at
//! 1280 px and 390 px go to tests/artifacts/screenshots/admin/<backend>/.
//!
//! The script prints what it read and saw as JSON; this test checks it against the server:
//! the values match the tenant's discovery document and the client in the database, the token
//! exchange with them worked, after revocation the refresh token answers `invalid_grant` (asked
//! again here) and introspection says inactive, and the audit log showed each step.
//!
//! Like browser.rs: a missing Chromium or node_modules skips loudly unless `REQUIRE_BROWSER=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ma_idp_tests::*;
use serde_json::Value;

both_backends!(admin_journey_in_chromium);

const CHROMIUM: &str = "/usr/bin/chromium";
const TENANT: &str = "home";
const OPERATOR: &str = "olivia";
const MEMBER: &str = "mia";

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

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

async fn admin_journey_in_chromium(backend: Backend) {
    if let Some(what) = missing() {
        if required() {
            panic!("REQUIRE_BROWSER=1 but {what}");
        }
        eprintln!(
            "\n!!!!! SKIPPING admin browser test on {backend:?}: {what} (run .ci/run to install it) !!!!!\n"
        );
        return;
    }
    // The server's warnings (a failed request says why), RUST_LOG to see more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    // A fresh database: no tenant, no operator, so a setup link.
    assert!(app.svc.store.tenants().await.unwrap().is_empty());
    let setup = app
        .svc
        .setup_link_if_needed()
        .await
        .unwrap()
        .expect("no operator yet: a setup link");
    assert!(setup.starts_with("/admin/setup/"), "{setup}");

    let backend_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let mut cmd = Command::new("node");
    cmd.arg("tests/browser/admin-journey.mjs")
        .current_dir(root())
        .env("ADMIN_JOURNEY_BASE", &app.base)
        .env("ADMIN_JOURNEY_SETUP_PATH", &setup)
        .env("ADMIN_JOURNEY_BACKEND", backend_name)
        .env("CHROMIUM", CHROMIUM);
    // The blocking wait runs off the async workers (the server answers on its own threads).
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "admin browser journey failed on {backend:?}:\n{text}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ADMIN_JOURNEY_RESULT "))
        .unwrap_or_else(|| panic!("no ADMIN_JOURNEY_RESULT line:\n{text}"));
    let r: Value = serde_json::from_str(line).expect("the result is JSON");
    check(&app, &r).await;
    app.stop().await;
}

/// The script's findings, against the server and its database.
async fn check(app: &TestApp, r: &Value) {
    let store = &app.svc.store;

    // 1. The setup link made the tenant and the operator, and is used up.
    let tenant = store
        .tenant_by_slug(TENANT)
        .await
        .unwrap()
        .expect("the tenant made through the setup link");
    let operator = store
        .user_by_username(&tenant.id, OPERATOR)
        .await
        .unwrap()
        .expect("the operator");
    assert_eq!(operator.role, "operator");
    assert_eq!(
        app.svc.setup_link_if_needed().await.unwrap(),
        None,
        "an operator exists: no new setup link"
    );
    let issuer = format!("{}/t/{TENANT}", app.base);
    assert_eq!(
        s(r, "issuer_listed"),
        issuer,
        "the tenants page shows the issuer"
    );

    // 3. The Alexa values shown are the tenant's endpoints and the client in the database.
    let discovery: Value = app
        .http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = &r["alexa"];
    assert_eq!(
        s(a, "authorization_uri"),
        s(&discovery, "authorization_endpoint")
    );
    assert_eq!(s(a, "authorization_uri"), format!("{issuer}/authorize"));
    assert_eq!(s(a, "access_token_uri"), s(&discovery, "token_endpoint"));
    assert_eq!(s(a, "access_token_uri"), format!("{issuer}/token"));
    let client_id = s(a, "client_id");
    let client = store
        .client_by_client_id(&tenant.id, client_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the Client ID shown, {client_id:?}, is a client of {TENANT}"))
        .client;
    assert!(!client.public, "an Alexa client is confidential");
    let secret = s(a, "secret");
    assert!(
        app.svc
            .secret_hasher
            .verify(secret, client.secret_hash.as_deref().unwrap()),
        "the secret shown is the client's"
    );
    assert_eq!(s(a, "authentication_scheme"), "HTTP Basic (Recommended)");
    let scopes = strings(&a["scopes"]);
    assert!(!scopes.is_empty());
    assert_eq!(
        scopes,
        client
            .scopes
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    );
    assert_eq!(strings(&a["domain_list"]), vec!["localhost".to_string()]);
    assert_eq!(
        s(a, "default_access_token_expiration"),
        tenant.access_token_ttl.to_string()
    );
    assert_eq!(
        r["settings_access_token_ttl"].as_str(),
        Some(tenant.access_token_ttl.to_string().as_str())
    );
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let redirects = strings(&a["redirect_uris"]);
    assert_eq!(redirects.len(), 3, "{redirects:?}");
    assert_eq!(
        sorted(redirects.clone()),
        sorted(alexa_redirects()),
        "the three Alexa redirect URLs"
    );
    assert_eq!(
        sorted(store.redirect_uris_of(&client.id).await.unwrap()),
        sorted(alexa_redirects())
    );
    assert!(redirects.contains(&s(r, "redirect_uri").to_string()));

    // 4. The member.
    let member = store
        .user_by_username(&tenant.id, MEMBER)
        .await
        .unwrap()
        .expect("the member");
    assert_eq!(member.role, "member");
    assert_eq!(s(r, "member_id"), member.id);

    // 5. The code exchange with the values shown worked: a token for the member and client.
    assert_eq!(r["exchange"]["token_type"], "Bearer");
    assert_eq!(
        r["exchange"]["expires_in"].as_i64(),
        Some(tenant.access_token_ttl),
        "expires_in is the Default Access Token Expiration shown"
    );
    let claims = app.verify_access_token(TENANT, s(r, "access_token")).await;
    assert_eq!(claims["sub"], member.id.as_str());
    assert_eq!(claims["client_id"], client_id);
    let granted: BTreeSet<&str> = claims["scope"].as_str().unwrap().split(' ').collect();
    for sc in &scopes {
        assert!(granted.contains(sc.as_str()), "{sc} granted: {claims}");
    }
    assert_eq!(r["refresh_before"]["status"], 200);
    assert_eq!(r["refresh_before"]["rotated"], true);

    // 6. Revoked in the UI: the refresh token is dead, asked again from here.
    assert_eq!(r["grant_row"]["User"], MEMBER);
    assert_eq!(r["grant_row"]["Client"], client.name.as_str());
    assert_eq!(r["refresh_after"]["status"], 400);
    assert_eq!(r["refresh_after"]["error"], "invalid_grant");
    let token_path = s(a, "access_token_uri").trim_start_matches(&app.base);
    let basic = Some((client_id, secret));
    let (status, body, _) = app
        .token(
            token_path,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", s(r, "refresh_token")),
            ],
            basic,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let introspection = format!("{issuer}/introspect");
    let introspection = introspection.trim_start_matches(&app.base);
    for token in [s(r, "refresh_token"), s(r, "access_token")] {
        let (status, body, _) = app.token(introspection, &[("token", token)], basic).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["active"], false, "revoked: {body}");
    }

    // 7. The audit log page showed every step, the revocation by the admin.
    let admin_label = format!("admin:{TENANT}/{OPERATOR}");
    let audit = r["audit"].as_array().expect("audit rows");
    let seen = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        audit
            .iter()
            .any(|e| e["kind"] == kind && e["outcome"] == "ok" && pred(e))
    };
    let any = |_: &Value| true;
    assert!(seen("tenant_created", &any), "tenant_created: {audit:?}");
    assert!(
        seen("operator_setup", &|e| e["user"] == OPERATOR),
        "operator_setup: {audit:?}"
    );
    assert!(
        seen("client_created", &|e| e["actor"] == admin_label.as_str()
            && e["client"] == client_id),
        "client_created by the admin: {audit:?}"
    );
    assert!(
        seen("user_created", &|e| e["actor"] == admin_label.as_str()
            && e["user"] == MEMBER),
        "user_created by the admin: {audit:?}"
    );
    assert!(
        seen("sign_in", &|e| e["user"] == MEMBER && e["actor"] == MEMBER),
        "sign_in of {MEMBER}: {audit:?}"
    );
    for kind in ["consent", "token_granted"] {
        assert!(
            seen(kind, &|e| e["user"] == MEMBER && e["client"] == client_id),
            "{kind} for {MEMBER} and {client_id}: {audit:?}"
        );
    }
    // The refresh is recorded with the client only (the server looks the user up later).
    assert!(
        seen("token_refreshed", &|e| e["client"] == client_id),
        "token_refreshed for {client_id}: {audit:?}"
    );
    assert!(
        seen("grant_revoked", &|e| e["actor"] == admin_label.as_str()
            && e["user"] == MEMBER
            && e["client"] == client_id),
        "grant_revoked by the admin: {audit:?}"
    );
    // The page shows what the database holds.
    let db_kinds: BTreeSet<String> = store
        .audit_events(&tenant.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for e in audit {
        assert!(db_kinds.contains(e["kind"].as_str().unwrap()), "{e}");
    }
    // The Kind filter showed the revocation and nothing else.
    let filtered = r["audit_grant_revoked"].as_array().unwrap();
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(filtered[0]["actor"], admin_label.as_str());
    // Every tenant's log: the second tenant's creation by the admin.
    let all = r["audit_all"].as_array().unwrap();
    assert!(
        all.iter().any(|e| e["kind"] == "tenant_created"
            && e["tenant"] == "cabin"
            && e["actor"] == admin_label.as_str()),
        "{all:?}"
    );
    assert!(store.tenant_by_slug("cabin").await.unwrap().is_some());

    // 9. The second Alexa skill added on the phone exists.
    let c2 = s(&r["alexa2"], "client_id");
    let c2 = store
        .client_by_client_id(&tenant.id, c2)
        .await
        .unwrap()
        .expect("the second skill's client")
        .client;
    assert_eq!(
        sorted(store.redirect_uris_of(&c2.id).await.unwrap()),
        sorted(ma_idp::services::alexa_redirect_uris("M2ABCDEFGHIJKL"))
    );

    // The screenshots are there and are PNGs.
    let shots = strings(&r["screenshots"]);
    for name in [
        "setup.desktop",
        "tenants.desktop",
        "dashboard.desktop",
        "users.desktop",
        "user.desktop",
        "clients.desktop",
        "alexa-values.desktop",
        "client.desktop",
        "grants.desktop",
        "confirm.desktop",
        "sessions.desktop",
        "keys.desktop",
        "audit.desktop",
        "settings.desktop",
        "login.desktop",
        "dashboard.phone",
        "clients.phone",
        "alexa-values.phone",
    ] {
        let path = shots
            .iter()
            .find(|p| p.ends_with(&format!("/{name}.png")))
            .unwrap_or_else(|| panic!("no screenshot {name}: {shots:?}"));
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 5_000,
            "{path} is a PNG with content"
        );
    }
}
