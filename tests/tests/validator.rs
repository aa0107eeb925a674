//! The Rust validator (crate `ma-idp-validator`) and `ma-idp token verify` against tokens the
//! real server issued: accepted when right, refused with a clear reason when not; key
//! rotation noticed without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ma_idp_tests::*;
use ma_idp_validator::{Config, Introspection, ValidationError, Validator};
use serde_json::{Value, json};

both_backends!(
    validator_accepts_and_refuses_with_reasons,
    validator_follows_key_rotation
);

async fn alexa_tokens(app: &TestApp, setup: &Setup) -> Value {
    let redirect = &alexa_redirects()[0];
    let path = format!("/t/{}/authorize", setup.slug);
    let (code, _) = app
        .authorize_code_at(&path, setup, redirect, "v", None)
        .await;
    let (s, tok, _) = app
        .token(
            &format!("/t/{}/token", setup.slug),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    tok
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(token: &str) -> (Value, Value, String) {
    let p: Vec<&str> = token.split('.').collect();
    let h = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[0]).unwrap()).unwrap();
    let c = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[1]).unwrap()).unwrap();
    (h, c, p[2].to_string())
}

async fn validator_accepts_and_refuses_with_reasons(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let home = app.setup("home").await;
    let other = app.setup("other").await;
    let issuer = app.url("/t/home");
    let v = Validator::new(Config::new(&issuer, "music-assistant"));
    let tok = alexa_tokens(&app, &home).await;
    let at = tok["access_token"].as_str().unwrap();
    let claims = v.validate(at).await.expect("a fresh token validates");
    assert_eq!(claims.client_id, "amazon-alexa");
    assert!(claims.has_scope("music.control"));

    // Required scope.
    let mut cfg = Config::new(&issuer, "music-assistant");
    cfg.required_scope = Some("music.admin".into());
    assert_eq!(
        Validator::new(cfg).validate(at).await,
        Err(ValidationError::MissingScope("music.admin".into()))
    );

    let (h, c, sig) = parts(at);
    // alg: none
    let mut none_h = h.clone();
    none_h["alg"] = json!("none");
    let forged = format!("{}.{}.", b64(&none_h), b64(&c));
    assert!(matches!(
        v.validate(&forged).await,
        Err(ValidationError::Malformed | ValidationError::AlgorithmNotAllowed(_))
    ));
    // HS256 signed with the public key as the HMAC secret.
    let jwks = app.jwks("home").await;
    let public = serde_json::to_vec(&jwks["keys"][0]).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = h["kid"].as_str().map(str::to_string);
    let hs_token =
        jsonwebtoken::encode(&hs, &c, &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap();
    assert!(matches!(
        v.validate(&hs_token).await,
        Err(ValidationError::AlgorithmNotAllowed(_))
    ));
    // Tampered payload.
    let mut c2 = c.clone();
    c2["scope"] = json!("music.control music.admin");
    let tampered = format!("{}.{}.{sig}", at.split('.').next().unwrap(), b64(&c2));
    assert_eq!(
        v.validate(&tampered).await,
        Err(ValidationError::BadSignature)
    );
    // Unknown kid, still unknown after refetching.
    let mut h2 = h.clone();
    h2["kid"] = json!("no-such-key");
    let unknown = format!("{}.{}.{sig}", b64(&h2), at.split('.').nth(1).unwrap());
    assert_eq!(
        v.validate(&unknown).await,
        Err(ValidationError::UnknownKey("no-such-key".into()))
    );
    // Wrong issuer and wrong audience.
    let wrong_iss = Validator::new(Config {
        jwks_uri: Some(format!("{issuer}/jwks.json")),
        ..Config::new(app.url("/t/elsewhere"), "music-assistant")
    });
    assert_eq!(
        wrong_iss.validate(at).await,
        Err(ValidationError::WrongIssuer)
    );
    let wrong_aud = Validator::new(Config::new(&issuer, "someone-else"));
    assert_eq!(
        wrong_aud.validate(at).await,
        Err(ValidationError::WrongAudience)
    );
    // A token of another tenant.
    let other_tok = alexa_tokens(&app, &other).await;
    let r = v
        .validate(other_tok["access_token"].as_str().unwrap())
        .await;
    assert!(
        matches!(
            r,
            Err(ValidationError::UnknownKey(_) | ValidationError::WrongIssuer)
        ),
        "{r:?}"
    );
    // Expired: issued two hours ago.
    app.clock.advance(-7200);
    let old = alexa_tokens(&app, &home).await;
    app.clock.advance(7200);
    assert_eq!(
        v.validate(old["access_token"].as_str().unwrap()).await,
        Err(ValidationError::Expired)
    );
    // Not yet valid: issued two hours from now.
    app.clock.advance(7200);
    let future = alexa_tokens(&app, &home).await;
    app.clock.advance(-7200);
    assert_eq!(
        v.validate(future["access_token"].as_str().unwrap()).await,
        Err(ValidationError::NotYetValid)
    );
    // Introspection catches a revocation before expiry.
    let mut cfg = Config::new(&issuer, "music-assistant");
    cfg.introspection = Some(Introspection {
        endpoint: format!("{issuer}/introspect"),
        client_id: home.client_id.clone(),
        client_secret: home.client_secret.clone(),
    });
    let vi = Validator::new(cfg);
    assert!(vi.validate(at).await.is_ok());
    let (s, _, _) = app
        .token(
            "/t/home/revoke",
            &[("token", tok["refresh_token"].as_str().unwrap())],
            Some((&home.client_id, &home.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(vi.validate(at).await, Err(ValidationError::Inactive));
    assert!(
        v.validate(at).await.is_ok(),
        "offline validation cannot see revocation until expiry"
    );

    // The CLI: exit 0 with the claims, exit 1 with the reason.
    let fresh = alexa_tokens(&app, &home).await;
    // `token verify` with the token as its last argument, or (`None`: no argument, or `-`)
    // on standard input, out of the process list.
    let token = fresh["access_token"].as_str().unwrap();
    let verify = |audience: &str, last: Option<&str>| {
        use std::io::Write;
        let mut args = vec![
            "token",
            "verify",
            "--issuer",
            &issuer,
            "--audience",
            audience,
        ];
        args.extend(last);
        let mut child = std::process::Command::new(binary())
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if last.is_none_or(|a| a == "-") {
            writeln!(stdin, "{token}").unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    // Accepted with the token as argument or as `-`: exit 0, the claims printed.
    for last in [token, "-"] {
        let out = verify("music-assistant", Some(last));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["client_id"], "amazon-alexa");
    }
    let out = verify("wrong", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong audience"));
    app.stop().await;
}

async fn validator_follows_key_rotation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let home = app.setup("home").await;
    let v = Validator::new(Config::new(app.url("/t/home"), "music-assistant"));
    let before = alexa_tokens(&app, &home).await;
    v.validate(before["access_token"].as_str().unwrap())
        .await
        .unwrap();
    let t = app.svc.tenant("home").await.unwrap();
    // Two rotations: the key that signs after the second was created by the first, so the
    // validator's cached JWKS (max-age 300) does not have it and must refetch on its kid.
    // Forced, as after a key is compromised: the second promotes a key published moments ago.
    app.svc.rotate_keys(&t, "test", true).await.unwrap();
    app.svc.rotate_keys(&t, "test", true).await.unwrap();
    app.clock.advance(10);
    let (s, after) = app
        .refresh(&home, before["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{after}");
    let new_kid = jsonwebtoken::decode_header(after["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    let old_kid = jsonwebtoken::decode_header(before["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid);
    v.validate(after["access_token"].as_str().unwrap())
        .await
        .expect("new key picked up without restart");
    v.validate(before["access_token"].as_str().unwrap())
        .await
        .expect("old key still accepted");
    app.stop().await;
}
