//! Federation over HTTP, on SQLite and PostgreSQL: Login with Amazon against a local
//! stand-in that follows Amazon's documented shapes, a real OpenID Connect upstream (another
//! tenant of the same ma-idp), a small fake OIDC provider for ID-token refusals, every
//! refusal with its page and audit event, and the `ma-idp provider` command line.
//!
//! The upstream tenant's browser-facing endpoint is reached as `127.0.0.1` while ma-idp's
//! public URL is `localhost`: like a real upstream on another origin, the upstream sign-in
//! has its own cookies and does not replace the sign-in at the home tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ma_idp::federation::NewProvider;
use ma_idp::secrets::Secret;
use ma_idp::services::ClientSpec;
use ma_idp_tests::*;
use serde_json::{Value, json};

both_backends!(
    amazon_link_sign_in_at_alexa_and_unlink,
    amazon_refusals_have_pages_and_audit_events,
    oidc_upstream_tenant_links_and_signs_in,
    oidc_id_token_refusals,
    racing_links_of_one_identity_one_wins,
    cli_adds_and_lists_a_provider,
    admin_links_identities_and_providers_create_members,
    admin_changes_disables_and_removes_a_provider,
    link_by_verified_email_only_when_allowed,
    tenant_policy_creates_members_for_every_provider,
    one_member_per_identity_and_none_after_a_provider_change,
    private_upstreams_refused_unless_allowed,
    prompt_login_and_max_age_need_a_fresh_upstream_sign_in,
);

const AMAZON_CLIENT_ID: &str = "amzn1.application-oa2-client.0123456789abcdef";
const AMAZON_SECRET: &str = "amzn-test-secret-d2f1";
const AMAZON_USER: &str = "amzn1.account.AFTESTUSER0000000000000000000";

// ---------------------------------------------------------------------------------------
// A small HTTP server on its own thread (actix-web, like ma-idp itself).

struct Upstream {
    base: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The stop command is sent at once; nothing needs to wait for it.
        drop(self.handle.stop(false));
    }
}

fn spawn_http<F>(listener: TcpListener, configure: F) -> Upstream
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new().configure(configure.clone())
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            let _ = server.await;
        });
    });
    Upstream {
        base,
        handle: rx.recv().unwrap(),
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("cache-control", "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

// ---------------------------------------------------------------------------------------
// The Login with Amazon stand-in: /ap/oa, /auth/o2/token, /user/profile.

#[derive(Clone)]
struct AmazonProfile {
    user_id: String,
    name: String,
    email: String,
}

struct AmazonGrant {
    challenge: String,
    redirect_uri: String,
    profile: AmazonProfile,
}

struct AmazonState {
    client_id: String,
    client_secret: String,
    /// The redirect URIs registered for this security profile.
    redirect_uris: Vec<String>,
    /// Who signs in at Amazon next.
    user: AmazonProfile,
    /// The person presses "Cancel" on Amazon's consent screen.
    deny: bool,
    /// The token endpoint refuses every code with `invalid_grant`.
    refuse_codes: bool,
    codes: HashMap<String, AmazonGrant>,
    tokens: HashMap<String, AmazonProfile>,
    /// Counts of successful answers, and what the token requests looked like.
    tokens_issued: u32,
    profiles_served: u32,
    token_requests: u32,
    basic_auth_seen: bool,
}

type Shared<T> = web::Data<Arc<Mutex<T>>>;

struct AmazonStandIn {
    server: Upstream,
    state: Arc<Mutex<AmazonState>>,
}

impl AmazonStandIn {
    fn start(redirect_uris: Vec<String>) -> AmazonStandIn {
        let state = Arc::new(Mutex::new(AmazonState {
            client_id: AMAZON_CLIENT_ID.into(),
            client_secret: AMAZON_SECRET.into(),
            redirect_uris,
            user: AmazonProfile {
                user_id: AMAZON_USER.into(),
                name: "Alice Amazon".into(),
                email: "alice@example.com".into(),
            },
            deny: false,
            refuse_codes: false,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            tokens_issued: 0,
            profiles_served: 0,
            token_requests: 0,
            basic_auth_seen: false,
        }));
        let data = web::Data::new(state.clone());
        let server = spawn_http(TcpListener::bind("127.0.0.1:0").unwrap(), move |cfg| {
            cfg.app_data(data.clone())
                .route("/ap/oa", web::get().to(amazon_authorize))
                .route("/auth/o2/token", web::post().to(amazon_token))
                .route("/user/profile", web::get().to(amazon_profile));
        });
        AmazonStandIn { server, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    fn set<R>(&self, f: impl FnOnce(&mut AmazonState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn provider(&self, slug: &str, token_endpoint: Option<String>) -> NewProvider {
        NewProvider {
            slug: slug.into(),
            kind: "amazon".into(),
            display_name: "Amazon".into(),
            client_id: AMAZON_CLIENT_ID.into(),
            client_secret: Some(Secret::new(AMAZON_SECRET)),
            scopes: None,
            region: None,
            issuer: None,
            authorization_endpoint: Some(self.url("/ap/oa")),
            token_endpoint: Some(token_endpoint.unwrap_or_else(|| self.url("/auth/o2/token"))),
            userinfo_endpoint: Some(self.url("/user/profile")),
            jwks_uri: None,
            auto_create: false,
            link_by_email: false,
        }
    }
}

async fn amazon_authorize(
    st: Shared<AmazonState>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut st = st.lock().unwrap();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    // Amazon shows an error page (no redirect) for a bad client or redirect URI.
    if get("client_id") != st.client_id {
        return HttpResponse::BadRequest().body("unknown client_id");
    }
    if !st.redirect_uris.iter().any(|r| r == get("redirect_uri")) {
        return HttpResponse::BadRequest().body("redirect_uri not registered");
    }
    let mut back = url::Url::parse(get("redirect_uri")).unwrap();
    let problem = if get("response_type") != "code" {
        Some("unsupported_response_type")
    } else if get("scope") != "profile" {
        Some("invalid_scope")
    } else if get("code_challenge_method") != "S256"
        || get("code_challenge").len() < 43
        || get("state").is_empty()
    {
        Some("invalid_request")
    } else {
        None
    };
    if let Some(p) = problem {
        back.query_pairs_mut()
            .append_pair("error", p)
            .append_pair("error_description", "the stand-in refused the request")
            .append_pair("state", get("state"));
    } else if st.deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user denied the request.")
            .append_pair("state", get("state"));
    } else {
        let code = format!("ANdNAVhyhqirUelHGEHA{}", random_token());
        let grant = AmazonGrant {
            challenge: get("code_challenge").into(),
            redirect_uri: get("redirect_uri").into(),
            profile: st.user.clone(),
        };
        st.codes.insert(code.clone(), grant);
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("scope", "profile")
            .append_pair("state", get("state"));
    }
    HttpResponse::Found()
        .insert_header(("location", back.to_string()))
        .finish()
}

async fn amazon_token(
    req: HttpRequest,
    st: Shared<AmazonState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mut st = st.lock().unwrap();
    st.token_requests += 1;
    if req.headers().contains_key("authorization") {
        st.basic_auth_seen = true;
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "authorization_code" {
        return oauth_error(400, "unsupported_grant_type", "grant_type");
    }
    // Login with Amazon reads the client credentials from the body.
    if get("client_id") != st.client_id || get("client_secret") != st.client_secret {
        return oauth_error(401, "invalid_client", "Client authentication failed");
    }
    if st.refuse_codes {
        return oauth_error(
            400,
            "invalid_grant",
            "The request has an invalid grant parameter : code",
        );
    }
    let Some(grant) = st.codes.remove(get("code")) else {
        return oauth_error(400, "invalid_grant", "unknown or used code");
    };
    if get("redirect_uri") != grant.redirect_uri {
        return oauth_error(400, "invalid_grant", "redirect_uri does not match");
    }
    if get("code_verifier").is_empty() || pkce_challenge(get("code_verifier")) != grant.challenge {
        return oauth_error(400, "invalid_grant", "code_verifier does not match");
    }
    let access = format!("Atza|{}", random_token());
    st.tokens.insert(access.clone(), grant.profile);
    st.tokens_issued += 1;
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "access_token": access,
            "refresh_token": format!("Atzr|{}", random_token()),
            "token_type": "bearer",
            "expires_in": 3600,
        }))
}

async fn amazon_profile(req: HttpRequest, st: Shared<AmazonState>) -> HttpResponse {
    let mut st = st.lock().unwrap();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(p) = st.tokens.get(token).cloned() else {
        return oauth_error(401, "invalid_token", "The access token is invalid");
    };
    st.profiles_served += 1;
    HttpResponse::Ok().json(json!({"user_id": p.user_id, "name": p.name, "email": p.email}))
}

// ---------------------------------------------------------------------------------------
// A fake OpenID Connect provider that signs its own ID tokens (RS256).

#[derive(Clone, Copy, PartialEq, Debug)]
enum IdTokenMode {
    Good,
    WrongNonce,
    UnknownKey,
    /// Issued by another issuer than the provider's.
    WrongIssuer,
    /// For another client (its only audience).
    WrongAudience,
    /// Expired a minute before it was issued to us.
    Expired,
}

struct FakeOidcState {
    issuer: String,
    client_id: String,
    client_secret: String,
    mode: IdTokenMode,
    published: aws_lc_rs::rsa::KeyPair,
    other: aws_lc_rs::rsa::KeyPair,
    /// code -> (nonce, code_challenge, redirect_uri)
    codes: HashMap<String, (String, String, String)>,
    nonces_seen: Vec<String>,
    tokens_issued: u32,
    /// What the ID token says about its e-mail.
    email_verified: bool,
    /// The ID token's `auth_time` (none when `None`).
    auth_time: Option<i64>,
    /// The `prompt` and `max_age` of each authorization request, in order.
    asked: Vec<(Option<String>, Option<String>)>,
}

struct FakeOidc {
    server: Upstream,
    state: Arc<Mutex<FakeOidcState>>,
}

fn rsa_key() -> aws_lc_rs::rsa::KeyPair {
    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()
}

fn jwk(kid: &str, kp: &aws_lc_rs::rsa::KeyPair) -> Value {
    use aws_lc_rs::signature::KeyPair as _;
    let c: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = kp.public_key().into();
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
           "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
}

fn sign_jwt(kid: &str, kp: &aws_lc_rs::rsa::KeyPair, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; kp.public_modulus_len()];
    kp.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

impl FakeOidc {
    fn start(client_id: &str, client_secret: &str) -> FakeOidc {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeOidcState {
            issuer,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            mode: IdTokenMode::Good,
            published: rsa_key(),
            other: rsa_key(),
            codes: HashMap::new(),
            nonces_seen: Vec::new(),
            tokens_issued: 0,
            email_verified: false,
            auth_time: None,
            asked: Vec::new(),
        }));
        let data = web::Data::new(state.clone());
        let server = spawn_http(listener, move |cfg| {
            cfg.app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(fake_discovery),
                )
                .route("/jwks", web::get().to(fake_jwks))
                .route("/authorize", web::get().to(fake_authorize))
                .route("/token", web::post().to(fake_token));
        });
        FakeOidc { server, state }
    }
}

