//! Logs of a complete flow at debug level (every target, the database layers included)
//! contain no password, code, token, client secret or session cookie.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use ma_idp_tests::*;
use serde_json::Value;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAP: OnceLock<Capture> = OnceLock::new();
    CAP.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        cap
    })
}

both_backends!(debug_logs_hold_no_secrets);

async fn debug_logs_hold_no_secrets(backend: Backend) {
    let cap = capture();
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = alexa_redirects()[0].clone();
    let verifier = new_verifier();
    let b = app.browser();
    let loc = b
        .sign_in_and_consent(
            "/t/home/authorize",
            &[
                ("client_id", setup.client_id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", redirect.clone()),
                ("state", "logstate".into()),
                ("nonce", "lognonce".into()),
                ("scope", "openid profile music.control".into()),
                ("code_challenge", pkce_challenge(&verifier)),
                ("code_challenge_method", "S256".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    let (code, _) = parse_code(&loc, &redirect, "logstate");
    let (s, tok, _) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
                ("code_verifier", &verifier),
                ("client_id", &setup.client_id),
                ("client_secret", &setup.client_secret),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, r1) = app
        .refresh(&setup, tok["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
    let at = r1["access_token"].as_str().unwrap().to_string();
    app.introspect(&setup, &at).await;
    let info: Value = app
        .http
        .get(app.url("/t/home/userinfo"))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["preferred_username"], "alice");
    // A failed sign-in and a wrong secret are logged as events, without the values.
    let (s, _, _) = app
        .token(
            "/t/home/token",
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            Some((&setup.client_id, "WrongSecretValue123")),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _, _) = app
        .token(
            "/t/home/revoke",
            &[("token", r1["refresh_token"].as_str().unwrap())],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    let cookies: Vec<String> = {
        let r = b.get("/t/home/login").await;
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect()
    };
    app.stop().await;

    let logs = String::from_utf8_lossy(&cap.0.lock().unwrap()).to_string();
    assert!(logs.contains("DEBUG"), "debug logging was captured");
    assert!(logs.contains("/t/home/token"), "requests were logged");
    let mut secrets: Vec<(&str, String)> = vec![
        ("password", PASSWORD.to_string()),
        ("client secret", setup.client_secret.clone()),
        ("wrong client secret", "WrongSecretValue123".into()),
        ("code", code.clone()),
        ("code verifier", verifier.clone()),
    ];
    for (name, v) in [
        ("access token", &tok["access_token"]),
        ("refresh token", &tok["refresh_token"]),
        ("id token", &tok["id_token"]),
    ] {
        secrets.push((name, v.as_str().unwrap().to_string()));
    }
    secrets.push(("refreshed access token", at.clone()));
    secrets.push((
        "refreshed refresh token",
        r1["refresh_token"].as_str().unwrap().to_string(),
    ));
    for c in cookies {
        if let Some((_, v)) = c.split_once('=') {
            secrets.push(("session cookie", v.to_string()));
        }
    }
    for (name, value) in secrets {
        // Tokens are long; a JWT's signature part is enough to spot a leak.
        let needle = value.rsplit('.').next().unwrap();
        assert!(!logs.contains(needle), "the {name} appears in the logs");
    }
}
