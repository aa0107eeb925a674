//! Passkeys over HTTP with webauthn-authenticator-rs's software passkey, on SQLite and
//! PostgreSQL: enrollment through a one-time link, sign-in without a username on the
//! authorize flow, the Alexa code exchange, and every refusal with a clear error.
//!
//! The software passkey cannot store resident credentials, so the test plays the part of a
//! discoverable authenticator: it answers a discoverable challenge with the credential it
//! holds and adds the user handle it was given at registration (the user handle is not
//! signed; the server must still tie it to the credential). Real discoverable credentials are
//! exercised by the Chromium test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ma_idp::secrets::Secret;
use ma_idp_tests::*;
use serde_json::{Value, json};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::{AuthenticatorBackend, WebauthnAuthenticator};
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

both_backends!(passkey_enrollment_and_sign_in, passkey_refusals);

struct Member {
    authenticator: SoftPasskey,
    cred_id: String,
    user_handle: String,
}

async fn post_json(b: &Browser, path: &str, csrf: &str, body: Value) -> (u16, Value) {
    let r = b
        .http
        .post(b.url(path))
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Whether an error answer's description contains `phrase`.
fn says(e: &Value, phrase: &str) -> bool {
    e["error_description"]
        .as_str()
        .is_some_and(|d| d.contains(phrase))
}

fn origin(app: &TestApp) -> Url {
    Url::parse(&app.base).unwrap()
}

/// Enroll a passkey through an enrollment link in this browser.
async fn enroll(app: &TestApp, b: &Browser, slug: &str, username: &str) -> Member {
    let t = app.svc.tenant(slug).await.unwrap();
    let u = app
        .svc
        .store
        .user_by_username(&t.id, username)
        .await
        .unwrap()
        .unwrap();
    let (link, _) = app
        .svc
        .create_enrollment_link(&t, &u, "test")
        .await
        .unwrap();
    let path = link.strip_prefix(&app.base).unwrap().to_string();
    let r = b.get(&path).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Create a passkey"), "{html}");
    let csrf = regex::Regex::new(r#"data-csrf="([^"]+)""#)
        .unwrap()
        .captures(&html)
        .unwrap()[1]
        .to_string();
    let (s, start) = post_json(b, &format!("{path}/start"), &csrf, json!({})).await;
    assert_eq!(s, 200, "{start}");
    let mut options = start["options"].clone();
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"], "required",
        "discoverable credentials"
    );
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let user_handle = options["publicKey"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The software passkey cannot keep resident keys.
    options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("discouraged");
    options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let mut authenticator = SoftPasskey::new(true);
    let cred = authenticator
        .do_registration(origin(app), ccr)
        .expect("software passkey registers");
    let cred_id = cred.id.clone();
    let (s, done) = post_json(
        b,
        &format!("{path}/finish"),
        &csrf,
        json!({"ceremony": start["ceremony"], "credential": cred, "name": "Test phone"}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["redirect"], format!("/t/{slug}/account?done=passkey"));
    // The link works once.
    let r = b.get(&path).await;
    assert_eq!(r.status(), 400);
    let (s, _) = post_json(b, &format!("{path}/start"), &csrf, json!({})).await;
    assert_eq!(s, 403);
    Member {
        authenticator,
        cred_id,
        user_handle,
    }
}

/// The login page's CSRF token and pending request id.
async fn login_page(b: &Browser, path: &str) -> (String, Option<String>) {
    let r = b.get(path).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Sign in with a passkey"));
    assert!(html.contains("/static/passkeys.js"));
    let csrf = hidden(&html, "csrf");
    let rid = regex::Regex::new(r#"name="rid" value="([^"]+)""#)
        .unwrap()
        .captures(&html)
        .map(|c| c[1].to_string());
    (csrf, rid)
}

/// Answer a sign-in challenge like a discoverable authenticator.
fn answer(m: &mut Member, options: &Value, origin: Url, discoverable: bool) -> Value {
    let mut options = options.clone();
    if discoverable {
        assert_eq!(
            options["publicKey"]["allowCredentials"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0),
            0
        );
        options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": m.cred_id}]);
    }
    let rcr: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    // The backend call, below the browser's own origin checks: a malicious client can send
    // anything, and the server must catch it.
    let cred =
        AuthenticatorBackend::perform_auth(&mut m.authenticator, origin, rcr.public_key, 60_000)
            .expect("software passkey signs");
    let mut v = serde_json::to_value(cred).unwrap();
    if discoverable {
        v["response"]["userHandle"] = json!(m.user_handle);
    }
    v
}

async fn passkey_sign_in(
    app: &TestApp,
    b: &Browser,
    m: &mut Member,
    slug: &str,
    page: &str,
    body_extra: Value,
) -> (u16, Value) {
    let (csrf, rid) = login_page(b, page).await;
    let (s, start) = post_json(
        b,
        &format!("/t/{slug}/passkeys/login/start"),
        &csrf,
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{start}");
    let cred = answer(m, &start["options"], origin(app), true);
    let mut body = json!({"ceremony": start["ceremony"], "credential": cred, "rid": rid});
    if let (Some(o), Some(e)) = (body.as_object_mut(), body_extra.as_object()) {
        o.extend(e.clone());
    }
    post_json(b, &format!("/t/{slug}/passkeys/login/finish"), &csrf, body).await
}

async fn passkey_enrollment_and_sign_in(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    // A member with no password at all.
    app.svc
        .create_user(&t, "bob", None, false, "test")
        .await
        .unwrap();
    let b = app.browser();
    let mut m = enroll(&app, &b, "home", "bob").await;
    // Enrolling signed bob in; the account page lists the passkey.
    let html = b.get("/t/home/account").await.text().await.unwrap();
    assert!(
        html.contains("Test phone") && html.contains("not used yet"),
        "{html}"
    );
    let csrf = hidden(&html, "csrf");
    assert_eq!(
        b.post("/t/home/logout", &[("csrf", &csrf)]).await.status(),
        200
    );

    // Alexa sends the browser to the authorize page; bob signs in without typing a name.
    let b = app.browser();
    let redirect = alexa_redirects()[0].clone();
    let q = vec![
        ("client_id", setup.client_id.clone()),
        ("response_type", "code".into()),
        ("redirect_uri", redirect.clone()),
        ("state", "passkey-state".into()),
        ("scope", "openid music.control".into()),
        ("nonce", "n1".into()),
    ];
    let page = reqwest::Url::parse_with_params(&app.url("/alexa/authorize"), &q).unwrap();
    let page = format!("{}?{}", page.path(), page.query().unwrap());
    let (s, done) = passkey_sign_in(&app, &b, &mut m, "home", &page, json!({"via": "alexa"})).await;
    assert_eq!(s, 200, "{done}");
    let next = done["redirect"].as_str().unwrap();
    assert!(next.starts_with("/alexa/authorize?rid="), "{next}");
    let html = b.get(next).await.text().await.unwrap();
    assert!(
        html.contains("Allow") && html.contains("bob"),
        "consent for bob: {html}"
    );
    let r = b
        .post(
            "/alexa/authorize",
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("rid", &hidden(&html, "rid")),
                ("action", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (code, _) = parse_code(&location(&r), &redirect, "passkey-state");
    // Amazon's servers exchange the code exactly as for a password sign-in.
    let (s, tok, _) = app
        .token(
            "/alexa/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &setup.client_id),
                ("redirect_uri", &redirect),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    let claims = app
        .verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    let id: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(tok["id_token"].as_str().unwrap().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let amr: Vec<&str> = id["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        amr.contains(&"user")
            && amr.contains(&"mfa")
            && (amr.contains(&"hwk") || amr.contains(&"swk")),
        "{amr:?}"
    );
    assert!(!amr.contains(&"pwd"));
    assert!(id["auth_time"].as_i64().unwrap() >= claims["iat"].as_i64().unwrap() - 60);

    // Username-first works too (discoverable like any other start: the options name no
    // credential, and the passkey must be bob's).
    let b2 = app.browser();
    let (csrf, _) = login_page(&b2, "/t/home/login").await;
    let (s, start) = post_json(
        &b2,
        "/t/home/passkeys/login/start",
        &csrf,
        json!({"username": "Bob"}),
    )
    .await;
    assert_eq!(s, 200);
    let cred = answer(&mut m, &start["options"], origin(&app), true);
    let (s, done) = post_json(
        &b2,
        "/t/home/passkeys/login/finish",
        &csrf,
        json!({"ceremony": start["ceremony"], "credential": cred}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["redirect"], "/t/home/account");
    let html = b2.get("/t/home/account").await.text().await.unwrap();
    assert!(html.contains("last used"), "{html}");

    // Rename it, then the audit log tells the story.
    let id_re = regex::Regex::new(r#"/account/passkeys/([^/"]+)/rename"#).unwrap();
    let pk_id = id_re.captures(&html).unwrap()[1].to_string();
    let r = b2
        .post(
            &format!("/t/home/account/passkeys/{pk_id}/rename"),
            &[("csrf", &hidden(&html, "csrf")), ("name", "Kitchen tablet")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        b2.get("/t/home/account")
            .await
            .text()
            .await
            .unwrap()
            .contains("Kitchen tablet")
    );
    let events = app.svc.store.audit_events(&t.id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "passkey_enrolled"));
    assert!(events.iter().any(|e| e.kind == "sign_in"
        && e.outcome == "ok"
        && e.detail.as_deref().unwrap_or("").contains("passkey")));

    // A second passkey, added from the account page while signed in.
    let html = b2.get("/t/home/account").await.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    let (s, start) = post_json(&b2, "/t/home/passkeys/register/start", &csrf, json!({})).await;
    assert_eq!(s, 200, "{start}");
    let mut options = start["options"].clone();
    let excluded = options["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(excluded, 1, "the existing passkey is excluded");
    options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("discouraged");
    options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
    let mut second = SoftPasskey::new(true);
    let cred = second
        .do_registration(origin(&app), serde_json::from_value(options).unwrap())
        .unwrap();
    let (s, done) = post_json(
        &b2,
        "/t/home/passkeys/register/finish",
        &csrf,
        json!({"ceremony": start["ceremony"], "credential": cred, "name": "Laptop"}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let html = b2.get("/t/home/account").await.text().await.unwrap();
    assert!(
        html.contains("Kitchen tablet") && html.contains("Laptop"),
        "both passkeys listed"
    );
    // Registering requires a signed-in session.
    let stranger = app.browser();
    let (csrf, _) = login_page(&stranger, "/t/home/login").await;
    let (s, _) = post_json(
        &stranger,
        "/t/home/passkeys/register/start",
        &csrf,
        json!({}),
    )
    .await;
    assert_eq!(s, 403);
    app.stop().await;
}

async fn passkey_refusals(backend: Backend) {
    // This test changes the tenant's policy through its own services (like a second instance
    // would), not through the server: the server's read cache would see that change only after
    // its TTL, so it is off here.
    let Some(app) = TestApp::start_with(backend, |s| s.cache_ttl_ms = 0).await else {
        return;
    };
    app.setup("home").await;
    app.setup("other").await;
    let t = app.svc.tenant("home").await.unwrap();
    app.svc
        .create_user(&t, "bob", None, false, "test")
        .await
        .unwrap();
    let b = app.browser();
    let mut m = enroll(&app, &b, "home", "bob").await;

    let fresh = app.browser();
    let (csrf, _) = login_page(&fresh, "/t/home/login").await;
    // A sign-in renews the CSRF token: after the genuine answer below, the next one is read.
    let csrf = std::cell::RefCell::new(csrf);
    let start = |body: Value| {
        let fresh = &fresh;
        let csrf = csrf.borrow().clone();
        async move {
            let (s, v) = post_json(fresh, "/t/home/passkeys/login/start", &csrf, body).await;
            assert_eq!(s, 200);
            v
        }
    };
    let finish = |ceremony: Value, cred: Value| {
        let fresh = &fresh;
        let csrf = csrf.borrow().clone();
        async move {
            post_json(
                fresh,
                "/t/home/passkeys/login/finish",
                &csrf,
                json!({"ceremony": ceremony, "credential": cred}),
            )
            .await
        }
    };

    // Every start is discoverable and names no credential, whatever the name (no such member,
    // alice, who has a password only, or bob, who has a passkey): the answer tells nothing of
    // whether the member exists or has passkeys. Its options are the unnamed start's but for
    // the challenge.
    let named = |v: &Value| -> usize {
        v["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let unnamed = start(json!({})).await;
    for name in ["nobody", " Nobody ", "alice", "bob", " Bob "] {
        let v = start(json!({ "username": name })).await;
        assert_eq!(named(&v), 0, "{name}: {v}");
        assert_eq!(v["options"], {
            let mut o = unnamed["options"].clone();
            o["publicKey"]["challenge"] = v["options"]["publicKey"]["challenge"].clone();
            o
        });
    }
    // Started with a name, finished with a passkey of another member (or of no one of that
    // name): refused, and not signed in.
    let long = "b".repeat(300);
    for name in ["alice", "nobody", long.as_str()] {
        let st = start(json!({ "username": name })).await;
        let cred = answer(&mut m, &st["options"], origin(&app), true);
        let (s, e) = finish(st["ceremony"].clone(), cred).await;
        assert_eq!(s, 400, "{name}: {e}");
        assert!(says(&e, "for another account"), "{name}: {e}");
        assert_ne!(fresh.get("/t/home/account").await.status(), 200, "{name}");
    }

    // A NUL (which PostgreSQL refuses in text) in the JSON bodies: ordinary answers, never
    // 503. A username no member can have gets the same kind of answer as an unknown one.
    let st = start(json!({"username": "bob\u{0}"})).await;
    assert!(st["ceremony"].is_string(), "{st}");
    assert_eq!(named(&st), 0, "{st}");
    let st = start(json!({})).await;
    let cred = answer(&mut m, &st["options"], origin(&app), true);
    let (s, e) = finish(json!("x\u{0}"), cred).await;
    assert_eq!(s, 400, "{e}");
    assert!(says(&e, "expired or was already used"), "{e}");
    // A wrong origin.
    let st = start(json!({})).await;
    let cred = answer(
        &mut m,
        &st["options"],
        Url::parse(&app.base.replace("localhost", "evil.example")).unwrap(),
        true,
    );
    let (s, e) = finish(st["ceremony"].clone(), cred).await;
    assert_eq!(s, 400, "{e}");
    assert!(says(&e, "could not be verified"), "{e}");
    // A wrong RP ID.
    let mut st = start(json!({})).await;
    st["options"]["publicKey"]["rpId"] = json!("example.com");
    let cred = answer(&mut m, &st["options"], origin(&app), true);
    let (s, e) = finish(st["ceremony"].clone(), cred).await;
    assert_eq!(s, 400, "{e}");
    // A replayed challenge.
    let st = start(json!({})).await;
    let cred = answer(&mut m, &st["options"], origin(&app), true);
    let (s, _) = finish(st["ceremony"].clone(), cred.clone()).await;
    assert_eq!(s, 200, "the genuine answer works once");
    let (s, e) = finish(st["ceremony"].clone(), cred.clone()).await;
    assert_eq!(
        s, 403,
        "the token from before the sign-in passes no more: {e}"
    );
    assert!(says(&e, "This page has expired"), "{e}");
    let r = fresh.get("/t/home/account").await;
    assert_eq!(r.status(), 200);
    let renewed = hidden(&r.text().await.unwrap(), "csrf");
    assert_ne!(renewed, *csrf.borrow());
    *csrf.borrow_mut() = renewed;
    let (s, e) = finish(st["ceremony"].clone(), cred).await;
    assert_eq!(s, 400);
    assert!(says(&e, "expired or was already used"), "{e}");
    // An expired challenge.
    let st = start(json!({})).await;
    let cred = answer(&mut m, &st["options"], origin(&app), true);
    app.clock.advance(301);
    let (s, e) = finish(st["ceremony"].clone(), cred).await;
    assert_eq!(s, 400);
    assert!(says(&e, "expired"), "{e}");
    // A forged user handle: the credential is bob's, the handle says someone else.
    let st = start(json!({})).await;
    let mut cred = answer(&mut m, &st["options"], origin(&app), true);
    cred["response"]["userHandle"] = json!(URL_SAFE_NO_PAD.encode(uuid::Uuid::now_v7().as_bytes()));
    let (s, _) = finish(st["ceremony"].clone(), cred).await;
    assert_eq!(s, 400);
    // A credential of another tenant.
    let ob = app.browser();
    let (ocsrf, _) = login_page(&ob, "/t/other/login").await;
    let (_, ost) = post_json(&ob, "/t/other/passkeys/login/start", &ocsrf, json!({})).await;
    let cred = answer(&mut m, &ost["options"], origin(&app), true);
    let (s, e) = post_json(
        &ob,
        "/t/other/passkeys/login/finish",
        &ocsrf,
        json!({"ceremony": ost["ceremony"], "credential": cred}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(says(&e, "not registered here"), "{e}");
    // Without the page's CSRF token.
    let (s, _) = post_json(&fresh, "/t/home/passkeys/login/start", "forged", json!({})).await;
    assert_eq!(s, 403);
    // A removed credential. Bob's only passkey is his only way in: his removal is refused
    // (the passkey stays and still signs in) until he has a password too.
    let html = b.get("/t/home/account").await.text().await.unwrap();
    let pk_id = regex::Regex::new(r#"/account/passkeys/([^/"]+)/remove"#)
        .unwrap()
        .captures(&html)
        .unwrap()[1]
        .to_string();
    let remove = format!("/t/home/account/passkeys/{pk_id}/remove");
    let r = b.post(&remove, &[("csrf", &hidden(&html, "csrf"))]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/t/home/account?refused=last-way"
    );
    let html = b
        .get("/t/home/account?refused=last-way")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("That is your last way to sign in, so it stays."),
        "{html}"
    );
    assert!(html.contains(&remove), "the passkey is still listed");
    let bob = app
        .svc
        .store
        .user_by_username(&t.id, "bob")
        .await
        .unwrap()
        .unwrap();
    let phc = app
        .svc
        .passwords
        .hash(&Secret::new("bob's long password"))
        .await
        .unwrap();
    assert!(
        app.svc
            .store
            .set_password(&t.id, &bob.id, phc, app.svc.now(), false)
            .await
            .unwrap()
    );
    let r = b.post(&remove, &[("csrf", &hidden(&html, "csrf"))]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/t/home/account?done=passkey-remove"
    );
    let st = start(json!({})).await;
    let cred = answer(&mut m, &st["options"], origin(&app), true);
    let (s, e) = finish(st["ceremony"].clone(), cred).await;
    assert_eq!(s, 400);
    assert!(says(&e, "not registered here"), "{e}");
    let events = app.svc.store.audit_events(&t.id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "passkey_removed"));
    assert!(
        events
            .iter()
            .any(|e| e.kind == "sign_in" && e.outcome == "failed")
    );

    // Tenant policy: passkeys required refuses passwords with a clear message.
    let t = app
        .svc
        .update_tenant(&t, None, Some(true), "test")
        .await
        .unwrap();
    // ... and then a password is no way in: Bob's new passkey, his only one, stays.
    let b = app.browser();
    enroll(&app, &b, "home", "bob").await;
    let html = b.get("/t/home/account").await.text().await.unwrap();
    let remove = regex::Regex::new(r#"/t/home/account/passkeys/[^/"]+/remove"#)
        .unwrap()
        .find(&html)
        .unwrap()
        .as_str()
        .to_string();
    let r = b.post(&remove, &[("csrf", &hidden(&html, "csrf"))]).await;
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/t/home/account?refused=last-way"
    );
    assert_eq!(
        app.svc
            .store
            .passkeys_of_user(&t.id, &bob.id)
            .await
            .unwrap()
            .len(),
        1
    );
    let pb = app.browser();
    let html = pb.get("/t/home/login").await.text().await.unwrap();
    assert!(
        !html.contains("type=\"password\""),
        "no password field when passkeys are required"
    );
    let r = pb
        .post(
            "/t/home/login",
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("passkeys only"));
    app.stop().await;
}
