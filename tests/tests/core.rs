//! The core authorization server, driven over HTTP exactly as Alexa and a phone browser do,
//! on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ma_idp::tokens::keys::MIN_NEXT_KEY_AGE;
use ma_idp_tests::*;
use serde_json::Value;

both_backends!(
    alexa_links_in_every_region,
    a_code_replayed_by_another_client_revokes_nothing,
    a_used_public_code_revokes_only_with_its_verifier,
    a_public_clients_rotated_refresh_token_gets_no_retry,
    an_authorization_request_may_come_as_a_form_post,
    refresh_replay_after_grace_revokes_family,
    wrong_client_secret_is_invalid_client,
    unknown_client_and_bad_redirects_show_a_page,
    wrong_pkce_verifier_is_refused,
    plain_pkce_is_refused_and_public_clients_need_pkce,
    expired_code_is_refused,
    a_code_needs_the_redirect_uri_it_was_issued_for,
    code_redeemed_twice_revokes_tokens,
    refresh_after_revocation_fails,
    code_of_a_withdrawn_authorization_is_refused,
    malformed_requests_get_rfc_errors,
    concurrent_redemptions_only_one_wins,
    tokens_survive_a_restart,
    tenants_are_isolated,
    discovery_is_complete_and_matches_issuer,
    openid_flow_gives_id_token_and_userinfo,
    client_credentials_and_access_token_revocation,
    key_rotation_keeps_old_tokens_valid,
    consent_is_remembered_and_pages_are_safe,
    account_page_revokes_a_link,
    health_ready_metrics,
    introspection_reports_token_details,
    password_hash_is_upgraded_at_sign_in,
    concurrent_refreshes_of_one_token_are_retries,
    concurrent_introspections_answer_each_token,
    refresh_in_one_statement_where_it_can,
    code_exchange_writes_with_the_code_or_not_at_all,
    concurrent_one_call_refreshes_share_commits,
    reauthentication_is_not_skipped_nor_endless,
    a_pending_request_lives_on_while_its_pages_are_used,
    unknown_and_misused_paths_get_plain_errors,
    a_native_app_on_ipv6_loopback_gets_its_answers,
    a_client_disabled_while_its_request_waits_gets_no_consent,
    a_client_changed_while_its_request_waits_gets_no_answer,
    a_native_app_on_a_loopback_ip_may_use_any_port,
    select_account_shows_who_is_signed_in,
);

/// A public client `phone` of tenant `home` (no secret; PKCE required), on a loopback
/// redirect URI.
async fn add_phone_app(app: &TestApp) {
    add_native_app(app, "phone", "Phone app", "http://localhost:9999/cb").await;
}

