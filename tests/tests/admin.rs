//! The admin UI (`/admin`), driven over HTTP the way an admin's browser does, on SQLite and
//! on PostgreSQL. Every check is something an admin would observe: status codes, the pages,
//! and the effect of each action on the public endpoints (sign-in, authorize, token,
//! introspection, JWKS). The database is only read for set-up (ids of objects to aim at).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use ma_idp::secrets::Secret;
use ma_idp::services::{ClientSpec, NewUserSpec};
use ma_idp_tests::*;
use reqwest::StatusCode;
use serde_json::Value;

both_backends!(
    bootstrap_setup_link,
    setup_link_ends_when_an_operator_is_made_elsewhere,
    sign_in_refusals_and_strangers,
    tenants_settings_and_default_tenant,
    users_create_search_and_pages,
    user_lifecycle,
    clients_create_alexa_rotate_and_edit,
    saving_a_client_keeps_how_it_authenticates,
    grants_revocation,
    sessions_and_keys,
    audit_log_and_dashboard,
    admin_listener_keeps_admin_off_the_public_listener,
    tenant_admin_matrix,
    bad_input_is_never_a_server_error,
    one_slug_created_twice_at_once,
    sign_ins_move_the_session_to_a_fresh_key,
);

/// The operator every test signs in as (tenant `home`, password `PASSWORD`).
const OP: &str = "olivia";
const NEW_PASSWORD: &str = "a brand new passphrase";
const REFUSED: &str = "Wrong tenant, username or password, or this account is not an admin.";
const CONFIRM: &str = "<h1>Please confirm</h1>";

/// The server, with the per-IP sign-in limit off: these tests sign in many times from
/// 127.0.0.1 within a minute.
async fn start(backend: Backend) -> Option<TestApp> {
    TestApp::start_with(backend, |s| s.limits.sign_ins_per_ip_per_minute = 0).await
}

/// The page's text contains `needle` (after undoing HTML escaping).
fn has(html: &str, needle: &str) -> bool {
    unescape_attribute(html).contains(needle)
}

#[track_caller]
fn assert_has(html: &str, needle: &str) {
    assert!(has(html, needle), "{needle:?} not on the page:\n{html}");
}

#[track_caller]
fn assert_lacks(html: &str, needle: &str) {
    assert!(
        !has(html, needle),
        "{needle:?} should not be on the page:\n{html}"
    );
}

/// The first capture group of `re`, unescaped.
#[track_caller]
fn cap(html: &str, re: &str) -> String {
    let r = regex::Regex::new(re).unwrap();
    let c = r
        .captures(html)
        .unwrap_or_else(|| panic!("{re} not found in page:\n{html}"));
    unescape_attribute(&c[1])
}

/// Every first capture group of `re`, unescaped.
fn caps(html: &str, re: &str) -> Vec<String> {
    regex::Regex::new(re)
        .unwrap()
        .captures_iter(html)
        .map(|c| unescape_attribute(&c[1]))
        .collect()
}