async fn fake_discovery(st: Shared<FakeOidcState>) -> HttpResponse {
    let iss = st.lock().unwrap().issuer.clone();
    HttpResponse::Ok().json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn fake_jwks(st: Shared<FakeOidcState>) -> HttpResponse {
    let st = st.lock().unwrap();
    HttpResponse::Ok().json(json!({"keys": [jwk("published-1", &st.published)]}))
}

async fn fake_authorize(
    st: Shared<FakeOidcState>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut st = st.lock().unwrap();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != st.client_id
        || get("response_type") != "code"
        || !get("scope").split(' ').any(|s| s == "openid")
        || get("nonce").is_empty()
        || get("code_challenge_method") != "S256"
    {
        return HttpResponse::BadRequest().body("bad authorization request");
    }
    st.nonces_seen.push(get("nonce").into());
    let asked = (q.get("prompt").cloned(), q.get("max_age").cloned());
    st.asked.push(asked);
    let code = random_token();
    st.codes.insert(
        code.clone(),
        (
            get("nonce").into(),
            get("code_challenge").into(),
            get("redirect_uri").into(),
        ),
    );
    let mut back = url::Url::parse(get("redirect_uri")).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", get("state"));
    HttpResponse::Found()
        .insert_header(("location", back.to_string()))
        .finish()
}

async fn fake_token(
    req: HttpRequest,
    st: Shared<FakeOidcState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mut st = st.lock().unwrap();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let expected = basic_header(&st.client_id, &st.client_secret);
    if req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        != Some(&expected)
    {
        return oauth_error(401, "invalid_client", "client authentication failed");
    }
    let Some((nonce, challenge, redirect)) = st.codes.remove(get("code")) else {
        return oauth_error(400, "invalid_grant", "unknown code");
    };
    if get("grant_type") != "authorization_code"
        || get("redirect_uri") != redirect
        || pkce_challenge(get("code_verifier")) != challenge
    {
        return oauth_error(400, "invalid_grant", "code, redirect_uri or verifier");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": st.issuer, "sub": "fake-user-1", "aud": [st.client_id],
        "iat": now, "exp": now + 300,
        "nonce": if st.mode == IdTokenMode::WrongNonce { "not-the-nonce-you-sent".to_string() } else { nonce },
        "email": "fake@example.com",
        "email_verified": st.email_verified,
    });
    let mut claims = claims;
    if let Some(t) = st.auth_time {
        claims["auth_time"] = json!(t);
    }
    match st.mode {
        IdTokenMode::WrongIssuer => claims["iss"] = json!(format!("{}/other", st.issuer)),
        IdTokenMode::WrongAudience => claims["aud"] = json!(["someone-else"]),
        IdTokenMode::Expired => {
            claims["iat"] = json!(now - 600);
            claims["exp"] = json!(now - 60);
        }
        _ => {}
    }
    let id_token = match st.mode {
        IdTokenMode::UnknownKey => sign_jwt("someone-else", &st.other, &claims),
        _ => sign_jwt("published-1", &st.published, &claims),
    };
    st.tokens_issued += 1;
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(
            json!({"access_token": random_token(), "token_type": "Bearer",
                     "expires_in": 300, "id_token": id_token}),
        )
}

// ---------------------------------------------------------------------------------------
// Browser and audit helpers.