/// A public (PKCE) client of tenant `home`, as a native app registers one (RFC 8252).
async fn add_native_app(app: &TestApp, client_id: &str, name: &str, redirect_uri: &str) {
    let t = app.svc.tenant("home").await.unwrap();
    app.svc
        .create_client(
            &t,
            ma_idp::services::ClientSpec {
                name: name.into(),
                client_id: Some(client_id.into()),
                redirect_uris: vec![redirect_uri.into()],
                public: true,
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
}

fn long_state() -> String {
    // 500 characters, with characters that need encoding.
    let mut s = String::new();
    while s.len() < 500 {
        s.push_str("Ab0-_.~+/= %&é");
    }
    s.chars().take(500).collect()
}

async fn exchange(
    app: &TestApp,
    setup: &Setup,
    code: &str,
    redirect: &str,
    basic: bool,
    verifier: Option<&str>,
) -> (reqwest::StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    let (s, body, _) = if basic {
        form.push(("client_id", &setup.client_id));
        app.token(
            "/alexa/token",
            &form,
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await
    } else {
        form.push(("client_id", &setup.client_id));
        form.push(("client_secret", &setup.client_secret));
        app.token("/alexa/token", &form, None).await
    };
    (s, body)
}

async fn alexa_links_in_every_region(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let state = long_state();
    // (HTTP Basic?, PKCE?) varied across the three regions and more.
    let cases = [(true, true), (false, false), (true, false), (false, true)];
    for (i, redirect) in alexa_redirects()
        .iter()
        .chain(alexa_redirects().iter().take(1))
        .enumerate()
    {
        let (basic, with_pkce) = cases[i];
        let verifier = new_verifier();
        let (code, got_state) = app
            .authorize_code(
                &setup,
                redirect,
                &state,
                with_pkce.then_some(verifier.as_str()),
            )
            .await;
        assert_eq!(got_state, state);
        let (s, tok) = exchange(
            &app,
            &setup,
            &code,
            redirect,
            basic,
            with_pkce.then_some(verifier.as_str()),
        )
        .await;
        assert_eq!(s, 200, "exchange {i}: {tok}");
        assert_eq!(tok["token_type"], "Bearer");
        assert!(tok["expires_in"].is_i64(), "expires_in is an integer");
        assert!(tok["expires_in"].as_i64().unwrap() >= 360);
        assert!(tok["access_token"].as_str().unwrap().len() < 2048);
        assert!(tok["refresh_token"].as_str().unwrap().len() < 2048);
        assert_eq!(tok["scope"], "music.control user:read");
        let claims = app
            .verify_access_token("home", tok["access_token"].as_str().unwrap())
            .await;
        assert_eq!(claims["client_id"], "amazon-alexa");
        assert_eq!(claims["scope"], "music.control user:read");
        for c in ["iss", "sub", "aud", "exp", "iat", "jti", "auth_time"] {
            assert!(!claims[c].is_null(), "claim {c} present");
        }
        // Refresh like Alexa: a new pair, an integer expires_in.
        let old = tok["refresh_token"].as_str().unwrap().to_string();
        let (s, r1) = app.refresh(&setup, &old).await;
        assert_eq!(s, 200, "{r1}");
        assert!(r1["expires_in"].is_i64());
        assert_ne!(r1["refresh_token"], tok["refresh_token"]);
        assert_ne!(r1["access_token"], tok["access_token"]);
        app.verify_access_token("home", r1["access_token"].as_str().unwrap())
            .await;
        // Alexa retries with the old token after a timeout: still works inside the grace window.
        let (s, r2) = app.refresh(&setup, &old).await;
        assert_eq!(s, 200, "retry inside the grace window: {r2}");
        assert!(r2["refresh_token"].is_string());
    }
    app.stop().await;
}

async fn refresh_replay_after_grace_revokes_family(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[1];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200);
    let first = tok["refresh_token"].as_str().unwrap().to_string();
    let (s, r1) = app.refresh(&setup, &first).await;
    assert_eq!(s, 200);
    let second = r1["refresh_token"].as_str().unwrap().to_string();
    // Inside the grace window, a retry works and does not log the household out.
    let (s, retry) = app.refresh(&setup, &first).await;
    assert_eq!(s, 200);
    let third = retry["refresh_token"].as_str().unwrap().to_string();
    // Both are audited, naming the member and the client (on PostgreSQL the first refresh
    // writes its event in the same statement as the rotation, the retry in a transaction).
    let t = app.svc.tenant("home").await.unwrap();
    let alice = app.member(&t.id, "alice").await;
    let refreshed = app.audited(&t.id, "token_refreshed", "ok").await;
    assert_eq!(refreshed.len(), 2, "{refreshed:?}");
    for e in &refreshed {
        assert_eq!(e.user_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(e.client_id.as_deref(), Some(setup.client_id.as_str()));
    }
    // A month later the live token still refreshes (sliding lifetime, no browser session).
    app.clock.advance(30 * 24 * 3600);
    let (s, r2) = app.refresh(&setup, &second).await;
    assert_eq!(s, 200, "{r2}");
    let live = r2["refresh_token"].as_str().unwrap().to_string();
    let access = r2["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.introspect(&setup, &access).await["active"], true);
    // The old token again, long after the grace window: theft. The whole family is revoked.
    let (s, e) = app.refresh(&setup, &first).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"], "invalid_grant");
    for t in [&live, &third] {
        let (s, e) = app.refresh(&setup, t).await;
        assert_eq!(s, 400, "family member still works: {e}");
        assert_eq!(e["error"], "invalid_grant");
    }
    assert_eq!(app.introspect(&setup, &access).await["active"], false);
    assert_eq!(app.introspect(&setup, &live).await["active"], false);
    app.stop().await;
}

async fn wrong_client_secret_is_invalid_client(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
    ];
    let (s, body, headers) = app
        .token(
            "/alexa/token",
            &form,
            Some((&setup.client_id, "wrong-secret")),
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let mut f2 = form.to_vec();
    f2.push(("client_id", "amazon-alexa"));
    f2.push(("client_secret", "wrong"));
    let (s, body, headers) = app.token("/alexa/token", &f2, None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "invalid_client");
    // Every 401 carries a challenge (RFC 9110 §15.5.2), also when the secret came in the body.
    assert!(
        headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    // Unknown client.
    let (s, body, _) = app
        .token("/alexa/token", &form, Some(("nobody", "x")))
        .await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "invalid_client");
    // The right secret with a raw `&` and more after it (no form-urlencoded value holds a
    // raw `&`): refused whole, not cut at the `&`.
    use base64::Engine as _;
    let raw = |v: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    };
    let post = |headers: Vec<String>| {
        let mut r = app.http.post(app.url("/alexa/token")).form(&form);
        for h in headers {
            r = r.header("authorization", h);
        }
        async move {
            let r = r.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let with_junk = format!("{}:{}&junk", setup.client_id, setup.client_secret);
    let (s, body) = post(vec![raw(&with_junk)]).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // Two Authorization headers (the first one right): which one is meant? Refused.
    let right = basic_header(&setup.client_id, &setup.client_secret);
    let (s, body) = post(vec![right.clone(), basic_header("nobody", "x")]).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    // A public client may not introspect: it cannot authenticate (RFC 7662 §2.1).
    add_phone_app(&app).await;
    let (s, body, _) = app
        .token(
            "/t/home/introspect",
            &[("token", "x"), ("client_id", "phone")],
            None,
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // The code was not burnt by failed client authentication.
    let (s, body) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{body}");
    app.stop().await;
}

/// A code presented by another client of the tenant (a public one needs no secret) is
/// refused: unused, it stays usable by its own client; used, its replay revokes nothing.
/// Presented again by its own client, it revokes the tokens issued from it (RFC 6749 §4.1.2).
async fn a_code_replayed_by_another_client_revokes_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    add_phone_app(&app).await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let by_phone = || async {
        app.token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect.as_str()),
                ("client_id", "phone"),
                ("code_verifier", &new_verifier()),
            ],
            None,
        )
        .await
    };
    // Unused: refused, and left for its own client.
    let (s, e, _) = by_phone().await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{tok}");
    let t = app.svc.tenant("home").await.unwrap();
    assert!(
        app.audited(&t.id, "code_replay", "revoked")
            .await
            .is_empty()
    );
    // Used: refused, and the link stands.
    let (s, e, _) = by_phone().await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let rt = tok["refresh_token"].as_str().unwrap();
    let (s, next) = app.refresh(&setup, rt).await;
    assert_eq!(s, 200, "the link stands: {next}");
    // Its own client's replay revokes.
    let (s, e) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let (s, e) = app
        .refresh(&setup, next["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert_eq!(app.audited(&t.id, "code_replay", "revoked").await.len(), 1);
    app.stop().await;
}

/// A code for the phone app (`add_phone_app`), signed in as alice, and its PKCE verifier.
async fn phone_code(app: &TestApp) -> (String, String) {
    let verifier = new_verifier();
    let loc = app
        .browser()
        .sign_in_and_consent(
            "/t/home/authorize",
            &[
                ("client_id", "phone".into()),
                ("response_type", "code".into()),
                ("scope", "openid".into()),
                ("state", "q".into()),
                ("code_challenge", pkce_challenge(&verifier)),
                ("code_challenge_method", "S256".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    (
        parse_code(&loc, "http://localhost:9999/cb", "q").0,
        verifier,
    )
}

/// A public client's rotated refresh token presented again, even at once, revokes the family:
/// the grace window for retries rests on client authentication, which a public client has
/// not (RFC 9700 §4.14.2). A confidential client's retry is `refresh_replay_after_grace_…`.
async fn a_public_clients_rotated_refresh_token_gets_no_retry(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    add_phone_app(&app).await;
    let (code, verifier) = phone_code(&app).await;
    let token = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, body, _) = app.token("/t/home/token", &form, None).await;
            (s.as_u16(), body)
        }
    };
    let refresh = |rt: &str| {
        token(vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", rt.to_string()),
            ("client_id", "phone".into()),
        ])
    };
    let (s, tok) = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("client_id", "phone".into()),
        ("code_verifier", verifier),
    ])
    .await;
    assert_eq!(s, 200, "{tok}");
    let first = tok["refresh_token"].as_str().unwrap().to_string();
    let (s, next) = refresh(&first).await;
    assert_eq!(s, 200, "{next}");
    let second = next["refresh_token"].as_str().unwrap().to_string();
    let access = next["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.introspect(&setup, &access).await["active"], true);
    // The same second, well inside a confidential client's window: a replay.
    let (s, e) = refresh(&first).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let (s, e) = refresh(&second).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert_eq!(app.introspect(&setup, &access).await["active"], false);
    let t = app.svc.tenant("home").await.unwrap();
    assert_eq!(
        app.audited(&t.id, "refresh_replay", "revoked").await.len(),
        1
    );
    app.stop().await;
}

/// A public client's used code presented again: anyone may send its `client_id`, so only a
/// replay with the code's PKCE verifier (which the code's holder alone has) revokes the
/// tokens issued from it; without it, or with a wrong one, it is refused and revokes nothing.
async fn a_used_public_code_revokes_only_with_its_verifier(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    add_phone_app(&app).await;
    let (code, verifier) = phone_code(&app).await;
    let present = |verifier: Option<String>| {
        let code = code.clone();
        let app = &app;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", code),
                ("client_id", "phone".into()),
            ];
            if let Some(v) = verifier {
                form.push(("code_verifier", v));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, body, _) = app.token("/t/home/token", &form, None).await;
            (s.as_u16(), body)
        }
    };
    let (s, tok) = present(Some(verifier.clone())).await;
    assert_eq!(s, 200, "{tok}");
    let access = tok["access_token"].as_str().unwrap();
    let t = app.svc.tenant("home").await.unwrap();
    for wrong in [None, Some(new_verifier())] {
        let (s, e) = present(wrong).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        assert_eq!(app.introspect(&setup, access).await["active"], true);
    }
    assert!(
        app.audited(&t.id, "code_replay", "revoked")
            .await
            .is_empty()
    );
    // With its verifier, the replay shows the code leaked: what it gave is revoked.
    let (s, e) = present(Some(verifier)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        e["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("already used"),
        "{e}"
    );
    assert_eq!(app.introspect(&setup, access).await["active"], false);
    assert_eq!(app.audited(&t.id, "code_replay", "revoked").await.len(), 1);
    app.stop().await;
}

/// OpenID Connect Core §3.1.2.1: the authorization endpoint takes the request as a form POST
/// too. It answers as the GET does (the sign-in page, then a code), and an invalid one as the
/// GET does (an error page, or a 303 back to the client with the error).
async fn an_authorization_request_may_come_as_a_form_post(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let b = app.browser();
    let request = |path: &'static str, state: &'static str, scope: &'static str| {
        let (b, client_id) = (&b, setup.client_id.as_str());
        async move {
            let form = [
                ("client_id", client_id),
                ("response_type", "code"),
                ("redirect_uri", redirect.as_str()),
                ("state", state),
                ("scope", scope),
            ];
            b.post(path, &form).await
        }
    };
    let resp = request("/alexa/authorize", "posted", "music.control user:read").await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Sign in"), "{html}");
    let (csrf, rid) = (hidden(&html, "csrf"), hidden(&html, "rid"));
    let resp = b
        .post(
            "/alexa/authorize",
            &[
                ("csrf", csrf.as_str()),
                ("rid", rid.as_str()),
                ("action", "login"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200, "the consent page");
    let html = resp.text().await.unwrap();
    let (csrf, rid) = (hidden(&html, "csrf"), hidden(&html, "rid"));
    let resp = b
        .post(
            "/alexa/authorize",
            &[
                ("csrf", csrf.as_str()),
                ("rid", rid.as_str()),
                ("action", "approve"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let (code, _) = parse_code(&location(&resp), redirect, "posted");
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{tok}");
    // Signed in now, consent remembered: the POST gets the code at once, by 303.
    let resp = request("/t/home/authorize", "again", "music.control").await;
    assert_eq!(resp.status(), 303);
    parse_code(&location(&resp), redirect, "again");
    // A scope the client may not have: back to the client with the error, by 303.
    let resp = request("/t/home/authorize", "bad", "no-such-scope").await;
    assert_eq!(resp.status(), 303);
    assert!(
        location(&resp).contains("error=invalid_scope"),
        "{}",
        location(&resp)
    );
    // Without a response_type it is one of our forms, whose CSRF token is missing.
    let resp = b
        .post(
            "/t/home/authorize",
            &[("client_id", setup.client_id.as_str())],
        )
        .await;
    assert_eq!(resp.status(), 400);
    app.stop().await;
}

async fn unknown_client_and_bad_redirects_show_a_page(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let b = app.browser();
    let cases = [
        format!(
            "/alexa/authorize?client_id=nobody&response_type=code&redirect_uri={}&scope=music.control",
            alexa_redirects()[0]
        ),
        format!(
            "/alexa/authorize?client_id={}&response_type=code&redirect_uri=https://evil.example/cb&scope=music.control",
            setup.client_id
        ),
        format!(
            "/alexa/authorize?client_id={}&response_type=code&redirect_uri={}x&scope=music.control",
            setup.client_id,
            alexa_redirects()[0]
        ),
        // Several registered URIs and none given: which one is meant is unknown.
        format!(
            "/alexa/authorize?client_id={}&response_type=code&scope=music.control",
            setup.client_id
        ),
        "/alexa/authorize?response_type=code".to_string(),
    ];
    for c in cases {
        let r = b.get(&c).await;
        assert_eq!(r.status(), 400, "{c}");
        assert!(r.headers().get("location").is_none(), "no redirect for {c}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.text().await.unwrap().contains("<h1>"));
    }
    // Known client and redirect: errors go back to the client, with the state.
    let r = b
        .get(&format!(
            "/alexa/authorize?client_id={}&response_type=token&redirect_uri={}&state=xyz&scope=music.control",
            setup.client_id,
            alexa_redirects()[0]
        ))
        .await;
    assert_eq!(r.status(), 302);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "unsupported_response_type");
    assert_eq!(q["state"], "xyz");
    let r = b
        .get(&format!(
            "/alexa/authorize?client_id={}&response_type=code&redirect_uri={}&state=xyz&scope=admin.everything",
            setup.client_id,
            alexa_redirects()[0]
        ))
        .await;
    assert_eq!(r.status(), 302);
    assert_eq!(query_of(&location(&r))["error"], "invalid_scope");
    app.stop().await;
}

async fn wrong_pkce_verifier_is_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[2];
    let verifier = new_verifier();
    let (code, _) = app
        .authorize_code(&setup, redirect, "s", Some(&verifier))
        .await;
    let (s, e) = exchange(&app, &setup, &code, redirect, true, Some(&new_verifier())).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"], "invalid_grant");
    // Missing verifier for a PKCE code.
    let (code, _) = app
        .authorize_code(&setup, redirect, "s", Some(&verifier))
        .await;
    let (s, e) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A verifier for a code that had no challenge (downgrade).
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, e) = exchange(&app, &setup, &code, redirect, true, Some(&verifier)).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    app.stop().await;
}

async fn plain_pkce_is_refused_and_public_clients_need_pkce(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let b = app.browser();
    let r = b
        .get(&format!(
            "/alexa/authorize?client_id={}&response_type=code&redirect_uri={}&state=p&scope=music.control&code_challenge=abcdefghijabcdefghijabcdefghijabcdefghij123&code_challenge_method=plain",
            setup.client_id,
            alexa_redirects()[0]
        ))
        .await;
    assert_eq!(r.status(), 302);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_request");
    assert_eq!(q["state"], "p");
    // A public client without PKCE.
    add_phone_app(&app).await;
    let r = b
        .get("/t/home/authorize?client_id=phone&response_type=code&scope=openid&state=q")
        .await;
    assert_eq!(r.status(), 302);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("PKCE"));
    // With PKCE the public client gets tokens without a secret.
    let (code, verifier) = phone_code(&app).await;
    let (s, body, _) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", "phone"),
                ("code_verifier", &verifier),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    app.stop().await;
}

/// RFC 6749 §4.1.3: the `redirect_uri` of the authorization request is required at the
/// exchange, and must be the same.
async fn a_code_needs_the_redirect_uri_it_was_issued_for(backend: Backend) {
    fn refused_for_its_redirect_uri(s: reqwest::StatusCode, e: &Value) {
        assert_eq!(
            (s.as_u16(), e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        let description = e["error_description"].as_str().unwrap_or_default();
        assert!(description.contains("redirect_uri"), "{e}");
    }
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirects = alexa_redirects();
    let (code, _) = app.authorize_code(&setup, &redirects[0], "s", None).await;
    let (s, e) = exchange(&app, &setup, &code, &redirects[1], true, None).await;
    refused_for_its_redirect_uri(s, &e);
    let (code, _) = app.authorize_code(&setup, &redirects[0], "s", None).await;
    let (s, e, _) = app
        .token(
            "/alexa/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    refused_for_its_redirect_uri(s, &e);
    let (code, _) = app.authorize_code(&setup, &redirects[0], "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, &redirects[0], true, None).await;
    assert_eq!(s, 200, "{tok}");
    app.stop().await;
}

async fn expired_code_is_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    app.clock.advance(61);
    let (s, e) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"], "invalid_grant");
    app.stop().await;
}

async fn code_redeemed_twice_revokes_tokens(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, first) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200);
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(&setup, access).await["active"], true);
    let (s, second) = exchange(&app, &setup, &code, redirect, false, None).await;
    assert_eq!(s, 400);
    assert_eq!(second["error"], "invalid_grant");
    // Every token issued from the code is now revoked.
    let (s, e) = app
        .refresh(&setup, first["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(app.introspect(&setup, access).await["active"], false);
    app.stop().await;
}

async fn refresh_after_revocation_fails(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (_, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    let rt = tok["refresh_token"].as_str().unwrap();
    let (s, body, _) = app
        .token(
            "/t/home/revoke",
            &[("token", rt), ("token_type_hint", "refresh_token")],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, e) = app.refresh(&setup, rt).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        app.introspect(&setup, tok["access_token"].as_str().unwrap())
            .await["active"],
        false
    );
    // Revoking an unknown token is not an error (RFC 7009 §2.2).
    let (s, _, _) = app
        .token(
            "/t/home/revoke",
            &[("token", "nonsense")],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    app.stop().await;
}

/// A code whose grant was revoked, or whose member was disabled, after it was issued gives
/// nothing (no token a validator would accept offline), and is used up.
async fn code_of_a_withdrawn_authorization_is_refused(backend: Backend) {
    use ma_idp::secrets::token_hash;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let alice = app.member(&t.id, "alice").await;
    let redirect = &alexa_redirects()[0];
    let db = app.svc.store.connection();
    let families_of = |code: String| async move {
        let c = entity::authorization_code::Entity::find()
            .filter(entity::authorization_code::Column::CodeHash.eq(token_hash(&code)))
            .one(db)
            .await
            .unwrap()
            .unwrap();
        let n = entity::refresh_family::Entity::find()
            .filter(entity::refresh_family::Column::CodeId.eq(c.id.clone()))
            .count(db)
            .await
            .unwrap();
        (c, n)
    };

    // The member disabled after the code was issued.
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    assert!(
        app.svc
            .store
            .set_user_disabled(&t.id, &alice.id, true)
            .await
            .unwrap()
    );
    let (s, e) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("since the code was issued"),
        "{e}"
    );
    let (c, families) = families_of(code.clone()).await;
    assert!(c.consumed_at.is_some(), "the code is used up");
    assert_eq!(families, 0, "nothing was issued");
    app.svc
        .store
        .set_user_disabled(&t.id, &alice.id, false)
        .await
        .unwrap();
    let (s, e) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );

    // The grant revoked after the code was issued (the member revoked the consent).
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (c, _) = families_of(code.clone()).await;
    assert!(
        app.svc
            .store
            .revoke_grant(&t.id, &c.grant_id, None, app.svc.now())
            .await
            .unwrap()
    );
    let (s, e) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let (c, families) = families_of(code).await;
    assert!(c.consumed_at.is_some());
    assert_eq!(families, 0);

    // A new consent gives a code that works.
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{tok}");
    app.stop().await;
}

async fn malformed_requests_get_rfc_errors(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let auth = basic_header(&setup.client_id, &setup.client_secret);
    let post_raw = |body: Vec<u8>, ct: &'static str| {
        let http = app.http.clone();
        let url = app.url("/alexa/token");
        let auth = auth.clone();
        async move {
            let r = http
                .post(url)
                .header("content-type", ct)
                .header("authorization", auth)
                .body(body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            b"grant_type=password&username=a&password=b".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "unsupported_grant_type",
        ),
        (
            b"code=abc".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            b"grant_type=authorization_code".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            b"grant_type=refresh_token".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            b"grant_type=authorization_code&grant_type=authorization_code&code=x".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            b"grant_type=authorization_code&code=%ZZ".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            b"grant_type=authorization_code&code=%FF%FE".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            b"{\"grant_type\":\"client_credentials\"}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            format!("grant_type=authorization_code&code={}", "a".repeat(5000)).into_bytes(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            format!("grant_type=authorization_code&code={}", "a".repeat(20000)).into_bytes(),
            "application/x-www-form-urlencoded",
            413,
            "invalid_request",
        ),
        (
            b"grant_type=authorization_code&code=unknown".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_grant",
        ),
        (
            b"grant_type=refresh_token&refresh_token=unknown".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_grant",
        ),
        (
            b"grant_type=client_credentials".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "unauthorized_client",
        ),
        // A made-up parameter name with characters an error_description may not hold.
        (
            b"grant_type=refresh_token&%C3%A9%22%5C%01=1&%C3%A9%22%5C%01=2".to_vec(),
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
    ];
    for (body, ct, status, error) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let (s, e) = post_raw(body, ct).await;
        assert_eq!(s.as_u16(), status, "{shown}: {e}");
        assert_eq!(e["error"], error, "{shown}");
        // RFC 6749 §5.2: `%x20-21 / %x23-5B / %x5D-7E` only.
        let description = e["error_description"].as_str().unwrap();
        assert!(
            description
                .bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)),
            "{shown}: {description:?}"
        );
    }
    // Client authenticated twice.
    let (s, e, _) = app
        .token(
            "/alexa/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_secret", &setup.client_secret),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // Garbage Authorization header.
    let r = app
        .http
        .post(app.url("/alexa/token"))
        .header("authorization", "Basic !!!notbase64")
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Introspection and revocation need client authentication.
    for path in ["/t/home/introspect", "/t/home/revoke"] {
        let (s, e, _) = app.token(path, &[("token", "x")], None).await;
        assert_eq!(
            (s.as_u16(), e["error"].as_str()),
            (401, Some("invalid_client")),
            "{path}"
        );
    }
    // Userinfo without or with a bad token. Without any, the challenge has no error code
    // (RFC 6750 §3.1).
    let r = app
        .http
        .get(app.url("/t/home/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ma-idp\"");
    let r = app
        .http
        .get(app.url("/t/home/userinfo"))
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // Unknown tenants.
    let r = app
        .http
        .post(app.url("/t/nope/token"))
        .form(&[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .get(app.url("/t/NOPE%00/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Hostile authorize queries never answer 5xx.
    let b = app.browser();
    for q in [
        "client_id=amazon-alexa&client_id=amazon-alexa",
        "client_id=%FF",
        "client_id=%",
        "state=%00",
        &format!("client_id=amazon-alexa&state={}", "x".repeat(5000)),
        "client_id=amazon-alexa&response_type=code&scope=music.control&redirect_uri=javascript:alert(1)",
    ] {
        let r = b.get(&format!("/alexa/authorize?{q}")).await;
        assert!(r.status().is_client_error(), "{q}: {}", r.status());
        assert!(r.headers().get("location").is_none(), "{q}");
    }
    // A NUL in a path parameter (PostgreSQL refuses it in text): not found, never 503.
    let signed_in = app.browser();
    signed_in
        .sign_in_and_consent(
            "/t/home/authorize",
            &[
                ("client_id", setup.client_id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", alexa_redirects()[0].clone()),
                ("state", "n".into()),
                ("scope", "music.control".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    for (post, p) in [
        (false, "/t/home/federation/%00/callback?state=x&code=y"),
        (true, "/t/home/federation/%00/start"),
        (true, "/t/home/account/identities/%00/unlink"),
        (true, "/t/home/account/grants/%00/revoke"),
        (false, "/t/home/enroll/%00"),
        (false, "/t/%00/authorize"),
    ] {
        let r = if post {
            signed_in.post(p, &[("csrf", "x")]).await
        } else {
            signed_in.get(p).await
        };
        assert_eq!(r.status(), 404, "{p}");
    }
    app.stop().await;
}

async fn concurrent_redemptions_only_one_wins(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = alexa_redirects()[0].clone();
    let (code, _) = app.authorize_code(&setup, &redirect, "s", None).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = app.http.clone();
        let url = app.url("/alexa/token");
        let form = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.clone()),
            ("redirect_uri".to_string(), redirect.clone()),
        ];
        let auth = basic_header(&setup.client_id, &setup.client_secret);
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("authorization", auth)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            400 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one redemption wins");
    assert_eq!(refused, 49);
    app.stop().await;
}

async fn tokens_survive_a_restart(backend: Backend) {
    let Some(mut app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (_, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    let jwks_before = app.jwks("home").await;
    app.restart().await;
    assert_eq!(
        app.jwks("home").await,
        jwks_before,
        "the JWKS keeps its keys"
    );
    app.verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        app.introspect(&setup, tok["access_token"].as_str().unwrap())
            .await["active"],
        true
    );
    let (s, r) = app
        .refresh(&setup, tok["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{r}");
    app.verify_access_token("home", r["access_token"].as_str().unwrap())
        .await;
    // A tenant left without signing keys (a crash while they were made) gets them at start.
    {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let t = app.svc.tenant("home").await.unwrap();
        entity::signing_key::Entity::delete_many()
            .filter(entity::signing_key::Column::TenantId.eq(t.id))
            .exec(app.svc.store.connection())
            .await
            .unwrap();
    }
    app.restart().await;
    let keys = app.jwks("home").await["keys"].as_array().unwrap().len();
    assert!(keys >= 2, "{keys}");
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{tok}");
    app.verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    app.stop().await;
}

async fn tenants_are_isolated(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.setup("alpha").await;
    let b = app.setup("beta").await;
    let redirect = &alexa_redirects()[0];
    let browser = app.browser();
    let loc = browser
        .sign_in_and_consent(
            "/t/alpha/authorize",
            &[
                ("client_id", a.client_id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", redirect.clone()),
                ("state", "a".into()),
                ("scope", "music.control".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    let (code, _) = parse_code(&loc, redirect, "a");
    // A's code cannot be redeemed at B, even by B's client of the same client_id.
    let (s, e, _) = app
        .token(
            "/t/beta/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ],
            Some((&b.client_id, &b.client_secret)),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A's secret does not authenticate at B.
    let (s, _, _) = app
        .token(
            "/t/beta/token",
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            Some((&a.client_id, &a.client_secret)),
        )
        .await;
    assert_eq!(s, 401);
    let (s, tok, _) = app
        .token(
            "/t/alpha/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ],
            Some((&a.client_id, &a.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    let at = tok["access_token"].as_str().unwrap();
    let rt = tok["refresh_token"].as_str().unwrap();
    assert_eq!(app.introspect(&a, at).await["active"], true);
    assert_eq!(
        app.introspect(&b, at).await["active"],
        false,
        "A's token is inactive at B"
    );
    assert_eq!(
        app.introspect(&b, rt).await["active"],
        false,
        "A's refresh token is inactive at B"
    );
    let r = app
        .http
        .get(app.url("/t/beta/userinfo"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A client registered only at A cannot authorize at B.
    let t = app.svc.tenant("alpha").await.unwrap();
    app.svc
        .create_client(
            &t,
            ma_idp::services::ClientSpec {
                name: "Only A".into(),
                client_id: Some("only-a".into()),
                redirect_uris: vec!["https://a.example/cb".into()],
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let r = browser.get("/t/beta/authorize?client_id=only-a&response_type=code&scope=openid&redirect_uri=https://a.example/cb").await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    // Each tenant's discovery names its own issuer and JWKS; their keys differ.
    for slug in ["alpha", "beta"] {
        let d: Value = app
            .http
            .get(app.url(&format!("/t/{slug}/.well-known/openid-configuration")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["issuer"], format!("{}/t/{slug}", app.base));
        assert_eq!(d["jwks_uri"], format!("{}/t/{slug}/jwks.json", app.base));
    }
    assert_ne!(app.jwks("alpha").await, app.jwks("beta").await);
    app.stop().await;
}

async fn discovery_is_complete_and_matches_issuer(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let oidc: Value = app
        .http
        .get(app.url("/t/home/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rfc8414: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server/t/home"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc, rfc8414, "same content under both paths");
    // Issuer equals the URL the document was fetched under, minus the well-known suffix.
    assert_eq!(oidc["issuer"], app.url("/t/home"));
    for field in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(!oidc[field].is_null(), "discovery lacks {field}");
    }
    let algs: Vec<&str> = oidc["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(algs.contains(&"RS256"));
    assert_eq!(
        oidc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert!(
        oidc["response_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from("code"))
    );
    // Every endpoint named is under the issuer and answers.
    let jwks = app
        .http
        .get(oidc["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    let keys: Value = jwks.json().await.unwrap();
    let kty: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert!(kty.contains(&"RS256") && kty.contains(&"ES256"));
    for k in keys["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none(), "no private parts in the JWKS");
    }
    app.stop().await;
}

async fn openid_flow_gives_id_token_and_userinfo(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let b = app.browser();
    let loc = b
        .sign_in_and_consent(
            "/t/home/authorize",
            &[
                ("client_id", setup.client_id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", redirect.clone()),
                ("state", "st".into()),
                ("nonce", "n-0S6_WzA2Mj".into()),
                ("scope", "openid profile music.control".into()),
            ],
            "alice",
            PASSWORD,
        )
        .await;
    let q = query_of(&loc);
    assert_eq!(q["iss"], app.url("/t/home"), "RFC 9207 iss parameter");
    let (code, _) = parse_code(&loc, redirect, "st");
    let (s, tok, headers) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(headers["cache-control"], "no-store");
    let id_token = tok["id_token"].as_str().expect("id_token for scope openid");
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(app.jwks("home").await).unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[&setup.client_id]);
    v.set_issuer(&[app.url("/t/home")]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert!(claims["auth_time"].is_i64());
    assert_eq!(claims["preferred_username"], "alice");
    let at = tok["access_token"].as_str().unwrap();
    let expected_at_hash = {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, at.as_bytes());
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &d.as_ref()[..16],
        )
    };
    assert_eq!(claims["at_hash"], expected_at_hash);
    let access_claims = app.verify_access_token("home", at).await;
    assert_eq!(claims["sub"], access_claims["sub"]);
    let info: Value = app
        .http
        .get(app.url("/t/home/userinfo"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["preferred_username"], "alice");
    let r = app
        .http
        .post(app.url("/t/home/userinfo"))
        .form(&[("access_token", at)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .post(app.url("/t/home/userinfo"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a POST with the header and no body");
    let r = app
        .http
        .post(app.url("/t/home/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a POST with neither");
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ma-idp\"");
    // One way to send the token per request (RFC 6750 §2).
    let r = app
        .http
        .post(app.url("/t/home/userinfo"))
        .bearer_auth(at)
        .form(&[("access_token", at)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_request");
    app.stop().await;
}

/// Disable (or enable again) a client, as the admin page's save does.
async fn set_client_disabled(app: &TestApp, tenant_id: &str, client_id: &str, disabled: bool) {
    let c = app
        .svc
        .store
        .client_by_client_id(tenant_id, client_id)
        .await
        .unwrap()
        .unwrap();
    let mut m = c.client;
    m.disabled = disabled;
    assert!(
        app.svc
            .store
            .update_client(m, c.redirect_uris)
            .await
            .unwrap()
    );
}

async fn client_credentials_and_access_token_revocation(backend: Backend) {
    // The test changes clients through its own `Services`, as another instance would: without
    // the server's client cache the server sees each change at once.
    let Some(app) = TestApp::start_with(backend, |s| s.cache_ttl_ms = 0).await else {
        return;
    };
    let alexa = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let c = app
        .svc
        .create_client(
            &t,
            ma_idp::services::ClientSpec {
                name: "Skill backend".into(),
                client_id: Some("backend".into()),
                client_credentials: true,
                scopes: Some(vec!["music.read".into(), "music.control".into()]),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let secret = c.secret.unwrap().expose().to_string();
    let (s, tok, _) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "music.read"),
            ],
            Some(("backend", &secret)),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    assert!(tok.get("refresh_token").is_none());
    assert_eq!(tok["scope"], "music.read");
    let claims = app
        .verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    assert_eq!(claims["sub"], "backend");
    let (s, e, _) = app
        .token(
            "/t/home/token",
            &[("grant_type", "client_credentials"), ("scope", "openid")],
            Some(("backend", &secret)),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let setup = Setup {
        slug: "home".into(),
        client_id: "backend".into(),
        client_secret: secret.clone(),
    };
    let at = tok["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(&setup, at).await["active"], true);
    // A disabled client's tokens are inactive (asked by another client) until it is enabled
    // again; it gets no new ones meanwhile.
    set_client_disabled(&app, &t.id, "backend", true).await;
    assert_eq!(app.introspect(&alexa, at).await["active"], false);
    let (s, e, _) = app
        .token(
            "/t/home/token",
            &[("grant_type", "client_credentials")],
            Some(("backend", &secret)),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (401, Some("invalid_client"))
    );
    set_client_disabled(&app, &t.id, "backend", false).await;
    assert_eq!(app.introspect(&alexa, at).await["active"], true);
    let (s, _, _) = app
        .token(
            "/t/home/revoke",
            &[("token", at)],
            Some(("backend", &secret)),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.introspect(&setup, at).await["active"], false);
    app.stop().await;
}

/// A rotation keeps the old key published until every token it signed has expired: here a
/// token issued for a day, under a lifetime lowered to an hour before the rotation.
async fn key_rotation_keeps_old_tokens_valid(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let set_ttl = |ttl: Option<i64>| {
        let (app, t, client_id) = (&app, &t, &setup.client_id);
        async move {
            let mut c = app
                .svc
                .store
                .client_by_client_id(&t.id, client_id)
                .await
                .unwrap()
                .unwrap();
            c.client.access_token_ttl = ttl;
            let uris = c.redirect_uris;
            assert!(app.svc.store.update_client(c.client, uris).await.unwrap());
        }
    };
    set_ttl(Some(86_400)).await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (_, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(tok["expires_in"], 86_400, "{tok}");
    set_ttl(None).await;
    let old_kid = jsonwebtoken::decode_header(tok["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    let before: Vec<String> = app.jwks("home").await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    // The next keys were made with the tenant, moments ago: too young to sign yet.
    let e = app.svc.rotate_keys(&t, "test", false).await.unwrap_err();
    assert!(e.to_string().contains("Too soon"), "{e}");
    assert_eq!(
        app.jwks("home").await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        before,
        "a refused rotation changes nothing"
    );
    app.clock.advance(MIN_NEXT_KEY_AGE);
    let new_kids = app.svc.rotate_keys(&t, "test", false).await.unwrap();
    // The key that signs now was published before the rotation.
    for k in &new_kids {
        assert!(
            before.contains(k),
            "new signing key {k} was already in the JWKS"
        );
    }
    app.clock.advance(10); // past the server's key cache
    let (s, r) = app
        .refresh(&setup, tok["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
    let new_kid = jsonwebtoken::decode_header(r["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(new_kids.contains(&new_kid));
    // The old token still verifies and is still active.
    app.verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        app.introspect(&setup, tok["access_token"].as_str().unwrap())
            .await["active"],
        true
    );
    // An hour on (today's lifetime), the token issued for a day still verifies.
    app.clock.advance(3600 + 400);
    app.verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        app.introspect(&setup, tok["access_token"].as_str().unwrap())
            .await["active"],
        true
    );
    // After its lifetime the old key leaves the JWKS.
    app.clock.advance(86_400 - 3600);
    let after: Vec<String> = app.jwks("home").await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !after.contains(&old_kid),
        "retired key dropped after its tokens expired"
    );
    assert!(after.contains(&new_kid));
    // Rotations at once take turns: never two active (or next) keys of one algorithm. Of
    // two unforced ones the second finds the next keys the first just made: refused.
    for force in [false, true, false] {
        app.clock.advance(MIN_NEXT_KEY_AGE);
        let (a, b) = tokio::join!(
            app.svc.rotate_keys(&t, "test", force),
            app.svc.rotate_keys(&t, "test", force)
        );
        if force {
            a.unwrap();
            b.unwrap();
        } else {
            assert_eq!(
                [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
                1,
                "one rotates, one is refused: {a:?} {b:?}"
            );
        }
        let keys = app.svc.store.signing_keys(&t.id).await.unwrap();
        for alg in ["ES256", "RS256", "EdDSA"] {
            for state in ["active", "next"] {
                let n = keys
                    .iter()
                    .filter(|k| k.alg == alg && k.state == state)
                    .count();
                assert_eq!(n, 1, "{alg} {state} keys: {n}");
            }
        }
    }
    // A forced rotation (the key may have leaked) keeps the retired key only for the
    // lifetime in force (an hour), not the day an unforced one keeps it.
    app.clock.advance(10);
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (_, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    let leaked = jsonwebtoken::decode_header(tok["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    app.svc.rotate_keys(&t, "test", true).await.unwrap();
    app.clock.advance(10);
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(kids(app.jwks("home").await).contains(&leaked));
    app.clock.advance(3600 + 400);
    assert!(!kids(app.jwks("home").await).contains(&leaked));
    app.stop().await;
}

async fn consent_is_remembered_and_pages_are_safe(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = alexa_redirects()[0].clone();
    let b = app.browser();
    let q = vec![
        ("client_id", setup.client_id.clone()),
        ("response_type", "code".into()),
        ("redirect_uri", redirect.clone()),
        ("state", "one".into()),
        ("scope", "music.control".into()),
    ];
    let url = reqwest::Url::parse_with_params(&app.url("/alexa/authorize"), &q).unwrap();
    let r = b.http.get(url.clone()).send().await.unwrap();
    for h in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
        "x-content-type-options",
    ] {
        assert!(r.headers().get(h).is_some(), "missing {h}");
    }
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("name=\"csrf\""));
    assert!(html.contains("name=\"viewport\""));
    assert!(!html.contains("<script>alert"), "no JavaScript alerts");
    // A wrong password shows an inline error.
    let csrf = hidden(&html, "csrf");
    let rid = hidden(&html, "rid");
    let r = b
        .post(
            "/alexa/authorize",
            &[
                ("csrf", &csrf),
                ("rid", &rid),
                ("action", "login"),
                ("username", "alice"),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    let html = r.text().await.unwrap();
    assert!(html.contains("Wrong username or password."));
    assert!(html.contains("value=\"alice\""));
    // A missing or wrong CSRF token is refused.
    let r = b
        .post(
            "/alexa/authorize",
            &[
                ("csrf", "forged"),
                ("rid", &rid),
                ("action", "login"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    // Sign in; the consent page names the client, the scopes in plain words and the account.
    let r = b
        .post(
            "/alexa/authorize",
            &[
                ("csrf", &csrf),
                ("rid", &rid),
                ("action", "login"),
                ("username", "Alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "the sign-in answers with the consent page");
    let html = r.text().await.unwrap();
    // Answering a POST, the page gives its history entry its own address (a reload asks for
    // the page, instead of posting the password again).
    assert!(
        html.contains(r#"<script src="/static/consent.js" data-url=""#)
            && html.contains(&format!("authorize?rid={rid}\"")),
        "{html}"
    );
    assert!(html.contains("Alexa"));
    assert!(html.contains("alice"));
    assert!(html.contains("Play, pause and choose music"));
    let csrf = hidden(&html, "csrf");
    let rid = hidden(&html, "rid");
    // Deny: back to Alexa with access_denied.
    let r = b
        .post(
            "/alexa/authorize",
            &[("csrf", &csrf), ("rid", &rid), ("action", "deny")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let q2 = query_of(&location(&r));
    assert_eq!(q2["error"], "access_denied");
    assert_eq!(q2["state"], "one");
    // Approve on a second attempt (still signed in: straight to consent); a third attempt
    // skips consent (remembered).
    let html = b
        .http
        .get(url.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Allow"), "{html}");
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
    parse_code(&location(&r), &redirect, "one");
    let r = b.http.get(url).send().await.unwrap();
    assert_eq!(
        r.status(),
        302,
        "consent remembered: straight back to Alexa"
    );
    parse_code(&location(&r), &redirect, "one");
    // Cookies are __Host- and Secure behind https.
    let app2 = TestApp::start_with(backend, |s| s.public_url = "https://idp.example".into())
        .await
        .unwrap();
    app2.setup("home").await;
    let r = app2
        .browser()
        .get(&format!("/alexa/authorize?{}", url_query(&q)))
        .await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("__Host-ma-idp=") && cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(r.headers().get("strict-transport-security").is_some());
    app2.stop().await;
    app.stop().await;
}

fn url_query(q: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

async fn account_page_revokes_a_link(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (_, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    let b = app.browser();
    let r = b.get("/t/home/account").await;
    assert_eq!(r.status(), 302);
    let html = b.get("/t/home/login").await.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    let r = b
        .post(
            "/t/home/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let html = b.get("/t/home/account").await.text().await.unwrap();
    assert!(html.contains("Alexa"), "{html}");
    let re = regex::Regex::new(r#"action="([^"]*grants[^"]*)""#).unwrap();
    let action = re.captures(&html).unwrap()[1].replace("&#x2F;", "/");
    let csrf = hidden(&html, "csrf");
    let r = b.post(&action, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let (s, e) = app
        .refresh(&setup, tok["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        app.introspect(&setup, tok["access_token"].as_str().unwrap())
            .await["active"],
        false
    );
    // Sign out ends the browser session.
    let r = b.post("/t/home/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(b.get("/t/home/account").await.status(), 302);
    app.stop().await;
}

async fn health_ready_metrics(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    assert_eq!(
        app.http
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r: Value = app
        .http
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ready");
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    exchange(&app, &setup, &code, redirect, true, None).await;
    for p in ["/t/home/jwks.json", "/t/home/authorize"] {
        app.http.get(app.url(p)).send().await.unwrap();
    }
    let m = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("ma_idp_token_grants_total"), "{m}");
    assert!(m.contains("ma_idp_http_requests_total"));
    // Requests are counted by route pattern (never by path), the tenant's pages and endpoints
    // alike.
    for route in [
        "/alexa/authorize",
        "/alexa/token",
        "/t/{t}/jwks.json",
        "/t/{t}/authorize",
    ] {
        assert!(m.contains(&format!("route=\"{route}\"")), "{route} in {m}");
    }
    assert!(!m.contains("route=\"/t/home/"), "{m}");
    // On PostgreSQL each of the two HTTP workers queries through a pool of its own (opened on
    // its thread), beside the shared one; SQLite has the one pool.
    let gauge = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {m}"))
    };
    let pools = match backend {
        Backend::Postgres => 3.0,
        Backend::Sqlite => 1.0,
    };
    assert_eq!(gauge("ma_idp_db_pools"), pools);
    assert!(gauge("ma_idp_db_pool_connections") >= 1.0);
    assert!(gauge("ma_idp_db_pool_max") >= gauge("ma_idp_db_pool_connections"));
    assert!(m.contains("ma_idp_sign_ins_total"));
    // Request durations are a Prometheus histogram with fixed buckets.
    assert!(
        m.contains("ma_idp_http_request_duration_seconds_bucket{") && m.contains("le=\"0.005\""),
        "{m}"
    );
    app.stop().await;
}

/// A second confidential client of the tenant, to introspect with.
async fn add_introspector(app: &TestApp, t: &entity::tenant::Model) -> Setup {
    let c = app
        .svc
        .create_client(
            t,
            ma_idp::services::ClientSpec {
                name: "Music Assistant".into(),
                client_id: Some("ma-server".into()),
                client_credentials: true,
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    Setup {
        slug: t.slug.clone(),
        client_id: "ma-server".into(),
        client_secret: c.secret.unwrap().expose().to_string(),
    }
}

/// RFC 7662 answers for a member's access and refresh tokens, and a disabled member's (or
/// client's) tokens inactive at once (and live again when enabled).
async fn introspection_reports_token_details(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{tok}");
    let at = tok["access_token"].as_str().unwrap();
    let rt = tok["refresh_token"].as_str().unwrap();
    let a = app.introspect(&setup, at).await;
    assert_eq!(a["active"], true, "{a}");
    assert_eq!(a["token_type"], "Bearer");
    assert_eq!(a["token_use"], "access_token");
    assert_eq!(a["username"], "alice");
    assert_eq!(a["client_id"], setup.client_id.as_str());
    let r = app.introspect(&setup, rt).await;
    assert_eq!(r["active"], true, "{r}");
    // RFC 7662 §2.2: `token_type` is RFC 6749's (`Bearer`), which a refresh token has none of.
    assert!(r.get("token_type").is_none(), "{r}");
    assert_eq!(r["token_use"], "refresh_token");
    assert_eq!(r["username"], "alice");
    assert_eq!(r["client_id"], setup.client_id.as_str());
    assert_eq!(r["sub"], a["sub"]);
    assert_eq!(r["scope"], a["scope"]);
    assert!(r["exp"].as_i64().unwrap() > a["exp"].as_i64().unwrap());

    let tenant = app.svc.store.tenant_by_slug("home").await.unwrap().unwrap();
    let sub = a["sub"].as_str().unwrap();
    assert!(
        app.svc
            .store
            .set_user_disabled(&tenant.id, sub, true)
            .await
            .unwrap()
    );
    assert_eq!(app.introspect(&setup, at).await["active"], false);
    assert_eq!(app.introspect(&setup, rt).await["active"], false);
    let (s, e) = app.refresh(&setup, rt).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    app.svc
        .store
        .set_user_disabled(&tenant.id, sub, false)
        .await
        .unwrap();
    assert_eq!(app.introspect(&setup, at).await["active"], true);
    // The same while the client is disabled: its user's tokens are inactive (asked by another
    // client), and active again once it is enabled.
    let other = add_introspector(&app, &tenant).await;
    set_client_disabled(&app, &tenant.id, &setup.client_id, true).await;
    assert_eq!(app.introspect(&other, at).await["active"], false);
    assert_eq!(app.introspect(&other, rt).await["active"], false);
    set_client_disabled(&app, &tenant.id, &setup.client_id, false).await;
    assert_eq!(app.introspect(&other, at).await["active"], true);
    assert_eq!(app.introspect(&other, rt).await["active"], true);
    let (s, fresh) = app.refresh(&setup, rt).await;
    assert_eq!(s, 200, "{fresh}");
    // The presented token was rotated: it is no longer active; its successor is.
    assert_eq!(app.introspect(&setup, rt).await["active"], false);
    let next = fresh["refresh_token"].as_str().unwrap();
    assert_eq!(app.introspect(&setup, next).await["active"], true);
    // Verified signatures are remembered, expiry is not: an hour and a bit later the access
    // token introspected above is inactive, the refresh token still live.
    let exp = a["exp"].as_i64().unwrap();
    app.clock.advance(exp - app.svc.now() + 1);
    assert_eq!(app.introspect(&setup, at).await["active"], false);
    assert_eq!(app.introspect(&setup, next).await["active"], true);
    app.stop().await;
}

/// A password hash made with other argon2 parameters (before a change of `argon2.*`) still
/// signs in, and is then replaced by one with the configured parameters.
async fn password_hash_is_upgraded_at_sign_in(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let tenant = app.svc.store.tenant_by_slug("home").await.unwrap().unwrap();
    let alice = app
        .svc
        .store
        .user_by_username(&tenant.id, "alice")
        .await
        .unwrap()
        .unwrap();
    let old = ma_idp::login::passwords::PasswordHasher::new(&ma_idp::config::Argon2Settings {
        m_cost: 4096,
        t_cost: 2,
        p_cost: 1,
        concurrency: Some(1),
    })
    .unwrap()
    .hash(&ma_idp::secrets::Secret::new(PASSWORD))
    .await
    .unwrap();
    assert!(old.starts_with("$argon2id$v=19$m=4096,t=2,p=1$"), "{old}");
    assert!(
        app.svc
            .store
            .set_password(&tenant.id, &alice.id, old.clone(), 0, false)
            .await
            .unwrap()
    );
    let sign_in = || async {
        let b = app.browser();
        let html = b.get("/t/home/login").await.text().await.unwrap();
        let csrf = hidden(&html, "csrf");
        b.post(
            "/t/home/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await
        .status()
    };
    // A wrong password changes nothing.
    let b = app.browser();
    let html = b.get("/t/home/login").await.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    let r = b
        .post(
            "/t/home/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wrong"),
            ],
        )
        .await;
    assert_eq!(r.status(), 401, "a wrong password shows the form again");
    let stored = app.svc.store.password_hash(&alice.id).await.unwrap();
    assert_eq!(stored.as_deref(), Some(old.as_str()));
    // The right one signs in with the old hash and upgrades it.
    assert_eq!(sign_in().await, 303);
    let stored = app
        .svc
        .store
        .password_hash(&alice.id)
        .await
        .unwrap()
        .unwrap();
    let configured = &app.settings.argon2;
    assert!(
        stored.starts_with(&format!(
            "$argon2id$v=19$m={},t={},p={}$",
            configured.m_cost, configured.t_cost, configured.p_cost
        )),
        "{stored}"
    );
    assert_ne!(stored, old);
    assert_eq!(sign_in().await, 303, "the new hash signs in");
    app.stop().await;
}

/// Alexa retrying a refresh whose answer it lost may send the same token several times at
/// once: every request gets a new token (the grace window), none is taken for a replay, and
/// every token handed out still refreshes afterwards.
async fn concurrent_refreshes_of_one_token_are_retries(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200, "{tok}");
    let first = tok["refresh_token"].as_str().unwrap().to_string();
    let answers = futures_util::future::join_all((0..8).map(|_| app.refresh(&setup, &first))).await;
    let mut issued = std::collections::HashSet::new();
    for (s, body) in &answers {
        assert_eq!(*s, 200, "a concurrent retry was refused: {body}");
        issued.insert(body["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(issued.len(), 8, "each request gets its own successor");
    for t in &issued {
        assert_eq!(app.introspect(&setup, t).await["active"], true);
        let (s, body) = app.refresh(&setup, t).await;
        assert_eq!(s, 200, "family revoked by concurrent retries: {body}");
    }
    app.stop().await;
}

/// Introspections running at once are answered by shared queries: each still gets the answer
/// for its own token (live, revoked, another tenant's).
async fn concurrent_introspections_answer_each_token(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let home = app.setup("home").await;
    let away = app.setup("away").await;
    let redirect = &alexa_redirects()[0];
    let access_token = |setup: &'static str| {
        let (app, setup) = (&app, if setup == "home" { &home } else { &away });
        async move {
            let (code, _) = app
                .authorize_code_at(
                    &format!("/t/{}/authorize", setup.slug),
                    setup,
                    redirect,
                    "s",
                    None,
                )
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
            tok["access_token"].as_str().unwrap().to_string()
        }
    };
    let mut user_tokens = Vec::new();
    for _ in 0..3 {
        user_tokens.push(access_token("home").await);
    }
    let other_tenant = access_token("away").await;
    // One user token revoked at the revocation endpoint.
    let revoked = user_tokens.pop().unwrap();
    let (s, _, _) = app
        .token(
            "/t/home/revoke",
            &[("token", &revoked)],
            Some((&home.client_id, &home.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    let mut cases: Vec<(&str, bool)> = vec![(&revoked, false), (&other_tenant, false)];
    for t in &user_tokens {
        cases.push((t, true));
    }
    let asked: Vec<(&str, bool)> = (0..96).map(|i| cases[i % cases.len()]).collect();
    let answers =
        futures_util::future::join_all(asked.iter().map(|(t, _)| app.introspect(&home, t))).await;
    for ((_, live), answer) in asked.iter().zip(&answers) {
        assert_eq!(answer["active"], *live, "{answer}");
        if *live {
            assert_eq!(answer["username"], "alice", "{answer}");
        }
    }
    app.stop().await;
}

/// The store's one-call refresh (one statement on PostgreSQL, one `IMMEDIATE` transaction
/// sent at once on SQLite): it rotates a live token presented by its client, and writes
/// nothing in any other case (the full transaction then answers); a write failing half-way is
/// rolled back whole.
async fn refresh_in_one_statement_where_it_can(backend: Backend) {
    use ma_idp::secrets::token_hash;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
    assert_eq!(s, 200);
    let first = tok["refresh_token"].as_str().unwrap().to_string();
    let (t, client) = home_and_client(&app, &setup).await;
    let next = "next-refresh-token-for-this-test";
    let at_once = |presented: &str, client_pk: &str| {
        at_once_rotation(
            &app,
            &t.id,
            token_hash(presented),
            client_pk.to_string(),
            next,
        )
    };
    // Another client's attempt, or an unknown token: declined, nothing written.
    assert!(at_once(&first, "not-the-client").await.is_none());
    assert!(at_once("no such token", &client.id).await.is_none());
    let rotated = at_once(&first, &client.id).await;
    let fam = rotated.expect("the common case rotates in one call");
    assert_eq!(fam.client_id, client.id);
    // The presented token is used now; its successor works over HTTP.
    assert!(at_once(&first, &client.id).await.is_none());
    let (s, r) = app.refresh(&setup, next).await;
    assert_eq!(s, 200, "{r}");
    let after = r["refresh_token"].as_str().unwrap().to_string();
    // The first token was rotated a moment ago: a retry within the grace window.
    let (s, r) = app.refresh(&setup, &first).await;
    assert_eq!(s, 200, "{r}");
    // The one call wrote the grant's last use and its audit event with the successor.
    let grant = entity::grant::Entity::find_by_id(fam.grant_id.clone())
        .one(app.svc.store.connection())
        .await
        .unwrap()
        .unwrap();
    assert!(
        grant.last_refreshed_at.is_some(),
        "the grant's last use is written"
    );
    let refreshed = entity::audit_event::Entity::find()
        .filter(entity::audit_event::Column::Kind.eq("token_refreshed"))
        .filter(entity::audit_event::Column::UserId.eq(fam.user_id.clone()))
        .count(app.svc.store.connection())
        .await
        .unwrap();
    assert_eq!(
        refreshed, 3,
        "one audit event per rotation (one call, two over HTTP)"
    );

    // A write that fails half-way (the successor's hash is taken: `next` again) undoes the
    // mark it made, and leaves no transaction open behind it: the token it tried to rotate
    // is still unused and refreshes normally, and later writes go through.
    let failed = app
        .svc
        .store
        .rotate_refresh_at_once(
            &t.id,
            &token_hash(&after),
            &client.id,
            app.svc.now(),
            &token_hash(next),
            app.svc.now() + 3600,
            ma_idp::audit::AuditEvent {
                tenant_id: Some(t.id.clone()),
                kind: "token_refreshed",
                outcome: "ok",
                ..Default::default()
            },
        )
        .await;
    assert!(failed.is_err(), "a taken successor hash fails the write");
    let row = entity::refresh_token::Entity::find()
        .filter(entity::refresh_token::Column::TokenHash.eq(token_hash(&after)))
        .one(app.svc.store.connection())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.used_at, None, "the failed write's mark was rolled back");
    let (s, r) = app.refresh(&setup, &after).await;
    assert_eq!(s, 200, "the token whose rotation failed refreshes: {r}");
    for _ in 0..3 {
        let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
        let (s, _) = exchange(&app, &setup, &code, redirect, true, None).await;
        assert_eq!(s, 200, "writes go on after the failed one");
    }
    app.stop().await;
}

/// A code exchange (one read and one write call in the common case) writes the refresh family,
/// its token and one audit event with the consumed code; a refused exchange (wrong PKCE
/// verifier) still consumes the code, so the right verifier afterwards is a replay.
async fn code_exchange_writes_with_the_code_or_not_at_all(backend: Backend) {
    use entity::{audit_event, authorization_code, refresh_family, refresh_token};
    use ma_idp::secrets::token_hash;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let db = app.svc.store.connection();
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let verifier = new_verifier();
    let (code, _) = app
        .authorize_code(&setup, redirect, "s", Some(&verifier))
        .await;
    let (s, tok) = exchange(&app, &setup, &code, redirect, true, Some(&verifier)).await;
    assert_eq!(s, 200, "{tok}");
    let stored = authorization_code::Entity::find()
        .filter(authorization_code::Column::CodeHash.eq(token_hash(&code)))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.consumed_at.is_some(), "the code is consumed");
    let fams = refresh_family::Entity::find()
        .filter(refresh_family::Column::CodeId.eq(stored.id.clone()))
        .all(db)
        .await
        .unwrap();
    assert_eq!(fams.len(), 1, "one refresh family, tied to the code");
    let fam = &fams[0];
    assert_eq!(
        (&fam.user_id, &fam.grant_id, &fam.scope, fam.revoked_at),
        (&stored.user_id, &stored.grant_id, &stored.scope, None)
    );
    let rt = refresh_token::Entity::find()
        .filter(
            refresh_token::Column::TokenHash.eq(token_hash(tok["refresh_token"].as_str().unwrap())),
        )
        .one(db)
        .await
        .unwrap()
        .expect("the refresh token answered is stored");
    assert_eq!(rt.family_id, fam.id);
    let granted = audit_event::Entity::find()
        .filter(audit_event::Column::Kind.eq("token_granted"))
        .all(db)
        .await
        .unwrap();
    assert_eq!(granted.len(), 1, "one audit event");
    assert_eq!(granted[0].user_id.as_deref(), Some(stored.user_id.as_str()));
    assert!(
        granted[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("authorization_code"),
        "{:?}",
        granted[0].detail
    );

    // Refused (wrong verifier): consumed, nothing issued; the right verifier is then a replay.
    let (code, _) = app
        .authorize_code(&setup, redirect, "s", Some(&verifier))
        .await;
    let (s, e) = exchange(&app, &setup, &code, redirect, true, Some(&new_verifier())).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (s, e) = exchange(&app, &setup, &code, redirect, true, Some(&verifier)).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(
        e["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("already used"),
        "{e}"
    );
    assert_eq!(refresh_family::Entity::find().count(db).await.unwrap(), 1);
    assert_eq!(
        audit_event::Entity::find()
            .filter(audit_event::Column::Kind.eq("token_granted"))
            .count(db)
            .await
            .unwrap(),
        1
    );
    app.stop().await;
}

/// Many one-call refreshes at once: on SQLite those waiting for the write turn share one
/// commit (group commit), yet each stands or falls alone: one whose write fails half-way (its
/// successor's hash is taken) is undone without the others of its group, which are rotated
/// and durable; later writes go on. On PostgreSQL the same calls answer the same.
async fn concurrent_one_call_refreshes_share_commits(backend: Backend) {
    use ma_idp::secrets::token_hash;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (t, client) = home_and_client(&app, &setup).await;
    let mut tokens = Vec::new();
    for _ in 0..17 {
        let (code, _) = app.authorize_code(&setup, redirect, "s", None).await;
        let (s, tok) = exchange(&app, &setup, &code, redirect, true, None).await;
        assert_eq!(s, 200, "{tok}");
        tokens.push(tok["refresh_token"].as_str().unwrap().to_string());
    }
    // Every fourth call asks for a successor whose hash is taken: a spare token's, which no
    // call rotates. (Not one that another call is marking used: on PostgreSQL the insert
    // would then wait for that call, which waits for the grant row this one holds, and
    // PostgreSQL would end the deadlock by failing one of them. Successor hashes are random
    // in the server, so this is a test's collision only.)
    let spare = tokens.pop().unwrap();
    let successor = |i: usize| {
        if i % 4 == 3 {
            spare.clone()
        } else {
            format!("group-commit-successor-{i}")
        }
    };
    let (commits_before, writes_before) = app.svc.store.group_commit_counts();
    let nexts: Vec<String> = (0..tokens.len()).map(successor).collect();
    let answers = futures_util::future::join_all(tokens.iter().zip(&nexts).map(|(token, next)| {
        try_at_once_rotation(&app, &t.id, token_hash(token), client.id.clone(), next)
    }))
    .await;
    let (commits, writes) = app.svc.store.group_commit_counts();
    let (commits, writes) = (commits - commits_before, writes - writes_before);
    if backend == Backend::Sqlite {
        assert_eq!(writes, 16, "every call is one atomic write");
        assert!(
            commits < writes,
            "concurrent writes share commits: {commits} commits for {writes} writes"
        );
    } else {
        assert_eq!(
            (commits, writes),
            (0, 0),
            "PostgreSQL groups nothing itself"
        );
    }
    let db = app.svc.store.connection();
    for (i, answer) in answers.into_iter().enumerate() {
        let presented = entity::refresh_token::Entity::find()
            .filter(entity::refresh_token::Column::TokenHash.eq(token_hash(&tokens[i])))
            .one(db)
            .await
            .unwrap()
            .unwrap();
        if i % 4 == 3 {
            assert!(answer.is_err(), "call {i}: a taken successor hash fails");
            assert_eq!(presented.used_at, None, "call {i}: its mark is undone");
        } else {
            let fam = answer
                .unwrap_or_else(|e| panic!("call {i} failed beside a failing one: {e}"))
                .unwrap_or_else(|| panic!("call {i} was not rotated"));
            assert_eq!(fam.id, presented.family_id);
            assert!(presented.used_at.is_some(), "call {i}: marked used");
            let next = entity::refresh_token::Entity::find()
                .filter(entity::refresh_token::Column::TokenHash.eq(token_hash(&successor(i))))
                .one(db)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("call {i}: its successor is stored"));
            assert_eq!(next.family_id, presented.family_id);
        }
    }
    // The successors work over HTTP; the tokens whose rotation failed refresh normally.
    for (i, token) in tokens.iter().enumerate() {
        let presented = if i % 4 == 3 {
            token.clone()
        } else {
            successor(i)
        };
        let (s, r) = app.refresh(&setup, &presented).await;
        assert_eq!(s, 200, "token {i}: {r}");
    }
    app.stop().await;
}

/// The tenant `home` and the set-up's client, as the store holds them.
async fn home_and_client(
    app: &TestApp,
    setup: &Setup,
) -> (entity::tenant::Model, entity::client::Model) {
    let t = app.svc.tenant("home").await.unwrap();
    let client = app
        .svc
        .store
        .client_by_client_id(&t.id, &setup.client_id)
        .await
        .unwrap()
        .unwrap()
        .client;
    (t, client)
}

/// `Store::rotate_refresh_at_once` with a successor `next`, valid an hour.
async fn at_once_rotation(
    app: &TestApp,
    tenant_id: &str,
    presented_hash: String,
    client_pk: String,
    next: &str,
) -> Option<entity::refresh_family::Model> {
    try_at_once_rotation(app, tenant_id, presented_hash, client_pk, next)
        .await
        .unwrap()
}

/// `at_once_rotation`, its error answered rather than unwrapped.
async fn try_at_once_rotation(
    app: &TestApp,
    tenant_id: &str,
    presented_hash: String,
    client_pk: String,
    next: &str,
) -> ma_idp::error::Result<Option<entity::refresh_family::Model>> {
    let now = app.svc.now();
    let ev = ma_idp::audit::AuditEvent {
        tenant_id: Some(tenant_id.to_string()),
        kind: "token_refreshed",
        outcome: "ok",
        ..Default::default()
    };
    app.svc
        .store
        .rotate_refresh_at_once(
            tenant_id,
            &presented_hash,
            &client_pk,
            now,
            &ma_idp::secrets::token_hash(next),
            now + 3600,
            ev,
        )
        .await
}

/// `prompt=login` and `max_age` ask for a fresh sign-in: coming back with the pending request's
/// `rid` alone does not skip it, and once made, a sign-in satisfies the request however long
/// the way back takes (no endless sign-in pages, even with `max_age=0` or a huge one).
async fn reauthentication_is_not_skipped_nor_endless(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    app.setup("other").await;
    let redirect = alexa_redirects()[0].clone();
    let b = app.browser();
    let base = vec![
        ("client_id", setup.client_id.clone()),
        ("response_type", "code".to_string()),
        ("redirect_uri", redirect.clone()),
        ("state", "st".to_string()),
        ("scope", "music.control".to_string()),
    ];
    // Signed in, consent given (remembered from now on).
    let loc = b
        .sign_in_and_consent("/t/home/authorize", &base, "alice", PASSWORD)
        .await;
    parse_code(&loc, &redirect, "st");
    let url = |extra: &[(&str, &str)]| {
        let mut q: Vec<(&str, String)> = base.clone();
        q.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        reqwest::Url::parse_with_params(&app.url("/t/home/authorize"), &q).unwrap()
    };
    let get = |u: reqwest::Url| {
        let http = b.http.clone();
        async move { http.get(u).send().await.unwrap() }
    };
    // Signed in, no prompt: the code at once.
    let r = get(url(&[])).await;
    assert_eq!(r.status(), 302);
    parse_code(&location(&r), &redirect, "st");
    // A huge max_age is no sign-in requirement (it must not wrap round into one).
    let r = get(url(&[("max_age", "9223372036854775807")])).await;
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    // prompt=login shows the sign-in page; its rid alone does not skip it.
    app.clock.advance(5);
    for extra in [vec![("prompt", "login")], vec![("max_age", "0")]] {
        let r = get(url(&extra)).await;
        assert_eq!(r.status(), 200, "{extra:?}");
        let html = r.text().await.unwrap();
        assert!(html.contains(r#"type="password""#), "{extra:?}: {html}");
        let rid = hidden(&html, "rid");
        let csrf = hidden(&html, "csrf");
        let r = b.get(&format!("/t/home/authorize?rid={rid}")).await;
        assert_eq!(
            r.status(),
            200,
            "{extra:?}: the rid alone skipped the sign-in"
        );
        assert!(r.text().await.unwrap().contains(r#"type="password""#));
        // Nor does a hand-made approval on the old sign-in: the sign-in page again, no code.
        let r = b
            .post(
                "/t/home/authorize",
                &[("csrf", &csrf), ("rid", &rid), ("action", "approve")],
            )
            .await;
        assert_eq!(
            r.status(),
            200,
            "{extra:?}: approved without the sign-in asked for"
        );
        let html = r.text().await.unwrap();
        assert!(
            html.contains(r#"type="password""#) && html.contains("Please sign in first."),
            "{extra:?}: {html}"
        );
        // Nor is this tenant's pending request continued at another tenant's pages.
        let r = b
            .post(
                "/t/other/authorize",
                &[("csrf", &csrf), ("rid", &rid), ("action", "approve")],
            )
            .await;
        assert_eq!(r.status(), 400, "{extra:?}");
        assert!(r.text().await.unwrap().contains("This sign-in has expired"));
        // Sign in; the way back may take a while: the sign-in still counts.
        let r = b
            .post(
                "/t/home/authorize",
                &[
                    ("csrf", &csrf),
                    ("rid", &rid),
                    ("action", "login"),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        // Consent is remembered: the sign-in answers with the redirect back, code and all.
        assert_eq!(r.status(), 303, "{extra:?}: signed in, yet asked again");
        parse_code(&location(&r), &redirect, "st");
        app.clock.advance(5);
    }
    app.stop().await;
}

/// A pending authorization request expires 30 minutes after it was stored. A page that shows
/// it again stores it again (its age restarts) unless it was stored less than 5 minutes
/// before: the consent page right after a sign-in leaves the session unwritten.
async fn a_pending_request_lives_on_while_its_pages_are_used(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = alexa_redirects()[0].clone();
    let b = app.browser();
    let query = [
        ("client_id", setup.client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", redirect.as_str()),
        ("state", "st"),
        ("scope", "music.control"),
        ("prompt", "consent"),
    ];
    let url = reqwest::Url::parse_with_params(&app.url("/t/home/authorize"), query).unwrap();
    let html = b.get(url.as_str()).await.text().await.unwrap();
    let (rid, csrf) = (hidden(&html, "rid"), hidden(&html, "csrf"));
    let r = b
        .post(
            "/t/home/authorize",
            &[
                ("csrf", &csrf),
                ("rid", &rid),
                ("action", "login"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "the sign-in answers with the consent page");
    let answered = r.text().await.unwrap();
    assert!(answered.contains("/static/consent.js"), "{answered}");
    let consent = |rid: String| {
        let b = &b;
        async move {
            let r = b.get(&format!("/t/home/authorize?rid={rid}")).await;
            assert_eq!(r.status(), 200);
            let html = r.text().await.unwrap();
            assert!(html.contains("Allow"), "consent page expected: {html}");
            hidden(&html, "csrf")
        }
    };
    let csrf = consent(rid.clone()).await;
    assert_ne!(
        csrf,
        hidden(&html, "csrf"),
        "the sign-in renewed the CSRF token"
    );
    assert_eq!(
        hidden(&answered, "csrf"),
        csrf,
        "and answered with the new one"
    );
    let shown = b.get(&format!("/t/home/authorize?rid={rid}")).await;
    assert!(
        !shown.text().await.unwrap().contains("/static/consent.js"),
        "a page answering a GET has its own address already"
    );
    let approve = |csrf: String, rid: String| {
        let b = &b;
        async move {
            b.post(
                "/t/home/authorize",
                &[("csrf", &csrf), ("rid", &rid), ("action", "approve")],
            )
            .await
        }
    };
    // Shown again 20 minutes later: kept 30 minutes from then, approved 40 minutes after it
    // was first stored.
    app.clock.advance(20 * 60);
    assert_eq!(consent(rid.clone()).await, csrf, "same session, same token");
    app.clock.advance(20 * 60);
    let r = approve(csrf.clone(), rid.clone()).await;
    assert_eq!(r.status(), 303);
    parse_code(&location(&r), &redirect, "st");

    // Shown again 4 minutes after it was stored: not stored again, so it expires 30 minutes
    // after the first time.
    let r = b.get(url.as_str()).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Allow"),
        "signed in: the consent page: {html}"
    );
    let rid = hidden(&html, "rid");
    app.clock.advance(4 * 60);
    let csrf = consent(rid.clone()).await;
    app.clock.advance(27 * 60);
    let r = approve(csrf.clone(), rid.clone()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("This sign-in has expired"));

    // The member's row is read with the session at each request, never stored with it:
    // disabled, the member is signed out at the next page.
    let t = app.svc.tenant("home").await.unwrap();
    let alice = app.member(&t.id, "alice").await;
    let now = app.svc.now();
    let sessions = app
        .svc
        .store
        .sessions_of_user(&t.id, &alice.id, now)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(
        !sessions[0].state.contains("_member_row") && !sessions[0].state.contains("_sign_in"),
        "{}",
        sessions[0].state
    );
    // The sign-in's own write went with the session's: its audit event is there.
    let ok = app.audited(&t.id, "sign_in", "ok").await.len();
    assert_eq!(ok, 1, "one password sign-in, audited once");
    let r = b.get(url.as_str()).await;
    assert!(r.text().await.unwrap().contains("Allow"), "still signed in");
    assert!(
        app.svc
            .store
            .set_user_disabled(&t.id, &alice.id, true)
            .await
            .unwrap()
    );
    let r = b.get(url.as_str()).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"type="password""#), "signed out: {html}");
    app.stop().await;
}

/// Paths nobody serves and methods a route does not take: 404 and 405, a page for a browser,
/// never another route's answer; an unknown tenant is unknown on every route.
async fn unknown_and_misused_paths_get_plain_errors(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let get = |p: &'static str| {
        let u = app.url(p);
        let h = app.http.clone();
        async move { h.get(u).send().await.unwrap() }
    };
    let post = |p: &'static str| {
        let u = app.url(p);
        let h = app.http.clone();
        async move { h.post(u).form(&[("a", "b")]).send().await.unwrap() }
    };
    assert_eq!(get("/t/home/jwks.json").await.status(), 200);
    for p in [
        "/t/home",
        "/t/home/",
        "/t/home/nope",
        "/t/home/jwks.json/",
        "/t/home/authorize/",
        "/t//jwks.json",
        "/t/nosuch/jwks.json",
        "/t/nosuch/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/t/nosuch",
        "/nope",
    ] {
        let r = get(p).await;
        assert_eq!(r.status(), 404, "GET {p}");
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("\"keys\""),
            "GET {p} answered another route: {body}"
        );
        assert!(
            ct.starts_with("text/html") || ct.starts_with("application/json"),
            "GET {p}: {ct}"
        );
    }
    let r = get("/t/nosuch/authorize").await;
    assert_eq!(r.status(), 404, "an unknown tenant's sign-in page");
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    for p in [
        "/t/home/jwks.json",
        "/t/home/.well-known/openid-configuration",
    ] {
        assert_eq!(post(p).await.status(), 405, "POST {p}");
    }
    for p in [
        "/t/home/token",
        "/t/home/introspect",
        "/t/home/revoke",
        "/alexa/token",
    ] {
        assert_eq!(get(p).await.status(), 405, "GET {p}");
    }
    // The tenant's endpoints still answer as themselves.
    let r = post("/t/home/token").await;
    assert!([400, 401].contains(&r.status().as_u16()), "{}", r.status());
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].is_string(), "{e}");
    app.stop().await;
}

/// A native app's IPv6 loopback redirect URI (RFC 8252 §7.3) cannot be named in the pages'
/// CSP `form-action`, which browsers apply to a form's redirect too (Chromium refuses it): a
/// form's answer for it is a page that sends the browser on by itself (no-store, no
/// `Location`), with the code or the error and the state as a redirect would carry them, and
/// so is the answer to a pending request taken up by its `rid` (the end of a chain a form
/// may have begun). A new request's GET still redirects.
async fn a_native_app_on_ipv6_loopback_gets_its_answers(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let redirect = "http://[::1]:9999/cb";
    add_native_app(&app, "desktop", "Desktop app", redirect).await;
    let path = "/t/home/authorize";
    let verifier = new_verifier();
    let authorize = |state: &str, prompt: &str| {
        let mut q = vec![
            ("client_id", "desktop".to_string()),
            ("response_type", "code".into()),
            ("redirect_uri", redirect.into()),
            ("scope", "openid".into()),
            ("state", state.into()),
            ("code_challenge", pkce_challenge(&verifier)),
            ("code_challenge_method", "S256".into()),
        ];
        if !prompt.is_empty() {
            q.push(("prompt", prompt.into()));
        }
        reqwest::Url::parse_with_params(&app.url(path), &q)
            .unwrap()
            .to_string()
    };
    let shared = &app;
    let exchange = |code: String| {
        let verifier = verifier.clone();
        async move {
            shared
                .token(
                    "/t/home/token",
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", redirect),
                        ("client_id", "desktop"),
                        ("code_verifier", &verifier),
                    ],
                    None,
                )
                .await
        }
    };
    // The answer to a form, checked as a page that goes on to the app: where it goes.
    async fn page_on(r: reqwest::Response) -> String {
        assert_eq!(
            r.status(),
            200,
            "a page, not a redirect the browser would refuse"
        );
        assert!(r.headers().get("location").is_none());
        assert_eq!(r.headers()["cache-control"], "no-store");
        continue_url(&r.text().await.unwrap())
    }
    async fn page_of(b: &Browser, url: &str) -> String {
        let r = b.get(url).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    // Consent approved: the code, with a state that needs escaping in the page.
    let state = "v6 & <\"'/>";
    let b = app.browser();
    let html = page_of(&b, &authorize(state, "")).await;
    let r = b.post_password(path, &html, "alice").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Allow"), "consent page expected: {html}");
    let (csrf, rid) = (hidden(&html, "csrf"), hidden(&html, "rid"));
    let approve = [("csrf", &*csrf), ("rid", &*rid), ("action", "approve")];
    let to = page_on(b.post(path, &approve).await).await;
    let (code, _) = parse_code(&to, redirect, state);
    let (s, body, _) = exchange(code).await;
    assert_eq!(s, 200, "{body}");

    // Signed in, consent remembered: a GET redirects at once.
    let r = b.get(&authorize("again", "")).await;
    assert_eq!(r.status(), 302);
    let (code, _) = parse_code(&location(&r), redirect, "again");
    assert_eq!(exchange(code).await.0, 200);

    // Another browser: the sign-in's own answer goes on to the app (consent remembered).
    let b = app.browser();
    let html = page_of(&b, &authorize("second", "")).await;
    let to = page_on(b.post_password(path, &html, "alice").await).await;
    let (code, _) = parse_code(&to, redirect, "second");
    assert_eq!(exchange(code).await.0, 200);

    // A pending request taken up again by its `rid` alone (how a sign-in through an upstream
    // provider comes back, at the end of a redirect chain a form of ours began): signed in
    // meanwhile on the sign-in page of its own, consent remembered, the answer goes on to the
    // app by itself too.
    let b = app.browser();
    let html = page_of(&b, &authorize("resumed", "")).await;
    let rid = hidden(&html, "rid");
    let login = page_of(&b, "/t/home/login").await;
    let csrf = hidden(&login, "csrf");
    let signed = [
        ("csrf", &*csrf),
        ("username", "alice"),
        ("password", PASSWORD),
    ];
    assert_eq!(b.post("/t/home/login", &signed).await.status(), 303);
    let to = page_on(b.get(&format!("{path}?rid={rid}")).await).await;
    let (code, _) = parse_code(&to, redirect, "resumed");
    assert_eq!(exchange(code).await.0, 200);

    // Consent declined: the error goes back the same way.
    let html = page_of(&b, &authorize("no", "consent")).await;
    assert!(html.contains("Allow"), "consent page expected: {html}");
    let (csrf, rid) = (hidden(&html, "csrf"), hidden(&html, "rid"));
    let deny = [("csrf", &*csrf), ("rid", &*rid), ("action", "deny")];
    let to = page_on(b.post(path, &deny).await).await;
    assert!(to.starts_with(redirect), "{to}");
    let q = query_of(&to);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "no");
    app.stop().await;
}

/// A client disabled while one of its authorization requests waits: the sign-in answers with
/// a page saying so, not with the consent page nor, where consent is remembered, with a code;
/// and "Allow" on a consent page shown before records no consent and issues no code. The
/// client comes from the client cache: a change made elsewhere (here the test's own
/// `Services`, as the CLI or another instance would) is seen within the cache's time to live,
/// shortened here.
async fn a_client_disabled_while_its_request_waits_gets_no_consent(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| s.cache_ttl_ms = 300).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let path = "/t/home/authorize";
    let url = reqwest::Url::parse_with_params(
        &app.url(path),
        &[
            ("client_id", setup.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", redirect.as_str()),
            ("state", "s"),
            ("scope", "music.control"),
        ],
    )
    .unwrap();
    // One browser reaches the consent page, another waits on the sign-in page.
    let at_consent = app.browser();
    let html = at_consent.get(url.as_str()).await.text().await.unwrap();
    let r = at_consent.post_password(path, &html, "alice").await;
    assert_eq!(r.status(), 200);
    let consent = r.text().await.unwrap();
    assert!(consent.contains("Allow Alexa?"), "{consent}");
    let at_sign_in = app.browser();
    let sign_in = at_sign_in.get(url.as_str()).await.text().await.unwrap();
    assert!(sign_in.contains("Alexa"), "{sign_in}");
    // Bob allowed the client before; a browser of his waits on the sign-in page.
    let t = app.svc.tenant("home").await.unwrap();
    app.add_member(&t, "bob").await;
    let earlier = app.browser();
    let html = earlier.get(url.as_str()).await.text().await.unwrap();
    let r = earlier.post_password(path, &html, "bob").await;
    let html = r.text().await.unwrap();
    let (csrf, rid) = (hidden(&html, "csrf"), hidden(&html, "rid"));
    let approve = [("csrf", &*csrf), ("rid", &*rid), ("action", "approve")];
    assert_eq!(earlier.post(path, &approve).await.status(), 303);
    let remembered = app.browser();
    let bob_sign_in = remembered.get(url.as_str()).await.text().await.unwrap();
    assert!(bob_sign_in.contains("Alexa"), "{bob_sign_in}");

    let mut client = app
        .svc
        .store
        .client_by_client_id(&t.id, &setup.client_id)
        .await
        .unwrap()
        .unwrap();
    client.client.disabled = true;
    assert!(
        app.svc
            .store
            .update_client(client.client, client.redirect_uris)
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    let r = at_sign_in.post_password(path, &sign_in, "alice").await;
    let status = r.status();
    let html = r.text().await.unwrap();
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("no longer registered"), "{html}");
    assert!(!html.contains("Allow"), "{html}");

    let r = remembered.post_password(path, &bob_sign_in, "bob").await;
    let status = r.status();
    assert!(r.headers().get("location").is_none(), "{:?}", r.headers());
    let html = r.text().await.unwrap();
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("no longer registered"), "{html}");

    let (csrf, rid) = (hidden(&consent, "csrf"), hidden(&consent, "rid"));
    let approve = [("csrf", &*csrf), ("rid", &*rid), ("action", "approve")];
    let r = at_consent.post(path, &approve).await;
    let status = r.status();
    let html = r.text().await.unwrap();
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("no longer registered"), "{html}");
    // Bob's, from before.
    assert_eq!(app.audited(&t.id, "consent", "ok").await.len(), 1);
    app.stop().await;
}

/// A client whose redirect URI or scopes an admin changed while one of its authorization
/// requests waits: no answer goes to the address no longer registered, nor a code for scopes
/// it no longer has (RFC 6749 §3.1.2.4): "Allow", "Deny" and a sign-in answer with a page.
async fn a_client_changed_while_its_request_waits_gets_no_answer(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| s.cache_ttl_ms = 300).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirects = alexa_redirects();
    let path = "/t/home/authorize";
    let url = reqwest::Url::parse_with_params(
        &app.url(path),
        &[
            ("client_id", setup.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", redirects[0].as_str()),
            ("state", "s"),
            ("scope", "music.control"),
        ],
    )
    .unwrap();
    // Two browsers on the consent page, one on the sign-in page.
    let mut consent_pages = Vec::new();
    for _ in 0..2 {
        let b = app.browser();
        let html = b.get(url.as_str()).await.text().await.unwrap();
        let html = b
            .post_password(path, &html, "alice")
            .await
            .text()
            .await
            .unwrap();
        assert!(html.contains("Allow Alexa?"), "{html}");
        consent_pages.push((b, html));
    }
    let at_sign_in = app.browser();
    let sign_in = at_sign_in.get(url.as_str()).await.text().await.unwrap();
    assert!(sign_in.contains("Sign in"), "{sign_in}");

    let t = app.svc.tenant("home").await.unwrap();
    let change = |uris: Vec<String>, scopes: &'static str| {
        let (app, t, client_id) = (&app, &t, &setup.client_id);
        async move {
            let mut c = app
                .svc
                .store
                .client_by_client_id(&t.id, client_id)
                .await
                .unwrap()
                .unwrap();
            c.client.scopes = scopes.into();
            assert!(app.svc.store.update_client(c.client, uris).await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
    };
    let all_scopes = app
        .svc
        .store
        .client_by_client_id(&t.id, &setup.client_id)
        .await
        .unwrap()
        .unwrap()
        .client
        .scopes;
    assert!(all_scopes.contains("music.control"), "{all_scopes}");
    change(redirects[1..].to_vec(), "openid music.control").await;
    let changed = |r: reqwest::Response| async move {
        let status = r.status();
        assert!(r.headers().get("location").is_none(), "{:?}", r.headers());
        let html = r.text().await.unwrap();
        assert_eq!(status, 400, "{html}");
        assert!(html.contains("registration changed"), "{html}");
    };
    for (action, (b, html)) in ["approve", "deny"].into_iter().zip(&consent_pages) {
        let (csrf, rid) = (hidden(html, "csrf"), hidden(html, "rid"));
        let form = [("csrf", &*csrf), ("rid", &*rid), ("action", action)];
        changed(b.post(path, &form).await).await;
    }
    // The redirect URI back, the scope gone: the sign-in answers with the page too.
    change(redirects.clone(), "openid").await;
    changed(at_sign_in.post_password(path, &sign_in, "alice").await).await;
    assert!(app.audited(&t.id, "consent", "ok").await.is_empty());
    assert!(app.audited(&t.id, "consent", "denied").await.is_empty());
    app.stop().await;
}

/// RFC 8252 §7.3: a native app registered with a loopback IP redirect URI may ask for it with
/// any port (the one the system gave it); nothing else may differ, and `localhost` (§8.3) and
/// https addresses still match exactly.
async fn a_native_app_on_a_loopback_ip_may_use_any_port(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    add_native_app(&app, "desktop", "Desktop app", "http://127.0.0.1/cb").await;
    add_native_app(&app, "desktop6", "Desktop app", "http://[::1]:8080/cb").await;
    add_phone_app(&app).await;
    let verifier = new_verifier();
    let query = |client_id: &str, redirect: &str| {
        vec![
            ("client_id", client_id.to_string()),
            ("response_type", "code".into()),
            ("redirect_uri", redirect.into()),
            ("scope", "openid".into()),
            ("state", "p".into()),
            ("code_challenge", pkce_challenge(&verifier)),
            ("code_challenge_method", "S256".into()),
        ]
    };
    // On [::1] the answer to the consent form is a page that goes on by itself
    // (`a_native_app_on_ipv6_loopback_gets_its_answers`); here, that the request is taken.
    let r = app
        .browser()
        .get(
            reqwest::Url::parse_with_params(
                &app.url("/t/home/authorize"),
                &query("desktop6", "http://[::1]:40000/cb"),
            )
            .unwrap()
            .as_str(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Sign in") && html.contains("Desktop app"),
        "{html}"
    );
    let (client_id, redirect) = ("desktop", "http://127.0.0.1:51234/cb");
    let loc = app
        .browser()
        .sign_in_and_consent(
            "/t/home/authorize",
            &query(client_id, redirect),
            "alice",
            PASSWORD,
        )
        .await;
    let (code, _) = parse_code(&loc, redirect, "p");
    let (s, body, _) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("client_id", client_id),
                ("code_verifier", &verifier),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "{client_id} {redirect}: {body}");
    for (client_id, redirect) in [
        ("desktop", "http://127.0.0.1:51234/other"),
        ("desktop", "http://127.0.0.2:51234/cb"),
        ("desktop", "https://127.0.0.1:51234/cb"),
        ("desktop", "http://127.0.0.1:51234/cb?x=1"),
        ("desktop", "http://127.0.0.1:51234/x/../cb"),
        ("phone", "http://localhost:51234/cb"),
    ] {
        let r = app
            .browser()
            .get(
                reqwest::Url::parse_with_params(
                    &app.url("/t/home/authorize"),
                    &query(client_id, redirect),
                )
                .unwrap()
                .as_str(),
            )
            .await;
        let status = r.status();
        let html = r.text().await.unwrap();
        assert_eq!(status, 400, "{redirect}: {html}");
        assert!(html.contains("not registered"), "{redirect}: {html}");
    }
    app.stop().await;
}

/// `prompt=select_account` (OIDC Core §3.1.2.1) with consent remembered: no code goes out
/// before the member sees which account is signed in (the consent page names it and offers
/// to sign out); without it, the code goes out at once.
async fn select_account_shows_who_is_signed_in(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let b = app.browser();
    let query = |prompt: Option<&str>| {
        let mut q = vec![
            ("client_id", setup.client_id.clone()),
            ("response_type", "code".into()),
            ("redirect_uri", redirect.clone()),
            ("scope", "music.control".into()),
            ("state", "a".into()),
        ];
        if let Some(p) = prompt {
            q.push(("prompt", p.into()));
        }
        q
    };
    let loc = b
        .sign_in_and_consent("/t/home/authorize", &query(None), "alice", PASSWORD)
        .await;
    parse_code(&loc, redirect, "a");
    let url = |prompt| {
        reqwest::Url::parse_with_params(&app.url("/t/home/authorize"), &query(prompt))
            .unwrap()
            .to_string()
    };
    let r = b.get(&url(Some("select_account"))).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Allow") && html.contains("Not alice?"),
        "{html}"
    );
    let r = b.get(&url(None)).await;
    assert_eq!(r.status(), 302);
    parse_code(&location(&r), redirect, "a");
    app.stop().await;
}