/// The value of the input with this id.
#[track_caller]
fn input_value(html: &str, id: &str) -> String {
    cap(html, &format!(r#"id="{id}"[^>]*value="([^"]*)""#))
}

/// The flash or inline error shown on a page.
#[track_caller]
fn error_text(html: &str) -> String {
    cap(html, r#"<p class="error" role="alert">([^<]*)</p>"#)
}

/// A dashboard count (`users`, `clients`, `active grants`).
#[track_caller]
fn count(html: &str, what: &str) -> u64 {
    cap(html, &format!(r"<strong>(\d+)</strong> {what}</li>"))
        .parse()
        .unwrap()
}

/// A dashboard chart's 30-day total.
#[track_caller]
fn chart_total(html: &str, title: &str) -> u64 {
    cap(
        html,
        &format!(r#"<figcaption>{title} <span class="small">\((\d+)\)</span>"#),
    )
    .parse()
    .unwrap()
}

/// The table rows of a page (the header row excluded).
fn rows(html: &str) -> Vec<String> {
    html.split("<tr>")
        .skip(1)
        .filter(|r| !r.contains("<th"))
        .map(|r| r.split("</tr>").next().unwrap_or("").to_string())
        .collect()
}

/// The event kind of each row of an audit page of one tenant (no tenant column).
fn audit_kinds(html: &str) -> Vec<String> {
    rows(html)
        .iter()
        .filter_map(|r| {
            regex::Regex::new(r"^<td>[^<]*</td><td>([a-z_]+)</td>")
                .unwrap()
                .captures(r)
                .map(|c| c[1].to_string())
        })
        .collect()
}

async fn tenant(app: &TestApp, slug: &str) -> entity::tenant::Model {
    app.svc.tenant(slug).await.unwrap()
}

/// A user made for set-up; returns its id.
async fn add_user(app: &TestApp, slug: &str, name: &str, role: &str, password: bool) -> String {
    let t = tenant(app, slug).await;
    let pw = password.then(|| Secret::new(PASSWORD));
    app.svc
        .create_user_with(
            &t,
            NewUserSpec {
                username: name.into(),
                display_name: None,
                email: None,
                role: role.into(),
            },
            pw.as_ref(),
            "test",
        )
        .await
        .unwrap()
        .id
}

async fn user_id(app: &TestApp, slug: &str, name: &str) -> String {
    let t = tenant(app, slug).await;
    app.svc
        .store
        .user_by_username(&t.id, name)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// The database id (as in admin URLs) of a client.
async fn client_pk(app: &TestApp, slug: &str, client_id: &str) -> String {
    let t = tenant(app, slug).await;
    app.svc
        .store
        .client_by_client_id(&t.id, client_id)
        .await
        .unwrap()
        .unwrap()
        .client
        .id
}

/// A second confidential client with one https redirect URI.
async fn add_client(app: &TestApp, slug: &str, name: &str, redirect: &str) -> Setup {
    let t = tenant(app, slug).await;
    let c = app
        .svc
        .create_client(
            &t,
            ClientSpec {
                name: name.into(),
                redirect_uris: vec![redirect.into()],
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    Setup {
        slug: slug.into(),
        client_id: c.client.client_id,
        client_secret: c.secret.unwrap().expose().to_string(),
    }
}

/// A passkey row for a user. The admin UI only lists and removes passkeys, so this needs no
/// real credential (`passkeys.rs` runs the real WebAuthn ceremonies).
async fn add_passkey(app: &TestApp, slug: &str, user: &str, name: &str) {
    let t = tenant(app, slug).await;
    let uid = user_id(app, slug, user).await;
    app.svc
        .store
        .insert_passkey(entity::passkey::Model {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant_id: t.id,
            user_id: uid,
            cred_id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.into(),
            passkey: "{}".into(),
            sign_count: 0,
            backup_eligible: false,
            backup_state: false,
            created_at: app.svc.now(),
            last_used_at: None,
        })
        .await
        .unwrap();
}

/// A signed-in admin's browser and the session's CSRF token.
struct Admin {
    b: Browser,
    csrf: String,
}

impl Admin {
    async fn sign_in(app: &TestApp, slug: &str, user: &str, password: &str) -> Admin {
        Self::sign_in_on(app.browser(), slug, user, password).await
    }

    async fn sign_in_on(b: Browser, slug: &str, user: &str, password: &str) -> Admin {
        let r = b.get("/admin/login").await;
        assert_eq!(r.status(), 200);
        let csrf = hidden(&r.text().await.unwrap(), "csrf");
        let r = b
            .post(
                "/admin/login",
                &[
                    ("csrf", &csrf),
                    ("tenant", slug),
                    ("username", user),
                    ("password", password),
                ],
            )
            .await;
        let status = r.status();
        assert_eq!(status, 303, "admin sign-in: {}", r.text().await.unwrap());
        assert_eq!(location(&r), "/admin");
        // The sign-in renewed the CSRF token: the pages from now on carry the new one.
        let mut r = b.get("/admin").await;
        if r.status() == 303 {
            r = b.get(&location(&r)).await;
        }
        assert_eq!(r.status(), 200);
        let signed_in = hidden(&r.text().await.unwrap(), "csrf");
        assert_ne!(signed_in, csrf, "a fresh CSRF token at sign-in");
        Admin { b, csrf: signed_in }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.b.get(path).await;
        let s = r.status();
        (s, r.text().await.unwrap())
    }

    /// A page that must answer 200.
    async fn page(&self, path: &str) -> String {
        let (s, html) = self.get(path).await;
        assert_eq!(s, 200, "GET {path}:\n{html}");
        html
    }

    /// POST a form with the session's CSRF token.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut f = vec![("csrf", self.csrf.as_str())];
        f.extend_from_slice(fields);
        self.b.post(path, &f).await
    }

    /// POST and follow the 303: the page it lands on, with its flash message.
    async fn done(&self, path: &str, fields: &[(&str, &str)]) -> String {
        let r = self.post(path, fields).await;
        let s = r.status();
        if s != 303 {
            panic!("POST {path}: {s}\n{}", r.text().await.unwrap());
        }
        let to = location(&r);
        self.page(&to).await
    }

    /// POST a form that must render a page at once (200).
    async fn render(&self, path: &str, fields: &[(&str, &str)]) -> String {
        let r = self.post(path, fields).await;
        let s = r.status();
        let html = r.text().await.unwrap();
        assert_eq!(s, 200, "POST {path}:\n{html}");
        html
    }

    /// POST a destructive form without `confirm`: the confirmation page (nothing is done).
    async fn ask(&self, path: &str, fields: &[(&str, &str)]) -> String {
        let html = self.render(path, fields).await;
        assert!(
            html.contains(CONFIRM),
            "confirmation page expected:\n{html}"
        );
        html
    }

    /// Press the button on a confirmation page.
    async fn confirm(&self, page: &str) -> reqwest::Response {
        let action = cap(
            page,
            r#"<form method="post" action="([^"]+)" class="actions narrow">"#,
        );
        let re =
            regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)">"#).unwrap();
        let fields: Vec<(String, String)> = re
            .captures_iter(page)
            .map(|c| (unescape_attribute(&c[1]), unescape_attribute(&c[2])))
            .collect();
        assert!(fields.iter().any(|(k, v)| k == "confirm" && v == "yes"));
        self.b
            .http
            .post(self.b.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// Confirm and follow the 303.
    async fn confirm_done(&self, page: &str) -> String {
        let r = self.confirm(page).await;
        let s = r.status();
        if s != 303 {
            panic!("confirm: {s}\n{}", r.text().await.unwrap());
        }
        let to = location(&r);
        self.page(&to).await
    }
}

/// Sign in at the public sign-in page of a tenant; the browser keeps the session.
async fn public_sign_in(app: &TestApp, slug: &str, user: &str, password: &str) -> (u16, Browser) {
    let b = app.browser();
    let path = format!("/t/{slug}/login");
    let r = b.get(&path).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let r = b
        .post(
            &path,
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("username", user),
                ("password", password),
            ],
        )
        .await;
    (r.status().as_u16(), b)
}

async fn account_status(b: &Browser, slug: &str) -> u16 {
    b.get(&format!("/t/{slug}/account")).await.status().as_u16()
}

fn authorize_url(s: &Setup, redirect: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &s.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect)
        .append_pair("state", "st")
        .append_pair("scope", "music.control user:read")
        .finish();
    format!("/t/{}/authorize?{q}", s.slug)
}

/// Authorization code flow at `/t/{slug}/authorize` as `user`, then the code exchange at
/// `/t/{slug}/token` with HTTP Basic: the token response.
async fn link_as(app: &TestApp, s: &Setup, user: &str, password: &str, redirect: &str) -> Value {
    let b = app.browser();
    let q = vec![
        ("client_id", s.client_id.clone()),
        ("response_type", "code".to_string()),
        ("redirect_uri", redirect.to_string()),
        ("state", "st".to_string()),
        ("scope", "music.control user:read".to_string()),
    ];
    let loc = b
        .sign_in_and_consent(&format!("/t/{}/authorize", s.slug), &q, user, password)
        .await;
    let (code, _) = parse_code(&loc, redirect, "st");
    let (st, tok, _) = app
        .token(
            &format!("/t/{}/token", s.slug),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ],
            Some((&s.client_id, &s.client_secret)),
        )
        .await;
    assert_eq!(st, 200, "code exchange: {tok}");
    tok
}

async fn refresh_at(app: &TestApp, s: &Setup, refresh_token: &str) -> (StatusCode, Value) {
    let (st, body, _) = app
        .token(
            &format!("/t/{}/token", s.slug),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            Some((&s.client_id, &s.client_secret)),
        )
        .await;
    (st, body)
}

#[track_caller]
fn assert_invalid_grant(r: (StatusCode, Value)) {
    assert_eq!(
        (r.0.as_u16(), r.1["error"].as_str()),
        (400, Some("invalid_grant")),
        "{}",
        r.1
    );
}

fn rt(tok: &Value) -> String {
    tok["refresh_token"].as_str().unwrap().to_string()
}

fn at(tok: &Value) -> String {
    tok["access_token"].as_str().unwrap().to_string()
}

async fn kids(app: &TestApp, slug: &str) -> BTreeSet<String> {
    app.jwks(slug).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// A tenant `home` (alice, the Alexa client) with the operator signed in.
async fn home_with_operator(app: &TestApp) -> (Setup, Admin) {
    let s = app.setup("home").await;
    add_user(app, "home", OP, "operator", true).await;
    let adm = Admin::sign_in(app, "home", OP, PASSWORD).await;
    (s, adm)
}

// ---------------------------------------------------------------------------------------

async fn bootstrap_setup_link(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let first = app
        .svc
        .setup_link_if_needed()
        .await
        .unwrap()
        .expect("no operator yet: a setup link");
    assert!(first.starts_with("/admin/setup/"), "{first}");
    // A restart prints a new link; the earlier one stops working.
    let link = app.svc.setup_link_if_needed().await.unwrap().unwrap();
    assert_ne!(link, first);
    let b = app.browser();
    for bad in [
        first.clone(),
        "/admin/setup/not-a-token".to_string(),
        format!("/admin/setup/{}", "x".repeat(300)),
    ] {
        assert_eq!(b.get(&bad).await.status(), 404, "{bad}");
    }

    let r = b.get(&link).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_has(&html, "Set up ma-idp");
    assert!(
        html.contains(r#"name="tenant_name""#),
        "no tenant yet: a name is asked"
    );
    let csrf = hidden(&html, "csrf");
    let form = |tenant: &'static str, pw2: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("tenant", tenant.to_string()),
            ("tenant_name", "Home".to_string()),
            ("username", OP.to_string()),
            ("password", PASSWORD.to_string()),
            ("password2", pw2.to_string()),
        ]
    };
    let post = |path: String, f: Vec<(&'static str, String)>| {
        let b = &b;
        async move { b.http.post(b.url(&path)).form(&f).send().await.unwrap() }
    };
    // A wrong token with a valid form: 404.
    let r = post("/admin/setup/not-a-token".into(), form("home", PASSWORD)).await;
    assert_eq!(r.status(), 404);
    // Invalid input: the form again with the message (400), and nothing is created.
    let r = post(link.clone(), form("home", "something else")).await;
    assert_eq!(r.status(), 400);
    assert_has(&r.text().await.unwrap(), "The two passwords differ.");
    let r = post(link.clone(), form("Not A Slug", PASSWORD)).await;
    assert_eq!(r.status(), 400);
    assert_has(&r.text().await.unwrap(), "A tenant is 1-64 characters");
    let mut short = form("home", "short");
    short[4].1 = "short".into();
    let r = post(link.clone(), short).await;
    assert_eq!(r.status(), 400);
    assert_has(
        &r.text().await.unwrap(),
        "A password has 8 to 1024 characters.",
    );
    // Without the CSRF token: refused before anything else.
    let mut no_csrf = form("home", PASSWORD);
    no_csrf.remove(0);
    assert_eq!(post(link.clone(), no_csrf).await.status(), 400);
    let r = app
        .http
        .get(app.url("/t/home/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no tenant was created by refused forms");
    assert_eq!(b.get(&link).await.status(), 200, "the link still works");

    // The real thing.
    let r = post(link.clone(), form("home", PASSWORD)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    let r = b.get("/admin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/tenants");
    let r = b.get("/admin/tenants").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_has(
        &html,
        "Your operator account is ready. The setup link no longer works.",
    );
    assert_has(&html, "olivia (operator)");
    assert_has(&html, r#"<a href="/admin/t/home">Home</a>"#);
    // The tenant is live on the public side, with signing keys.
    assert!(!kids(&app, "home").await.is_empty());

    // Used: the link is gone, for this browser and any other. (The setup signed this browser
    // in, which renewed its CSRF token: the setup page's no longer passes.)
    assert_eq!(b.get(&link).await.status(), 404);
    assert_eq!(
        post(link.clone(), form("home", PASSWORD)).await.status(),
        400
    );
    let signed_in_csrf = hidden(&b.get("/admin/tenants").await.text().await.unwrap(), "csrf");
    assert_ne!(signed_in_csrf, csrf);
    let mut again = form("home", PASSWORD);
    again[0].1 = signed_in_csrf;
    assert_eq!(post(link.clone(), again).await.status(), 404);
    assert_eq!(app.browser().get(&link).await.status(), 404);
    assert!(app.svc.setup_link_if_needed().await.unwrap().is_none());

    // The operator signs in elsewhere with the password chosen, and the audit log has it.
    let adm = Admin::sign_in(&app, "home", OP, PASSWORD).await;
    let html = adm.page("/admin/t/home/audit").await;
    let kinds = audit_kinds(&html);
    for k in ["operator_setup", "tenant_created", "admin_sign_in"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    app.stop().await;
}

/// A setup link makes the first operator only: once an operator is made another way (the
/// command line), the link printed before is worth nothing.
async fn setup_link_ends_when_an_operator_is_made_elsewhere(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let link = app.svc.setup_link_if_needed().await.unwrap().unwrap();
    let b = app.browser();
    let r = b.get(&link).await;
    assert_eq!(r.status(), 200);
    let csrf = hidden(&r.text().await.unwrap(), "csrf");
    let t = app
        .svc
        .create_tenant("home", Some("Home"), "cli")
        .await
        .unwrap();
    app.svc
        .create_user_with(
            &t,
            ma_idp::services::NewUserSpec {
                username: "oscar".into(),
                display_name: None,
                email: None,
                role: "operator".into(),
            },
            Some(&ma_idp::secrets::Secret::new(PASSWORD)),
            "cli",
        )
        .await
        .unwrap();
    assert_eq!(b.get(&link).await.status(), 404, "the page is gone");
    let form = [
        ("csrf", csrf.as_str()),
        ("tenant", "home"),
        ("tenant_name", "Home"),
        ("username", OP),
        ("password", PASSWORD),
        ("password2", PASSWORD),
    ];
    let r = b.http.post(b.url(&link)).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 404, "and its form makes no operator");
    assert!(
        app.svc
            .store
            .user_by_username(&t.id, OP)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(app.svc.store.operator_count().await.unwrap(), 1);
    app.stop().await;
}

async fn sign_in_refusals_and_strangers(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let s = app.setup("home").await;
    let op_id = add_user(&app, "home", OP, "operator", true).await;
    let alice = user_id(&app, "home", "alice").await;
    let pk = client_pk(&app, "home", &s.client_id).await;
    let kids_before = kids(&app, "home").await;

    let b = app.browser();
    let r = b.get("/admin/login").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_has(&html, "Admin sign-in");
    assert!(
        html.contains(r#"name="tenant" value="home""#),
        "the only tenant is filled in"
    );
    let csrf = hidden(&html, "csrf");
    let attempt = |tenant: &'static str, user: &'static str, pw: &'static str| {
        let (b, csrf) = (&b, csrf.clone());
        async move {
            let r = b
                .post(
                    "/admin/login",
                    &[
                        ("csrf", &csrf),
                        ("tenant", tenant),
                        ("username", user),
                        ("password", pw),
                    ],
                )
                .await;
            let s = r.status().as_u16();
            (s, r.text().await.unwrap())
        }
    };
    let not_signed_in = || async {
        let r = b.get("/admin").await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), "/admin/login");
    };
    // Wrong password, a member with the right password, an unknown tenant: one answer.
    let (st, wrong) = attempt("home", OP, "wrong password!").await;
    assert_eq!(st, 401);
    assert_eq!(error_text(&wrong), REFUSED);
    not_signed_in().await;
    let (st, member) = attempt("home", "alice", PASSWORD).await;
    assert_eq!(st, 401);
    assert_eq!(error_text(&member), REFUSED);
    not_signed_in().await;
    let (st, unknown) = attempt("nowhere", OP, PASSWORD).await;
    assert_eq!(st, 401);
    assert_eq!(error_text(&unknown), REFUSED);
    not_signed_in().await;
    // The member's password works on the public side: the refusal was about the role.
    assert_eq!(public_sign_in(&app, "home", "alice", PASSWORD).await.0, 303);

    // A sign-in without, or with a wrong, CSRF token: 400, and no session.
    for token in [None, Some("0".repeat(64))] {
        let mut f = vec![
            ("tenant", "home".to_string()),
            ("username", OP.to_string()),
            ("password", PASSWORD.to_string()),
        ];
        if let Some(t) = token {
            f.push(("csrf", t));
        }
        let r = b
            .http
            .post(b.url("/admin/login"))
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_has(&r.text().await.unwrap(), "This form has expired");
        not_signed_in().await;
    }

    // Strangers are sent to sign in from every admin page, real or not.
    let stranger = app.browser();
    let pages = [
        "/admin".to_string(),
        "/admin/".into(),
        "/admin/tenants".into(),
        "/admin/audit".into(),
        "/admin/t/home".into(),
        "/admin/t/home/settings".into(),
        "/admin/t/home/users".into(),
        "/admin/t/home/users?q=ali".into(),
        format!("/admin/t/home/users/{alice}"),
        "/admin/t/home/clients".into(),
        format!("/admin/t/home/clients/{pk}"),
        "/admin/t/home/grants".into(),
        "/admin/t/home/sessions".into(),
        "/admin/t/home/keys".into(),
        "/admin/t/home/audit".into(),
        "/admin/t/nowhere".into(),
        "/admin/t/nowhere/users".into(),
        "/admin/no-such-page".into(),
    ];
    for p in &pages {
        let r = stranger.get(p).await;
        assert_eq!(r.status(), 303, "GET {p}");
        assert_eq!(location(&r), "/admin/login", "GET {p}");
    }
    // A stranger's POSTs (with the CSRF token of their own sign-in page) do nothing either.
    let html = stranger.get("/admin/login").await.text().await.unwrap();
    let scsrf = hidden(&html, "csrf");
    let posts = [
        (
            "/admin/tenants".to_string(),
            vec![("slug", "sneaky"), ("name", "Sneaky")],
        ),
        (
            format!("/admin/t/home/users/{alice}/disable"),
            vec![("confirm", "yes")],
        ),
        (
            format!("/admin/t/home/users/{alice}/password"),
            vec![("password", NEW_PASSWORD), ("password2", NEW_PASSWORD)],
        ),
        (
            "/admin/t/home/users".to_string(),
            vec![
                ("username", "mallory"),
                ("password", PASSWORD),
                ("role", "admin"),
            ],
        ),
        (
            "/admin/t/home/keys/rotate".to_string(),
            vec![("confirm", "yes")],
        ),
    ];
    for (p, fields) in &posts {
        let mut f = vec![("csrf", scsrf.as_str())];
        f.extend_from_slice(fields);
        let r = stranger.post(p, &f).await;
        assert_eq!(r.status(), 303, "POST {p}");
        assert_eq!(location(&r), "/admin/login", "POST {p}");
    }

    // A signed-in operator's forms without, or with a wrong, CSRF token: 400, nothing done.
    let adm = Admin::sign_in(&app, "home", OP, PASSWORD).await;
    // The admin sign-in is audited once, and it cleared the operator's counter of the wrong
    // password above: four more wrong ones (five in all) and the right one still signs in.
    let home = tenant(&app, "home").await;
    let ok = app.audited(&home.id, "sign_in", "ok").await;
    assert_eq!(
        ok.iter().filter(|e| e.actor.as_deref() == Some(OP)).count(),
        1,
        "{ok:?}"
    );
    for _ in 0..4 {
        assert_eq!(attempt("home", OP, "wrong password!").await.0, 401);
    }
    assert_eq!(attempt("home", OP, PASSWORD).await.0, 303);
    for (p, fields) in &posts {
        for token in [None, Some("f".repeat(64))] {
            let mut f: Vec<(&str, &str)> = fields.clone();
            if let Some(t) = &token {
                f.push(("csrf", t.as_str()));
            }
            let r = adm.b.post(p, &f).await;
            assert_eq!(r.status(), 400, "POST {p} with {token:?}");
            assert_has(&r.text().await.unwrap(), "This form has expired");
        }
    }
    // Nor as JSON, nor as an empty body: 400, never a 500.
    let r = adm
        .b
        .http
        .post(adm.b.url("/admin/tenants"))
        .json(&serde_json::json!({"csrf": adm.csrf, "slug": "sneaky", "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = adm
        .b
        .http
        .post(adm.b.url("/admin/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing changed: no tenant, no user, same keys, alice's password and account as before.
    let html = adm.page("/admin/tenants").await;
    assert_lacks(&html, "sneaky");
    let r = app
        .http
        .get(app.url("/t/sneaky/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let html = adm.page("/admin/t/home/users").await;
    assert_lacks(&html, "mallory");
    assert_has(&html, "2 user(s).");
    assert_eq!(kids(&app, "home").await, kids_before);
    assert_eq!(public_sign_in(&app, "home", "alice", PASSWORD).await.0, 303);
    let html = adm.page(&format!("/admin/t/home/users/{alice}")).await;
    assert_has(&html, "<dt>State</dt><dd>active</dd>");

    // The operator's own session works; signing out ends it.
    let r = adm.b.get("/admin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/tenants");
    assert_has(&adm.page(&format!("/admin/t/home/users/{op_id}")).await, OP);
    let r = adm.post("/admin/logout", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/login");
    let r = adm.b.get("/admin/tenants").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/login");
    app.stop().await;
}

async fn tenants_settings_and_default_tenant(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    let alexa = alexa_redirects();

    // Create a tenant: it is live at once, with its own issuer and keys.
    let html = adm
        .done(
            "/admin/tenants",
            &[("slug", "cabin"), ("name", "The Cabin")],
        )
        .await;
    assert_has(&html, "Tenant The Cabin created, with its signing keys.");
    assert!(!kids(&app, "cabin").await.is_empty());
    let d: Value = app
        .http
        .get(app.url("/t/cabin/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], format!("{}/t/cabin", app.base));
    let html = adm.page("/admin/tenants").await;
    assert_has(&html, r#"<a href="/admin/t/cabin">The Cabin</a>"#);
    // Refused: an invalid slug, an existing one. The form again with the message.
    for (slug, msg) in [
        ("Bad Slug!", "a tenant slug is 1-64 characters"),
        ("cabin", "already exists"),
        ("", "a tenant slug is 1-64 characters"),
        // A name the settings page would refuse to save is refused at creation too.
        ("longname", "a tenant name has 1-200 characters"),
    ] {
        let name = if slug == "longname" {
            "n".repeat(201)
        } else {
            "Second".to_string()
        };
        let html = adm
            .done("/admin/tenants", &[("slug", slug), ("name", &name)])
            .await;
        assert!(
            error_text(&html).to_lowercase().contains(msg),
            "{slug:?}: {}",
            error_text(&html)
        );
        assert_lacks(&html, ">Second<");
    }

    // Before: one-hour access tokens, and the default grace window (60 s) lets a refresh
    // retried a second later through.
    let tok = link_as(&app, &s, "alice", PASSWORD, &alexa[2]).await;
    assert_eq!(tok["expires_in"], 3600);
    assert_eq!(refresh_at(&app, &s, &rt(&tok)).await.0, 200);
    app.clock.advance(1);
    assert_eq!(refresh_at(&app, &s, &rt(&tok)).await.0, 200);

    // Settings: lifetimes and the grace window.
    let settings = "/admin/t/home/settings";
    let html = adm
        .done(
            settings,
            &[
                ("name", "Home Two"),
                ("access_token_ttl", "600"),
                ("refresh_token_ttl", "7200"),
                ("refresh_grace", "0"),
            ],
        )
        .await;
    assert_has(&html, "Settings saved.");
    assert_has(&html, r#"name="access_token_ttl" value="600""#);
    assert_has(&html, r#"name="refresh_token_ttl" value="7200""#);
    assert_has(&html, r#"name="refresh_grace" value="0""#);
    assert_has(&html, r#"name="name" value="Home Two""#);
    // Out of range or not a number: the message, and nothing changes.
    for (field, value, msg) in [
        ("access_token_ttl", "5", "The access-token lifetime must be"),
        (
            "access_token_ttl",
            "abc",
            "The access-token lifetime must be",
        ),
        (
            "refresh_token_ttl",
            "60",
            "The refresh-token lifetime must be",
        ),
        ("refresh_grace", "301", "The refresh grace window must be"),
        ("refresh_grace", "-1", "The refresh grace window must be"),
        ("name", "", "A tenant name has 1-200 characters."),
    ] {
        let mut f = vec![
            ("name", "Home Three"),
            ("access_token_ttl", "900"),
            ("refresh_token_ttl", "7200"),
            ("refresh_grace", "0"),
        ];
        f.retain(|(k, _)| *k != field);
        f.push((field, value));
        let html = adm.done(settings, &f).await;
        assert!(
            error_text(&html).starts_with(msg),
            "{field}={value}: {html}"
        );
        // The form shows what was sent; the stored settings are unchanged.
        let sent = f.iter().find(|(k, _)| *k == "refresh_token_ttl").unwrap().1;
        assert_has(
            &html,
            &format!(r#"name="refresh_token_ttl" value="{sent}""#),
        );
        let html = adm.page(settings).await;
        assert_has(&html, r#"name="access_token_ttl" value="600""#);
        assert_has(&html, r#"name="name" value="Home Two""#);
    }
    // The effect at the token endpoint: 600 s access tokens, no grace for a replayed refresh
    // token, refresh tokens that die after 7200 s unused.
    let tok = link_as(&app, &s, "alice", PASSWORD, &alexa[0]).await;
    assert_eq!(tok["expires_in"], 600);
    let (st, fresh) = refresh_at(&app, &s, &rt(&tok)).await;
    assert_eq!(st, 200, "{fresh}");
    assert_eq!(fresh["expires_in"], 600);
    app.clock.advance(1);
    assert_invalid_grant(refresh_at(&app, &s, &rt(&tok)).await);
    let tok = link_as(&app, &s, "alice", PASSWORD, &alexa[1]).await;
    app.clock.advance(7201);
    assert_invalid_grant(refresh_at(&app, &s, &rt(&tok)).await);

    // Passkeys only: the public sign-in page refuses passwords.
    let html = adm
        .done(
            settings,
            &[
                ("name", "Home Two"),
                ("access_token_ttl", "600"),
                ("refresh_token_ttl", "7200"),
                ("refresh_grace", "0"),
                ("passkeys_required", "on"),
            ],
        )
        .await;
    assert_has(&html, r#"name="passkeys_required" checked"#);
    let pb = app.browser();
    let html = pb.get("/t/home/login").await.text().await.unwrap();
    assert!(!html.contains(r#"type="password""#), "no password field");
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
    assert_has(&r.text().await.unwrap(), "passkeys only");
    // (The admin sign-in keeps passwords: it has no passkey ceremony.)
    Admin::sign_in(&app, "home", OP, PASSWORD).await;

    // The default tenant for /alexa/*: with two tenants and none chosen, /alexa answers no one.
    let html = adm
        .done(
            "/admin/t/cabin/users",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("role", "member"),
            ],
        )
        .await;
    assert_has(&html, "User alice created.");
    let html = adm
        .render("/admin/t/cabin/clients/alexa", &[("vendor_id", VENDOR)])
        .await;
    let cabin = Setup {
        slug: "cabin".into(),
        client_id: input_value(&html, "client_id"),
        client_secret: input_value(&html, "client_secret"),
    };
    let alexa_authorize = authorize_url(&cabin, &alexa[0]).replace("/t/cabin/", "/alexa/");
    let anon = app.browser();
    assert_eq!(anon.get(&alexa_authorize).await.status(), 404);
    let html = adm.page("/admin/t/cabin/settings").await;
    assert_has(&html, "Another tenant (or none) answers");
    let q = adm.ask("/admin/t/cabin/default", &[]).await;
    assert_has(
        &q,
        "Make The Cabin the tenant behind /alexa/authorize and /alexa/token?",
    );
    assert_eq!(
        anon.get(&alexa_authorize).await.status(),
        404,
        "asking changes nothing"
    );
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "The Cabin now answers /alexa/*.");
    assert_has(&html, "This tenant answers <code>/alexa/authorize</code>");
    assert_eq!(anon.get(&alexa_authorize).await.status(), 200);
    let (code, _) = app.authorize_code(&cabin, &alexa[0], "st", None).await;
    let (st, tok, _) = app
        .token(
            "/alexa/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &alexa[0]),
            ],
            Some((&cabin.client_id, &cabin.client_secret)),
        )
        .await;
    assert_eq!(st, 200, "{tok}");
    let claims = app.verify_access_token("cabin", &at(&tok)).await;
    assert_eq!(claims["iss"], format!("{}/t/cabin", app.base));
    let html = adm.page("/admin/tenants").await;
    let cabin_row = rows(&html)
        .into_iter()
        .find(|r| r.contains("The Cabin"))
        .unwrap();
    assert!(cabin_row.contains("default for /alexa"), "{cabin_row}");
    let home_row = rows(&html)
        .into_iter()
        .find(|r| r.contains("Home Two"))
        .unwrap();
    assert!(!home_row.contains("default for /alexa"), "{home_row}");
    app.stop().await;
}

async fn users_create_search_and_pages(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (_, adm) = home_with_operator(&app).await;
    let users = "/admin/t/home/users";

    // With a password: it signs in on the public side.
    let r = adm
        .post(
            users,
            &[
                ("username", "bob"),
                ("display_name", "Bob Builder"),
                ("email", "bob@example.com"),
                ("password", PASSWORD),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    let bob = to
        .strip_prefix("/admin/t/home/users/")
        .expect("to the new user's page")
        .to_string();
    let html = adm.page(&to).await;
    assert_has(&html, "User bob created.");
    assert_has(&html, "<dt>Name</dt><dd>Bob Builder</dd>");
    assert_has(&html, "<dt>Role</dt><dd>member</dd>");
    assert_has(&html, "<dt>Password</dt><dd>set</dd>");
    assert_has(&html, &format!("<code>{bob}</code>"));
    assert_eq!(public_sign_in(&app, "home", "bob", PASSWORD).await.0, 303);

    // Without a password: no password sign-in at all (they enroll a passkey from a link).
    let html = adm
        .done(
            users,
            &[("username", "carol"), ("password", ""), ("role", "member")],
        )
        .await;
    assert_has(&html, "User carol created.");
    assert_has(&html, "<dt>Password</dt><dd>none</dd>");
    assert_eq!(public_sign_in(&app, "home", "carol", PASSWORD).await.0, 401);

    // A tenant admin: enters /admin, and lands on their own tenant.
    let html = adm
        .done(
            users,
            &[
                ("username", "dave"),
                ("password", PASSWORD),
                ("role", "admin"),
            ],
        )
        .await;
    assert_has(&html, "<dt>Role</dt><dd>admin</dd>");
    let dave = Admin::sign_in(&app, "home", "dave", PASSWORD).await;
    let r = dave.b.get("/admin").await;
    assert_eq!(location(&r), "/admin/t/home");
    assert_has(&dave.page("/admin/t/home").await, "dave (admin of home)");

    // Refused: the message on the list page, and no user.
    for (fields, msg) in [
        (
            vec![("username", "bob"), ("role", "member")],
            "already exists",
        ),
        (
            vec![("username", "two words"), ("role", "member")],
            "without spaces",
        ),
        (vec![("username", ""), ("role", "member")], "without spaces"),
        (
            vec![
                ("username", "eve"),
                ("password", "short"),
                ("role", "member"),
            ],
            "8 to 1024 characters",
        ),
        (
            vec![("username", "eve"), ("role", "root")],
            "You cannot give that role.",
        ),
    ] {
        let html = adm.done(users, &fields).await;
        assert!(error_text(&html).contains(msg), "{fields:?}: {html}");
        assert_has(&html, "5 user(s).");
    }
    // A refused form comes back filled in as it was sent, except the password; once.
    let html = adm
        .done(
            users,
            &[
                ("username", "two words"),
                ("display_name", "Eve <Evans>"),
                ("email", "eve@example.com"),
                ("password", "short-secret-typed"),
                ("role", "admin"),
            ],
        )
        .await;
    assert!(error_text(&html).contains("without spaces"), "{html}");
    assert_has(
        &html,
        r#"name="username" autocomplete="off" autocapitalize="none" spellcheck="false" required value="two words""#,
    );
    assert!(
        html.contains(r#"name="display_name" value="Eve &lt;Evans&gt;""#),
        "escaped: {html}"
    );
    assert_has(&html, r#"value="eve@example.com""#);
    assert_has(&html, r#"<option value="admin" selected>"#);
    assert_lacks(&html, "short-secret-typed");
    let again = adm.page(users).await;
    assert_lacks(&again, "two words");
    assert_lacks(&again, "eve@example.com");

    // A tenant admin cannot make operators.
    let html = dave
        .done(users, &[("username", "eve"), ("role", "operator")])
        .await;
    assert_eq!(error_text(&html), "You cannot give that role.");
    assert!(
        !dave
            .page(users)
            .await
            .contains(r#"<option value="operator""#)
    );

    // Paging: 25 a page, with Next and Previous links.
    for i in 0..30 {
        add_user(&app, "home", &format!("user-{i:02}"), "member", false).await;
    }
    let name_re = r#"<td><a href="/admin/t/home/users/[^"]+">([^<]+)</a></td>"#;
    let p1 = adm.page(users).await;
    assert_has(&p1, "35 user(s).");
    assert!(!p1.contains(r#"rel="prev""#));
    let names1 = caps(&p1, name_re);
    assert_eq!(names1.len(), 25);
    let next = cap(&p1, r#"<a href="([^"]+)" rel="next">Next</a>"#);
    assert!(next.contains("offset=25"), "{next}");
    let p2 = adm.page(&next).await;
    let names2 = caps(&p2, name_re);
    assert_eq!(names2.len(), 10);
    assert!(p2.contains(r#"rel="prev">Previous</a>"#));
    assert!(!p2.contains(r#"rel="next""#));
    let all: BTreeSet<String> = names1.iter().chain(&names2).cloned().collect();
    assert_eq!(all.len(), 35, "no user on both pages, none missing");
    for n in ["alice", "bob", "carol", "dave", OP, "user-00", "user-29"] {
        assert!(all.contains(n), "{n}");
    }
    // Search: username, display name, e-mail (any case); LIKE wildcards are plain text.
    let p = adm.page(&format!("{users}?q=user-1")).await;
    assert_has(&p, "10 user(s).");
    let found = caps(&p, name_re);
    assert_eq!(found.len(), 10);
    assert!(found.iter().all(|n| n.starts_with("user-1")), "{found:?}");
    for q in ["builder", "BOB@EXAMPLE.COM"] {
        let p = adm.page(&format!("{users}?q={q}")).await;
        assert_eq!(caps(&p, name_re), vec!["bob".to_string()], "q={q}");
    }
    // (`u%9` would find user-09, user-19, user-29 and `user_0` ten users if they were.)
    for q in ["nobody-here", "u%259", "user_0", "user%5C0"] {
        let p = adm.page(&format!("{users}?q={q}")).await;
        assert!(caps(&p, name_re).is_empty(), "q={q}: {p}");
        assert_has(&p, "0 user(s).");
    }
    // Searching keeps the search in the paging links.
    let p = adm.page(&format!("{users}?q=user")).await;
    assert_has(&p, "30 user(s).");
    let next = cap(&p, r#"<a href="([^"]+)" rel="next">Next</a>"#);
    assert!(
        next.contains("q=user") && next.contains("offset=25"),
        "{next}"
    );
    assert_eq!(caps(&adm.page(&next).await, name_re).len(), 5);
    // Nonsense paging: a page, not an error.
    for q in ["offset=-1", "offset=99999999999999999999", "offset=1000"] {
        adm.page(&format!("{users}?{q}")).await;
    }
    // Any case in any script (SQLite's lower() folds only ASCII): "Émile Özdemir" is found
    // as "özdemir", "ÉMILE", "émile" and "zdem", and "İpek" (whose lowercase is "i̇pek", with
    // a combining dot) as "İPEK".
    for (username, display) in [("emile", "Émile Özdemir"), ("ipek", "İpek")] {
        let r = adm
            .post(
                users,
                &[
                    ("username", username),
                    ("display_name", display),
                    ("role", "member"),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
    }
    for q in ["%C3%B6zdemir", "%C3%89MILE", "%C3%A9mile", "zdem"] {
        let p = adm.page(&format!("{users}?q={q}")).await;
        assert_eq!(caps(&p, name_re), vec!["emile".to_string()], "q={q}");
        assert_has(&p, "1 user(s).");
    }
    let p = adm.page(&format!("{users}?q=%C4%B0PEK")).await;
    assert_eq!(caps(&p, name_re), vec!["ipek".to_string()]);
    let p = adm.page(&format!("{users}?q=%C3%B6zdemirx")).await;
    assert!(caps(&p, name_re).is_empty(), "{p}");
    app.stop().await;
}

async fn user_lifecycle(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    let linked = link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[0]).await;
    let alice = user_id(&app, "home", "alice").await;
    let op = user_id(&app, "home", OP).await;
    let page = format!("/admin/t/home/users/{alice}");
    let act = |a: &str| format!("{page}/{a}");

    // Disable: asks first, and asking changes nothing.
    let (st, alice_b) = public_sign_in(&app, "home", "alice", PASSWORD).await;
    assert_eq!(st, 303);
    assert_eq!(account_status(&alice_b, "home").await, 200);
    let q = adm.ask(&act("disable"), &[]).await;
    assert_has(&q, "Disable alice?");
    // It says what happens to her linked apps: they stop (Alexa's refresh is invalid_grant).
    assert_lacks(&q, "keep working");
    assert_has(
        &q,
        "Their linked apps stop working while the account is disabled",
    );
    assert_eq!(account_status(&alice_b, "home").await, 200);
    assert_has(&adm.page(&page).await, "<dt>State</dt><dd>active</dd>");
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "alice is disabled.");
    assert_has(&html, r#"<span class="badge off">disabled</span>"#);
    assert_has(&html, "No active sessions.");
    // Signed out everywhere, cannot sign in again, and her linked app stops working.
    assert_eq!(account_status(&alice_b, "home").await, 302);
    assert_invalid_grant(refresh_at(&app, &s, &rt(&linked)).await);
    assert_eq!(public_sign_in(&app, "home", "alice", PASSWORD).await.0, 401);
    // An operator cannot disable themself (a 400 page with the reason).
    let r = adm
        .post(
            &format!("/admin/t/home/users/{op}/disable"),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_has(
        &r.text().await.unwrap(),
        "You cannot disable your own account.",
    );
    assert_has(
        &adm.page(&format!("/admin/t/home/users/{op}")).await,
        "<dd>active</dd>",
    );

    // Enable.
    let html = adm.done(&act("enable"), &[]).await;
    assert_has(&html, "alice is enabled.");
    assert_eq!(public_sign_in(&app, "home", "alice", PASSWORD).await.0, 303);

    // Role: admin lets alice into /admin; back to member ends that admin session.
    let html = adm.done(&act("role"), &[("role", "admin")]).await;
    assert_has(&html, "alice is now admin.");
    let alice_adm = Admin::sign_in(&app, "home", "alice", PASSWORD).await;
    assert_has(
        &alice_adm.page("/admin/t/home").await,
        "alice (admin of home)",
    );
    let html = adm.done(&act("role"), &[("role", "member")]).await;
    assert_has(&html, "alice is now member.");
    let r = alice_adm.b.get("/admin/t/home").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/login");
    let r = alice_adm.b.get("/admin/t/home").await;
    assert_eq!(location(&r), "/admin/login", "the session stays ended");
    let html = adm.done(&act("role"), &[("role", "root")]).await;
    assert_eq!(error_text(&html), "You cannot give that role.");
    assert_has(&html, "<dt>Role</dt><dd>member</dd>");
    let html = adm
        .done(
            &format!("/admin/t/home/users/{op}/role"),
            &[("role", "member")],
        )
        .await;
    assert_eq!(error_text(&html), "You cannot change your own role.");
    assert_has(&html, "<dt>Role</dt><dd>operator</dd>");

    // Reset password.
    for (p1, p2, msg) in [
        (NEW_PASSWORD, "something else", "The two passwords differ."),
        ("short", "short", "A password has 8 to 1024 characters."),
    ] {
        let html = adm
            .done(&act("password"), &[("password", p1), ("password2", p2)])
            .await;
        assert_eq!(error_text(&html), msg);
    }
    // A browser signed in with the old password stays signed in through refused resets,
    // and is signed out by the reset itself (the password may have leaked).
    let (st, before_reset) = public_sign_in(&app, "home", "alice", PASSWORD).await;
    assert_eq!(st, 303);
    assert_eq!(account_status(&before_reset, "home").await, 200);
    let html = adm
        .done(
            &act("password"),
            &[("password", "short"), ("password2", "short")],
        )
        .await;
    assert_eq!(error_text(&html), "A password has 8 to 1024 characters.");
    assert_eq!(account_status(&before_reset, "home").await, 200);
    let html = adm
        .done(
            &act("password"),
            &[("password", NEW_PASSWORD), ("password2", NEW_PASSWORD)],
        )
        .await;
    assert_has(
        &html,
        "The password of alice was changed; browsers signed in as alice are signed out.",
    );
    assert_eq!(account_status(&before_reset, "home").await, 302);
    assert_eq!(
        public_sign_in(&app, "home", "alice", NEW_PASSWORD).await.0,
        303
    );
    assert_eq!(public_sign_in(&app, "home", "alice", PASSWORD).await.0, 401);

    // Enrollment link: a URL whose page opens.
    let html = adm.render(&act("enroll"), &[]).await;
    assert_has(&html, "Passkey enrollment link");
    let link = input_value(&html, "link");
    assert!(link.starts_with(&format!("{}/t/home/", app.base)), "{link}");
    let r = app.browser().get(&link).await;
    assert_eq!(r.status(), 200);
    assert_has(&r.text().await.unwrap(), "Create a passkey");

    // Remove a passkey (a stored row: see `add_passkey`).
    add_passkey(&app, "home", "alice", "Kitchen tablet").await;
    let (_, alice_b) = public_sign_in(&app, "home", "alice", NEW_PASSWORD).await;
    let account = |b: &Browser| {
        let b = b.http.clone();
        let u = app.url("/t/home/account");
        async move { b.get(u).send().await.unwrap().text().await.unwrap() }
    };
    assert_has(&account(&alice_b).await, "Kitchen tablet");
    let html = adm.page(&page).await;
    assert_has(&html, "Kitchen tablet");
    let pid = cap(&html, r#"/passkeys/([^/"]+)/remove""#);
    let q = adm.ask(&act(&format!("passkeys/{pid}/remove")), &[]).await;
    assert_has(&q, "Remove this passkey of alice?");
    assert_has(&account(&alice_b).await, "Kitchen tablet");
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "Passkey removed.");
    assert_has(&html, "No passkeys.");
    assert_lacks(&account(&alice_b).await, "Kitchen tablet");
    let r = adm
        .post(
            &act(&format!("passkeys/{pid}/remove")),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), 404, "already removed");

    // End every session of alice.
    let (_, second_b) = public_sign_in(&app, "home", "alice", NEW_PASSWORD).await;
    assert_eq!(account_status(&alice_b, "home").await, 200);
    assert_eq!(account_status(&second_b, "home").await, 200);
    let listed = caps(&adm.page(&page).await, r#"/sessions/([^/"]+)/end""#).len();
    assert!(listed >= 2, "both browsers listed on the user's page");
    let q = adm.ask(&act("end-sessions"), &[]).await;
    assert_has(&q, "Sign alice out of every browser?");
    assert_eq!(account_status(&alice_b, "home").await, 200);
    let html = adm.confirm_done(&q).await;
    assert_has(&html, &format!("{listed} session(s) of alice ended."));
    assert_has(&html, "No active sessions.");
    assert_eq!(account_status(&alice_b, "home").await, 302);
    assert_eq!(account_status(&second_b, "home").await, 302);
    // The operator's own admin session is untouched.
    adm.page(&page).await;

    // An unknown action or user: 404.
    assert_eq!(adm.post(&act("explode"), &[]).await.status(), 404);
    assert_eq!(
        adm.post("/admin/t/home/users/nobody/enable", &[])
            .await
            .status(),
        404
    );
    assert_eq!(adm.get("/admin/t/home/users/nobody").await.0, 404);
    app.stop().await;
}

async fn clients_create_alexa_rotate_and_edit(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (_, adm) = home_with_operator(&app).await;
    let clients = "/admin/t/home/clients";

    // Create: the secret is shown once, and the pair works for a code exchange.
    let html = adm
        .render(
            clients,
            &[
                ("name", "Music app"),
                (
                    "redirect_uris",
                    "https://app.example/cb\nhttp://127.0.0.1:8765/cb",
                ),
                ("scopes", ""),
            ],
        )
        .await;
    assert_has(&html, "Client created");
    assert_has(&html, "Copy the client secret now");
    let c = Setup {
        slug: "home".into(),
        client_id: input_value(&html, "client_id"),
        client_secret: input_value(&html, "client_secret"),
    };
    assert!(c.client_secret.len() >= 32, "{}", c.client_secret);
    let pk = cap(
        &html,
        r#"href="/admin/t/home/clients/([^"]+)">Open Music app"#,
    );
    let client_page = format!("{clients}/{pk}");
    let tok = link_as(&app, &c, "alice", PASSWORD, "https://app.example/cb").await;
    assert_eq!(app.introspect(&c, &at(&tok)).await["active"], true);
    let html = adm.page(&client_page).await;
    assert_has(&html, &c.client_id);
    assert!(
        !html.contains(&c.client_secret),
        "the secret is not shown again"
    );
    assert_has(&html, "http://127.0.0.1:8765/cb");
    // Refused: a non-https redirect URI, none at all, a bad scope. Nothing is created.
    for (fields, msg) in [
        (
            vec![
                ("name", "Insecure"),
                ("redirect_uris", "http://example.com/cb"),
            ],
            "must use https",
        ),
        (
            vec![("name", "Insecure"), ("redirect_uris", "")],
            "Enter at least one redirect URI.",
        ),
        (
            vec![
                ("name", "Insecure"),
                ("redirect_uris", "https://a.example/cb#frag"),
            ],
            "must not contain a fragment",
        ),
        (
            vec![("name", "Insecure"), ("redirect_uris", "not a url")],
            "is not an absolute URL",
        ),
        (
            vec![
                ("name", "Insecure"),
                ("redirect_uris", "https://a.example/cb"),
                ("scopes", "ok bad\"scope"),
            ],
            "is not a valid scope",
        ),
    ] {
        let html = adm.done(clients, &fields).await;
        assert!(has(&error_text(&html), msg), "{fields:?}: {html}");
        assert_lacks(&html, ">Insecure<");
    }
    // A public client has no secret.
    let html = adm
        .render(
            clients,
            &[
                ("name", "Phone app"),
                ("redirect_uris", "https://phone.example/cb"),
                ("public", "on"),
            ],
        )
        .await;
    assert!(!html.contains("client_secret"), "{html}");
    let row = rows(&adm.page(clients).await)
        .into_iter()
        .find(|r| r.contains("Phone app"))
        .unwrap();
    assert!(row.contains("<td>public</td>"), "{row}");

    // Add Alexa skill: every value Alexa's account-linking page asks for.
    let vendor = "M2ABCDEFGHIJKL";
    let html = adm
        .render(&format!("{clients}/alexa"), &[("vendor_id", vendor)])
        .await;
    assert_has(&html, "Alexa skill added");
    let ax = Setup {
        slug: "home".into(),
        client_id: input_value(&html, "client_id"),
        client_secret: input_value(&html, "client_secret"),
    };
    let issuer = format!("{}/t/home", app.base);
    assert_eq!(input_value(&html, "ax-auth"), format!("{issuer}/authorize"));
    assert_eq!(input_value(&html, "ax-token"), format!("{issuer}/token"));
    assert_eq!(input_value(&html, "ax-cid"), ax.client_id);
    assert_eq!(input_value(&html, "ax-secret"), ax.client_secret);
    assert_eq!(input_value(&html, "ax-scheme"), "HTTP Basic (Recommended)");
    let scopes = caps(
        &html,
        r#"class="copy scope" type="text" readonly value="([^"]*)""#,
    );
    assert_eq!(
        scopes.join(" "),
        "openid profile email offline_access music.control music.read user:read"
    );
    let domains = caps(
        &html,
        r#"class="copy domain" type="text" readonly value="([^"]*)""#,
    );
    assert_eq!(domains, vec!["localhost".to_string()]);
    assert_eq!(input_value(&html, "ax-ttl"), "3600");
    let uris = ma_idp::services::alexa_redirect_uris(vendor);
    assert_eq!(uris.len(), 3);
    for u in &uris {
        assert_has(&html, &format!("<code>{u}</code>"));
    }
    // Those values work at /t/home/token, for a code exchange from an Alexa redirect URI.
    let tok = link_as(&app, &ax, "alice", PASSWORD, &uris[2]).await;
    let claims = app.verify_access_token("home", &at(&tok)).await;
    assert_eq!(claims["client_id"], ax.client_id);
    assert_eq!(claims["iss"], issuer);
    let row = rows(&adm.page(clients).await)
        .into_iter()
        .find(|r| r.contains(&ax.client_id))
        .unwrap();
    assert!(row.contains("Alexa</span>"), "{row}");
    let html = adm
        .done(&format!("{clients}/alexa"), &[("vendor_id", "")])
        .await;
    assert_eq!(
        unescape_attribute(&error_text(&html)),
        "Enter the skill's Vendor ID."
    );

    // Rotate the secret: asks first (the old secret still works), then the old one is
    // invalid_client and the new one works.
    let secret_path = format!("{client_page}/secret");
    let q = adm.ask(&secret_path, &[]).await;
    assert_has(&q, "Give Music app a new client secret?");
    assert_eq!(app.introspect(&c, &at(&tok)).await["active"], true);
    let r = adm.confirm(&q).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_has(&html, "New client secret");
    let rotated = Setup {
        client_secret: input_value(&html, "client_secret"),
        ..c.clone()
    };
    assert_ne!(rotated.client_secret, c.client_secret);
    let music_tok = link_as(&app, &rotated, "alice", PASSWORD, "https://app.example/cb").await;
    let (st, e) = refresh_at(&app, &c, &rt(&music_tok)).await;
    assert_eq!(st, 401, "{e}");
    assert_eq!(e["error"], "invalid_client");
    let (st, e) = refresh_at(&app, &rotated, &rt(&music_tok)).await;
    assert_eq!(st, 200, "{e}");

    // Edit the redirect URIs.
    let html = adm.page(&client_page).await;
    let scopes = input_value(&html, "scopes");
    let edit = |uris: &'static str| {
        vec![
            ("name", "Music app"),
            ("redirect_uris", uris),
            ("scopes", scopes.as_str()),
            ("auth_method", "client_secret_basic"),
        ]
    };
    let html = adm
        .done(&client_page, &edit("http://evil.example/cb"))
        .await;
    assert!(has(&error_text(&html), "must use https"), "{html}");
    let textarea = r#"<textarea id="redirect_uris"[^>]*>([^<]*)</textarea>"#;
    assert_eq!(
        cap(&html, textarea),
        "http://evil.example/cb",
        "the refused form as it was sent"
    );
    let html = adm.page(&client_page).await;
    assert_eq!(
        cap(&html, textarea),
        "http://127.0.0.1:8765/cb\nhttps://app.example/cb",
        "nothing saved"
    );
    for (field, value, msg) in [
        (
            "auth_method",
            "magic",
            "Choose a client authentication method.",
        ),
        ("name", "", "A client needs a name"),
        (
            "access_token_ttl",
            "abc",
            "The access-token lifetime must be",
        ),
        ("scopes", "", "Scopes are space-separated scope names."),
    ] {
        let mut f = edit("https://new.example/cb");
        f.retain(|(k, _)| *k != field);
        f.push((field, value));
        let html = adm.done(&client_page, &f).await;
        assert!(error_text(&html).starts_with(msg), "{field}: {html}");
        assert_eq!(cap(&html, textarea), "https://new.example/cb", "as sent");
        assert!(
            !cap(&adm.page(&client_page).await, textarea).contains("new.example"),
            "nothing saved"
        );
    }
    let html = adm
        .done(&client_page, &edit("https://new.example/cb"))
        .await;
    assert_has(&html, "Client saved.");
    let anon = app.browser();
    let r = anon.get(&authorize_url(&c, "https://new.example/cb")).await;
    assert_eq!(r.status(), 200, "the new URI is accepted");
    let r = anon.get(&authorize_url(&c, "https://app.example/cb")).await;
    assert_eq!(r.status(), 400, "the removed URI is refused");
    assert!(r.headers().get("location").is_none());
    let linked = link_as(&app, &rotated, "alice", PASSWORD, "https://new.example/cb").await;
    let scope_of = |tok: Value| {
        let (app, c) = (&app, rotated.clone());
        async move { app.introspect(&c, &at(&tok)).await["scope"].clone() }
    };
    assert_eq!(scope_of(linked.clone()).await, "music.control user:read");

    // A scope taken off the client's list is off every token refreshed from then on (the
    // grant keeps it: put back, it comes back).
    let narrowed: String = scopes
        .split(' ')
        .filter(|s| *s != "user:read")
        .collect::<Vec<_>>()
        .join(" ");
    let mut narrow = edit("https://new.example/cb");
    narrow.retain(|(k, _)| *k != "scopes");
    narrow.push(("scopes", narrowed.as_str()));
    let html = adm.done(&client_page, &narrow).await;
    assert_has(&html, "Client saved.");
    let (st, tok) = refresh_at(&app, &rotated, &rt(&linked)).await;
    assert_eq!(st, 200, "{tok}");
    assert_eq!(tok["scope"], "music.control", "{tok}");
    assert_eq!(scope_of(tok.clone()).await, "music.control");
    // Asking for the removed scope by name gets no more (it was granted, so no error).
    let (st, body, _) = app
        .token(
            &format!("/t/{}/token", rotated.slug),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt(&tok)),
                ("scope", "user:read music.control"),
            ],
            Some((&rotated.client_id, &rotated.client_secret)),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["scope"], "music.control", "{body}");
    let html = adm
        .done(&client_page, &edit("https://new.example/cb"))
        .await;
    assert_has(&html, "Client saved.");
    let (st, tok) = refresh_at(&app, &rotated, &rt(&body)).await;
    assert_eq!(st, 200, "{tok}");
    assert_eq!(scope_of(tok).await, "music.control user:read");

    // Unknown client ids: 404.
    assert_eq!(adm.get(&format!("{clients}/nope")).await.0, 404);
    assert_eq!(
        adm.post(&format!("{clients}/nope/secret"), &[("confirm", "yes")])
            .await
            .status(),
        404
    );
    app.stop().await;
}

/// Saving a client's settings as the browser sends the form (only the name changed) keeps
/// how the client authenticates: a client made the usual way sends its secret by HTTP Basic
/// or in the body (Alexa may do either), and still may after the save.
async fn saving_a_client_keeps_how_it_authenticates(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    let tok = link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[0]).await;
    let refresh_in_body = |refresh_token: String| {
        let (app, s) = (&app, s.clone());
        async move {
            let (st, body, _) = app
                .token(
                    &format!("/t/{}/token", s.slug),
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &refresh_token),
                        ("client_id", &s.client_id),
                        ("client_secret", &s.client_secret),
                    ],
                    None,
                )
                .await;
            assert_eq!(st, 200, "secret in the body: {body}");
            body
        }
    };
    let tok = refresh_in_body(rt(&tok)).await;

    // The settings form shows the stored method ("any") as the one selected.
    let page = format!(
        "/admin/t/home/clients/{}",
        client_pk(&app, "home", &s.client_id).await
    );
    let selected = |html: &str| {
        let select = cap(
            html,
            r#"(?s)<select id="auth_method" name="auth_method">(.*?)</select>"#,
        );
        caps(&select, r#"<option value="([^"]+)" selected>"#)
    };
    let html = adm.page(&page).await;
    assert_eq!(selected(&html), vec!["any".to_string()], "{html}");
    // Posted back as a browser would: every field as shown, only the name changed.
    let uris = cap(
        &html,
        r#"<textarea id="redirect_uris"[^>]*>([^<]*)</textarea>"#,
    );
    let (scopes, access_ttl, refresh_ttl) = (
        input_value(&html, "scopes"),
        input_value(&html, "access_token_ttl"),
        input_value(&html, "refresh_token_ttl"),
    );
    let method = selected(&html).remove(0);
    let html = adm
        .done(
            &page,
            &[
                ("name", "Alexa kitchen"),
                ("redirect_uris", &uris),
                ("scopes", &scopes),
                ("access_token_ttl", &access_ttl),
                ("refresh_token_ttl", &refresh_ttl),
                ("auth_method", &method),
            ],
        )
        .await;
    assert_has(&html, "Client saved.");
    assert_has(&html, "<h1>Alexa kitchen</h1>");
    assert_eq!(selected(&html), vec!["any".to_string()]);
    // The secret in the body still works, and so does HTTP Basic.
    let tok = refresh_in_body(rt(&tok)).await;
    let (st, body) = refresh_at(&app, &s, &rt(&tok)).await;
    assert_eq!(st, 200, "{body}");
    app.stop().await;
}

async fn grants_revocation(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    add_user(&app, "home", "bob", "member", true).await;
    add_user(&app, "home", "carol", "member", true).await;
    add_user(&app, "home", "dave", "member", true).await;
    let music = add_client(&app, "home", "Music app", "https://app.example/cb").await;
    let alexa = alexa_redirects();
    // Alice links Alexa twice (one grant: per user and client) and the music app.
    let a1 = link_as(&app, &s, "alice", PASSWORD, &alexa[0]).await;
    let a2 = link_as(&app, &s, "alice", PASSWORD, &alexa[1]).await;
    let am = link_as(&app, &music, "alice", PASSWORD, "https://app.example/cb").await;
    let b1 = link_as(&app, &s, "bob", PASSWORD, &alexa[0]).await;
    let c1 = link_as(&app, &s, "carol", PASSWORD, &alexa[0]).await;
    let dm = link_as(&app, &music, "dave", PASSWORD, "https://app.example/cb").await;
    let active = |s: &Setup, tok: &Value| {
        let (s, t) = (s.clone(), at(tok));
        let app = &app;
        async move { app.introspect(&s, &t).await["active"].as_bool().unwrap() }
    };
    let grant_rows = |html: &str| -> Vec<String> {
        rows(html)
            .into_iter()
            .filter(|r| r.contains("/revoke\""))
            .collect()
    };

    // The list shows every grant, with user and client.
    let grants = "/admin/t/home/grants";
    let html = adm.page(grants).await;
    let rs = grant_rows(&html);
    let users_clients: BTreeSet<(String, String)> = rs
        .iter()
        .map(|r| {
            (
                cap(r, r#"/users/[^"]+">([^<]+)</a>"#),
                cap(r, r#"/clients/[^"]+">([^<]+)</a>"#),
            )
        })
        .collect();
    let expect: BTreeSet<(String, String)> = [
        ("alice", "Alexa"),
        ("alice", "Music app"),
        ("bob", "Alexa"),
        ("carol", "Alexa"),
        ("dave", "Music app"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rs.len(), 5, "{html}");
    assert_eq!(users_clients, expect);
    assert_eq!(count(&adm.page("/admin/t/home").await, "active grants"), 5);

    // Revoke one (bob's): asks first; then its refresh token is invalid_grant and
    // introspection says inactive. The others live on. A `back` off the admin UI is ignored.
    let bob_row = rs.iter().find(|r| r.contains(">bob<")).unwrap();
    let gid = cap(bob_row, r#"/grants/([^/"]+)/revoke""#);
    let q = adm
        .ask(
            &format!("{grants}/{gid}/revoke"),
            &[("back", "https://evil.example/")],
        )
        .await;
    assert_has(&q, "Revoke this grant?");
    assert!(active(&s, &b1).await, "asking changes nothing");
    let r = adm.confirm(&q).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), grants, "never redirected off the admin UI");
    let html = adm.page(grants).await;
    assert_has(&html, "Grant revoked.");
    assert_lacks(&html, ">bob<");
    assert_eq!(grant_rows(&html).len(), 4);
    assert_invalid_grant(refresh_at(&app, &s, &rt(&b1)).await);
    assert!(!active(&s, &b1).await);
    assert!(active(&s, &a1).await && active(&s, &c1).await);
    let r = adm
        .post(&format!("{grants}/{gid}/revoke"), &[("confirm", "yes")])
        .await;
    assert_eq!(r.status(), 404, "already revoked");

    // Every grant of a user (alice: Alexa and the music app); carol's and dave's stay.
    let alice = user_id(&app, "home", "alice").await;
    let user_page = format!("/admin/t/home/users/{alice}");
    assert_eq!(grant_rows(&adm.page(&user_page).await).len(), 2);
    let q = adm.ask(&format!("{user_page}/revoke-grants"), &[]).await;
    assert_has(&q, "Revoke every app alice has linked?");
    assert!(active(&s, &a1).await, "asking changes nothing");
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "2 grant(s) of alice revoked.");
    assert_has(&html, "No active grants.");
    for (c, t) in [(&s, &a1), (&s, &a2), (&music, &am)] {
        assert_invalid_grant(refresh_at(&app, c, &rt(t)).await);
        assert!(!active(c, t).await);
    }
    assert!(active(&s, &c1).await && active(&music, &dm).await);

    // Every grant of a client (Alexa: carol's); dave's music app grant stays.
    let alexa_pk = client_pk(&app, "home", &s.client_id).await;
    let q = adm
        .ask(
            &format!("/admin/t/home/clients/{alexa_pk}/revoke-grants"),
            &[],
        )
        .await;
    assert_has(&q, "Revoke every grant of Alexa?");
    assert!(active(&s, &c1).await, "asking changes nothing");
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "1 grant(s) of Alexa revoked.");
    assert_invalid_grant(refresh_at(&app, &s, &rt(&c1)).await);
    assert!(!active(&s, &c1).await);
    let (st, fresh) = refresh_at(&app, &music, &rt(&dm)).await;
    assert_eq!(st, 200, "{fresh}");
    assert_eq!(count(&adm.page("/admin/t/home").await, "active grants"), 1);

    // Revoking dave's from his page: `back` brings the admin to that page.
    let dave = user_id(&app, "home", "dave").await;
    let dave_page = format!("/admin/t/home/users/{dave}");
    let html = adm.page(&dave_page).await;
    let gid = cap(&html, r#"/grants/([^/"]+)/revoke""#);
    let back = hidden(&html, "back");
    assert_eq!(back, dave_page);
    let r = adm
        .post(
            &format!("{grants}/{gid}/revoke"),
            &[("back", &back), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), dave_page);
    assert_invalid_grant(refresh_at(&app, &music, &rt(&fresh)).await);
    assert!(!active(&music, &fresh).await);
    assert_has(&adm.page(grants).await, "No active grants.");

    // A `back` with a control character (no Location header can carry it): the list of
    // grants, and the grant is revoked.
    for back in [
        "/admin/t/home/\r\n",
        "/admin/t/home/users\t",
        "/admin/t/home/\u{7f}",
    ] {
        let tok = link_as(&app, &music, "dave", PASSWORD, "https://app.example/cb").await;
        let gid = cap(&adm.page(grants).await, r#"/grants/([^/"]+)/revoke""#);
        let r = adm
            .post(
                &format!("{grants}/{gid}/revoke"),
                &[("back", back), ("confirm", "yes")],
            )
            .await;
        assert_eq!(r.status(), 303, "{back:?}");
        assert_eq!(location(&r), grants, "{back:?}");
        assert_invalid_grant(refresh_at(&app, &music, &rt(&tok)).await);
        assert_has(&adm.page(grants).await, "No active grants.");
    }
    app.stop().await;
}

async fn sessions_and_keys(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    add_user(&app, "home", "bob", "member", true).await;
    let (_, alice_b) = public_sign_in(&app, "home", "alice", PASSWORD).await;
    let (_, bob_b) = public_sign_in(&app, "home", "bob", PASSWORD).await;
    assert_eq!(account_status(&alice_b, "home").await, 200);
    assert_eq!(account_status(&bob_b, "home").await, 200);

    // The sessions list shows both; ending alice's signs that browser out, and only that one.
    let sessions = "/admin/t/home/sessions";
    let html = adm.page(sessions).await;
    let row_of = |html: &str, who: &str| {
        rows(html)
            .into_iter()
            .find(|r| r.contains(&format!(">{who}</a>")))
    };
    let alice_row = row_of(&html, "alice").expect("alice's session listed");
    assert!(row_of(&html, "bob").is_some(), "bob's session listed");
    let sid = cap(&alice_row, r#"/sessions/([^/"]+)/end""#);
    let q = adm.ask(&format!("{sessions}/{sid}/end"), &[]).await;
    assert_has(&q, "End this session? That browser is signed out.");
    assert_eq!(account_status(&alice_b, "home").await, 200);
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "Session ended.");
    assert!(row_of(&html, "alice").is_none(), "{html}");
    assert!(row_of(&html, "bob").is_some());
    assert_eq!(account_status(&alice_b, "home").await, 302);
    assert_eq!(account_status(&bob_b, "home").await, 200);
    let long = "x".repeat(200);
    for id in [sid.as_str(), "nope", long.as_str()] {
        let r = adm
            .post(&format!("{sessions}/{id}/end"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.status(), 404, "{id}");
    }

    // Keys: the list matches the JWKS. Rotating retires the signing key (still published),
    // lets the pre-published next key sign, and publishes a new next key.
    let keys = "/admin/t/home/keys";
    let state = |html: &str, kid: &str| {
        cap(
            html,
            &format!(
                r"<code>{}</code></td><td>[^<]*</td><td>([a-z]+)</td>",
                regex::escape(kid)
            ),
        )
    };
    let kid_of = |tok: &Value| jsonwebtoken::decode_header(at(tok)).unwrap().kid.unwrap();
    let before = kids(&app, "home").await;
    let old_tok = link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[0]).await;
    let old_kid = kid_of(&old_tok);
    let html = adm.page(keys).await;
    let listed: BTreeSet<String> = caps(&html, r"<tr><td><code>([^<]+)</code></td>")
        .into_iter()
        .collect();
    assert!(before.is_subset(&listed), "{before:?} ⊄ {listed:?}");
    assert_eq!(state(&html, &old_kid), "active");
    let q = adm.ask(&format!("{keys}/rotate"), &[]).await;
    assert_has(&q, "Rotate the signing keys?");
    assert_eq!(kids(&app, "home").await, before, "asking changes nothing");
    // The next keys were made with the tenant, moments ago: refused, with the reason.
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "or force the rotation now if a key is compromised");
    assert_eq!(
        kids(&app, "home").await,
        before,
        "a refused rotation changes nothing"
    );
    assert_eq!(state(&html, &old_kid), "active");
    app.clock.advance(ma_idp::tokens::keys::MIN_NEXT_KEY_AGE);
    let q = adm.ask(&format!("{keys}/rotate"), &[]).await;
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "Signing keys rotated.");
    let after = kids(&app, "home").await;
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(!new.is_empty(), "{before:?} → {after:?}");
    assert!(before.is_subset(&after), "old keys stay published");
    for k in &new {
        assert_eq!(state(&html, k), "next", "{k}");
    }
    assert_eq!(state(&html, &old_kid), "retired");
    let tok = link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[1]).await;
    let kid = kid_of(&tok);
    assert_ne!(kid, old_kid, "new tokens are signed with another key");
    assert!(before.contains(&kid), "…one published before the rotation");
    assert_eq!(state(&html, &kid), "active");
    app.verify_access_token("home", &at(&tok)).await;
    app.verify_access_token("home", &at(&old_tok)).await;
    // Forced: the next keys published moments ago sign at once.
    let q = adm
        .ask(&format!("{keys}/rotate"), &[("force", "yes")])
        .await;
    let html = adm.confirm_done(&q).await;
    assert_has(&html, "Signing keys rotated.");
    for k in &new {
        assert_eq!(state(&html, k), "active", "{k}");
    }
    app.stop().await;
}

async fn audit_log_and_dashboard(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    let dash = "/admin/t/home";
    let d0 = adm.page(dash).await;
    assert_eq!(count(&d0, "users"), 2);
    assert_eq!(count(&d0, "clients"), 1);
    assert_eq!(count(&d0, "active grants"), 0);
    let (ok0, failed0, granted0) = (
        chart_total(&d0, "Sign-ins"),
        chart_total(&d0, "Failed sign-ins"),
        chart_total(&d0, "Token grants"),
    );

    // Things happen: an admin creates a user, alice fails once and then links Alexa.
    let html = adm
        .done(
            "/admin/t/home/users",
            &[
                ("username", "bob"),
                ("password", PASSWORD),
                ("role", "member"),
            ],
        )
        .await;
    let bob = cap(&html, r"<dt>User ID</dt><dd><code>([^<]+)</code>");
    assert_eq!(
        public_sign_in(&app, "home", "alice", "wrong password")
            .await
            .0,
        401
    );
    link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[0]).await;

    let d1 = adm.page(dash).await;
    assert_eq!(count(&d1, "users"), 3);
    assert_eq!(count(&d1, "clients"), 1);
    assert_eq!(count(&d1, "active grants"), 1);
    assert_eq!(chart_total(&d1, "Sign-ins"), ok0 + 1);
    assert_eq!(chart_total(&d1, "Failed sign-ins"), failed0 + 1);
    assert_eq!(chart_total(&d1, "Token grants"), granted0 + 1);

    // The log: the admin's actions with the admin as actor.
    let audit = "/admin/t/home/audit";
    let html = adm.page(audit).await;
    let created = rows(&html)
        .into_iter()
        .find(|r| r.contains("<td>user_created</td>") && r.contains(">bob<"))
        .expect("user_created for bob");
    assert!(has(&created, "<td>admin:home/olivia</td>"), "{created}");
    let signed_in = rows(&html)
        .into_iter()
        .find(|r| r.contains("<td>admin_sign_in</td>"))
        .expect("admin_sign_in");
    assert!(has(&signed_in, "<td>admin:home/olivia</td>"), "{signed_in}");
    // Filters: kind, user, client, dates.
    let html = adm.page(&format!("{audit}?kind=user_created")).await;
    let kinds = audit_kinds(&html);
    assert!(kinds.len() >= 3, "alice, olivia, bob: {kinds:?}");
    assert!(kinds.iter().all(|k| k == "user_created"), "{kinds:?}");
    let html = adm.page(&format!("{audit}?user={bob}")).await;
    let rs = rows(&html);
    assert!(!rs.is_empty());
    assert!(
        rs.iter()
            .all(|r| r.contains(&format!("?user={bob}\">bob</a>"))),
        "{html}"
    );
    let html = adm.page(&format!("{audit}?client={}", s.client_id)).await;
    let kinds = audit_kinds(&html);
    assert!(kinds.iter().any(|k| k == "token_granted"), "{kinds:?}");
    for r in rows(&html) {
        assert!(r.contains(&format!(">{}</a>", s.client_id)), "{r}");
    }
    let html = adm.page(&format!("{audit}?kind=sign_in&user={bob}")).await;
    assert_has(&html, "No events match.");
    let today = cap(&adm.page(audit).await, r"<tr><td>(\d{4}-\d\d-\d\d) ");
    let all_total = cap(&adm.page(audit).await, r"(\d+) event\(s\)\.");
    let html = adm.page(&format!("{audit}?from={today}&to={today}")).await;
    assert_eq!(cap(&html, r"(\d+) event\(s\)\."), all_total);
    let html = adm
        .page(&format!("{audit}?from=2000-01-01&to=2000-01-02"))
        .await;
    assert_has(&html, "No events match.");
    for bad in [
        "from=yesterday",
        "to=2024-13-45",
        "from=2023-02-29",
        "to=99999-01-01",
    ] {
        let (st, html) = adm.get(&format!("{audit}?{bad}")).await;
        assert_eq!(st, 400, "{bad}: {html}");
        assert_has(&html, "is not a date");
    }

    // Paging: 50 a page, "Older" and "Newer", the filter kept.
    for i in 0..60 {
        add_user(&app, "home", &format!("user-{i:02}"), "member", false).await;
    }
    let html = adm.page(&format!("{audit}?kind=user_created")).await;
    assert_has(&html, "63 event(s).");
    assert_eq!(audit_kinds(&html).len(), 50);
    assert!(!html.contains(r#"rel="prev""#));
    let older = cap(&html, r#"<a href="([^"]+)" rel="next">Older</a>"#);
    assert!(
        older.contains("kind=user_created") && older.contains("offset=50"),
        "{older}"
    );
    let html2 = adm.page(&older).await;
    let kinds = audit_kinds(&html2);
    assert_eq!(kinds.len(), 13);
    assert!(kinds.iter().all(|k| k == "user_created"));
    assert!(html2.contains(r#"rel="prev">Newer</a>"#));
    assert!(!html2.contains(r#"rel="next""#));
    // The newest first: the last users made are on the first page.
    assert!(rows(&html).iter().any(|r| r.contains(">user-59<")));
    assert!(rows(&html2).iter().any(|r| r.contains(">alice<")));

    // Operators also see every tenant's log, with a tenant column.
    let html = adm.page("/admin/audit").await;
    assert_has(&html, "Audit log — every tenant");
    assert!(rows(&html).iter().any(|r| r.contains("<td>home</td>")));
    app.stop().await;
}

async fn admin_listener_keeps_admin_off_the_public_listener(backend: Backend) {
    let Some(app) = TestApp::start_with_admin_listener(backend, |s| {
        s.limits.sign_ins_per_ip_per_minute = 0;
    })
    .await
    else {
        return;
    };
    let s = app.setup("home").await;
    let link = app.svc.setup_link_if_needed().await.unwrap().unwrap();
    let admin_base = app.admin_base.clone().expect("an admin listener");
    assert_ne!(admin_base, app.base);
    let public = app.browser();
    let admin = Browser {
        base: admin_base.clone(),
        ..app.browser()
    };

    // The public listener knows nothing of /admin.
    for p in [
        "/admin",
        "/admin/",
        "/admin/login",
        "/admin/setup/x",
        link.as_str(),
        "/admin/tenants",
        "/admin/t/home",
        "/admin/t/home/users",
        "/metrics",
    ] {
        assert_eq!(public.get(p).await.status(), 404, "public GET {p}");
    }
    for p in ["/admin/login", link.as_str(), "/admin/tenants"] {
        let r = public.post(p, &[("csrf", "x")]).await;
        assert_eq!(r.status(), 404, "public POST {p}");
    }
    // It still serves sign-in, authorize and token.
    let r = public.get(&authorize_url(&s, &alexa_redirects()[0])).await;
    assert_eq!(r.status(), 200);
    link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[0]).await;

    // The admin listener serves the admin UI (and the setup link) and nothing public.
    let r = admin.get("/admin/login").await;
    assert_eq!(r.status(), 200);
    assert_has(&r.text().await.unwrap(), "Admin sign-in");
    assert_eq!(admin.get(&link).await.status(), 200);
    assert_eq!(admin.get("/static/admin.css").await.status(), 200);
    // The metrics are there too, and count what the public listener served.
    let r = admin.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert_has(&r.text().await.unwrap(), "ma_idp_token_grants_total");
    for p in [
        authorize_url(&s, &alexa_redirects()[0]),
        "/t/home/login".into(),
        "/t/home/account".into(),
        "/t/home/jwks.json".into(),
        "/t/home/.well-known/openid-configuration".into(),
        "/alexa/authorize".into(),
    ] {
        assert_eq!(admin.get(&p).await.status(), 404, "admin GET {p}");
    }
    for p in ["/t/home/token", "/alexa/token", "/t/home/introspect"] {
        let r = admin
            .http
            .post(admin.url(p))
            .header(
                "authorization",
                basic_header(&s.client_id, &s.client_secret),
            )
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "admin POST {p}");
    }

    // An operator set up and signed in there manages the tenant; the values shown for
    // Alexa point at the public URL.
    add_user(&app, "home", OP, "operator", true).await;
    let adm = Admin::sign_in_on(admin, "home", OP, PASSWORD).await;
    adm.page("/admin/t/home").await;
    let html = adm
        .render(
            "/admin/t/home/clients/alexa",
            &[("vendor_id", "M2ABCDEFGHIJKL")],
        )
        .await;
    assert_eq!(
        input_value(&html, "ax-auth"),
        format!("{}/t/home/authorize", app.base)
    );
    // The admin cookie does not open /admin on the public listener.
    assert_eq!(public.get("/admin/t/home").await.status(), 404);
    app.stop().await;
}

async fn tenant_admin_matrix(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let alexa = alexa_redirects();
    // Tenant A (home): the operator, a tenant admin (adam) and a member (alice).
    let sa = app.setup("home").await;
    add_user(&app, "home", OP, "operator", true).await;
    add_user(&app, "home", "adam", "admin", true).await;
    let a_alice = user_id(&app, "home", "alice").await;
    let a_op = user_id(&app, "home", OP).await;
    // Tenant B (other): users, a client, a grant, a browser session, a passkey, an audit log.
    let sb = app.setup("other").await;
    let b_bob = add_user(&app, "other", "bob", "member", true).await;
    let b_boss = add_user(&app, "other", "boss", "admin", true).await;
    let b_alice = user_id(&app, "other", "alice").await;
    let b_client = client_pk(&app, "other", &sb.client_id).await;
    add_passkey(&app, "other", "bob", "Bob's phone").await;
    let b_tok = link_as(&app, &sb, "alice", PASSWORD, &alexa[0]).await;
    let (st, bob_b) = public_sign_in(&app, "other", "bob", PASSWORD).await;
    assert_eq!(st, 303);
    let b_kids = kids(&app, "other").await;
    let tb = app.svc.tenant("other").await.unwrap();
    app.svc
        .add_provider(
            &tb,
            ma_idp::federation::NewProvider {
                slug: "b-work".into(),
                kind: "oidc".into(),
                display_name: "B Work".into(),
                client_id: "b-client".into(),
                client_secret: None,
                scopes: None,
                region: None,
                issuer: Some("https://login.example.com".into()),
                authorization_endpoint: None,
                token_endpoint: None,
                userinfo_endpoint: None,
                jwks_uri: None,
                auto_create: false,
                link_by_email: false,
            },
            "test",
        )
        .await
        .unwrap();

    // The operator reaches both tenants; B's ids come from the operator's pages.
    let op = Admin::sign_in(&app, "home", OP, PASSWORD).await;
    let b_grant = cap(
        &op.page("/admin/t/other/grants").await,
        r#"/grants/([^/"]+)/revoke""#,
    );
    let b_session = cap(
        &op.page("/admin/t/other/sessions").await,
        r#"/sessions/([^/"]+)/end""#,
    );
    let b_passkey = cap(
        &op.page(&format!("/admin/t/other/users/{b_bob}")).await,
        r#"/passkeys/([^/"]+)/remove""#,
    );
    let b_pages = vec![
        "/admin/t/other".to_string(),
        "/admin/t/other/settings".into(),
        "/admin/t/other/users".into(),
        "/admin/t/other/users?q=bob".into(),
        format!("/admin/t/other/users/{b_bob}"),
        format!("/admin/t/other/users/{b_alice}"),
        format!("/admin/t/other/users/{b_boss}"),
        "/admin/t/other/clients".into(),
        format!("/admin/t/other/clients/{b_client}"),
        "/admin/t/other/grants".into(),
        "/admin/t/other/sessions".into(),
        "/admin/t/other/keys".into(),
        "/admin/t/other/audit".into(),
        format!("/admin/t/other/audit?user={b_bob}"),
        "/admin/t/other/providers".into(),
        "/admin/t/other/providers/b-work".into(),
    ];
    let a_pages = [
        "/admin/t/home",
        "/admin/t/home/settings",
        "/admin/t/home/users",
        "/admin/t/home/clients",
        "/admin/t/home/grants",
        "/admin/t/home/sessions",
        "/admin/t/home/keys",
        "/admin/t/home/audit",
    ];
    let mut b_views = Vec::new();
    for p in &b_pages {
        b_views.push(op.page(p).await);
    }
    for p in a_pages {
        op.page(p).await;
    }
    assert_has(&op.page("/admin/tenants").await, "/admin/t/other");
    assert_has(&b_views[4], "Bob's phone");

    // The tenant admin of A works in A…
    let adam = Admin::sign_in(&app, "home", "adam", PASSWORD).await;
    for p in a_pages {
        adam.page(p).await;
    }
    let r = adam.b.get("/admin/tenants").await;
    assert_eq!(r.status(), 303, "no tenant list: to their own tenant");
    assert_eq!(location(&r), "/admin/t/home");
    assert_has(
        &adam.page(&format!("/admin/t/home/users/{a_alice}")).await,
        "alice",
    );

    // …and for them B does not exist: every page of B, and every id of B even under A's
    // own URLs, is 404. Operator-only pages too.
    let mut gets = b_pages.clone();
    gets.extend([
        format!("/admin/t/home/users/{b_bob}"),
        format!("/admin/t/home/users/{b_boss}"),
        format!("/admin/t/home/clients/{b_client}"),
        "/admin/t/home/providers/b-work".into(),
        "/admin/audit".into(),
    ]);
    for p in &gets {
        let (st, html) = adam.get(p).await;
        assert_eq!(st, 404, "tenant admin GET {p}");
        assert_has(&html, "Not found");
        assert_lacks(&html, "bob");
    }
    // A's audit log filtered by one of B's users shows nothing of B.
    let html = adam
        .page(&format!("/admin/t/home/audit?user={b_bob}"))
        .await;
    assert_has(&html, "No events match.");

    // Every POST at B's objects: 404, with and without confirmation, nothing changes.
    let settings: Vec<(&str, &str)> = vec![
        ("name", "Hijacked"),
        ("access_token_ttl", "60"),
        ("refresh_token_ttl", "3600"),
        ("refresh_grace", "0"),
        ("passkeys_required", "on"),
    ];
    let client_edit: Vec<(&str, &str)> = vec![
        ("name", "Hijacked"),
        ("redirect_uris", "https://evil.example/cb"),
        ("scopes", "openid"),
        ("auth_method", "client_secret_post"),
        ("disabled", "on"),
    ];
    let pw = vec![("password", NEW_PASSWORD), ("password2", NEW_PASSWORD)];
    // A's operator's own grant and browser sessions (the operator's admin sign-ins): in the
    // tenant admin's tenant, listed on their pages without a button, and still not theirs to
    // end.
    let op_tok = link_as(&app, &sa, OP, PASSWORD, &alexa[0]).await;
    let a_tid = tenant(&app, "home").await.id;
    let op_grants = app
        .svc
        .store
        .active_grants(&a_tid, Some(&a_op), None, None)
        .await
        .unwrap();
    assert_eq!(op_grants.len(), 1);
    let grants_page = adam.page("/admin/t/home/grants").await;
    assert_has(&grants_page, OP);
    assert_has(&grants_page, "an operator's");
    assert_lacks(&grants_page, &op_grants[0].id);
    let op_sessions = app
        .svc
        .store
        .sessions_of_user(&a_tid, &a_op, app.svc.now())
        .await
        .unwrap();
    assert!(op_sessions.len() >= 2, "{}", op_sessions.len());
    let sessions_page = adam.page("/admin/t/home/sessions").await;
    assert_has(&sessions_page, "an operator's");
    for s in &op_sessions {
        assert_lacks(&sessions_page, &s.id);
    }
    let mut posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/admin/t/home/grants/{}/revoke", op_grants[0].id),
            vec![],
        ),
        ("/admin/t/other/settings".into(), settings.clone()),
        ("/admin/t/other/default".into(), vec![]),
        (
            "/admin/t/other/users".into(),
            vec![
                ("username", "mallory"),
                ("password", PASSWORD),
                ("role", "admin"),
            ],
        ),
        (
            "/admin/t/other/clients".into(),
            vec![
                ("name", "Evil"),
                ("redirect_uris", "https://evil.example/cb"),
            ],
        ),
        (
            "/admin/t/other/clients/alexa".into(),
            vec![("vendor_id", VENDOR)],
        ),
        ("/admin/t/other/keys/rotate".into(), vec![]),
        (
            "/admin/tenants".into(),
            vec![("slug", "sneaky"), ("name", "Sneaky")],
        ),
        ("/admin/t/home/default".into(), vec![]),
        // A's own operator is not the tenant admin's to manage.
        (format!("/admin/t/home/users/{a_op}/password"), pw.clone()),
        (format!("/admin/t/home/users/{a_op}/disable"), vec![]),
        (
            format!("/admin/t/home/users/{a_op}/role"),
            vec![("role", "member")],
        ),
        // A's own user with B's passkey (A's operator's sessions are added below).
        (
            format!("/admin/t/home/users/{a_alice}/passkeys/{b_passkey}/remove"),
            vec![],
        ),
    ];
    for s in &op_sessions {
        posts.push((format!("/admin/t/home/sessions/{}/end", s.id), vec![]));
    }
    for t in ["other", "home"] {
        for u in [&b_bob, &b_boss] {
            for (a, f) in [
                ("disable", vec![]),
                ("enable", vec![]),
                ("role", vec![("role", "admin")]),
                ("password", pw.clone()),
                ("enroll", vec![]),
                ("end-sessions", vec![]),
                ("revoke-grants", vec![]),
                ("explode", vec![]),
            ] {
                posts.push((format!("/admin/t/{t}/users/{u}/{a}"), f));
            }
        }
        posts.push((
            format!("/admin/t/{t}/users/{b_bob}/passkeys/{b_passkey}/remove"),
            vec![],
        ));
        posts.push((
            format!("/admin/t/{t}/clients/{b_client}"),
            client_edit.clone(),
        ));
        posts.push((format!("/admin/t/{t}/clients/{b_client}/secret"), vec![]));
        posts.push((
            format!("/admin/t/{t}/clients/{b_client}/revoke-grants"),
            vec![],
        ));
        posts.push((format!("/admin/t/{t}/grants/{b_grant}/revoke"), vec![]));
        posts.push((format!("/admin/t/{t}/sessions/{b_session}/end"), vec![]));
        posts.push((
            format!("/admin/t/{t}/providers/b-work"),
            vec![
                ("display_name", "Hijacked"),
                ("client_id", "evil"),
                ("client_secret", "evil-secret"),
                ("issuer", "https://evil.example"),
                ("enabled", "on"),
            ],
        ));
        posts.push((format!("/admin/t/{t}/providers/b-work/remove"), vec![]));
    }
    posts.push((
        "/admin/t/other/providers".into(),
        vec![
            ("kind", "oidc"),
            ("slug", "evil"),
            ("client_id", "evil"),
            ("issuer", "https://evil.example"),
        ],
    ));
    for (p, fields) in &posts {
        for confirm in [false, true] {
            let mut f = fields.clone();
            if confirm {
                f.push(("confirm", "yes"));
            }
            let r = adam.post(p, &f).await;
            let st = r.status();
            let html = r.text().await.unwrap();
            assert_eq!(
                st, 404,
                "tenant admin POST {p} (confirm: {confirm}):\n{html}"
            );
        }
    }
    // The tenant admin is still signed in (the 404s were not a lost session), and so is A's
    // operator, whose grant still works.
    adam.page("/admin/t/home").await;
    op.page("/admin/t/home/sessions").await;
    assert_eq!(
        app.svc
            .store
            .sessions_of_user(&a_tid, &a_op, app.svc.now())
            .await
            .unwrap()
            .len(),
        op_sessions.len()
    );
    assert_eq!(app.introspect(&sa, &at(&op_tok)).await["active"], true);

    // B is exactly as before, in the operator's eyes…
    for (p, before) in b_pages.iter().zip(&b_views) {
        assert_eq!(&op.page(p).await, before, "{p} changed");
    }
    assert_lacks(&op.page("/admin/tenants").await, "sneaky");
    // …and on the public side: bob's password, session and passkey, the grant and the client
    // secret, the redirect URIs, the keys, the settings.
    assert_eq!(account_status(&bob_b, "other").await, 200);
    let account = bob_b.get("/t/other/account").await.text().await.unwrap();
    assert_has(&account, "Bob's phone");
    assert_eq!(public_sign_in(&app, "other", "bob", PASSWORD).await.0, 303);
    assert_eq!(app.introspect(&sb, &at(&b_tok)).await["active"], true);
    let (st, fresh) = refresh_at(&app, &sb, &rt(&b_tok)).await;
    assert_eq!(st, 200, "{fresh}");
    assert_eq!(fresh["expires_in"], 3600);
    let r = app.browser().get(&authorize_url(&sb, &alexa[1])).await;
    assert_eq!(r.status(), 200);
    assert_has(&r.text().await.unwrap(), r#"type="password""#);
    assert_eq!(kids(&app, "other").await, b_kids);
    // A's own operator is untouched too, and /alexa/* is still A's (the only default).
    Admin::sign_in(&app, "home", OP, PASSWORD).await;
    // The tenant admin of B is B's alone: B's admin sees their tenant, not A's.
    let boss = Admin::sign_in(&app, "other", "boss", PASSWORD).await;
    boss.page("/admin/t/other").await;
    assert_eq!(boss.get("/admin/t/home").await.0, 404);
    assert_eq!(
        boss.get(&format!("/admin/t/home/users/{a_alice}")).await.0,
        404
    );

    // A member of A cannot enter at all.
    let b = app.browser();
    let html = b.get("/admin/login").await.text().await.unwrap();
    let r = b
        .post(
            "/admin/login",
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("tenant", "home"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_text(&r.text().await.unwrap()), REFUSED);
    for p in ["/admin/t/home", "/admin/t/home/users", "/admin/t/other"] {
        let r = b.get(p).await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), "/admin/login");
    }
    let _ = sa;
    app.stop().await;
}

async fn bad_input_is_never_a_server_error(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    let alice = user_id(&app, "home", "alice").await;
    let pk = client_pk(&app, "home", &s.client_id).await;
    let long = "x".repeat(5000);

    // Nonsense in paths: not found.
    let missing = [
        format!("/admin/t/{}", "a".repeat(300)),
        "/admin/t/%00".into(),
        "/admin/t/..%2F..".into(),
        "/admin/t/%FF/users".into(),
        "/admin/t/HOME".into(),
        "/admin/t/home/users/%00".into(),
        format!("/admin/t/home/users/{long}"),
        "/admin/t/home/clients/%FF".into(),
        "/admin/t/home/users/x/y/z/w".into(),
        "/admin/setup/%00".into(),
    ];
    for p in &missing {
        let (st, _) = adm.get(p).await;
        assert_eq!(st, 404, "GET {p}");
    }
    // Nonsense in queries: a page.
    for p in [
        "/admin/t/home/users?q=%FF%FE&offset=abc".to_string(),
        format!("/admin/t/home/users?q={long}"),
        format!("/admin/t/home/audit?user={long}&client={long}&kind={long}"),
        "/admin/t/home/audit?offset=-5&kind=%00".into(),
        "/admin/t/home/users?q=a%00b".into(),
        // Past what the database's signed OFFSET holds (and what `offset + page` can).
        "/admin/t/home/users?offset=9223372036854775808".into(),
        "/admin/t/home/users?offset=18446744073709551615".into(),
        "/admin/t/home/audit?offset=9223372036854775808".into(),
        "/admin/audit?offset=18446744073709551615".into(),
    ] {
        adm.page(&p).await;
    }
    let (st, _) = adm.get("/admin/t/home/audit?from=%01").await;
    assert_eq!(st, 400);

    // Nonsense in forms: refused with a message (a 303 back to the form with it, or a 4xx).
    let many_uris: String = (0..25)
        .map(|i| format!("https://a{i}.example/cb\n"))
        .collect();
    let huge_number = "9".repeat(40);
    let user = format!("/admin/t/home/users/{alice}");
    let client = format!("/admin/t/home/clients/{pk}");
    // Each scope valid, together longer than the column (2000; 400 for a provider's), and
    // an issuer longer than its column (2000).
    let many_scopes = (0..20)
        .map(|i| format!("s{i}{}", "a".repeat(120)))
        .collect::<Vec<_>>()
        .join(" ");
    let provider_scopes = format!("openid {}", many_scopes[..400].trim());
    let long_issuer = format!("https://login.example.com/{}", "a".repeat(2100));
    let html = adm
        .done(
            "/admin/t/home/providers",
            &[
                ("kind", "oidc"),
                ("slug", "corp"),
                ("client_id", "corp-client"),
                ("issuer", "https://login.example.com"),
            ],
        )
        .await;
    assert_has(&html, "corp added.");
    let provider = "/admin/t/home/providers/corp".to_string();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/tenants".into(),
            vec![("slug", &long), ("name", "x")],
        ),
        (
            "/admin/t/home/users".into(),
            vec![("username", &long), ("role", "member")],
        ),
        (
            "/admin/t/home/users".into(),
            vec![("username", "p"), ("password", &long), ("role", "member")],
        ),
        (
            format!("{user}/password"),
            vec![("password", &long), ("password2", &long)],
        ),
        (format!("{user}/role"), vec![("role", &long)]),
        (
            "/admin/t/home/settings".into(),
            vec![
                ("name", "x"),
                ("access_token_ttl", &huge_number),
                ("refresh_token_ttl", "3600"),
                ("refresh_grace", "0"),
            ],
        ),
        (
            "/admin/t/home/clients".into(),
            vec![("name", "Many"), ("redirect_uris", &many_uris)],
        ),
        (
            "/admin/t/home/clients".into(),
            vec![("name", &long), ("redirect_uris", "https://a.example/cb")],
        ),
        (
            "/admin/tenants".into(),
            vec![("slug", "nul"), ("name", "a\0b")],
        ),
        (
            "/admin/t/home/users".into(),
            vec![("username", "nul"), ("display_name", "a\0b")],
        ),
        (
            format!("{user}/passkeys/%00/remove"),
            vec![("confirm", "yes")],
        ),
        (format!("{user}/passkeys/%00/remove"), vec![]),
        (
            "/admin/t/home/sessions/%00/end".into(),
            vec![("confirm", "yes")],
        ),
        (
            "/admin/t/home/grants/%00/revoke".into(),
            vec![("confirm", "yes")],
        ),
        (
            "/admin/t/home/clients/alexa".into(),
            vec![("vendor_id", "../x")],
        ),
        (
            "/admin/t/home/clients/alexa".into(),
            vec![("vendor_id", "M2 X")],
        ),
        (
            "/admin/t/home/clients/alexa".into(),
            vec![("vendor_id", &long)],
        ),
        (
            client.clone(),
            vec![
                ("name", "Alexa"),
                ("redirect_uris", &many_uris),
                ("scopes", "openid"),
                ("auth_method", "client_secret_basic"),
            ],
        ),
        (
            client.clone(),
            vec![
                ("name", "Alexa"),
                ("redirect_uris", "https://a.example/cb"),
                ("scopes", "openid"),
                ("auth_method", "client_secret_basic"),
                ("refresh_token_ttl", &huge_number),
            ],
        ),
        (
            "/admin/t/home/clients".into(),
            vec![
                ("name", "Scopes"),
                ("redirect_uris", "https://a.example/cb"),
                ("scopes", &many_scopes),
            ],
        ),
        (
            client.clone(),
            vec![
                ("name", "Alexa"),
                ("redirect_uris", "https://a.example/cb"),
                ("scopes", &many_scopes),
                ("auth_method", "any"),
            ],
        ),
        (
            "/admin/t/home/providers".into(),
            vec![
                ("kind", "oidc"),
                ("slug", "long-issuer"),
                ("client_id", "x"),
                ("issuer", &long_issuer),
            ],
        ),
        (
            "/admin/t/home/providers".into(),
            vec![
                ("kind", "oidc"),
                ("slug", "long-scopes"),
                ("client_id", "x"),
                ("issuer", "https://login.example.com"),
                ("scopes", &provider_scopes),
            ],
        ),
        (
            provider.clone(),
            vec![
                ("display_name", "Corp"),
                ("client_id", "corp-client"),
                ("issuer", &long_issuer),
                ("enabled", "on"),
            ],
        ),
        (
            provider.clone(),
            vec![
                ("display_name", "Corp"),
                ("client_id", "corp-client"),
                ("issuer", "https://login.example.com"),
                ("scopes", &provider_scopes),
                ("enabled", "on"),
            ],
        ),
    ];
    for (p, fields) in &posts {
        let r = adm.post(p, fields).await;
        let st = r.status().as_u16();
        match st {
            303 => {
                let html = adm.page(&location(&r)).await;
                assert!(!error_text(&html).is_empty(), "POST {p}: a message");
            }
            400 | 404 => {}
            _ => panic!("POST {p}: {st} {}", r.text().await.unwrap()),
        }
    }
    // A form over the size limit, invalid UTF-8, and a flood of fields: refused, no 500.
    let big = format!("csrf={}&name={}", adm.csrf, "y".repeat(100 * 1024));
    let invalid_utf8 = format!("csrf={}&slug=%FF%FE&name=%C3%28", adm.csrf).into_bytes();
    let flood: String =
        (0..200).map(|i| format!("f{i}=x&")).collect::<String>() + &format!("csrf={}", adm.csrf);
    for body in [big.into_bytes(), invalid_utf8, flood.into_bytes()] {
        let r = adm
            .b
            .http
            .post(adm.b.url("/admin/tenants"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert!(
            matches!(st, 303 | 400 | 413),
            "{st}: {}",
            r.text().await.unwrap()
        );
        if st == 303 {
            let html = adm.page(&location(&r)).await;
            assert!(!error_text(&html).is_empty());
        }
    }
    // Nothing was created or changed by any of it.
    let html = adm.page("/admin/tenants").await;
    assert_eq!(rows(&html).len(), 1, "only home");
    let html = adm.page("/admin/t/home/users").await;
    assert_has(&html, "2 user(s).");
    let html = adm.page("/admin/t/home/clients").await;
    assert_eq!(rows(&html).len(), 1, "only the Alexa client");
    assert_eq!(public_sign_in(&app, "home", "alice", PASSWORD).await.0, 303);
    link_as(&app, &s, "alice", PASSWORD, &alexa_redirects()[0]).await;
    app.stop().await;
}

/// The session cookie's `name=value`, if the answer sets one.
/// Two admins creating a tenant, or a sign-in provider, of the same slug at once: one is
/// created, the other gets the form's "already exists", never a database error. Over HTTP
/// the race (both past the check for the slug before either inserts) is not hit every time,
/// so the store's answer to a second insert of a slug is checked directly as well.
async fn one_slug_created_twice_at_once(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (_, adm) = home_with_operator(&app).await;
    add_user(&app, "home", "oscar", "operator", true).await;
    let adm2 = Admin::sign_in(&app, "home", "oscar", PASSWORD).await;
    for i in 0..8 {
        let slug = format!("race-{i}");
        for (form, fields, created) in [
            (
                "/admin/tenants".to_string(),
                vec![("slug", slug.as_str()), ("name", "Race")],
                format!("/admin/t/{slug}"),
            ),
            (
                "/admin/t/home/providers".to_string(),
                vec![
                    ("kind", "oidc"),
                    ("slug", slug.as_str()),
                    ("client_id", "race-client"),
                    ("issuer", "https://login.example.com"),
                ],
                "/admin/t/home/providers".to_string(),
            ),
        ] {
            let (r1, r2) = tokio::join!(adm.post(&form, &fields), adm2.post(&form, &fields));
            let mut answers = Vec::new();
            for (a, r) in [(&adm, r1), (&adm2, r2)] {
                let st = r.status();
                if st != 303 {
                    panic!("POST {form} {slug}: {st} {}", r.text().await.unwrap());
                }
                let html = a.page(&location(&r)).await;
                let error =
                    has(&html, r#"<p class="error" role="alert">"#).then(|| error_text(&html));
                answers.push((location(&r), error));
            }
            answers.sort();
            let (ok, refused) = (&answers[0], &answers[1]);
            assert_eq!(ok.1, None, "{form} {slug}: {answers:?}");
            if form == "/admin/tenants" {
                assert_eq!(ok.0, created);
                assert_eq!(refused.0, form);
            }
            let msg = refused.1.as_deref().unwrap_or_default();
            assert!(msg.contains("already exists"), "{form} {slug}: {answers:?}");
        }
    }
    // The store: a second insert of a slug is `false` (the "already exists" answer), not an
    // error.
    let t = tenant(&app, "race-0").await;
    let again = entity::tenant::Model {
        id: uuid::Uuid::new_v4().simple().to_string(),
        ..t
    };
    assert!(!app.svc.store.insert_tenant(again).await.unwrap());
    let home = tenant(&app, "home").await;
    let p = app
        .svc
        .store
        .provider_by_slug(&home.id, "race-0")
        .await
        .unwrap()
        .unwrap();
    let again = entity::upstream_provider::Model {
        id: uuid::Uuid::new_v4().simple().to_string(),
        ..p
    };
    assert!(!app.svc.store.insert_provider(again).await.unwrap());
    // So is a second insert of a client's `client_id`, and nothing of it is written.
    let c = app
        .svc
        .store
        .client_by_client_id(&home.id, "amazon-alexa")
        .await
        .unwrap()
        .unwrap();
    let again = ma_idp::store::NewClient {
        client: entity::client::Model {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: "Copy".into(),
            ..c.client
        },
        redirect_uris: vec!["https://copy.example/cb".into()],
    };
    assert!(!app.svc.store.insert_client(again).await.unwrap());
    {
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        let db = app.svc.store.connection();
        let copies = entity::client::Entity::find()
            .filter(entity::client::Column::Name.eq("Copy"))
            .count(db)
            .await
            .unwrap();
        let uris = entity::client_redirect_uri::Entity::find()
            .filter(entity::client_redirect_uri::Column::Uri.eq("https://copy.example/cb"))
            .count(db)
            .await
            .unwrap();
        assert_eq!((copies, uris), (0, 0));
    }
    app.stop().await;
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

/// No session fixation: a sign-in (public or admin) moves the session to a fresh key, and the
/// key the browser had before (which an attacker may have planted) stops working at once. The
/// pending authorization request and the CSRF token carry over, and only one session is left.
async fn sign_ins_move_the_session_to_a_fresh_key(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (s, adm) = home_with_operator(&app).await;
    let http = &app.http;
    let get = |path: &str, cookie: &str| {
        http.get(app.url(path))
            .header("cookie", cookie.to_string())
            .send()
    };

    // Public: an authorization request, signed in on its sign-in page.
    let redirect = alexa_redirects()[0].clone();
    let r = http
        .get(app.url(&authorize_url(&s, &redirect)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let planted = set_cookie(&r, "ma-idp").expect("a session cookie");
    let html = r.text().await.unwrap();
    let (csrf, rid) = (hidden(&html, "csrf"), hidden(&html, "rid"));
    let r = http
        .post(app.url(&format!("/t/{}/authorize", s.slug)))
        .header("cookie", &planted)
        .form(&[
            ("csrf", csrf.as_str()),
            ("rid", rid.as_str()),
            ("action", "login"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the sign-in answers with the consent page");
    let next = format!("/t/{}/authorize?rid={rid}", s.slug);
    let fresh = set_cookie(&r, "ma-idp").expect("a new session cookie at sign-in");
    assert_ne!(fresh, planted, "the session key changes at sign-in");
    // The fresh key carries the sign-in and the pending request: the consent page.
    let r = get(&next, &fresh).await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("value=\"approve\""),
        "consent page expected:\n{html}"
    );
    assert_ne!(hidden(&html, "csrf"), csrf, "a fresh CSRF token at sign-in");
    // The signed-out session's token no longer passes, on the fresh key either.
    let r = http
        .post(app.url(&format!("/t/{}/authorize", s.slug)))
        .header("cookie", &fresh)
        .form(&[
            ("csrf", csrf.as_str()),
            ("rid", rid.as_str()),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the old CSRF token approved consent");
    // The old key is dead: not signed in, and the pending request is not there either.
    assert_eq!(
        get("/t/home/account", &planted).await.unwrap().status(),
        302
    );
    let r = get(&next, &planted).await.unwrap();
    let html = r.text().await.unwrap();
    assert!(!html.contains("value=\"approve\""), "{html}");
    assert_eq!(get("/t/home/account", &fresh).await.unwrap().status(), 200);
    // One session for alice, not two.
    let listed = adm.page("/admin/t/home/sessions").await;
    let alice_rows = rows(&listed)
        .into_iter()
        .filter(|r| r.contains(">alice</a>"))
        .count();
    assert_eq!(alice_rows, 1, "{listed}");

    // Admin: the same on the admin sign-in.
    let r = http.get(app.url("/admin/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let admin_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .next()
        .expect("an admin session cookie");
    let name = admin_cookie
        .split('=')
        .next()
        .unwrap_or_default()
        .to_string();
    let csrf = hidden(&r.text().await.unwrap(), "csrf");
    let r = http
        .post(app.url("/admin/login"))
        .header("cookie", &admin_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("tenant", "home"),
            ("username", OP),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    let fresh = set_cookie(&r, &name).expect("a new admin session cookie at sign-in");
    assert_ne!(fresh, admin_cookie);
    assert_eq!(get("/admin/tenants", &fresh).await.unwrap().status(), 200);
    // The sign-in page's CSRF token does not pass once signed in.
    let r = http
        .post(app.url("/admin/tenants"))
        .header("cookie", &fresh)
        .form(&[("csrf", csrf.as_str()), ("slug", "planted"), ("name", "P")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the old admin CSRF token was accepted");
    assert_lacks(
        &get("/admin/tenants", &fresh)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "planted",
    );
    let r = get("/admin/tenants", &admin_cookie).await.unwrap();
    assert_eq!(r.status(), 303, "the planted admin key is not signed in");
    assert_eq!(location(&r), "/admin/login");
    app.stop().await;
}