/// HTML with Tera's escapes undone, for reading links and form actions.
fn unescape(html: &str) -> String {
    html.replace("&#x2F;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The `<h1>` of a page.
fn title(html: &str) -> String {
    let re = regex::Regex::new(r"(?s)<h1>(.*?)</h1>").unwrap();
    unescape(
        re.captures(html)
            .unwrap_or_else(|| panic!("no <h1> in:\n{html}"))
            .get(1)
            .unwrap()
            .as_str(),
    )
}

/// The page's single link (`message.html`).
fn page_link(html: &str) -> String {
    let re = regex::Regex::new(r#"<p><a href="([^"]+)">"#).unwrap();
    unescape(
        re.captures(html)
            .unwrap_or_else(|| panic!("no link in page:\n{html}"))
            .get(1)
            .unwrap()
            .as_str(),
    )
}

/// Status and body of a response.
async fn page(resp: reqwest::Response) -> (u16, String) {
    let s = resp.status().as_u16();
    (s, resp.text().await.unwrap())
}

/// Sign in with a password at `/t/{slug}/login`; the browser lands on its account page.
async fn password_sign_in(b: &Browser, slug: &str, user: &str) {
    let r = b.get(&format!("/t/{slug}/login")).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let r = b
        .post_password(&format!("/t/{slug}/login"), &html, user)
        .await;
    assert_eq!(r.status(), 303, "password sign-in works");
    assert_eq!(location(&r), format!("/t/{slug}/account"));
}

/// The account page's HTML (unescaped).
async fn account_page(b: &Browser, slug: &str) -> String {
    let (s, html) = page(b.get(&format!("/t/{slug}/account")).await).await;
    assert_eq!(s, 200, "{html}");
    unescape(&html)
}

/// Press "Link {name}" on the account page: returns the redirect to the upstream.
async fn press_link(b: &Browser, slug: &str, provider: &str, name: &str) -> String {
    let html = account_page(b, slug).await;
    assert!(html.contains(&format!("Link {name}</button>")), "{html}");
    let action = format!("/t/{slug}/federation/{provider}/start");
    assert!(html.contains(&format!("action=\"{action}\"")), "{html}");
    let r = b
        .post(
            &action,
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("purpose", "link"),
                ("back", "account"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "start redirects to the upstream");
    location(&r)
}

/// On a sign-in page, press "Sign in with {name}": returns the redirect to the upstream.
async fn press_sign_in_with(b: &Browser, login_html: &str, slug: &str, name: &str) -> String {
    let r = press_sign_in_with_resp(b, login_html, slug, name).await;
    assert_eq!(r.status(), 303, "start redirects to the upstream");
    location(&r)
}

/// The same, returning the response of the start.
async fn press_sign_in_with_resp(
    b: &Browser,
    login_html: &str,
    slug: &str,
    name: &str,
) -> reqwest::Response {
    let html = unescape(login_html);
    assert!(
        html.contains(&format!("Sign in with {name}</button>")),
        "{html}"
    );
    // The provider's form is the one after the password form.
    let form = html
        .split("<form ")
        .find(|f| f.contains(&format!("Sign in with {name}")))
        .unwrap();
    let action = regex::Regex::new(r#"action="([^"]+)""#)
        .unwrap()
        .captures(form)
        .unwrap()[1]
        .to_string();
    assert!(
        action.starts_with(&format!("/t/{slug}/federation/")),
        "{action}"
    );
    let mut fields = vec![
        ("csrf", hidden(form, "csrf")),
        ("back", hidden(form, "back")),
    ];
    assert_eq!(hidden(form, "purpose"), "sign_in");
    if form.contains("name=\"rid\"") {
        fields.push(("rid", hidden(form, "rid")));
    }
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    b.post(&action, &fields).await
}

/// The browser at Amazon (the stand-in signs the person in at once): returns where Amazon
/// sends the browser back to.
async fn at_amazon(b: &Browser, url: &str) -> String {
    let r = b.get(url).await;
    assert_eq!(r.status(), 302, "Amazon redirects back");
    location(&r)
}

/// The whole round trip through Amazon: start URL in, the callback's response out.
async fn through_amazon(b: &Browser, upstream_url: &str) -> reqwest::Response {
    let back = at_amazon(b, upstream_url).await;
    b.get(&back).await
}

fn authorize_query(setup: &Setup, state: &str, pkce: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("client_id", setup.client_id.clone()),
        ("response_type", "code".to_string()),
        ("redirect_uri", alexa_redirects()[0].clone()),
        ("state", state.to_string()),
        ("nonce", format!("n-{state}")),
        ("scope", "openid music.control".to_string()),
    ];
    if let Some(v) = pkce {
        q.push(("code_challenge", pkce_challenge(v)));
        q.push(("code_challenge_method", "S256".into()));
    }
    q
}

/// Open an authorization request in this browser: the sign-in page's HTML.
async fn open_authorize(b: &Browser, path: &str, query: &[(&str, String)]) -> String {
    let url = reqwest::Url::parse_with_params(&b.url(path), query).unwrap();
    let (s, html) = page(b.http.get(url).send().await.unwrap()).await;
    assert_eq!(s, 200, "the sign-in page: {html}");
    assert!(html.contains("<h1>Sign in</h1>"), "{html}");
    html
}

/// From a consent page at `path` (already signed in), approve: the redirect to the client.
async fn consent(b: &Browser, path: &str, html: &str) -> String {
    assert!(html.contains("Allow"), "consent page expected: {html}");
    let r = b
        .post(
            path,
            &[
                ("csrf", &hidden(html, "csrf")),
                ("rid", &hidden(html, "rid")),
                ("action", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    location(&r)
}

/// Verify an ID token of a tenant; returns its claims.
async fn id_token_claims(app: &TestApp, slug: &str, aud: &str, id_token: &str) -> Value {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(app.jwks(slug).await).unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[app.url(&format!("/t/{slug}"))]);
    jsonwebtoken::decode::<Value>(id_token, &key, &v)
        .expect("ID token verifies")
        .claims
}

#[derive(Debug)]
struct Event {
    kind: String,
    outcome: String,
    actor: Option<String>,
    user_id: Option<String>,
    detail: Value,
}

async fn events(app: &TestApp, tenant_id: &str) -> Vec<Event> {
    app.svc
        .store
        .audit_events(tenant_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| Event {
            kind: e.kind,
            outcome: e.outcome,
            actor: e.actor,
            user_id: e.user_id,
            detail: e
                .detail
                .as_deref()
                .map(|d| serde_json::from_str(d).unwrap())
                .unwrap_or(Value::Null),
        })
        .collect()
}

/// How many failed federation sign-ins with this reason the tenant's audit log holds.
async fn failed_sign_ins(app: &TestApp, tenant_id: &str, provider: &str, reason: &str) -> usize {
    events(app, tenant_id)
        .await
        .iter()
        .filter(|e| {
            e.kind == "sign_in"
                && e.outcome == "failed"
                && e.detail["method"] == "federation"
                && e.detail["provider"] == provider
                && e.detail["reason"] == reason
        })
        .count()
}

async fn user_id(app: &TestApp, tenant_id: &str, username: &str) -> String {
    app.svc
        .store
        .user_by_username(tenant_id, username)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// A refusal: the status, the title, the audit event with its reason (one more than before).
#[allow(clippy::too_many_arguments)]
async fn assert_refusal(
    app: &TestApp,
    tenant_id: &str,
    provider: &str,
    resp: reqwest::Response,
    status: u16,
    title_text: &str,
    reason: &str,
    before: usize,
) -> String {
    let (s, html) = page(resp).await;
    assert_eq!(s, status, "{html}");
    assert_eq!(title(&html), title_text, "{html}");
    assert_eq!(
        failed_sign_ins(app, tenant_id, provider, reason).await,
        before + 1,
        "one failed sign-in audited with reason {reason}"
    );
    html
}

// ---------------------------------------------------------------------------------------
// Login with Amazon: not linked yet, link, sign in at an Alexa authorization, unlink.

async fn amazon_link_sign_in_at_alexa_and_unlink(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let redirect = app.svc.federation_redirect_uri(&t, "amazon");
    assert_eq!(redirect, app.url("/t/home/federation/amazon/callback"));
    let amazon = AmazonStandIn::start(vec![redirect.clone()]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    let alice = user_id(&app, &t.id, "alice").await;

    // Not linked yet: a clear page (403) with the way back to the same authorization.
    let b = app.browser();
    let html = open_authorize(&b, "/alexa/authorize", &authorize_query(&setup, "s1", None)).await;
    let rid = hidden(&html, "rid");
    let up = press_sign_in_with(&b, &html, "home", "Amazon").await;
    assert!(up.starts_with(&amazon.url("/ap/oa?")), "{up}");
    let uq = query_of(&up);
    assert_eq!(uq["client_id"], AMAZON_CLIENT_ID);
    assert_eq!(uq["scope"], "profile");
    assert_eq!(uq["response_type"], "code");
    assert_eq!(uq["redirect_uri"], redirect);
    assert_eq!(uq["code_challenge_method"], "S256");
    assert!(uq["state"].len() >= 16, "a random state");
    let back = at_amazon(&b, &up).await;
    let bq = query_of(&back);
    assert!(back.starts_with(&redirect), "{back}");
    assert_eq!(bq["state"], uq["state"]);
    assert_eq!(bq["scope"], "profile");
    let before = failed_sign_ins(&app, &t.id, "amazon", "not linked").await;
    let html = assert_refusal(
        &app,
        &t.id,
        "amazon",
        b.get(&back).await,
        403,
        "This Amazon account is not linked yet",
        "not linked",
        before,
    )
    .await;
    assert!(
        html.contains("link Amazon from your account page"),
        "{html}"
    );
    assert_eq!(page_link(&html), format!("/alexa/authorize?rid={rid}"));
    let (s, again) = page(b.get(&page_link(&html)).await).await;
    assert_eq!(s, 200, "the way back is the same sign-in page: {again}");
    assert!(again.contains("<h1>Sign in</h1>") && again.contains("Sign in with Amazon"));
    assert_eq!(hidden(&again, "rid"), rid);
    let r = b.get("/t/home/account").await;
    assert_eq!(location(&r), "/t/home/login", "not signed in");
    assert_eq!(amazon.set(|s| (s.tokens_issued, s.profiles_served)), (1, 1));

    // Alice, signed in with her password, links Amazon from her account page.
    let a = app.browser();
    password_sign_in(&a, "home", "alice").await;
    let html = account_page(&a, "home").await;
    assert!(html.contains("No linked sign-in accounts."), "{html}");
    let up = press_link(&a, "home", "amazon", "Amazon").await;
    assert!(up.starts_with(&amazon.url("/ap/oa?")), "{up}");
    let r = through_amazon(&a, &up).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/t/home/account?done=linked");
    let html = unescape(
        &a.get("/t/home/account?done=linked")
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(html.contains("Account linked."), "{html}");
    assert!(html.contains("<strong>Amazon</strong>"), "{html}");
    assert!(html.contains("alice@example.com"), "{html}");
    assert!(!html.contains("No linked sign-in accounts."), "{html}");
    let linked = app.svc.linked_identities(&t, &alice).await.unwrap();
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].0.subject, AMAZON_USER);
    assert!(
        events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.kind == "identity_linked"
                && e.outcome == "ok"
                && e.user_id.as_deref() == Some(alice.as_str())
                && e.detail["subject"] == AMAZON_USER
                && e.detail["via"] == "self"),
        "the link is audited"
    );
    amazon.set(|s| {
        assert_eq!((s.tokens_issued, s.profiles_served), (2, 2));
        assert!(!s.basic_auth_seen, "client credentials go in the body");
    });

    // A new browser: Alexa's authorization, "Sign in with Amazon", consent, code, tokens.
    let c = app.browser();
    let verifier = new_verifier();
    let mut q = authorize_query(&setup, "s2", Some(&verifier));
    q.iter_mut()
        .find(|(k, _)| *k == "scope")
        .unwrap()
        .1
        .push_str(" profile");
    let html = open_authorize(&c, "/alexa/authorize", &q).await;
    let up = press_sign_in_with(&c, &html, "home", "Amazon").await;
    let r = through_amazon(&c, &up).await;
    assert_eq!(r.status(), 302, "signed in, back to the authorization");
    let back = location(&r);
    assert!(back.starts_with("/alexa/authorize?rid="), "{back}");
    let (s, html) = page(c.get(&back).await).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("alice"), "consent as alice: {html}");
    let loc = consent(&c, "/alexa/authorize", &html).await;
    let (code, _) = parse_code(&loc, &alexa_redirects()[0], "s2");
    let (s, tok, _) = app
        .token(
            "/alexa/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &alexa_redirects()[0]),
                ("code_verifier", &verifier),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    let at = tok["access_token"].as_str().expect("access token");
    let rt = tok["refresh_token"].as_str().expect("refresh token");
    let claims = id_token_claims(
        &app,
        "home",
        &setup.client_id,
        tok["id_token"].as_str().unwrap(),
    )
    .await;
    assert!(
        claims["amr"].as_array().unwrap().contains(&json!("fed")),
        "amr has fed: {claims}"
    );
    assert!(!claims["amr"].as_array().unwrap().contains(&json!("pwd")));
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["nonce"], "n-s2");
    let access = app.verify_access_token("home", at).await;
    assert_eq!(access["sub"], claims["sub"]);
    let (s, refreshed) = app.refresh(&setup, rt).await;
    assert_eq!(s, 200, "the refresh token works: {refreshed}");
    assert!(refreshed["access_token"].is_string());
    assert!(
        events(&app, &t.id).await.iter().any(|e| e.kind == "sign_in"
            && e.outcome == "ok"
            && e.user_id.as_deref() == Some(alice.as_str())
            && e.detail["method"] == "federation"),
        "the federated sign-in is audited"
    );

    // Unlink: the account page no longer lists it, and Amazon no longer signs Alice in.
    let html = account_page(&a, "home").await;
    let id = regex::Regex::new(r#"action="/t/home/account/identities/([^/"]+)/unlink""#)
        .unwrap()
        .captures(&html)
        .unwrap_or_else(|| panic!("an Unlink button: {html}"))[1]
        .to_string();
    let unlink = format!("/t/home/account/identities/{id}/unlink");
    let r = a.post(&unlink, &[("csrf", &hidden(&html, "csrf"))]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/t/home/account?done=unlinked");
    let html = unescape(
        &a.get("/t/home/account?done=unlinked")
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(html.contains("Account unlinked."), "{html}");
    assert!(html.contains("No linked sign-in accounts."), "{html}");
    assert!(
        events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.kind == "identity_unlinked" && e.outcome == "ok"),
        "the unlink is audited"
    );
    let r = a.post(&unlink, &[("csrf", &hidden(&html, "csrf"))]).await;
    assert_eq!(r.status(), 404, "unlinking twice finds nothing");
    let d = app.browser();
    let html = open_authorize(&d, "/alexa/authorize", &authorize_query(&setup, "s3", None)).await;
    let up = press_sign_in_with(&d, &html, "home", "Amazon").await;
    let before = failed_sign_ins(&app, &t.id, "amazon", "not linked").await;
    assert_refusal(
        &app,
        &t.id,
        "amazon",
        through_amazon(&d, &up).await,
        403,
        "This Amazon account is not linked yet",
        "not linked",
        before,
    )
    .await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Refusals with Amazon: state, cancel, upstream error, unreachable, linked elsewhere.

async fn amazon_refusals_have_pages_and_audit_events(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let amazon = AmazonStandIn::start(vec![
        app.svc.federation_redirect_uri(&t, "amazon"),
        app.svc.federation_redirect_uri(&t, "amazon-down"),
    ]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    let mut down = amazon.provider(
        "amazon-down",
        Some(format!("http://127.0.0.1:{}/auth/o2/token", closed_port())),
    );
    down.display_name = "Backup Amazon".into();
    app.svc.add_provider(&t, down, "test").await.unwrap();
    let a = app.browser();
    password_sign_in(&a, "home", "alice").await;
    let r = through_amazon(&a, &press_link(&a, "home", "amazon", "Amazon").await).await;
    assert_eq!(location(&r), "/t/home/account?done=linked");
    let token_requests = || amazon.set(|s| s.token_requests);

    // A callback with a state this browser never started.
    let x = app.browser();
    let n = token_requests();
    let html = assert_refusal(
        &app,
        &t.id,
        "amazon",
        x.get("/t/home/federation/amazon/callback?code=forged&state=never-started")
            .await,
        400,
        "This sign-in could not be verified",
        "state_mismatch",
        0,
    )
    .await;
    assert!(html.contains("does not belong to a sign-in started in this browser"));
    assert_eq!(page_link(&html), "/t/home/login");
    assert_eq!(token_requests(), n, "nothing was exchanged");

    // Amazon's answer for one browser, opened in another: refused, and the code is not
    // spent; the browser that started it then signs in, once.
    let y = app.browser();
    let login = y.get("/t/home/login").await.text().await.unwrap();
    let callback = at_amazon(&y, &press_sign_in_with(&y, &login, "home", "Amazon").await).await;
    let z = app.browser();
    assert_refusal(
        &app,
        &t.id,
        "amazon",
        z.get(&callback).await,
        400,
        "This sign-in could not be verified",
        "state_mismatch",
        1,
    )
    .await;
    assert_eq!(token_requests(), n);
    let r = y.get(&callback).await;
    assert_eq!(r.status(), 302, "the right browser signs in");
    assert_eq!(location(&r), "/t/home/login");
    assert!(account_page(&y, "home").await.contains("alice"));
    assert_refusal(
        &app,
        &t.id,
        "amazon",
        y.get(&callback).await,
        400,
        "This sign-in could not be verified",
        "state_mismatch",
        2,
    )
    .await;

    // Cancelled at Amazon: access_denied.
    amazon.set(|s| s.deny = true);
    let c = app.browser();
    let html = open_authorize(
        &c,
        "/t/home/authorize",
        &authorize_query(&setup, "c1", None),
    )
    .await;
    let rid = hidden(&html, "rid");
    let n = token_requests();
    let html = assert_refusal(
        &app,
        &t.id,
        "amazon",
        through_amazon(&c, &press_sign_in_with(&c, &html, "home", "Amazon").await).await,
        400,
        "Sign-in cancelled",
        "cancelled",
        0,
    )
    .await;
    assert_eq!(page_link(&html), format!("/t/home/authorize?rid={rid}"));
    assert_eq!(token_requests(), n, "no code, no exchange");
    let (s, again) = page(c.get(&page_link(&html)).await).await;
    assert_eq!(s, 200);
    assert!(again.contains("Sign in with Amazon"), "{again}");
    amazon.set(|s| s.deny = false);

    // Amazon's token endpoint refuses the code: invalid_grant.
    amazon.set(|s| s.refuse_codes = true);
    let e = app.browser();
    let html = open_authorize(
        &e,
        "/t/home/authorize",
        &authorize_query(&setup, "e1", None),
    )
    .await;
    assert_refusal(
        &app,
        &t.id,
        "amazon",
        through_amazon(&e, &press_sign_in_with(&e, &html, "home", "Amazon").await).await,
        400,
        "Amazon refused the sign-in",
        "upstream_error",
        0,
    )
    .await;
    assert!(
        events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.detail["reason"] == "upstream_error"
                && e.detail["upstream"]
                    .as_str()
                    .unwrap_or("")
                    .contains("invalid_grant")),
        "the upstream's error code is in the audit detail"
    );
    assert_eq!(amazon.set(|s| s.profiles_served), 2, "no profile read");
    amazon.set(|s| s.refuse_codes = false);

    // The token endpoint cannot be reached: 502.
    let u = app.browser();
    let html = open_authorize(
        &u,
        "/t/home/authorize",
        &authorize_query(&setup, "u1", None),
    )
    .await;
    let up = press_sign_in_with(&u, &html, "home", "Backup Amazon").await;
    assert!(query_of(&up)["redirect_uri"].ends_with("/federation/amazon-down/callback"));
    let html = assert_refusal(
        &app,
        &t.id,
        "amazon-down",
        through_amazon(&u, &up).await,
        502,
        "Backup Amazon cannot be reached",
        "upstream_unreachable",
        0,
    )
    .await;
    assert!(page_link(&html).starts_with("/t/home/authorize?rid="));

    // Bob tries to link the Amazon account that is Alice's: 409 and an audit event.
    app.add_member(&t, "bob").await;
    let bob = user_id(&app, &t.id, "bob").await;
    let b = app.browser();
    password_sign_in(&b, "home", "bob").await;
    let r = through_amazon(&b, &press_link(&b, "home", "amazon", "Amazon").await).await;
    let (s, html) = page(r).await;
    assert_eq!(s, 409, "{html}");
    assert_eq!(
        title(&html),
        "This Amazon account belongs to another member"
    );
    assert_eq!(page_link(&html), "/t/home/account");
    assert!(
        events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.kind == "identity_linked"
                && e.outcome == "failed"
                && e.user_id.as_deref() == Some(bob.as_str())
                && e.detail["subject"] == AMAZON_USER),
        "the refused link is audited for bob"
    );
    assert!(
        account_page(&b, "home")
            .await
            .contains("No linked sign-in accounts.")
    );
    let alice = user_id(&app, &t.id, "alice").await;
    let linked = app.svc.linked_identities(&t, &alice).await.unwrap();
    assert_eq!(linked.len(), 1, "Alice keeps her link");
    assert!(
        app.svc
            .linked_identities(&t, &bob)
            .await
            .unwrap()
            .is_empty()
    );

    // "Link" from a browser that is not signed in: back to the sign-in page, nothing started.
    let o = app.browser();
    let login = o.get("/t/home/login").await.text().await.unwrap();
    let r = o
        .post(
            "/t/home/federation/amazon/start",
            &[("csrf", &hidden(&login, "csrf")), ("purpose", "link")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/t/home/login");

    // A start without the form's CSRF token is refused.
    let r = o
        .post(
            "/t/home/federation/amazon/start",
            &[("csrf", "forged"), ("purpose", "sign_in")],
        )
        .await;
    assert_eq!(r.status(), 400);

    // An unknown provider.
    let r = o
        .post(
            "/t/home/federation/nope/start",
            &[("csrf", &hidden(&login, "csrf")), ("purpose", "sign_in")],
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        o.get("/t/home/federation/nope/callback?state=x&code=y")
            .await
            .status(),
        404
    );

    // Amazon's answer after the sign-in expired (15 minutes): refused, nothing exchanged.
    let l = app.browser();
    let login = l.get("/t/home/login").await.text().await.unwrap();
    let callback = at_amazon(&l, &press_sign_in_with(&l, &login, "home", "Amazon").await).await;
    let n = token_requests();
    app.clock.advance(16 * 60);
    assert_refusal(
        &app,
        &t.id,
        "amazon",
        l.get(&callback).await,
        400,
        "This sign-in could not be verified",
        "state_mismatch",
        3,
    )
    .await;
    assert_eq!(token_requests(), n);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// A real OIDC upstream: tenant "up" of the same ma-idp.

async fn oidc_upstream_tenant_links_and_signs_in(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let home = app.svc.tenant("home").await.unwrap();
    let up = app
        .svc
        .create_tenant("up", Some("Upstream house"), "test")
        .await
        .unwrap();
    app.add_member(&up, "carol").await;
    let fed_redirect = app.svc.federation_redirect_uri(&home, "up");
    let client = app
        .svc
        .create_client(
            &up,
            ClientSpec {
                name: "Home sign-in".into(),
                client_id: Some("home-federation".into()),
                redirect_uris: vec![fed_redirect.clone()],
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let port = app.base.rsplit(':').next().unwrap();
    // The upstream's pages on another origin (its own cookies), as a real upstream has.
    let up_origin = format!("http://127.0.0.1:{port}");
    app.svc
        .add_provider(
            &home,
            NewProvider {
                slug: "up".into(),
                kind: "oidc".into(),
                display_name: "Upstream house".into(),
                client_id: "home-federation".into(),
                client_secret: client.secret,
                scopes: Some("openid profile".into()),
                region: None,
                issuer: Some(app.url("/t/up")),
                authorization_endpoint: Some(format!("{up_origin}/t/up/authorize")),
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
    let alice = user_id(&app, &home.id, "alice").await;

    // Alice links her account at "up" from her account page; she signs in there as carol.
    let a = app.browser();
    password_sign_in(&a, "home", "alice").await;
    let up_url = press_link(&a, "home", "up", "Upstream house").await;
    assert!(
        up_url.starts_with(&format!("{up_origin}/t/up/authorize?")),
        "{up_url}"
    );
    let q = query_of(&up_url);
    assert_eq!(q["client_id"], "home-federation");
    assert_eq!(q["redirect_uri"], fed_redirect);
    assert_eq!(q["response_type"], "code");
    assert!(q["scope"].split(' ').any(|s| s == "openid"), "{up_url}");
    assert!(!q["nonce"].is_empty() && !q["state"].is_empty());
    assert_eq!(q["code_challenge_method"], "S256");
    let at_up = Browser {
        http: a.http.clone(),
        base: up_origin.clone(),
    };
    let back = at_up
        .sign_in_and_consent_url(&up_url, "carol", PASSWORD)
        .await;
    assert!(back.starts_with(&fed_redirect), "{back}");
    assert_eq!(query_of(&back)["iss"], app.url("/t/up"));
    let r = a.get(&back).await;
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    assert_eq!(location(&r), "/t/home/account?done=linked");
    let html = unescape(
        &a.get("/t/home/account?done=linked")
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(html.contains("Account linked."), "{html}");
    assert!(html.contains("<strong>Upstream house</strong>"), "{html}");
    let linked = app.svc.linked_identities(&home, &alice).await.unwrap();
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].1, "Upstream house");
    // The subject is carol's at "up", as "up" tells any client.
    let (s, tok, _) = {
        let b = app.browser();
        let v = new_verifier();
        let loc = b
            .sign_in_and_consent(
                "/t/up/authorize",
                &[
                    ("client_id", "home-federation".into()),
                    ("response_type", "code".into()),
                    ("redirect_uri", fed_redirect.clone()),
                    ("state", "x".into()),
                    ("scope", "openid".into()),
                    ("code_challenge", pkce_challenge(&v)),
                    ("code_challenge_method", "S256".into()),
                ],
                "carol",
                PASSWORD,
            )
            .await;
        let (code, _) = parse_code(&loc, &fed_redirect, "x");
        let secret = app
            .svc
            .provider_config(&home, "up")
            .await
            .unwrap()
            .unwrap()
            .client_secret
            .unwrap();
        app.token(
            "/t/up/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &fed_redirect),
                ("code_verifier", &v),
            ],
            Some(("home-federation", secret.expose())),
        )
        .await
    };
    assert_eq!(s, 200, "{tok}");
    let up_claims = id_token_claims(
        &app,
        "up",
        "home-federation",
        tok["id_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(linked[0].0.subject, up_claims["sub"].as_str().unwrap());
    assert!(html.contains(linked[0].0.subject.as_str()), "{html}");
    assert!(
        events(&app, &home.id)
            .await
            .iter()
            .any(|e| e.kind == "identity_linked"
                && e.outcome == "ok"
                && e.user_id.as_deref() == Some(alice.as_str())
                && e.detail["provider"] == "up"),
        "the link is audited"
    );

    // A new browser: an authorization at home, "Sign in with Upstream house", carol signs in
    // at "up", back at home signed in as alice: consent, code, tokens with amr "fed".
    let b = app.browser();
    let verifier = new_verifier();
    let html = open_authorize(
        &b,
        "/t/home/authorize",
        &authorize_query(&setup, "o1", Some(&verifier)),
    )
    .await;
    let up_url = press_sign_in_with(&b, &html, "home", "Upstream house").await;
    assert!(
        up_url.starts_with(&format!("{up_origin}/t/up/authorize?")),
        "{up_url}"
    );
    let at_up = Browser {
        http: b.http.clone(),
        base: up_origin.clone(),
    };
    let back = at_up
        .sign_in_and_consent_url(&up_url, "carol", PASSWORD)
        .await;
    let r = b.get(&back).await;
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let next = location(&r);
    assert!(next.starts_with("/t/home/authorize?rid="), "{next}");
    let (s, html) = page(b.get(&next).await).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("alice"), "{html}");
    let loc = consent(&b, "/t/home/authorize", &html).await;
    let (code, _) = parse_code(&loc, &alexa_redirects()[0], "o1");
    let (s, tok, _) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &alexa_redirects()[0]),
                ("code_verifier", &verifier),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    assert!(tok["access_token"].is_string() && tok["refresh_token"].is_string());
    let claims = id_token_claims(
        &app,
        "home",
        &setup.client_id,
        tok["id_token"].as_str().unwrap(),
    )
    .await;
    let amr = claims["amr"].as_array().unwrap();
    assert!(amr.contains(&json!("fed")), "{claims}");
    assert!(
        amr.contains(&json!("pwd")),
        "the upstream's amr is kept: {claims}"
    );
    let access = app
        .verify_access_token("home", tok["access_token"].as_str().unwrap())
        .await;
    assert_eq!(access["sub"], claims["sub"]);
    assert!(
        events(&app, &home.id)
            .await
            .iter()
            .any(|e| e.kind == "sign_in"
                && e.outcome == "ok"
                && e.user_id.as_deref() == Some(alice.as_str())
                && e.detail["provider"] == "up"),
        "the federated sign-in is audited"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// ID-token refusals with a fake OIDC provider.

/// Sign in with the fake provider from the plain sign-in page, in a new browser.
async fn fake_round(app: &TestApp, fake: &FakeOidc, mode: IdTokenMode) -> reqwest::Response {
    fake.state.lock().unwrap().mode = mode;
    let b = app.browser();
    let login = b.get("/t/home/login").await.text().await.unwrap();
    let up = press_sign_in_with(&b, &login, "home", "Fake ID").await;
    assert!(
        up.starts_with(&format!("{}/authorize?", fake.server.base)),
        "{up}"
    );
    let nonce = query_of(&up)["nonce"].clone();
    let r = b.get(&up).await;
    assert_eq!(r.status(), 302);
    let back = location(&r);
    assert_eq!(
        fake.state.lock().unwrap().nonces_seen.last(),
        Some(&nonce),
        "the provider saw the nonce"
    );
    b.get(&back).await
}

async fn oidc_id_token_refusals(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let fake = FakeOidc::start("ma-idp-home", "fake-secret");
    app.svc
        .add_provider(
            &t,
            fake_provider("fake", "Fake ID", fake.server.base.clone()),
            "test",
        )
        .await
        .unwrap();

    // The control: a correct ID token passes, and the unlinked identity is "not linked".
    assert_refusal(
        &app,
        &t.id,
        "fake",
        fake_round(&app, &fake, IdTokenMode::Good).await,
        403,
        "This Fake ID account is not linked yet",
        "not linked",
        0,
    )
    .await;

    // The ID token carries another nonce.
    let html = assert_refusal(
        &app,
        &t.id,
        "fake",
        fake_round(&app, &fake, IdTokenMode::WrongNonce).await,
        400,
        "This sign-in could not be verified",
        "nonce_mismatch",
        0,
    )
    .await;
    assert!(html.contains("was not issued for this sign-in"), "{html}");

    // The ID token is signed by a key the provider does not publish.
    let html = assert_refusal(
        &app,
        &t.id,
        "fake",
        fake_round(&app, &fake, IdTokenMode::UnknownKey).await,
        400,
        "This sign-in could not be verified",
        "bad_id_token",
        0,
    )
    .await;
    assert!(html.contains("did not pass verification"), "{html}");

    // Another issuer, another audience, or expired: refused alike.
    for (before, mode) in [
        IdTokenMode::WrongIssuer,
        IdTokenMode::WrongAudience,
        IdTokenMode::Expired,
    ]
    .into_iter()
    .enumerate()
    {
        let html = assert_refusal(
            &app,
            &t.id,
            "fake",
            fake_round(&app, &fake, mode).await,
            400,
            "This sign-in could not be verified",
            "bad_id_token",
            before + 1,
        )
        .await;
        assert!(
            html.contains("did not pass verification"),
            "{mode:?}: {html}"
        );
    }

    // An OIDC provider whose discovery cannot be reached: the start itself shows the page.
    app.svc
        .add_provider(
            &t,
            NewProvider {
                client_secret: None,
                ..fake_provider(
                    "gone",
                    "Gone ID",
                    format!("http://127.0.0.1:{}", closed_port()),
                )
            },
            "test",
        )
        .await
        .unwrap();
    let g = app.browser();
    let login = g.get("/t/home/login").await.text().await.unwrap();
    let html = assert_refusal(
        &app,
        &t.id,
        "gone",
        press_sign_in_with_resp(&g, &login, "home", "Gone ID").await,
        502,
        "Gone ID cannot be reached",
        "upstream_unreachable",
        0,
    )
    .await;
    assert_eq!(page_link(&html), "/t/home/login");
    assert_eq!(
        fake.state.lock().unwrap().tokens_issued,
        6,
        "each round reached the token endpoint"
    );
    assert_eq!(failed_sign_ins(&app, &t.id, "fake", "not linked").await, 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// `prompt=login` and `max_age` through an upstream that would send the browser straight back.

/// On a sign-in page, "Sign in with Fake ID" and the fake's immediate answer: what the
/// fake was asked, and the callback's response.
async fn through_fake(
    b: &Browser,
    fake: &FakeOidc,
    login_html: &str,
) -> (HashMap<String, String>, reqwest::Response) {
    let up = press_sign_in_with(b, login_html, "home", "Fake ID").await;
    assert!(
        up.starts_with(&format!("{}/authorize?", fake.server.base)),
        "{up}"
    );
    let r = b.get(&up).await;
    assert_eq!(r.status(), 302, "the fake sends the browser straight back");
    let back = location(&r);
    let asked = fake.state.lock().unwrap().asked.last().cloned().unwrap();
    let q = query_of(&up);
    assert_eq!(
        asked,
        (q.get("prompt").cloned(), q.get("max_age").cloned()),
        "the fake saw what the URL says"
    );
    (q, b.get(&back).await)
}

/// A callback that signed in: follow it back to the authorization (consent if asked), and
/// exchange the code; the ID token's claims.
async fn code_claims(
    app: &TestApp,
    setup: &Setup,
    b: &Browser,
    callback: reqwest::Response,
    state: &str,
    verifier: &str,
) -> Value {
    assert_eq!(callback.status(), 302, "{:?}", callback.text().await);
    let next = location(&callback);
    assert!(next.starts_with("/t/home/authorize?rid="), "{next}");
    let r = b.get(&next).await;
    let loc = if r.status() == 302 {
        location(&r)
    } else {
        let (s, html) = page(r).await;
        assert_eq!(s, 200, "{html}");
        consent(b, "/t/home/authorize", &html).await
    };
    let (code, _) = parse_code(&loc, &alexa_redirects()[0], state);
    let (s, tok, _) = app
        .token(
            "/t/home/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &alexa_redirects()[0]),
                ("code_verifier", verifier),
            ],
            Some((&setup.client_id, &setup.client_secret)),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    id_token_claims(
        app,
        "home",
        &setup.client_id,
        tok["id_token"].as_str().unwrap(),
    )
    .await
}

/// A member signed in through an OIDC upstream, still signed in there, and a client asking for
/// a fresh sign-in (`prompt=login`, `max_age`): the upstream is asked for one (`prompt=login`,
/// `max_age`), and its ID token's `auth_time` must say it happened; the sign-in's time is the
/// upstream's. Login with Amazon cannot be asked: no button, and a start by hand is refused.
async fn prompt_login_and_max_age_need_a_fresh_upstream_sign_in(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let fake = FakeOidc::start("ma-idp-home", "fake-secret");
    app.svc
        .add_provider(
            &t,
            fake_provider("fake", "Fake ID", fake.server.base.clone()),
            "test",
        )
        .await
        .unwrap();
    let amazon = AmazonStandIn::start(vec![app.svc.federation_redirect_uri(&t, "amazon")]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    let alice = user_id(&app, &t.id, "alice").await;

    // Alice links the fake identity.
    let a = app.browser();
    password_sign_in(&a, "home", "alice").await;
    let up = press_link(&a, "home", "fake", "Fake ID").await;
    let r = a.get(&up).await;
    assert_eq!(r.status(), 302);
    let r = a.get(&location(&r)).await;
    assert_eq!(location(&r), "/t/home/account?done=linked");
    assert_eq!(fake.state.lock().unwrap().asked, [(None, None)]);

    // (c) A plain authorization: signed in through the fake as before, nothing more asked,
    // and the sign-in's time is now (the fake says no auth_time).
    let b = app.browser();
    let v0 = new_verifier();
    let html = open_authorize(
        &b,
        "/t/home/authorize",
        &authorize_query(&setup, "p0", Some(&v0)),
    )
    .await;
    assert!(
        unescape(&html).contains("Sign in with Amazon</button>"),
        "{html}"
    );
    let before = app.svc.now();
    let (q, r) = through_fake(&b, &fake, &html).await;
    assert!(
        !q.contains_key("prompt") && !q.contains_key("max_age"),
        "{q:?}"
    );
    let claims = code_claims(&app, &setup, &b, r, "p0", &v0).await;
    let t0 = claims["auth_time"].as_i64().unwrap();
    assert!(t0 >= before && t0 <= app.svc.now(), "{claims}");

    // Later, a client asks for a fresh sign-in (prompt=login): the sign-in page, without
    // Amazon's button (it cannot be asked for a fresh sign-in).
    app.clock.advance(600);
    let before = app.svc.now();
    let v1 = new_verifier();
    let mut query = authorize_query(&setup, "p1", Some(&v1));
    query.push(("prompt", "login".into()));
    let html = open_authorize(&b, "/t/home/authorize", &query).await;
    assert!(!unescape(&html).contains("Sign in with Amazon"), "{html}");
    let rid = hidden(&html, "rid");

    // (d) Amazon's start posted by hand anyway: the sign-in page says why; Amazon never sees it.
    let r = b
        .post(
            "/t/home/federation/amazon/start",
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("rid", &rid),
                ("back", "authorize"),
                ("purpose", "sign_in"),
            ],
        )
        .await;
    assert!(r.headers().get("location").is_none());
    let (s, refused) = page(r).await;
    assert_eq!(s, 400, "{refused}");
    assert_eq!(title(&refused), "Sign in", "{refused}");
    assert!(
        unescape(&refused).contains("which Amazon cannot be asked to do"),
        "{refused}"
    );
    assert_eq!(hidden(&refused, "rid"), rid);
    assert_eq!(
        failed_sign_ins(&app, &t.id, "amazon", "reauthentication_unsupported").await,
        1
    );
    assert_eq!(amazon.set(|s| s.tokens_issued), 0);

    // (b) The fake answers at once with an old auth_time, or none: refused on the sign-in
    // page, no sign-in and no code.
    let mut html = html;
    for (n, auth_time) in [Some(before - 60), None].into_iter().enumerate() {
        fake.state.lock().unwrap().auth_time = auth_time;
        let (q, r) = through_fake(&b, &fake, &html).await;
        assert_eq!(q.get("prompt").map(String::as_str), Some("login"), "{q:?}");
        let max_age: i64 = q["max_age"].parse().unwrap();
        assert!((0..=5).contains(&max_age), "{q:?}");
        assert!(r.headers().get("location").is_none(), "no code");
        let (s, refused) = page(r).await;
        assert_eq!(s, 400, "{refused}");
        assert_eq!(title(&refused), "Sign in", "{refused}");
        assert!(
            unescape(&refused).contains("Fake ID did not confirm a fresh sign-in"),
            "{refused}"
        );
        assert_eq!(hidden(&refused, "rid"), rid);
        assert_eq!(
            failed_sign_ins(&app, &t.id, "fake", "stale_authentication").await,
            n + 1
        );
        // The session's sign-in is the old one: the request still asks for a sign-in.
        let (s, again) = page(b.get(&format!("/t/home/authorize?rid={rid}")).await).await;
        assert_eq!(s, 200, "{again}");
        assert_eq!(title(&again), "Sign in", "{again}");
        html = refused;
    }

    // (a) The fake authenticates afresh (auth_time after the request): a code, and the ID
    // token's auth_time is the fake's, not the callback's.
    app.clock.advance(10);
    let fresh = app.svc.now() - 5;
    fake.state.lock().unwrap().auth_time = Some(fresh);
    let (q, r) = through_fake(&b, &fake, &html).await;
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"), "{q:?}");
    let max_age: i64 = q["max_age"].parse().unwrap();
    assert!((10..=15).contains(&max_age), "{q:?}");
    let claims = code_claims(&app, &setup, &b, r, "p1", &v1).await;
    assert_eq!(claims["auth_time"], json!(fresh), "{claims}");
    assert!(events(&app, &t.id).await.iter().any(|e| e.kind == "sign_in"
        && e.outcome == "ok"
        && e.user_id.as_deref() == Some(alice.as_str())
        && e.detail["provider"] == "fake"),);

    // max_age: a sign-in older than asked needs a fresh one, which the fake is asked for.
    app.clock.advance(120);
    let v2 = new_verifier();
    let mut query = authorize_query(&setup, "p2", Some(&v2));
    query.push(("max_age", "60".into()));
    let html = open_authorize(&b, "/t/home/authorize", &query).await;
    assert!(!unescape(&html).contains("Sign in with Amazon"), "{html}");
    let fresh = app.svc.now() - 30;
    fake.state.lock().unwrap().auth_time = Some(fresh);
    let (q, r) = through_fake(&b, &fake, &html).await;
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"), "{q:?}");
    let max_age: i64 = q["max_age"].parse().unwrap();
    assert!((60..=65).contains(&max_age), "{q:?}");
    let claims = code_claims(&app, &setup, &b, r, "p2", &v2).await;
    assert_eq!(claims["auth_time"], json!(fresh), "{claims}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// The store's side of a member created at a first upstream sign-in, without timing: the
// member and its link are written together or not at all.
async fn one_member_per_identity_and_none_after_a_provider_change(backend: Backend) {
    use ma_idp::store::NewMember;
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let p = app
        .svc
        .add_provider(
            &t,
            NewProvider {
                slug: "work".into(),
                kind: "oidc".into(),
                display_name: "Work".into(),
                client_id: "ma-idp".into(),
                client_secret: None,
                scopes: None,
                region: None,
                issuer: Some("https://login.example.com".into()),
                authorization_endpoint: None,
                token_endpoint: None,
                userinfo_endpoint: None,
                jwks_uri: None,
                auto_create: true,
                link_by_email: false,
            },
            "test",
        )
        .await
        .unwrap();
    let now = app.svc.now();
    let member = |name: &str| entity::user::Model {
        id: ma_idp::store::new_id_pub(),
        tenant_id: t.id.clone(),
        username: name.into(),
        display_name: None,
        email: None,
        role: "member".into(),
        disabled: false,
        created_at: now,
    };
    let link = |user_id: &str, subject: &str| entity::upstream_identity::Model {
        id: ma_idp::store::new_id_pub(),
        tenant_id: t.id.clone(),
        provider_id: p.id.clone(),
        subject: subject.into(),
        user_id: user_id.into(),
        email: None,
        name: None,
        created_at: now,
        last_used_at: Some(now),
    };
    let store = &app.svc.store;
    let (a, b, c) = (member("pat"), member("pat2"), member("pat"));
    let first = store
        .insert_user_with_identity(a.clone(), link(&a.id, "sub-1"), &p, vec![], now)
        .await
        .unwrap();
    assert_eq!(first, NewMember::Created);
    // The same identity again, for another new member: nothing written.
    let again = store
        .insert_user_with_identity(b.clone(), link(&b.id, "sub-1"), &p, vec![], now)
        .await
        .unwrap();
    assert_eq!(again, NewMember::IdentityTaken);
    assert!(store.user_by_id(&t.id, &b.id).await.unwrap().is_none());
    // A taken username: nothing written, not even the link.
    let taken = store
        .insert_user_with_identity(c.clone(), link(&c.id, "sub-2"), &p, vec![], now)
        .await
        .unwrap();
    assert_eq!(taken, NewMember::UsernameTaken);
    assert!(
        store
            .identity_by_subject(&t.id, &p.id, "sub-2")
            .await
            .unwrap()
            .is_none()
    );
    // The client ID changes (its links go); a sign-in that began before, holding the old
    // settings, can no longer link or create anyone.
    let changed = app
        .svc
        .update_provider(
            &t,
            "work",
            ma_idp::federation::ProviderChange {
                client_id: Some("ma-idp-2".into()),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.links_removed, 1);
    let d = member("quinn");
    let changed_meanwhile = |r: Result<String, String>| match r {
        Err(e) => assert!(e.contains("client ID or issuer changed meanwhile"), "{e}"),
        Ok(v) => panic!("written with stale settings: {v}"),
    };
    changed_meanwhile(
        store
            .insert_user_with_identity(d.clone(), link(&d.id, "sub-3"), &p, vec![], now)
            .await
            .map(|v| format!("{v:?}"))
            .map_err(|e| format!("{e:?}")),
    );
    changed_meanwhile(
        store
            .insert_identity(link(&a.id, "sub-1"), &p)
            .await
            .map(|v| format!("{v:?}"))
            .map_err(|e| format!("{e:?}")),
    );
    assert!(store.user_by_id(&t.id, &d.id).await.unwrap().is_none());
    assert!(
        store
            .insert_identity(link(&a.id, "sub-1"), &changed.provider)
            .await
            .unwrap(),
        "with the current settings it links"
    );
    // A change decided on settings read before another change is not written (its unlink
    // decision was made on the old client ID).
    let renamed = entity::upstream_provider::Model {
        display_name: "Work (stale)".into(),
        ..p.clone()
    };
    let ev = ma_idp::audit::AuditEvent::new(
        "provider_changed",
        "ok",
        Some(&t.id),
        &ma_idp::audit::RequestInfo::default(),
    );
    assert_eq!(
        store
            .update_provider(&p, &renamed, false, ev, now)
            .await
            .unwrap(),
        None
    );
    let current = store
        .provider_by_slug(&t.id, "work")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.client_id, "ma-idp-2");
    assert_eq!(current.display_name, "Work");
    app.stop().await;
}

// Two members link the same Amazon account at the same moment: one wins, the other gets the
// "belongs to another member" page, never an error.

async fn racing_links_of_one_identity_one_wins(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let amazon = AmazonStandIn::start(vec![app.svc.federation_redirect_uri(&t, "amazon")]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    app.add_member(&t, "bob").await;
    let a = app.browser();
    password_sign_in(&a, "home", "alice").await;
    let b = app.browser();
    password_sign_in(&b, "home", "bob").await;
    for round in 0..10 {
        let subject = format!("amzn1.account.AFRACE{round:020}");
        amazon.set(|s| s.user.user_id = subject.clone());
        let ca = at_amazon(&a, &press_link(&a, "home", "amazon", "Amazon").await).await;
        let cb = at_amazon(&b, &press_link(&b, "home", "amazon", "Amazon").await).await;
        let (ra, rb) = tokio::join!(a.get(&ca), b.get(&cb));
        let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [302, 409],
            "round {round}: one links, one is told no"
        );
        let owners: Vec<_> = events(&app, &t.id)
            .await
            .into_iter()
            .filter(|e| e.kind == "identity_linked" && e.detail["subject"] == subject.as_str())
            .map(|e| e.outcome)
            .collect();
        assert_eq!(owners.len(), 2, "both attempts audited: {owners:?}");
        assert!(owners.contains(&"ok".to_string()) && owners.contains(&"failed".to_string()));
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// The command line.

struct Cli {
    dir: tempfile::TempDir,
    db: Option<String>,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = Command::new(binary());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MA_IDP_DATA_DIR", self.dir.path())
            .env("RUST_LOG", "warn");
        if let Some(db) = &self.db {
            c.env("MA_IDP_DATABASE_URL", db);
        }
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

async fn cli_adds_and_lists_a_provider(backend: Backend) {
    let Some((db, _drop_database)) = database_for(backend).await else {
        return;
    };
    let cli = Cli {
        dir: tempfile::tempdir().unwrap(),
        db: db.clone(),
    };
    let (ok, _, err) = cli.run(&["migrate"], None);
    assert!(ok, "{err}");
    cli.json(&["tenant", "create", "home", "--json"], None);
    let secret = "lwa-secret-5e1c0a";
    let added = cli.json(
        &[
            "provider",
            "add",
            "--tenant",
            "home",
            "--kind",
            "amazon",
            "--client-id",
            "X",
            "--client-secret-stdin",
            "--json",
        ],
        Some(&format!("{secret}\n")),
    );
    assert_eq!(added["slug"], "amazon");
    assert_eq!(added["kind"], "amazon");
    assert_eq!(added["name"], "Amazon");
    let redirect = added["redirect_uri"].as_str().unwrap().to_string();
    assert!(
        redirect.starts_with("http") && redirect.ends_with("/t/home/federation/amazon/callback"),
        "{redirect}"
    );
    let listed = cli.json(&["provider", "list", "--tenant", "home", "--json"], None);
    let ps = listed["providers"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{listed}");
    assert_eq!(ps[0]["slug"], "amazon");
    assert_eq!(ps[0]["kind"], "amazon");
    assert_eq!(ps[0]["client_id"], "X");
    assert_eq!(ps[0]["redirect_uri"], redirect.as_str());
    assert!(
        !listed.to_string().contains(secret),
        "the list shows no secret"
    );
    let (ok, _, err) = cli.run(
        &[
            "provider",
            "add",
            "--tenant",
            "home",
            "--kind",
            "amazon",
            "--client-id",
            "Y",
        ],
        None,
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cli.run(
        &[
            "provider",
            "add",
            "--tenant",
            "home",
            "--kind",
            "saml",
            "--slug",
            "s",
            "--client-id",
            "Y",
        ],
        None,
    );
    assert!(!ok && err.contains("amazon or oidc"), "{err}");

    // `provider set` changes only what it is given; a new secret comes on standard input.
    let rotated = "lwa-secret-rotated-77a9";
    let changed = cli.json(
        &[
            "provider",
            "set",
            "--tenant",
            "home",
            "amazon",
            "--name",
            "Amazon (family)",
            "--client-secret-stdin",
            "--json",
        ],
        Some(&format!("{rotated}\n")),
    );
    assert_eq!(changed["name"], "Amazon (family)");
    assert_eq!(changed["client_id"], "X", "unchanged");
    assert_eq!(changed["enabled"], true);
    assert_eq!(changed["has_client_secret"], true);
    assert!(!changed.to_string().contains(rotated));
    let (ok, _, err) = cli.run(
        &[
            "provider", "set", "--tenant", "home", "amazon", "--region", "XX",
        ],
        None,
    );
    assert!(!ok && err.contains("NA, EU or FE"), "{err}");
    let (ok, _, err) = cli.run(
        &[
            "provider",
            "set",
            "--tenant",
            "home",
            "nope",
            "--enabled",
            "false",
        ],
        None,
    );
    assert!(!ok && err.contains("no provider"), "{err}");
    cli.json(
        &[
            "provider",
            "add",
            "--tenant",
            "home",
            "--kind",
            "oidc",
            "--slug",
            "work",
            "--client-id",
            "w",
            "--issuer",
            "https://login.example.com",
            "--json",
        ],
        None,
    );
    let off = cli.json(
        &[
            "provider",
            "set",
            "--tenant",
            "home",
            "work",
            "--enabled",
            "false",
            "--json",
        ],
        None,
    );
    assert_eq!(off["enabled"], false);
    assert_eq!(off["has_client_secret"], false);
    assert_eq!(off["links_removed"], 0);
    let (ok, _, err) = cli.run(
        &[
            "provider", "set", "--tenant", "home", "work", "--issuer", "",
        ],
        None,
    );
    assert!(
        !ok && err.contains("issuer"),
        "an OIDC provider keeps an issuer: {err}"
    );
    let removed = cli.json(
        &["provider", "remove", "--tenant", "home", "work", "--json"],
        None,
    );
    assert_eq!(removed["links_removed"], 0);
    let (ok, _, err) = cli.run(&["provider", "remove", "--tenant", "home", "work"], None);
    assert!(!ok && err.contains("no provider"), "{err}");
    let listed = cli.json(&["provider", "list", "--tenant", "home", "--json"], None);
    let ps = listed["providers"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{listed}");
    assert_eq!(ps[0]["name"], "Amazon (family)");
    let secret = rotated;

    // At rest the secret is sealed; opened with the master key it is the one given.
    let settings = ma_idp::Settings {
        data_dir: cli.dir.path().to_path_buf(),
        database_url: db,
        ..ma_idp::Settings::default()
    };
    let conn = sea_orm::Database::connect(settings.database_url())
        .await
        .unwrap();
    use sea_orm::EntityTrait;
    let rows = entity::upstream_provider::Entity::find()
        .all(&conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let sealed = rows[0].client_secret_enc.clone().expect("a sealed secret");
    assert!(
        !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the stored secret is not the plain text"
    );
    let _ = conn.close().await;
    let svc = ma_idp::Services::init(settings, ma_idp::ManualClock::new())
        .await
        .unwrap();
    let t = svc.tenant("home").await.unwrap();
    let cfg = svc.provider_config(&t, "amazon").await.unwrap().unwrap();
    assert_eq!(cfg.client_secret.unwrap().expose(), secret);
    assert_eq!(cfg.redirect_uri, redirect);
}

/// A browser signed in to the admin UI as a fresh operator of `slug`.
async fn operator(app: &TestApp, slug: &str) -> Browser {
    let t = app.svc.tenant(slug).await.unwrap();
    app.svc
        .create_user_with(
            &t,
            ma_idp::services::NewUserSpec {
                username: "olivia".into(),
                display_name: None,
                email: None,
                role: "operator".into(),
            },
            Some(&Secret::new(PASSWORD)),
            "test",
        )
        .await
        .unwrap();
    let b = app.browser();
    let html = b.get("/admin/login").await.text().await.unwrap();
    let r = b
        .post(
            "/admin/login",
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("tenant", slug),
                ("username", "olivia"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "operator signs in");
    b
}

/// The sign-in page of a fresh authorization, as a new browser sees it.
async fn fresh_login_page(app: &TestApp, setup: &Setup, state: &str) -> (Browser, String) {
    let b = app.browser();
    let html = open_authorize(
        &b,
        "/t/home/authorize",
        &authorize_query(setup, state, None),
    )
    .await;
    (b, html)
}

/// Admin: a provider's page changes its settings (checked as when it is added, audited
/// without the secret), disables it, and removes it with the identities linked through it.
async fn admin_changes_disables_and_removes_a_provider(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let amazon = AmazonStandIn::start(vec![app.svc.federation_redirect_uri(&t, "amazon")]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    let alice = user_id(&app, &t.id, "alice").await;
    let admin = operator(&app, "home").await;
    let user_page = format!("/admin/t/home/users/{alice}");
    let (_, html) = page(admin.get(&user_page).await).await;
    let r = admin
        .post(
            &format!("{user_page}/link"),
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("provider", "amazon"),
                ("subject", AMAZON_USER),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);

    // The list links to the provider's page, which shows its settings but never the secret.
    let (_, list) = page(admin.get("/admin/t/home/providers").await).await;
    assert!(
        list.contains("href=\"/admin/t/home/providers/amazon\""),
        "{list}"
    );
    let edit = "/admin/t/home/providers/amazon";
    let (s, html) = page(admin.get(edit).await).await;
    assert_eq!(s, 200);
    assert!(html.contains(AMAZON_CLIENT_ID), "{html}");
    assert!(html.contains("one is stored"), "{html}");
    assert!(!html.contains(AMAZON_SECRET), "the secret is never shown");
    let csrf = hidden(&html, "csrf");
    let form = |name: &'static str, secret: &'static str, region: &'static str, on: bool| {
        let mut f = vec![
            ("csrf", csrf.clone()),
            ("display_name", name.to_string()),
            ("client_id", AMAZON_CLIENT_ID.to_string()),
            ("client_secret", secret.to_string()),
            ("region", region.to_string()),
            ("scopes", "profile".to_string()),
        ];
        if on {
            f.push(("enabled", "on".to_string()));
        }
        f
    };
    let post = |f: Vec<(&'static str, String)>| {
        let admin = &admin;
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = admin.post(edit, &f).await;
            assert_eq!(r.status(), 303);
            assert_eq!(location(&r), edit);
            unescape(&page(admin.get(edit).await).await.1)
        }
    };

    // A bad value is refused with a message, and nothing changes.
    let html = post(form("Amazon (family)", "", "XX", true)).await;
    assert!(html.contains("An Amazon region is NA, EU or FE."), "{html}");
    // The form shows what was sent (not the stored name), once.
    assert!(
        html.contains(r#"name="display_name" value="Amazon (family)""#),
        "{html}"
    );
    let html = unescape(&page(admin.get(edit).await).await.1);
    assert!(
        html.contains(r#"name="display_name" value="Amazon""#),
        "{html}"
    );
    let stored = app
        .svc
        .store
        .provider_by_slug(&t.id, "amazon")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.display_name, "Amazon");
    assert_eq!(stored.region.as_deref(), Some("NA"));

    // A new name and a wrong secret: the button says the new name, and Amazon refuses the
    // secret the next sign-in presents.
    let html = post(form("Amazon (family)", "not-the-secret", "EU", true)).await;
    assert!(html.contains("Amazon (family) saved."), "{html}");
    let (b, login) = fresh_login_page(&app, &setup, "s1").await;
    let before = failed_sign_ins(&app, &t.id, "amazon", "upstream_error").await;
    let up = press_sign_in_with(&b, &login, "home", "Amazon (family)").await;
    assert!(up.contains("client_id="), "{up}");
    let (s, _) = page(through_amazon(&b, &up).await).await;
    assert_eq!(s, 400, "the upstream refused the client");
    assert_eq!(
        failed_sign_ins(&app, &t.id, "amazon", "upstream_error").await,
        before + 1
    );
    // The right secret again: Alice signs in with Amazon.
    post(form("Amazon (family)", AMAZON_SECRET, "EU", true)).await;
    let (b, login) = fresh_login_page(&app, &setup, "s2").await;
    let rid = hidden(&login, "rid");
    let up = press_sign_in_with(&b, &login, "home", "Amazon (family)").await;
    let r = through_amazon(&b, &up).await;
    assert_eq!(r.status(), 302, "signed in");
    assert_eq!(location(&r), format!("/t/home/authorize?rid={rid}"));
    // (The audit log lists the newest first.)
    let changes: Vec<Value> = events(&app, &t.id)
        .await
        .into_iter()
        .rev()
        .filter(|e| e.kind == "provider_changed")
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        changes.len(),
        2,
        "the refused change wrote nothing: {changes:?}"
    );
    assert_eq!(
        changes[0]["changed"],
        json!(["display_name", "client_secret", "region"])
    );
    assert_eq!(changes[1]["changed"], json!(["client_secret"]));
    let all = format!("{:?}", events(&app, &t.id).await);
    assert!(!all.contains("not-the-secret") && !all.contains(AMAZON_SECRET));

    // A subject is unique only per client (and issuer): a new client ID unlinks everyone
    // linked through this provider, in the change's transaction, and says so.
    let mut other = form("Amazon (family)", "", "EU", true);
    other[2].1 = "amzn1.application-oa2-client.another".to_string();
    let html = post(other).await;
    assert!(
        html.contains(
            "Amazon (family) saved. Its issuer or client ID changed, so 1 linked sign-in was \
             removed: those members sign in another way and link it again"
        ),
        "{html}"
    );
    assert!(
        app.svc
            .store
            .identities_of_user(&t.id, &alice)
            .await
            .unwrap()
            .is_empty(),
        "the link went with the old client ID"
    );
    let last = events(&app, &t.id)
        .await
        .into_iter()
        .find(|e| e.kind == "provider_changed")
        .unwrap();
    assert_eq!(
        last.detail,
        json!({"slug": "amazon", "changed": ["client_id"], "links_removed": 1})
    );
    // A page opened before that change (it carries the client ID it showed) is not saved over
    // it: refused, nothing written, and the page shows the client ID as it is now.
    let changes_before = events(&app, &t.id)
        .await
        .iter()
        .filter(|e| e.kind == "provider_changed")
        .count();
    let mut stale = form("Amazon (stale)", "", "EU", true);
    stale.push(("seen_client_id", AMAZON_CLIENT_ID.to_string()));
    let html = post(stale).await;
    assert!(
        html.contains("Someone changed this provider's client ID or issuer after you opened this page, so nothing was saved."),
        "{html}"
    );
    assert!(
        html.contains(r#"name="client_id" value="amzn1.application-oa2-client.another""#),
        "the current client ID, not the submitted one: {html}"
    );
    assert!(
        html.contains(r#"name="seen_client_id" value="amzn1.application-oa2-client.another""#),
        "{html}"
    );
    let stored = app
        .svc
        .store
        .provider_by_slug(&t.id, "amazon")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.client_id, "amzn1.application-oa2-client.another");
    assert_eq!(stored.display_name, "Amazon (family)");
    assert_eq!(
        events(&app, &t.id)
            .await
            .iter()
            .filter(|e| e.kind == "provider_changed")
            .count(),
        changes_before
    );
    // Back to the first client ID, from a page showing the current one: nothing is linked any
    // more, and nothing was re-linked.
    let mut back = form("Amazon (family)", "", "EU", true);
    back.push((
        "seen_client_id",
        "amzn1.application-oa2-client.another".to_string(),
    ));
    let html = post(back).await;
    assert!(html.contains("Amazon (family) saved."), "{html}");
    assert!(!html.contains("linked sign-in"), "{html}");
    let (b, login) = fresh_login_page(&app, &setup, "s2b").await;
    let up = press_sign_in_with(&b, &login, "home", "Amazon (family)").await;
    let before = failed_sign_ins(&app, &t.id, "amazon", "not linked").await;
    assert_refusal(
        &app,
        &t.id,
        "amazon",
        through_amazon(&b, &up).await,
        403,
        "This Amazon (family) account is not linked yet",
        "not linked",
        before,
    )
    .await;
    // The admin links Alice again (the rest of this test needs the link).
    let (_, html) = page(admin.get(&user_page).await).await;
    let r = admin
        .post(
            &format!("{user_page}/link"),
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("provider", "amazon"),
                ("subject", AMAZON_USER),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);

    // Disabled: no button, and its start is not found; the link stays.
    let html = post(form("Amazon (family)", "", "EU", false)).await;
    assert!(html.contains("disabled"), "{html}");
    let (b, login) = fresh_login_page(&app, &setup, "s3").await;
    assert!(!unescape(&login).contains("Sign in with Amazon"), "{login}");
    let r = b
        .post(
            "/t/home/federation/amazon/start",
            &[("csrf", &hidden(&login, "csrf")), ("purpose", "sign_in")],
        )
        .await;
    assert_eq!(r.status(), 404);
    let (_, user) = page(admin.get(&user_page).await).await;
    assert!(unescape(&user).contains(AMAZON_USER), "{user}");

    // Removed, after a confirmation: the link goes with it, and the page is gone.
    let remove = format!("{edit}/remove");
    let (s, confirm) = page(admin.post(&remove, &[("csrf", &csrf)]).await).await;
    assert_eq!(s, 200);
    assert!(confirm.contains("Please confirm"), "{confirm}");
    assert!(
        app.svc
            .store
            .provider_by_slug(&t.id, "amazon")
            .await
            .unwrap()
            .is_some(),
        "nothing removed before the confirmation"
    );
    let r = admin
        .post(&remove, &[("csrf", &csrf), ("confirm", "yes")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/t/home/providers");
    let (_, list) = page(admin.get("/admin/t/home/providers").await).await;
    let list = unescape(&list);
    assert!(list.contains("1 linked account unlinked"), "{list}");
    assert!(list.contains("No providers yet."), "{list}");
    assert_eq!(admin.get(edit).await.status(), 404);
    assert_eq!(
        admin
            .post(&remove, &[("csrf", &csrf), ("confirm", "yes")])
            .await
            .status(),
        404
    );
    let (_, user) = page(admin.get(&user_page).await).await;
    assert!(user.contains("No linked upstream identities."), "{user}");
    assert!(
        app.svc
            .store
            .identities_of_user(&t.id, &alice)
            .await
            .unwrap()
            .is_empty()
    );
    let removed: Vec<Value> = events(&app, &t.id)
        .await
        .into_iter()
        .filter(|e| e.kind == "provider_removed")
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        removed,
        vec![json!({"slug": "amazon", "kind": "amazon", "links_removed": 1})]
    );
}

/// Admin: link and unlink an upstream identity on a user's page, add a provider with the
/// form; a provider that creates members on first sign-in does so, once.
async fn admin_links_identities_and_providers_create_members(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let amazon = AmazonStandIn::start(vec![
        app.svc.federation_redirect_uri(&t, "amazon"),
        app.svc.federation_redirect_uri(&t, "amazon-open"),
    ]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    let alice = user_id(&app, &t.id, "alice").await;
    let admin = operator(&app, "home").await;

    // The admin links Alice's Amazon account by its user_id.
    let user_page = format!("/admin/t/home/users/{alice}");
    let (s, html) = page(admin.get(&user_page).await).await;
    assert_eq!(s, 200);
    assert!(html.contains("No linked upstream identities."), "{html}");
    let r = admin
        .post(
            &format!("{user_page}/link"),
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("provider", "amazon"),
                ("subject", AMAZON_USER),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, html) = page(admin.get(&user_page).await).await;
    let html = unescape(&html);
    assert!(html.contains(AMAZON_USER), "{html}");
    assert!(html.contains("Linked to alice."), "{html}");
    // Linking it again, to anyone, is refused with a message.
    let r = admin
        .post(
            &format!("{user_page}/link"),
            &[
                ("csrf", &hidden(&html, "csrf")),
                ("provider", "amazon"),
                ("subject", AMAZON_USER),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, again) = page(admin.get(&user_page).await).await;
    assert!(
        unescape(&again).contains("already linked to a member"),
        "{again}"
    );

    // Alice now signs in with Amazon at an authorization.
    let b = app.browser();
    let login = open_authorize(
        &b,
        "/t/home/authorize",
        &authorize_query(&setup, "s1", None),
    )
    .await;
    let rid = hidden(&login, "rid");
    let up = press_sign_in_with(&b, &login, "home", "Amazon").await;
    let r = through_amazon(&b, &up).await;
    assert_eq!(r.status(), 302, "signed in");
    assert_eq!(location(&r), format!("/t/home/authorize?rid={rid}"));
    assert!(account_page(&b, "home").await.contains("alice"));

    // The admin unlinks it (after a confirmation): Amazon no longer signs Alice in.
    let iid = regex::Regex::new(r#"/identities/([^/"]+)/unlink"#)
        .unwrap()
        .captures(&html)
        .expect("an unlink form")[1]
        .to_string();
    let unlink = format!("{user_page}/identities/{iid}/unlink");
    let r = admin
        .post(&unlink, &[("csrf", &hidden(&html, "csrf"))])
        .await;
    let (s, confirm) = page(r).await;
    assert_eq!(s, 200);
    assert!(confirm.contains("Please confirm"), "{confirm}");
    let r = admin
        .post(
            &unlink,
            &[("csrf", &hidden(&html, "csrf")), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, html) = page(admin.get(&user_page).await).await;
    assert!(html.contains("No linked upstream identities."), "{html}");
    let c = app.browser();
    let login = open_authorize(
        &c,
        "/t/home/authorize",
        &authorize_query(&setup, "s2", None),
    )
    .await;
    let up = press_sign_in_with(&c, &login, "home", "Amazon").await;
    let (s, _) = page(through_amazon(&c, &up).await).await;
    assert_eq!(s, 403, "not linked any more");
    let evs = events(&app, &t.id).await;
    assert!(
        evs.iter()
            .any(|e| e.kind == "identity_linked" && e.outcome == "ok"),
        "the admin link is audited"
    );
    assert!(
        evs.iter().any(|e| e.kind == "identity_unlinked"),
        "the admin unlink is audited"
    );

    // The provider form: an OIDC provider is listed with the redirect URI to register.
    let html = submit_provider_form(
        &admin,
        &[
            ("kind", "oidc"),
            ("slug", "work"),
            ("display_name", "Work"),
            ("client_id", "ma-idp"),
            ("client_secret", "s3cret-value"),
            ("issuer", "https://login.example.com"),
        ],
    )
    .await;
    assert!(html.contains("Work"), "{html}");
    assert!(
        html.contains(&app.url("/t/home/federation/work/callback")),
        "{html}"
    );
    assert!(!html.contains("s3cret-value"), "the secret is never shown");
    // An OIDC provider without an issuer is refused with a message.
    let html = submit_provider_form(
        &admin,
        &[("kind", "oidc"), ("slug", "noissuer"), ("client_id", "x")],
    )
    .await;
    assert!(
        html.contains("needs --issuer") || html.contains("issuer"),
        "{html}"
    );
    assert!(
        app.svc
            .store
            .provider_by_slug(&t.id, "noissuer")
            .await
            .unwrap()
            .is_none(),
        "nothing was added"
    );
    // The refused form comes back as it was sent (never the secret).
    assert!(
        html.contains(r#"name="slug" autocapitalize="none" spellcheck="false" value="noissuer""#),
        "{html}"
    );
    assert!(html.contains(r#"<option value="oidc" selected>"#), "{html}");

    // A provider that creates members: the first sign-in creates one, the next signs it in.
    let mut open = amazon.provider("amazon-open", None);
    open.display_name = "Amazon (open)".into();
    open.auto_create = true;
    app.svc.add_provider(&t, open, "test").await.unwrap();
    amazon.set(|s| {
        s.user = AmazonProfile {
            user_id: "amzn1.account.AFNEWMEMBER00000000000000000".into(),
            name: "Nora".into(),
            email: "nora@example.com".into(),
        }
    });
    // The first sign-in's two callbacks at once (two tabs, one Amazon account): one member,
    // never one without its link.
    let (d1, d2) = (app.browser(), app.browser());
    let mut backs = Vec::new();
    for d in [&d1, &d2] {
        let login = d.get("/t/home/login").await.text().await.unwrap();
        let up = press_sign_in_with(d, &login, "home", "Amazon (open)").await;
        backs.push(at_amazon(d, &up).await);
    }
    let (r1, r2) = tokio::join!(d1.get(&backs[0]), d2.get(&backs[1]));
    assert_eq!(r1.status(), 302, "signed in");
    assert_eq!(r2.status(), 302, "signed in");
    for d in [&d1, &d2] {
        let html = account_page(d, "home").await;
        assert!(
            html.contains("<strong class=\"account\">nora</strong>"),
            "{html}"
        );
    }
    let d = app.browser();
    let login = d.get("/t/home/login").await.text().await.unwrap();
    let up = press_sign_in_with(&d, &login, "home", "Amazon (open)").await;
    let r = through_amazon(&d, &up).await;
    assert_eq!(r.status(), 302, "the next sign-in: signed in");
    assert!(account_page(&d, "home").await.contains("nora"));
    let created: Vec<_> = events(&app, &t.id)
        .await
        .into_iter()
        .filter(|e| e.kind == "user_created")
        .collect();
    assert_eq!(
        created
            .iter()
            .filter(|e| e.actor.as_deref() == Some("federation:amazon-open"))
            .count(),
        1,
        "one member created, on the first sign-in only"
    );
    let nora = user_id(&app, &t.id, "nora").await;
    assert!(
        app.svc
            .store
            .user_by_username(&t.id, "nora2")
            .await
            .unwrap()
            .is_none(),
        "no second member"
    );
    assert_eq!(
        app.svc
            .store
            .identities_of_user(&t.id, &nora)
            .await
            .unwrap()
            .len(),
        1
    );

    // Nora's Amazon account is her only way in: unlinking it is refused with a message, and
    // it stays linked. (An admin may; Alice, with a password, may unlink hers.)
    let html = account_page(&d, "home").await;
    let unlink = regex::Regex::new(r#"action="(/t/home/account/identities/[^/"]+/unlink)""#)
        .unwrap()
        .captures(&html)
        .expect("an unlink form")[1]
        .to_string();
    let r = d.post(&unlink, &[("csrf", &hidden(&html, "csrf"))]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/t/home/account?refused=last-way");
    let (s, html) = page(d.get(&location(&r)).await).await;
    assert_eq!(s, 200);
    assert!(
        html.contains("That is your last way to sign in, so it stays."),
        "{html}"
    );
    assert_eq!(
        app.svc
            .store
            .identities_of_user(&t.id, &nora)
            .await
            .unwrap()
            .len(),
        1,
        "still linked"
    );
    assert!(
        !events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.kind == "identity_unlinked" && e.user_id.as_deref() == Some(nora.as_str())),
        "nothing unlinked"
    );
    let _ = alice;
}

/// Submit the admin UI's "add a provider" form of home (its CSRF token added): the
/// providers page it leads back to, unescaped.
async fn submit_provider_form(admin: &Browser, fields: &[(&str, &str)]) -> String {
    let (_, html) = page(admin.get("/admin/t/home/providers").await).await;
    let csrf = hidden(&html, "csrf");
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let r = admin.post("/admin/t/home/providers", &form).await;
    assert_eq!(r.status(), 303);
    let (_, html) = page(admin.get("/admin/t/home/providers").await).await;
    unescape(&html)
}

/// An OIDC provider as the fake upstream's client `ma-idp-home` (no links by e-mail, no
/// members created).
fn fake_provider(slug: &str, name: &str, issuer: String) -> NewProvider {
    NewProvider {
        slug: slug.into(),
        kind: "oidc".into(),
        display_name: name.into(),
        client_id: "ma-idp-home".into(),
        client_secret: Some(Secret::new("fake-secret")),
        scopes: None,
        region: None,
        issuer: Some(issuer),
        authorization_endpoint: None,
        token_endpoint: None,
        userinfo_endpoint: None,
        jwks_uri: None,
        auto_create: false,
        link_by_email: false,
    }
}

/// `link_by_email`: an unlinked identity is linked to the member with the same e-mail only
/// when the provider allows it and the upstream says the e-mail is verified, and never to an
/// operator.
async fn link_by_verified_email_only_when_allowed(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let fake = FakeOidc::start("ma-idp-home", "fake-secret");
    let provider = |slug: &str, name: &str, by_email: bool| NewProvider {
        link_by_email: by_email,
        ..fake_provider(slug, name, fake.server.base.clone())
    };
    app.svc
        .add_provider(&t, provider("fake", "Fake ID", true), "test")
        .await
        .unwrap();
    app.svc
        .create_user_with(
            &t,
            ma_idp::services::NewUserSpec {
                username: "frank".into(),
                display_name: None,
                email: Some("Fake@Example.com".into()),
                role: "operator".into(),
            },
            Some(&Secret::new(PASSWORD)),
            "test",
        )
        .await
        .unwrap();
    let frank = user_id(&app, &t.id, "frank").await;
    // E-mails match whatever their case, also beyond ASCII, on SQLite as on PostgreSQL.
    app.svc
        .create_user_with(
            &t,
            ma_idp::services::NewUserSpec {
                username: "zoe".into(),
                display_name: None,
                email: Some("ZOË.ÅSTRÖM@Example.com".into()),
                role: "member".into(),
            },
            None,
            "test",
        )
        .await
        .unwrap();
    let zoe = user_id(&app, &t.id, "zoe").await;
    for asked in ["zoë.åström@example.com", "ZOË.ÅSTRÖM@EXAMPLE.COM"] {
        let found = app.svc.store.users_by_email(&t.id, asked).await.unwrap();
        let ids: Vec<&str> = found.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, [zoe.as_str()], "{asked}");
    }
    assert!(
        app.svc
            .store
            .users_by_email(&t.id, "zoe.astrom@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    // Never to an operator's account, verified or not: a tenant admin chooses the provider.
    fake.state.lock().unwrap().email_verified = true;
    let (s, html) = page(fake_round(&app, &fake, IdTokenMode::Good).await).await;
    assert_eq!(s, 403, "{html}");
    assert!(
        app.svc
            .linked_identities(&t, &frank)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        app.svc
            .store
            .set_user_role(&t.id, &frank, "member")
            .await
            .unwrap()
    );

    // Unverified e-mail: not linked.
    fake.state.lock().unwrap().email_verified = false;
    let (s, html) = page(fake_round(&app, &fake, IdTokenMode::Good).await).await;
    assert_eq!(s, 403, "{html}");
    assert!(
        app.svc
            .linked_identities(&t, &frank)
            .await
            .unwrap()
            .is_empty()
    );

    // Verified e-mail and the provider allows it: linked to frank and signed in.
    fake.state.lock().unwrap().email_verified = true;
    let r = fake_round(&app, &fake, IdTokenMode::Good).await;
    assert_eq!(r.status(), 302, "signed in");
    let linked = app.svc.linked_identities(&t, &frank).await.unwrap();
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].0.subject, "fake-user-1");
    assert!(
        events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.kind == "identity_linked"
                && e.outcome == "ok"
                && e.user_id.as_deref() == Some(frank.as_str())
                && e.detail["via"] == "email")
    );
}

/// The tenant-wide policy (admin UI → Settings): with "create a member on the first sign-in"
/// on, an unlinked identity of a provider that does not allow it by itself creates a member;
/// with it off again, the next one sees the "not linked" page.
async fn tenant_policy_creates_members_for_every_provider(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let amazon = AmazonStandIn::start(vec![app.svc.federation_redirect_uri(&t, "amazon")]);
    app.svc
        .add_provider(&t, amazon.provider("amazon", None), "test")
        .await
        .unwrap();
    let admin = operator(&app, "home").await;
    let set_policy = |on: bool| {
        let admin = &admin;
        async move {
            let (_, html) = page(admin.get("/admin/t/home/settings").await).await;
            let mut form = vec![
                ("csrf", hidden(&html, "csrf")),
                ("name", "Test home".to_string()),
                ("access_token_ttl", "3600".to_string()),
                ("refresh_token_ttl", "7776000".to_string()),
                ("refresh_grace", "60".to_string()),
            ];
            if on {
                form.push(("fed_auto_create", "on".to_string()));
            }
            let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = admin.post("/admin/t/home/settings", &fields).await;
            assert_eq!(r.status(), 303);
            let (_, html) = page(admin.get("/admin/t/home/settings").await).await;
            assert_eq!(
                html.contains("name=\"fed_auto_create\" checked"),
                on,
                "the setting shows as saved"
            );
        }
    };
    let sign_in_as = |user_id: &'static str, email: &'static str| {
        let app = &app;
        let amazon = &amazon;
        async move {
            amazon.set(|s| {
                s.user = AmazonProfile {
                    user_id: user_id.into(),
                    name: "Someone".into(),
                    email: email.into(),
                }
            });
            let b = app.browser();
            let login = b.get("/t/home/login").await.text().await.unwrap();
            let up = press_sign_in_with(&b, &login, "home", "Amazon").await;
            let r = through_amazon(&b, &up).await;
            (r.status().as_u16(), b)
        }
    };

    // Off (the default): not linked.
    let (s, _) = sign_in_as(
        "amzn1.account.AFPOLICYONE000000000000000",
        "pat@example.com",
    )
    .await;
    assert_eq!(s, 403);
    // On: the same kind of sign-in creates a member and signs it in.
    set_policy(true).await;
    let (s, b) = sign_in_as(
        "amzn1.account.AFPOLICYTWO000000000000000",
        "quinn@example.com",
    )
    .await;
    assert_eq!(s, 302, "a member was created and signed in");
    assert!(account_page(&b, "home").await.contains("quinn"));
    assert!(
        events(&app, &t.id)
            .await
            .iter()
            .any(|e| e.kind == "user_created" && e.actor.as_deref() == Some("federation:amazon")),
        "the creation is audited"
    );
    // Off again: the next unlinked account is refused.
    set_policy(false).await;
    let (s, _) = sign_in_as(
        "amzn1.account.AFPOLICYTHREE0000000000000",
        "ray@example.com",
    )
    .await;
    assert_eq!(s, 403);
}

/// `allow_private_upstreams` off (the default): an upstream on a loopback, private or
/// link-local address cannot be configured, and one configured before (or named by a host
/// that resolves there) is not called: a tenant's admin cannot make ma-idp fetch from the
/// services beside it. (The other tests turn it on: their stand-ins listen on 127.0.0.1.)
async fn private_upstreams_refused_unless_allowed(backend: Backend) {
    let Some(mut app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let t = app.svc.tenant("home").await.unwrap();
    let fake = FakeOidc::start("ma-idp-home", "fake-secret");
    let oidc = fake_provider;
    // Configured while allowed: one at 127.0.0.1, and (where this machine's own name
    // resolves to a non-public address, as in /etc/hosts) one named by a host name.
    app.svc
        .add_provider(
            &t,
            oidc("fake", "Fake ID", fake.server.base.clone()),
            "test",
        )
        .await
        .unwrap();
    let own_name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            use std::net::ToSocketAddrs;
            !h.is_empty()
                && !h.eq_ignore_ascii_case("localhost")
                && (h.as_str(), 443).to_socket_addrs().is_ok_and(|mut a| {
                    a.all(|a| !ma_idp::federation::http_client::is_public(a.ip()))
                })
        });
    let port = fake.server.base.rsplit(':').next().unwrap().to_string();
    if let Some(h) = &own_name {
        app.svc
            .add_provider(
                &t,
                oidc("named", "Named ID", format!("https://{h}:{port}")),
                "test",
            )
            .await
            .unwrap();
    } else {
        eprintln!("SKIPPED in part: this machine's name does not resolve to a private address");
    }

    // Off: new ones are refused with the reason, whatever the spelling of the address.
    app.settings.allow_private_upstreams = false;
    app.restart().await;
    let svc = ma_idp::services::Services::init(app.settings.clone(), app.clock.clone())
        .await
        .unwrap();
    for issuer in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
        "https://10.1.2.3".to_string(),
        "https://192.168.1.10/realms/home".to_string(),
        "https://169.254.169.254".to_string(),
        "https://[::ffff:172.16.0.1]".to_string(),
        "https://[fd00::1]".to_string(),
        "https://idp.localhost".to_string(),
    ] {
        let e = svc
            .add_provider(&t, oidc("more", "More ID", issuer.clone()), "test")
            .await
            .err()
            .unwrap_or_else(|| panic!("{issuer} was accepted"));
        assert!(
            e.to_string().contains("allow_private_upstreams"),
            "{issuer}: {e}"
        );
    }
    // The admin UI's provider form says why, and adds nothing.
    let admin = operator(&app, "home").await;
    let html = submit_provider_form(
        &admin,
        &[
            ("kind", "oidc"),
            ("slug", "lan"),
            ("client_id", "ma-idp"),
            ("issuer", "https://192.168.1.10/realms/home"),
        ],
    )
    .await;
    assert!(html.contains("allow_private_upstreams"), "{html}");
    assert!(
        app.svc
            .store
            .provider_by_slug(&t.id, "lan")
            .await
            .unwrap()
            .is_none()
    );
    let mut endpoint = oidc("more", "More ID", "https://login.example.com".into());
    endpoint.token_endpoint = Some("https://127.0.0.2/token".into());
    let e = svc.add_provider(&t, endpoint, "test").await.err().unwrap();
    assert!(e.to_string().contains("token endpoint"), "{e}");

    // The ones configured before are not called: the start shows the admin's problem.
    let mut refused = vec![("fake", "Fake ID", "127.0.0.1".to_string())];
    if let Some(h) = &own_name {
        refused.push(("named", "Named ID", h.clone()));
    }
    for (slug, name, host) in refused {
        let b = app.browser();
        let login = b.get("/t/home/login").await.text().await.unwrap();
        assert_refusal(
            &app,
            &t.id,
            slug,
            press_sign_in_with_resp(&b, &login, "home", name).await,
            502,
            "Sign-in provider not set up correctly",
            "misconfigured",
            0,
        )
        .await;
        let said = events(&app, &t.id)
            .await
            .into_iter()
            .rev()
            .find(|e| e.kind == "sign_in" && e.detail["provider"] == slug)
            .unwrap();
        let upstream = said.detail["upstream"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            upstream.contains(&host) && upstream.contains("allow_private_upstreams"),
            "{upstream}"
        );
    }
    svc.store.clone().close().await.ok();
    app.stop().await;
}
