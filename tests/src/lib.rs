//! Test harness: starts the real ma-idp (HTTP on a free port) on SQLite or PostgreSQL, with
//! an advanceable clock, and drives it like Alexa and a phone browser would.
//!
//! PostgreSQL tests need a server at `MA_IDP_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without one they skip loudly, unless
//! `REQUIRE_POSTGRES=1`, which makes a missing PostgreSQL a failure (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ma_idp::services::ClientSpec;
use ma_idp::{ManualClock, RunningServer, Services, Settings};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run each named `async fn name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::Backend::Postgres).await }
            )*
        }
    };
}

pub const VENDOR: &str = "MKXZK47785HJ2";
pub const PASSWORD: &str = "correct horse battery";

pub fn alexa_redirects() -> Vec<String> {
    ma_idp::services::alexa_redirect_uris(VENDOR)
}

pub fn pg_admin_url() -> String {
    std::env::var("MA_IDP_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn require_postgres() -> bool {
    std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

/// A fresh PostgreSQL database, or `None` (skip) when no server runs and it is not required.
pub async fn fresh_pg_database() -> Option<String> {
    let admin = pg_admin_url();
    let conn = match Database::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if require_postgres() {
                panic!("REQUIRE_POSTGRES=1 but PostgreSQL is unreachable at {admin}: {e}");
            }
            eprintln!("\n!!!!! SKIPPING PostgreSQL test: no PostgreSQL at {admin} ({e}) !!!!!\n");
            return None;
        }
    };
    sweep_stale_databases(&conn).await;
    let name = format!(
        "{TEST_DB_PREFIX}{}_{}",
        unix_now(),
        uuid::Uuid::new_v4().simple()
    );
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let _ = conn.close().await;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin);
    Some(format!("{base}/{name}"))
}

const TEST_DB_PREFIX: &str = "ma_idp_test_";

/// A test database older than this is left over from an earlier run (a test that panicked,
/// or one that never drops its database) and is dropped by the next run. No test runs this
/// long, so a database another test process is using is never taken away.
const STALE_TEST_DB_SECS: u64 = 2 * 3600;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Once per test process: drop the test databases earlier runs left behind. Their names carry
/// their creation time (`ma_idp_test_<unix seconds>_<uuid>`); names without one come from
/// before that scheme and are always stale.
async fn sweep_stale_databases(conn: &sea_orm::DatabaseConnection) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let rows = conn
                .query_all_raw(sea_orm::Statement::from_string(
                    conn.get_database_backend(),
                    format!(
                        "SELECT datname FROM pg_database WHERE datname LIKE '{}%'",
                        TEST_DB_PREFIX.replace('_', "\\_")
                    ),
                ))
                .await
                .unwrap_or_default();
            let now = unix_now();
            for row in rows {
                let Ok(name) = row.try_get::<String>("", "datname") else {
                    continue;
                };
                let created = name
                    .strip_prefix(TEST_DB_PREFIX)
                    .and_then(|rest| rest.split_once('_'))
                    .and_then(|(secs, _)| secs.parse::<u64>().ok());
                if created.is_none_or(|c| now.saturating_sub(c) > STALE_TEST_DB_SECS) {
                    let _ = conn
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            }
        })
        .await;
}

/// Drops the PostgreSQL database `fresh_pg_database` made when it goes out of scope, even when
/// the test panics: for the tests that run ma-idp as a process (CLI, browser, interop, crash)
/// instead of through `TestApp`, whose `stop` drops its own. `None` (SQLite) does nothing.
pub struct DropDatabase(pub Option<String>);

/// The database a test runs on: `None` for SQLite (in the data directory), else a fresh
/// PostgreSQL database's URL, with the guard that drops it. `None` (skip the test) when
/// PostgreSQL is unavailable locally (`fresh_pg_database`).
pub async fn database_for(backend: Backend) -> Option<(Option<String>, DropDatabase)> {
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_pg_database().await?),
    };
    Some((db.clone(), DropDatabase(db)))
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let Some(url) = self.0.take() else {
            return;
        };
        // Drop may run inside a runtime (a test's own): use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(drop_pg_database(&url)),
                Err(e) => eprintln!("could not drop test database {url}: {e}"),
            }
        })
        .join();
    }
}

/// Drop a database `fresh_pg_database` made (its connections are closed by force).
pub async fn drop_pg_database(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if !name.starts_with(TEST_DB_PREFIX)
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return;
    }
    if let Ok(conn) = Database::connect(&pg_admin_url()).await {
        if let Err(e) = conn
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
        {
            eprintln!("could not drop test database {name}: {e}");
        }
        let _ = conn.close().await;
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub clock: Arc<ManualClock>,
    /// Services on the test's own runtime, same database and master key, for set-up.
    pub svc: Arc<Services>,
    pub settings: Settings,
    server: Option<RunningServer>,
    /// The address the public listener was bound to (`restart` binds it again).
    listen: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    /// A client that does not follow redirects and keeps no cookies (Alexa's servers).
    pub http: reqwest::Client,
    /// The admin listener's base URL, when started with `start_with_admin_listener`.
    pub admin_base: Option<String>,
    /// The PostgreSQL database, dropped by `stop` or, for a test that ends without it (or
    /// panics), when the `TestApp` is dropped. Last, so it drops after everything using it.
    database: DropDatabase,
}

pub fn settings_for(dir: &std::path::Path, db: Option<String>, port: u16) -> Settings {
    Settings {
        listen: format!("127.0.0.1:{port}"),
        public_url: format!("http://localhost:{port}"),
        database_url: db,
        data_dir: dir.to_path_buf(),
        master_key: Some(STANDARD.encode([7u8; 32])),
        workers: Some(2),
        db_max_connections: Some(8),
        // The stand-in upstreams of the federation tests listen on 127.0.0.1.
        allow_private_upstreams: true,
        argon2: ma_idp::config::Argon2Settings {
            m_cost: 8192,
            t_cost: 1,
            p_cost: 1,
            concurrency: Some(2),
        },
        ..Settings::default()
    }
}

fn free_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

impl TestApp {
    /// A member of a tenant, by username (which must exist).
    pub async fn member(&self, tenant_id: &str, username: &str) -> entity::user::Model {
        self.svc
            .store
            .user_by_username(tenant_id, username)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no member {username}"))
    }

    /// A tenant's audit events of one kind and outcome.
    pub async fn audited(
        &self,
        tenant_id: &str,
        kind: &str,
        outcome: &str,
    ) -> Vec<entity::audit_event::Model> {
        self.svc
            .store
            .audit_events(tenant_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind && e.outcome == outcome)
            .collect()
    }

    /// Start ma-idp on a fresh database; `None` when the backend is unavailable locally.
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        Self::start_inner(backend, tweak, false, free_listener()).await
    }

    /// Start ma-idp on a dual-stack listener (`[::]`, IPv6 and IPv4): a client connecting to
    /// `127.0.0.1` is seen as the peer `::ffff:127.0.0.1`. `base` still names `localhost`.
    pub async fn start_dual_stack(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        let listener = TcpListener::bind("[::]:0").expect("bind [::]:0");
        Self::start_inner(backend, tweak, false, listener).await
    }

    /// Start ma-idp with the admin UI on its own listener (`admin_listen`): the public
    /// listener then hides `/admin`. Its base URL is in `admin_base`. (`restart` brings back
    /// the public listener only.)
    pub async fn start_with_admin_listener(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        Self::start_inner(backend, tweak, true, free_listener()).await
    }

    async fn start_inner(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
        admin_listener: bool,
        listener: TcpListener,
    ) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, database) = database_for(backend).await?;
        let listen = listener.local_addr().unwrap();
        let port = listen.port();
        let mut settings = settings_for(dir.path(), db, port);
        let admin = admin_listener.then(free_listener);
        let admin_base = admin.as_ref().map(|l| {
            let addr = l.local_addr().unwrap();
            settings.admin_listen = Some(addr.to_string());
            format!("http://{addr}")
        });
        tweak(&mut settings);
        let clock = ManualClock::new();
        let server =
            ma_idp::app::start_server_with_admin(settings.clone(), clock.clone(), listener, admin)
                .expect("server starts");
        let svc = Services::init(settings.clone(), clock.clone())
            .await
            .expect("services");
        Some(TestApp {
            backend,
            base: format!("http://localhost:{port}"),
            clock,
            svc,
            settings,
            server: Some(server),
            listen,
            dir,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            admin_base,
            database,
        })
    }

    /// Stop the server and start it again on the same database and data directory.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(self.listen) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("port free again");
        self.server = Some(
            ma_idp::start_server(self.settings.clone(), self.clock.clone(), listener)
                .expect("server restarts"),
        );
    }

    /// Stop the server but keep the database and data directory (see `restart`).
    pub async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    /// Stop the server and drop the test's PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        if let Some(url) = self.database.0.take() {
            drop_pg_database(&url).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn browser(&self) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) test")
                .build()
                .unwrap(),
            base: self.base.clone(),
        }
    }

    /// A tenant, a member with a password and an Alexa client (secret returned).
    /// A member of `tenant` (not an admin) whose password is `PASSWORD`.
    pub async fn add_member(
        &self,
        tenant: &entity::tenant::Model,
        username: &str,
    ) -> entity::user::Model {
        self.svc
            .create_user(
                tenant,
                username,
                Some(&ma_idp::secrets::Secret::new(PASSWORD)),
                false,
                "test",
            )
            .await
            .unwrap()
    }

    pub async fn setup(&self, slug: &str) -> Setup {
        let t = self
            .svc
            .create_tenant(slug, Some("Test home"), "test")
            .await
            .unwrap();
        self.add_member(&t, "alice").await;
        let c = self
            .svc
            .create_client(
                &t,
                ClientSpec {
                    name: "Alexa".into(),
                    client_id: Some("amazon-alexa".into()),
                    alexa_vendor_id: Some(VENDOR.into()),
                    ..Default::default()
                },
                "test",
            )
            .await
            .unwrap();
        Setup {
            slug: slug.to_string(),
            client_id: c.client.client_id,
            client_secret: c.secret.unwrap().expose().to_string(),
        }
    }

    pub async fn jwks(&self, slug: &str) -> Value {
        self.http
            .get(self.url(&format!("/t/{slug}/jwks.json")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Verify an access token against the published JWKS, with issuer and audience.
    pub async fn verify_access_token(&self, slug: &str, token: &str) -> Value {
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(self.jwks(slug).await).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let kid = header.kid.expect("kid");
        let jwk = jwks.find(&kid).expect("kid published in JWKS");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_issuer(&[format!("{}/t/{slug}", self.base)]);
        v.set_audience(&["music-assistant"]);
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .expect("token verifies")
            .claims
    }

    pub async fn token(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.header("authorization", basic_header(id, secret));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json, headers)
    }

    pub async fn introspect(&self, setup: &Setup, token: &str) -> Value {
        let (s, body, _) = self
            .token(
                &format!("/t/{}/introspect", setup.slug),
                &[("token", token)],
                Some((&setup.client_id, &setup.client_secret)),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        body
    }

    /// Refresh as Alexa does (Basic authentication, nothing but the token).
    pub async fn refresh(&self, setup: &Setup, refresh_token: &str) -> (StatusCode, Value) {
        let (s, b, _) = self
            .token(
                "/alexa/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
                Some((&setup.client_id, &setup.client_secret)),
            )
            .await;
        (s, b)
    }

    /// A linking as Alexa makes it (`authorize_code` at `/alexa/authorize` with the first
    /// Alexa redirect URI, then the code exchanged with Basic authentication): the token
    /// answer, asserted 200.
    pub async fn link(&self, setup: &Setup, state: &str) -> Value {
        let redirect = alexa_redirects()[0].clone();
        let (code, _) = self.authorize_code(setup, &redirect, state, None).await;
        let (s, body, _) = self
            .token(
                "/alexa/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect.as_str()),
                ],
                Some((&setup.client_id, &setup.client_secret)),
            )
            .await;
        assert_eq!(s, 200, "{state}: code exchange: {body}");
        body
    }

    /// Authorize → sign in → consent → code, in a fresh browser. Returns the code and the
    /// `state` that came back.
    pub async fn authorize_code(
        &self,
        setup: &Setup,
        redirect_uri: &str,
        state: &str,
        pkce: Option<&str>,
    ) -> (String, String) {
        self.authorize_code_at("/alexa/authorize", setup, redirect_uri, state, pkce)
            .await
    }

    /// The same at a given authorization endpoint path.
    pub async fn authorize_code_at(
        &self,
        path: &str,
        setup: &Setup,
        redirect_uri: &str,
        state: &str,
        pkce: Option<&str>,
    ) -> (String, String) {
        let b = self.browser();
        let mut q = vec![
            ("client_id", setup.client_id.clone()),
            ("response_type", "code".into()),
            ("redirect_uri", redirect_uri.into()),
            ("state", state.into()),
            ("scope", "music.control user:read".into()),
        ];
        if let Some(v) = pkce {
            q.push(("code_challenge", pkce_challenge(v)));
            q.push(("code_challenge_method", "S256".into()));
        }
        let loc = b.sign_in_and_consent(path, &q, "alice", PASSWORD).await;
        parse_code(&loc, redirect_uri, state)
    }
}

/// The result of `TestApp::setup`.
#[derive(Debug, Clone)]
pub struct Setup {
    pub slug: String,
    pub client_id: String,
    pub client_secret: String,
}

pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

pub fn pkce_challenge(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// A verifier of 64 random-looking characters.
pub fn new_verifier() -> String {
    let mut v = uuid::Uuid::new_v4().simple().to_string();
    v.push_str(&uuid::Uuid::new_v4().simple().to_string());
    v
}

/// The code from a redirect back to the client; asserts the redirect target and the state.
pub fn parse_code(location: &str, redirect_uri: &str, state: &str) -> (String, String) {
    assert!(
        location.starts_with(redirect_uri),
        "redirected to {location}, expected {redirect_uri}"
    );
    let u = url::Url::parse(location).unwrap();
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    let code = q
        .get("code")
        .unwrap_or_else(|| panic!("no code in {location}"))
        .clone();
    let got_state = q.get("state").cloned().unwrap_or_default();
    assert_eq!(got_state, state, "state must come back exactly");
    (code, got_state)
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A phone browser: keeps cookies, does not follow redirects.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
}

pub fn hidden(html: &str, name: &str) -> String {
    let re = regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
    re.captures(html)
        .unwrap_or_else(|| panic!("no hidden field {name} in page:\n{html}"))
        .get(1)
        .unwrap()
        .as_str()
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// Text (an attribute's, or an element's) as tera's autoescape wrote it.
pub fn unescape_attribute(s: &str) -> String {
    s.replace("&#x2F;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Where a page that sends the browser on by itself (`<meta http-equiv="refresh">`) sends it;
/// asserts its link for a browser that does not follow goes to the same place.
pub fn continue_url(html: &str) -> String {
    let re = regex::Regex::new(r#"<meta http-equiv="refresh" content="0;url=([^"]*)">"#).unwrap();
    let to = re
        .captures(html)
        .unwrap_or_else(|| panic!("no refresh in page:\n{html}"))
        .get(1)
        .unwrap()
        .as_str();
    assert!(
        html.contains(&format!(r#"<a href="{to}">"#)),
        "the page links where it refreshes to:\n{html}"
    );
    // Escaped as an attribute: every `&` starts an entity (a query's `&` is `&amp;`).
    let entities = regex::Regex::new(r"&(amp|quot|lt|gt|#x27|#x2F);").unwrap();
    assert_eq!(
        to.matches('&').count(),
        entities.find_iter(to).count(),
        "{to}"
    );
    unescape_attribute(to)
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_string()
}

impl Browser {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Post the password form of a page (`html`, shown at `path`) back to `path` as `user`
    /// with [`PASSWORD`]: its `csrf`, and its `rid` on an authorization page.
    pub async fn post_password(&self, path: &str, html: &str, user: &str) -> reqwest::Response {
        let csrf = hidden(html, "csrf");
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("action", "login"),
            ("username", user),
            ("password", PASSWORD),
        ];
        let rid = html.contains(r#"name="rid""#).then(|| hidden(html, "rid"));
        if let Some(rid) = &rid {
            form.push(("rid", rid));
        }
        self.post(path, &form).await
    }

    /// Open the authorize URL, sign in, approve consent if asked; returns the final
    /// redirect to the client.
    pub async fn sign_in_and_consent(
        &self,
        path: &str,
        query: &[(&str, String)],
        user: &str,
        password: &str,
    ) -> String {
        let url = reqwest::Url::parse_with_params(&self.url(path), query).unwrap();
        self.sign_in_and_consent_url(url.as_str(), user, password)
            .await
    }

    /// The same, from a complete authorization URL (as a client library builds it).
    pub async fn sign_in_and_consent_url(&self, url: &str, user: &str, password: &str) -> String {
        let path = reqwest::Url::parse(url).unwrap().path().to_string();
        let path = path.as_str();
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "authorize shows the sign-in page");
        let html = resp.text().await.unwrap();
        assert!(html.contains("Sign in"), "{html}");
        let csrf = hidden(&html, "csrf");
        let rid = hidden(&html, "rid");
        let resp = self
            .post(
                path,
                &[
                    ("csrf", &csrf),
                    ("rid", &rid),
                    ("action", "login"),
                    ("username", user),
                    ("password", password),
                ],
            )
            .await;
        // The sign-in answers with the consent page, or with the redirect back to the client
        // when consent is remembered.
        if resp.status() == 200 {
            let html = resp.text().await.unwrap();
            assert!(html.contains("Allow"), "consent page expected: {html}");
            let csrf = hidden(&html, "csrf");
            let rid = hidden(&html, "rid");
            let resp = self
                .post(
                    path,
                    &[("csrf", &csrf), ("rid", &rid), ("action", "approve")],
                )
                .await;
            assert_eq!(resp.status(), 303);
            location(&resp)
        } else {
            assert_eq!(
                resp.status(),
                303,
                "remembered consent redirects at once: {:?}",
                resp.text().await
            );
            location(&resp)
        }
    }
}

/// The `ma-idp` binary of this workspace (built on demand).
pub fn binary() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug").join("ma-idp");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "ma-idp", "--bin", "ma-idp"])
            .current_dir(&root)
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the ma-idp binary failed");
    });
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}
