//! The real `ma-idp` binary: the design's command line, `--json` output, and `serve` on a
//! data directory (SQLite) or a database URL (PostgreSQL) set up by those commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

use ma_idp_tests::*;
use serde_json::Value;

both_backends!(cli_sets_up_alexa_and_serve_links_it);

struct Cli {
    dir: tempfile::TempDir,
    db: Option<String>,
}

impl Cli {
    fn cmd(&self) -> Command {
        let mut c = Command::new(binary());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MA_IDP_DATA_DIR", self.dir.path())
            .env("RUST_LOG", "warn");
        if let Some(db) = &self.db {
            c.env("MA_IDP_DATABASE_URL", db);
        }
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = self.cmd();
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("ma-idp runs");
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
        assert_eq!(out.lines().count(), 1, "--json prints one object: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

async fn cli_sets_up_alexa_and_serve_links_it(backend: Backend) {
    let Some((db, _drop_database)) = database_for(backend).await else {
        return;
    };
    let cli = Cli {
        dir: tempfile::tempdir().unwrap(),
        db,
    };
    let (ok, _, err) = cli.run(&["migrate"], None);
    assert!(ok, "{err}");
    // A log filter that does not parse is an error naming where it came from.
    for (var, source) in [("RUST_LOG", "RUST_LOG"), ("MA_IDP_LOG", "log setting")] {
        let out = cli
            .cmd()
            .env_remove("RUST_LOG")
            .env(var, "info,ma_idp=verbose")
            .arg("migrate")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(source),
            "{var}: {err}"
        );
    }
    // A slug that looks like a number or a boolean is a slug all the same.
    for slug in ["2024", "true"] {
        let out = cli
            .cmd()
            .env("MA_IDP_DEFAULT_TENANT", slug)
            .arg("migrate")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{slug}: {err}");
    }
    let t = cli.json(
        &["tenant", "create", "home", "--name", "Our home", "--json"],
        None,
    );
    assert_eq!(t["slug"], "home");
    assert_eq!(t["name"], "Our home");
    let (ok, _, err) = cli.run(&["tenant", "create", "home"], None);
    assert!(!ok, "a duplicate tenant is refused");
    assert!(err.contains("already exists"), "{err}");
    let (ok, _, err) = cli.run(&["tenant", "create", "Bad Slug!"], None);
    assert!(!ok);
    assert!(err.contains("slug"), "{err}");
    let u = cli.json(
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
    assert_eq!(u["username"], "alice");
    assert_eq!(u["role"], "member");
    let admin = cli.json(
        &[
            "user", "create", "--tenant", "home", "bob", "--admin", "--json",
        ],
        None,
    );
    assert_eq!(admin["role"], "operator");
    let (ok, _, err) = cli.run(&["user", "create", "--tenant", "nope", "carol"], None);
    assert!(!ok && err.contains("nope"), "{err}");
    let c = cli.json(
        &[
            "client", "create", "--tenant", "home", "--name", "Alexa", "--alexa", VENDOR, "--json",
        ],
        None,
    );
    let uris: Vec<String> = c["redirect_uris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        uris,
        alexa_redirects(),
        "the three regional Alexa redirect URIs"
    );
    let client_id = c["client_id"].as_str().unwrap().to_string();
    let secret = c["client_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 43, "a high-entropy secret");
    let (ok, _, err) = cli.run(
        &[
            "client",
            "create",
            "--tenant",
            "home",
            "--name",
            "x",
            "--redirect-uri",
            "http://evil.example/cb",
        ],
        None,
    );
    assert!(!ok && err.contains("https"), "{err}");
    // An audience that no token could carry well: refused, naming it.
    let long = "a".repeat(201);
    for audience in ["", "two words", long.as_str()] {
        let (ok, _, err) = cli.run(
            &[
                "client",
                "create",
                "--tenant",
                "home",
                "--name",
                "x",
                "--redirect-uri",
                "https://x.example/cb",
                "--audience",
                audience,
            ],
            None,
        );
        assert!(!ok && err.contains("audience"), "{audience:?}: {err}");
    }
    let public = cli.json(
        &[
            "client",
            "create",
            "--tenant",
            "home",
            "--name",
            "App",
            "--public",
            "--redirect-uri",
            "http://localhost:7777/cb",
            "--json",
        ],
        None,
    );
    assert!(public["client_secret"].is_null());
    let link = cli.json(
        &["user", "enroll-link", "--tenant", "home", "bob", "--json"],
        None,
    );
    assert!(
        link["url"].as_str().unwrap().contains("/t/home/enroll/"),
        "{link}"
    );
    let pol = cli.json(
        &[
            "tenant",
            "set",
            "home",
            "--passkeys-required",
            "false",
            "--json",
        ],
        None,
    );
    assert_eq!(pol["passkeys_required"], false);
    // The next keys were made with the tenant, moments ago: refused unless forced.
    let (ok, _, err) = cli.run(&["keys", "rotate", "--tenant", "home", "--json"], None);
    assert!(!ok, "a rotation promoting keys made moments ago is refused");
    assert!(err.contains("Too soon") && err.contains("force"), "{err}");
    let keys = cli.json(
        &["keys", "rotate", "--tenant", "home", "--force", "--json"],
        None,
    );
    assert_eq!(keys["active_kids"].as_array().unwrap().len(), 3);

    // serve, on the same data directory / database.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = cli
        .cmd()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--public-url",
            &format!("http://localhost:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://localhost:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "serve becomes ready");
    let jwks: Value = http
        .get(format!("{base}/t/home/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for kid in keys["active_kids"].as_array().unwrap() {
        assert!(published.contains(&kid.as_str().unwrap()));
    }
    // Link Alexa with the values the CLI printed.
    let browser = Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap(),
        base: base.clone(),
    };
    let redirect = &uris[1];
    let loc = browser
        .sign_in_and_consent(
            "/alexa/authorize",
            &[
                ("client_id", client_id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", redirect.clone()),
                ("state", "cli".into()),
                ("scope", "music.control user:read".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    let (code, _) = parse_code(&loc, redirect, "cli");
    let r = http
        .post(format!("{base}/alexa/token"))
        .header("authorization", basic_header(&client_id, &secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let tok: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{tok}");
    assert!(tok["refresh_token"].is_string());
    let _ = child.kill();
    let _ = child.wait();
}
