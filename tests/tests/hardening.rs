//! Brute force, trusted proxies, backup and restore — on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use ma_idp_tests::*;
use serde_json::Value;

both_backends!(
    hundred_parallel_wrong_passwords_lock_exactly,
    guesses_lock_their_network_then_the_account,
    per_ip_limits_answer_429,
    new_visits_are_limited_per_ip,
    anonymous_sessions_are_capped_in_all,
    forwarded_for_is_believed_only_from_trusted_proxies,
    backup_wipe_restore_keeps_tokens,
    concurrent_first_consents_all_succeed,
    a_session_ended_during_a_sign_in,
    parallel_rights_and_wrongs_of_one_account_all_answer,
    small_pools_serve_every_flow,
    a_claim_leaves_its_connection_durable,
    a_very_long_username_is_a_wrong_password,
);

/// A username longer than any account's (a form field may hold 4 KiB; the page's `maxlength`
/// binds browsers only) is a wrong password like any other: 401 and the sign-in page again,
/// and its attempt audited, on PostgreSQL too, whose column keeps 200 characters of it.
async fn a_very_long_username_is_a_wrong_password(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let long = format!("é{}", "x".repeat(299));
    let (b, csrf) = at_login(&app).await;
    let r = b
        .post(
            "/t/home/login",
            &[("csrf", &csrf), ("username", &long), ("password", "x")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let html = r.text().await.unwrap();
    assert!(html.contains("Wrong username or password."), "{html}");
    let failed = app.audited(&t.id, "sign_in", "failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let kept: String = long.chars().take(200).collect();
    assert!(
        failed
            .iter()
            .all(|e| e.actor.as_deref() == Some(kept.as_str()))
    );
    app.stop().await;
}

/// A sign-in attempt's claim is committed without waiting for its flush to disk (SQLite: its
/// group at `synchronous=NORMAL`; PostgreSQL: `synchronous_commit` off for its transaction),
/// and leaves nothing of that behind: on a pool of one connection, the connection the claims
/// ran on is durable again for whatever it runs next, and the claims are all counted.
async fn a_claim_leaves_its_connection_durable(backend: Backend) {
    use ma_idp::store::{Claim, Counter, Store};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let Some((pg, _drop)) = database_for(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url =
        pg.unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()));
    let store = Store::connect(&url, 1, std::time::Duration::ZERO)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (net, acct) = (
        Counter {
            key: "net:claim-test",
            max_attempts: 5,
        },
        Counter {
            key: "acct:claim-test",
            max_attempts: 10,
        },
    );
    for _ in 0..3 {
        let (claim, member) = store
            .claim_attempt(net, acct, 1_000, (60, 3_600), Some(("no-tenant", "nobody")))
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Allowed));
        assert!(member.is_none());
    }
    let db = store.connection();
    let ask = |sql: &str| Statement::from_string(db.get_database_backend(), sql.to_string());
    let durable = match db.get_database_backend() {
        DbBackend::Postgres => {
            let row = db
                .query_one_raw(ask("SHOW synchronous_commit"))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<String>(0).unwrap() == "on"
        }
        _ => {
            let row = db
                .query_one_raw(ask("PRAGMA synchronous"))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap() == 2
        }
    };
    assert!(
        durable,
        "the connection the claims ran on is left without durable commits"
    );
    let counted = db
        .query_one_raw(ask(
            "SELECT attempts FROM login_throttle WHERE \"key\" = 'net:claim-test'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counted.try_get_by_index::<i64>(0).unwrap(), 3);
}

/// Found by the benchmark: on SQLite, many members approving at once must wait for the write
/// lock, not fail with 503 "database is locked".
async fn concurrent_first_consents_all_succeed(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| s.limits.sign_ins_per_ip_per_minute = 0).await
    else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let redirect = alexa_redirects()[0].clone();
    // 24 members, each signed in with the consent page open.
    let mut ready = Vec::new();
    for i in 0..24 {
        let name = format!("member{i}");
        app.add_member(&t, &name).await;
        let b = app.browser();
        let q = [
            ("client_id", setup.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", redirect.as_str()),
            ("state", "c"),
            ("scope", "music.control"),
        ];
        let url = reqwest::Url::parse_with_params(&app.url("/alexa/authorize"), &q).unwrap();
        let html = b.http.get(url).send().await.unwrap().text().await.unwrap();
        let r = b
            .post(
                "/alexa/authorize",
                &[
                    ("csrf", &hidden(&html, "csrf")),
                    ("rid", &hidden(&html, "rid")),
                    ("action", "login"),
                    ("username", &name),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status(), 200, "the sign-in answers with the consent page");
        let html = r.text().await.unwrap();
        ready.push((b, hidden(&html, "csrf"), hidden(&html, "rid")));
    }
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(b, csrf, rid)| {
            tokio::spawn(async move {
                b.post(
                    "/alexa/authorize",
                    &[("csrf", &csrf), ("rid", &rid), ("action", "approve")],
                )
                .await
                .status()
                .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            303,
            "every approval redirects with a code"
        );
    }
    app.stop().await;
}

/// A browser that has the sign-in page open: (browser, csrf).
async fn at_login(app: &TestApp) -> (Browser, String) {
    let b = app.browser();
    let html = b.get("/t/home/login").await.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    (b, csrf)
}

/// A password sign-in for an account that does not exist: the answer's status.
async fn wrong_password_for_nobody(app: &TestApp) -> u16 {
    let (b, csrf) = at_login(app).await;
    b.post(
        "/t/home/login",
        &[("csrf", &csrf), ("username", "nobody"), ("password", "x")],
    )
    .await
    .status()
    .as_u16()
}

async fn hundred_parallel_wrong_passwords_lock_exactly(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| {
        s.limits.sign_ins_per_ip_per_minute = 0;
        s.limits.login_max_attempts = 5;
        s.limits.login_lockout_seconds = 60;
    })
    .await
    else {
        return;
    };
    app.setup("home").await;
    let mut browsers = Vec::new();
    for _ in 0..100 {
        browsers.push(at_login(&app).await);
    }
    let tasks: Vec<_> = browsers
        .into_iter()
        .map(|(b, csrf)| {
            tokio::spawn(async move {
                let r = b
                    .post(
                        "/t/home/login",
                        &[
                            ("csrf", &csrf),
                            ("username", "alice"),
                            ("password", "wrong guess"),
                        ],
                    )
                    .await;
                let s = r.status().as_u16();
                (s, r.text().await.unwrap())
            })
        })
        .collect();
    let (mut wrong, mut locked) = (0, 0);
    for t in tasks {
        let (s, body) = t.await.unwrap();
        match s {
            401 => {
                assert!(body.contains("Wrong username or password."));
                wrong += 1
            }
            429 => {
                assert!(body.contains("Too many failed attempts"), "{body}");
                locked += 1
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(wrong, 5, "exactly the threshold of guesses was checked");
    assert_eq!(locked, 95);
    // Locked: even the right password is refused, without checking it.
    let (b, csrf) = at_login(&app).await;
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
    assert_eq!(r.status(), 429);
    // The lockout ends by itself.
    app.clock.advance(61);
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
    assert_eq!(r.status(), 303, "unlocked after a minute");
    // The success is audited with its member (the same write clears the counter, below).
    let t = app.svc.tenant("home").await.unwrap();
    let ok = app.audited(&t.id, "sign_in", "ok").await;
    assert_eq!(ok.len(), 1, "one successful sign-in so far");
    assert_eq!(ok[0].actor.as_deref(), Some("alice"));
    assert!(ok[0].user_id.is_some(), "the event names the member");
    // A success resets the count; the next lockout after a failed round lasts twice as long.
    for _ in 0..5 {
        let (b, csrf) = at_login(&app).await;
        let r = b
            .post(
                "/t/home/login",
                &[("csrf", &csrf), ("username", "alice"), ("password", "nope")],
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    app.clock.advance(61);
    for _ in 0..5 {
        let (b, csrf) = at_login(&app).await;
        assert_eq!(
            b.post(
                "/t/home/login",
                &[("csrf", &csrf), ("username", "alice"), ("password", "nope")]
            )
            .await
            .status(),
            401
        );
    }
    app.clock.advance(61);
    let (b, csrf) = at_login(&app).await;
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
    assert_eq!(r.status(), 429, "the second lockout is longer (120 s)");
    app.clock.advance(60);
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
    // Unknown accounts lock the same way: the answer does not tell who exists.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(wrong_password_for_nobody(&app).await);
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429]);
    // A day without attempts, no lockout running: housekeeping forgets the counter, so the
    // next lockout is a first one again (60 s; without the purge it would be 120 s).
    app.clock.advance(86_400 + 61);
    app.svc.store.purge_expired(app.svc.now()).await.unwrap();
    let mut statuses = Vec::new();
    for advance in [0, 0, 0, 0, 0, 0, 61] {
        app.clock.advance(advance);
        statuses.push(wrong_password_for_nobody(&app).await);
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 401]);
    app.stop().await;
}

/// A password sign-in for alice on the account page, from `ip` (behind the trusted proxy on
/// 127.0.0.1): the answer's status.
async fn alice_from(app: &TestApp, ip: &str, password: &str) -> u16 {
    let (b, csrf) = at_login(app).await;
    b.http
        .post(b.url("/t/home/login"))
        .header("x-forwarded-for", ip)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "alice"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Guessing from one network locks the account for that network only: the member signs in
/// from theirs. Guesses spread over many networks lock the account for everyone, at the
/// higher account-wide limit; an IPv6 client counts by its /64.
async fn guesses_lock_their_network_then_the_account(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| {
        s.trusted_proxies = vec!["127.0.0.1".into()];
        s.limits.sign_ins_per_ip_per_minute = 0;
        s.limits.login_max_attempts = 5;
        s.limits.login_account_max_attempts = 12;
        s.limits.login_lockout_seconds = 60;
    })
    .await
    else {
        return;
    };
    app.setup("home").await;
    let (home, wrong) = ("203.0.113.5", "wrong guess");
    let mut attacker = Vec::new();
    for _ in 0..6 {
        attacker.push(alice_from(&app, "198.51.100.1", wrong).await);
    }
    assert_eq!(
        attacker,
        [401, 401, 401, 401, 401, 429],
        "the attacker's network locks"
    );
    assert_eq!(
        alice_from(&app, "198.51.100.1", PASSWORD).await,
        429,
        "even the right password, from there"
    );
    assert_eq!(
        alice_from(&app, home, PASSWORD).await,
        303,
        "the member signs in from her own network"
    );
    // Her success clears her counters, not the attacker's network's lock.
    assert_eq!(alice_from(&app, "198.51.100.1", wrong).await, 429);
    // Guesses from more networks: each allows 5; the 12th in all locks the account.
    let mut spread = Vec::new();
    for net in ["198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        for _ in 0..4 {
            spread.push(alice_from(&app, net, wrong).await);
        }
    }
    assert_eq!(
        spread, [401; 12],
        "each is checked, the 12th too (and locks)"
    );
    assert_eq!(
        alice_from(&app, home, PASSWORD).await,
        429,
        "locked for everyone now"
    );
    // Attempts the account refuses count for no counter: trying at home while the account
    // is locked does not lock her home network (which would outlast the account's lock).
    app.clock.advance(50);
    for _ in 0..5 {
        assert_eq!(alice_from(&app, home, PASSWORD).await, 429);
    }
    app.clock.advance(11);
    assert_eq!(
        alice_from(&app, home, PASSWORD).await,
        303,
        "the account's lock ended, and nothing else locks her"
    );
    // The lockouts are audited with the counter that refused them.
    let t = app.svc.tenant("home").await.unwrap();
    let locks: Vec<String> = app
        .audited(&t.id, "sign_in", "failed")
        .await
        .into_iter()
        .filter_map(|e| {
            let d: Value = serde_json::from_str(e.detail.as_deref()?).ok()?;
            Some(d.get("lock")?.as_str()?.to_string())
        })
        .collect();
    assert!(locks.contains(&"network".to_string()), "{locks:?}");
    assert!(locks.contains(&"account".to_string()), "{locks:?}");
    // IPv6: the addresses of one /64 share their network's counter; another /64 does not.
    for ip in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2::3",
        "2001:db8:1:2::4",
    ] {
        assert_eq!(alice_from(&app, ip, wrong).await, 401);
    }
    assert_eq!(alice_from(&app, "2001:db8:1:2::ffff", wrong).await, 401);
    assert_eq!(alice_from(&app, "2001:db8:1:2::5", PASSWORD).await, 429);
    // An IPv4-mapped IPv6 address is its IPv4 address's network (10 guesses in all so far,
    // under the account's 12).
    for _ in 0..5 {
        assert_eq!(alice_from(&app, "::ffff:192.0.2.9", wrong).await, 401);
    }
    assert_eq!(alice_from(&app, "192.0.2.9", PASSWORD).await, 429);
    assert_eq!(alice_from(&app, "2001:db8:1:3::1", PASSWORD).await, 303);
    app.stop().await;
}

/// A browser session that ends (signed out in another tab, ended by an admin, purged) while
/// its password sign-in hashes: the sign-in still lands, in a new session under a new key;
/// its record (audit event, counters cleared) is written once; the old key stays dead.
async fn a_session_ended_during_a_sign_in(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| {
        s.limits.sign_ins_per_ip_per_minute = 0;
        // A slow hash (~2 s here): the session is ended while it runs.
        s.argon2.t_cost = 800;
        s.argon2.m_cost = 8192;
    })
    .await
    else {
        return;
    };
    app.setup("home").await;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let b = Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .build()
            .unwrap(),
        base: app.base.clone(),
    };
    let html = b.get("/t/home/login").await.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    let url: reqwest::Url = app.base.parse().unwrap();
    let cookie = |jar: &reqwest::cookie::Jar| {
        use reqwest::cookie::CookieStore;
        let header = jar.cookies(&url).expect("a session cookie");
        let header = header.to_str().unwrap().to_string();
        header
            .split("; ")
            .find_map(|c| c.strip_prefix("ma-idp="))
            .expect("the session cookie")
            .to_string()
    };
    let old = cookie(&jar);
    let sign_in = {
        let http = b.http.clone();
        let u = b.url("/t/home/login");
        tokio::spawn(async move {
            http.post(u)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ])
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The browser's session is still anonymous: the sign-in has not written it yet. An hour
    // later housekeeping purges it (the cookie holds the key encrypted: the test cannot name
    // the row otherwise).
    let store = &app.svc.store;
    assert_eq!(
        store.anonymous_sessions(app.svc.now()).await.unwrap(),
        1,
        "the sign-in wrote its session before the test could end it (hash too fast?)"
    );
    app.clock.advance(3601);
    store.purge_expired(app.svc.now()).await.unwrap();
    assert_eq!(store.anonymous_sessions(app.svc.now()).await.unwrap(), 0);
    assert!(!sign_in.is_finished(), "ended while the sign-in ran");
    let r = sign_in.await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "signed in (a 400 here: the session was ended before the sign-in read it)"
    );
    let new = cookie(&jar);
    assert_ne!(new, old, "a new session key");
    assert_eq!(
        b.get("/t/home/account").await.status(),
        200,
        "the new session is signed in"
    );
    // The old key does not come back.
    let r = app
        .http
        .get(app.url("/t/home/account"))
        .header("cookie", format!("ma-idp={old}"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "the old key is dead");
    let t = app.svc.tenant("home").await.unwrap();
    assert_eq!(
        app.audited(&t.id, "sign_in", "ok").await.len(),
        1,
        "the sign-in is recorded once"
    );
    app.stop().await;
}

/// Right and wrong passwords for one account from one network, in parallel (a double submit
/// beside a guesser): each claim writes the network's counter row, then the account's, and
/// each success clears them in the same order, so no two can wait for each other (before, a
/// success cleared the account's row first: on PostgreSQL a deadlock, answered 503 after
/// the deadlock timeout). Every right password signs in (303), every wrong one answers 401.
async fn parallel_rights_and_wrongs_of_one_account_all_answer(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| {
        s.limits.sign_ins_per_ip_per_minute = 0;
        s.limits.login_max_attempts = 1000;
        s.limits.login_account_max_attempts = 1000;
    })
    .await
    else {
        return;
    };
    app.setup("home").await;
    let mut signed_in = 0;
    for _round in 0..20 {
        let mut browsers = Vec::new();
        for i in 0..8 {
            let (b, csrf) = at_login(&app).await;
            let pw = if i % 2 == 0 { PASSWORD } else { "wrong guess" };
            browsers.push((b, csrf, pw));
        }
        let tasks: Vec<_> = browsers
            .into_iter()
            .map(|(b, csrf, pw)| {
                tokio::spawn(async move {
                    b.post(
                        "/t/home/login",
                        &[("csrf", &csrf), ("username", "alice"), ("password", pw)],
                    )
                    .await
                    .status()
                    .as_u16()
                })
            })
            .collect();
        for t in tasks {
            let s = t.await.unwrap();
            assert!(matches!(s, 303 | 401), "answered {s}");
            signed_in += usize::from(s == 303);
        }
    }
    assert_eq!(signed_in, 80, "every right password signed in");
    app.stop().await;
}

async fn per_ip_limits_answer_429(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| {
        s.limits.sign_ins_per_ip_per_minute = 3;
        s.limits.token_per_ip_per_minute = 5;
        s.limits.introspect_per_ip_per_minute = 2;
    })
    .await
    else {
        return;
    };
    let setup = app.setup("home").await;
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for i in 0..4 {
        let (b, csrf) = at_login(&app).await;
        let user = format!("user{i}");
        let r = b
            .post(
                "/t/home/login",
                &[("csrf", &csrf), ("username", &user), ("password", "x")],
            )
            .await;
        statuses.push(r.status().as_u16());
        retry_after.push(r.headers().get("retry-after").cloned());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
    // The network's limit says when to come back, as the authorization page's does.
    assert!(
        retry_after[..3].iter().all(Option::is_none),
        "{retry_after:?}"
    );
    assert_eq!(retry_after[3].as_ref().unwrap(), "60");
    // Starting a passkey ceremony stores a challenge: four per sign-in allowed, then 429.
    let (b, csrf) = at_login(&app).await;
    let mut starts = Vec::new();
    for _ in 0..13 {
        let r = b
            .http
            .post(b.url("/t/home/passkeys/login/start"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        starts.push(r.status().as_u16());
    }
    assert_eq!(starts[..12], [200; 12], "{starts:?}");
    assert_eq!(starts[12], 429, "{starts:?}");
    let mut last = None;
    for _ in 0..6 {
        last = Some(app.refresh(&setup, "unknown").await);
    }
    let (s, body) = last.unwrap();
    assert_eq!(s, 429);
    assert_eq!(body["error"], "temporarily_unavailable");
    let r = app
        .http
        .post(app.url("/t/home/introspect"))
        .header(
            "authorization",
            basic_header(&setup.client_id, &setup.client_secret),
        )
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.http
        .post(app.url("/t/home/introspect"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    let r = app
        .http
        .post(app.url("/t/home/introspect"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    app.stop().await;
}

/// A request that comes without a session (no cookie, or a cookie naming no session) may start
/// one, a row in the database: four such visits per allowed sign-in, per client IP and minute,
/// on the public pages and the admin UI alike. A browser with its session is not held up.
async fn new_visits_are_limited_per_ip(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| s.limits.sign_ins_per_ip_per_minute = 1).await
    else {
        return;
    };
    app.setup("home").await;
    let visit = |path: &'static str, cookie: Option<&'static str>| {
        let app = &app;
        async move {
            let mut r = app.http.get(app.url(path));
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            r.send().await.unwrap()
        }
    };
    let b = app.browser();
    assert_eq!(b.get("/t/home/login").await.status(), 200);
    assert_eq!(visit("/t/home/login", None).await.status(), 200);
    assert_eq!(
        visit("/t/home/login", Some("ma-idp=made-up"))
            .await
            .status(),
        200
    );
    assert_eq!(visit("/admin/login", None).await.status(), 200);
    // The fifth within the minute: refused, with or without a made-up cookie, on either side.
    for (path, cookie) in [
        ("/t/home/login", None),
        ("/t/home/login", Some("ma-idp=made-up")),
        ("/admin/login", None),
    ] {
        let r = visit(path, cookie).await;
        assert_eq!(r.status(), 429, "{path} {cookie:?}");
        assert_eq!(r.headers()["retry-after"], "60");
    }
    // The first browser has its session: it goes on.
    let r = b.get("/t/home/login").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(r#"name="csrf""#));
    app.stop().await;
}

/// `limits.anonymous_sessions_max`: however many networks the new visits come from, at most
/// this many sessions nobody signed in to are live; beyond, a new visit gets 503 (a page,
/// `Retry-After`), and browsers with their session go on. A sign-in or an expiry makes room
/// again once the table is counted again.
async fn anonymous_sessions_are_capped_in_all(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| s.limits.anonymous_sessions_max = 3).await
    else {
        return;
    };
    app.setup("home").await;
    let browsers: Vec<Browser> = (0..3).map(|_| app.browser()).collect();
    for b in &browsers {
        assert_eq!(b.get("/t/home/login").await.status(), 200);
    }
    let refused = |path: &'static str| {
        let app = &app;
        async move {
            let r = app.http.get(app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 503, "{path}");
            assert_eq!(r.headers()["retry-after"], "300");
            let html = r.text().await.unwrap();
            assert!(html.contains("Too many sign-ins are under way"), "{html}");
        }
    };
    refused("/t/home/login").await;
    refused("/admin/login").await;
    let now = app.svc.now();
    assert_eq!(app.svc.store.anonymous_sessions(now).await.unwrap(), 3);
    // A browser with its session goes on, and signs in: its session is no longer anonymous.
    let html = browsers[0].get("/t/home/login").await.text().await.unwrap();
    let r = browsers[0]
        .post_password("/t/home/login", &html, "alice")
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.svc.store.anonymous_sessions(now).await.unwrap(), 2);
    // Counted again at most every few seconds: then there is room for one more.
    refused("/t/home/login").await;
    app.clock.advance(ma_idp::login::limits::RECOUNT_EVERY);
    let b = app.browser();
    assert_eq!(b.get("/t/home/login").await.status(), 200);
    refused("/t/home/login").await;
    // An hour later the unfinished ones have expired: room for all.
    app.clock.advance(3601);
    for _ in 0..3 {
        assert_eq!(app.browser().get("/t/home/login").await.status(), 200);
    }
    app.stop().await;
}

/// `X-Forwarded-For` counts only from a trusted proxy. The last case listens dual-stack
/// (`[::]`), where the proxy on 127.0.0.1 is the peer `::ffff:127.0.0.1`: still the trusted
/// proxy, and a client named in IPv4-mapped form is its IPv4 address.
async fn forwarded_for_is_believed_only_from_trusted_proxies(backend: Backend) {
    for (trusted, dual_stack) in [(false, false), (true, false), (true, true)] {
        let tweak = |s: &mut ma_idp::config::Settings| {
            if trusted {
                s.trusted_proxies = vec!["127.0.0.1".into()];
            }
        };
        let app = if dual_stack {
            TestApp::start_dual_stack(backend, tweak).await
        } else {
            TestApp::start_with(backend, tweak).await
        };
        let Some(mut app) = app else {
            return;
        };
        app.setup("home").await;
        let mut b = app.browser();
        if dual_stack {
            // Over IPv4 (`localhost` may resolve to ::1).
            b.base = b.base.replace("localhost", "127.0.0.1");
        }
        let html = b.get("/t/home/login").await.text().await.unwrap();
        let csrf = hidden(&html, "csrf");
        let forwarded = if dual_stack {
            "198.51.100.9, ::ffff:203.0.113.7"
        } else {
            "198.51.100.9, 203.0.113.7"
        };
        let r = b
            .http
            .post(b.url("/t/home/login"))
            .header("x-forwarded-for", forwarded)
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "alice"),
                ("password", "bad"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let t = app.svc.tenant("home").await.unwrap();
        let failed = app.audited(&t.id, "sign_in", "failed").await;
        let ev = failed.first().expect("the failed sign-in is audited");
        let expected = if trusted { "203.0.113.7" } else { "127.0.0.1" };
        assert_eq!(
            ev.ip.as_deref(),
            Some(expected),
            "trusted={trusted} dual_stack={dual_stack}"
        );
        // A proxy that adds a line of its own after the client's: the last line counts.
        if !dual_stack {
            let r = b
                .http
                .post(b.url("/t/home/login"))
                .header("x-forwarded-for", "198.51.100.10")
                .header("x-forwarded-for", "203.0.113.8")
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("username", "alice"),
                    ("password", "bad"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            let failed = app.audited(&t.id, "sign_in", "failed").await;
            let ips: Vec<_> = failed.iter().filter_map(|e| e.ip.as_deref()).collect();
            let expected = if trusted { "203.0.113.8" } else { "127.0.0.1" };
            assert_eq!(ips.len(), 2, "{ips:?}");
            assert!(ips.contains(&expected), "trusted={trusted}: {ips:?}");
            assert!(!ips.contains(&"198.51.100.10"), "{ips:?}");
        }
        if dual_stack {
            // A restarted server listens where it listened: over IPv6 as well.
            app.restart().await;
            let v6 = app.base.replace("localhost", "[::1]");
            let r = app.http.get(format!("{v6}/health")).send().await;
            assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200), "{v6}");
        }
        app.stop().await;
    }
}

async fn backup_wipe_restore_keeps_tokens(backend: Backend) {
    let Some(mut app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = &alexa_redirects()[0];
    let (code, _) = app.authorize_code(&setup, redirect, "b", None).await;
    let (s, tok, _) = app
        .token(
            "/alexa/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200);
    let backup = app.dir.path().join("backup.db");
    let (data_dir, master, db_url) = (
        app.dir.path().to_path_buf(),
        app.settings.master_key.clone().unwrap(),
        app.settings.database_url.clone(),
    );
    let env = |c: &mut Command| {
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MA_IDP_DATA_DIR", &data_dir)
            .env("MA_IDP_MASTER_KEY", &master);
        if let Some(db) = &db_url {
            c.env("MA_IDP_DATABASE_URL", db);
        }
    };
    match backend {
        Backend::Sqlite => {
            // Online backup while the server runs.
            let mut c = Command::new(binary());
            env(&mut c);
            let out = c.args(["backup", "--out"]).arg(&backup).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "the backup is its owner's only");
            }
            // A backup from a data directory with no database refuses (it would create an
            // empty database and save that), and creates nothing there.
            let empty = app.dir.path().join("empty");
            std::fs::create_dir(&empty).unwrap();
            let backup_of_empty = |out: &str| {
                let mut c = Command::new(binary());
                env(&mut c);
                c.env("MA_IDP_DATA_DIR", &empty)
                    .args(["backup", "--out"])
                    .arg(app.dir.path().join(out))
                    .output()
                    .unwrap()
            };
            let out = backup_of_empty("nothing.db");
            assert!(!out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("nothing to back up"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!empty.join("ma-idp.db").exists());
            assert!(!app.dir.path().join("nothing.db").exists());
            // A backup copies the database as it is, whatever its schema: it runs no
            // migration on it (the server serving it may be of another version).
            std::fs::write(empty.join("ma-idp.db"), b"").unwrap();
            let out = backup_of_empty("as-is.db");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let tables = |db: std::path::PathBuf| async move {
                use sea_orm::ConnectionTrait;
                let conn = sea_orm::Database::connect(format!("sqlite://{}?mode=ro", db.display()))
                    .await
                    .unwrap();
                let row = conn
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Sqlite,
                        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'",
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                let n: i64 = row.try_get("", "n").unwrap();
                conn.close().await.ok();
                n
            };
            assert_eq!(
                tables(empty.join("ma-idp.db")).await,
                0,
                "the source is not migrated"
            );
            assert_eq!(tables(app.dir.path().join("as-is.db")).await, 0);
            assert!(
                tables(backup.clone()).await > 5,
                "the real backup has the tables"
            );
            app.stop_server().await;
            // Wipe.
            for f in ["ma-idp.db", "ma-idp.db-wal", "ma-idp.db-shm"] {
                let _ = std::fs::remove_file(app.dir.path().join(f));
            }
            let mut c = Command::new(binary());
            env(&mut c);
            let out = c.args(["restore", "--from"]).arg(&backup).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Restoring from something that is not a backup is refused.
            let junk = app.dir.path().join("junk.db");
            std::fs::write(&junk, b"not a database").unwrap();
            let mut c = Command::new(binary());
            env(&mut c);
            assert!(
                !c.args(["restore", "--from"])
                    .arg(&junk)
                    .output()
                    .unwrap()
                    .status
                    .success()
            );
        }
        Backend::Postgres => {
            let db = app.settings.database_url.clone().unwrap();
            if Command::new("pg_dump").arg("--version").output().is_err() {
                panic!("pg_dump is needed for the PostgreSQL backup procedure");
            }
            let out = Command::new("pg_dump")
                .args(["--format=custom", "--file"])
                .arg(&backup)
                .arg(&db)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            app.stop_server().await;
            let out = Command::new("psql")
                .args([
                    &db,
                    "-q",
                    "-c",
                    "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = Command::new("pg_restore")
                .args(["--no-owner", "--dbname", &db])
                .arg(&backup)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    app.restart().await;
    let (s, r): (_, Value) = app
        .refresh(&setup, tok["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        s, 200,
        "a token issued before the backup still refreshes: {r}"
    );
    app.verify_access_token("home", r["access_token"].as_str().unwrap())
        .await;
    app.stop().await;
}

/// A database pool of one or two connections (`db_max_connections`) still serves every
/// flow: the connections ma-idp keeps between statements (a writer for SQLite's one-call
/// writes, connections for single statements) never take a small pool's last ones, which the
/// transactions (a first consent, a code exchange) need. Linkings, refreshes and
/// introspections, in parallel, each answered.
async fn small_pools_serve_every_flow(backend: Backend) {
    let link = async |app: &TestApp, setup: &Setup, state: &str| {
        app.link(setup, state).await["refresh_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for pool in [1u32, 2] {
        let Some(app) = TestApp::start_with(backend, |s| s.db_max_connections = Some(pool)).await
        else {
            return;
        };
        let setup = app.setup("home").await;
        let mut tokens = vec![link(&app, &setup, &format!("pool{pool}-first")).await];
        // Refreshes of every chain and a new linking at once, three rounds.
        for round in 0..3 {
            let refreshes = tokens.iter().map(|t| app.refresh(&setup, t));
            let label = format!("pool{pool}-round{round}");
            let (answers, linked) = tokio::join!(
                futures_util::future::join_all(refreshes),
                link(&app, &setup, &label)
            );
            tokens.clear();
            for (s, body) in answers {
                assert_eq!(s, 200, "{label}: refresh: {body}");
                let intro = app
                    .introspect(&setup, body["access_token"].as_str().unwrap())
                    .await;
                assert_eq!(intro["active"], true, "{label}: {intro}");
                tokens.push(body["refresh_token"].as_str().unwrap().to_string());
            }
            tokens.push(linked);
        }
        app.stop().await;
    }
}
