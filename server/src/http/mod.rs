//! HTTP: routes, request parsing helpers, pages, security headers, metrics, and the mapping
//! from errors to answers. Handlers parse and render; services decide.
pub mod account;
pub mod authorize;
pub mod endpoints;
pub mod federation;
pub mod middleware;
pub mod ops;
pub mod pages;
pub mod passkeys;

use std::net::IpAddr;

use actix_session::SessionMiddleware;
use actix_session::config::{BrowserSession, CookieContentSecurity, TtlExtensionPolicy};
use actix_web::cookie::{Key, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use crate::audit::RequestInfo;
use crate::error::{Error, Result};
use crate::login::session_store::DbSessionStore;
use crate::oauth::Params;
use crate::services::Services;

/// Largest accepted request body.
pub const MAX_BODY: usize = 16 * 1024;

pub type Svc = web::Data<Services>;

/// Read a form body strictly (content type, size, encoding, duplicates).
pub async fn read_form(req: &HttpRequest, mut payload: web::Payload) -> Result<Params> {
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(Error::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Error::invalid_request("could not read the request body"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Error::OAuth {
                code: "invalid_request",
                description: "request body too large".into(),
                status: StatusCode::PAYLOAD_TOO_LARGE,
                basic_challenge: false,
                bearer_challenge: false,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Params::parse(&body)
}

/// Query string parameters, strictly.
pub fn read_query(req: &HttpRequest) -> Result<Params> {
    Params::parse(req.query_string().as_bytes())
}

pub const TOO_MANY: &str =
    "Too many sign-in attempts from your network. Wait a minute and try again.";

pub fn too_many_page(mut resp: actix_web::HttpResponse) -> Result<actix_web::HttpResponse> {
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    resp.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("60"),
    );
    Ok(resp)
}

/// The client address: the peer, or from `X-Forwarded-For` when the peer is a trusted proxy.
/// Addresses are compared and returned in canonical form: on a dual-stack listener (`[::]`) an
/// IPv4 peer arrives as `::ffff:a.b.c.d`, and it is the proxy `a.b.c.d` all the same.
pub fn client_ip(req: &HttpRequest, svc: &Services) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip().to_canonical());
    let trusted = |ip: &IpAddr| svc.trusted_proxies.contains(ip);
    let mut ip = peer;
    if let Some(p) = peer
        && trusted(&p)
    {
        // Walk from the right, through every `X-Forwarded-For` line (a proxy may add a line
        // of its own after the client's rather than append to it): the first address that is
        // not a trusted proxy is the client. A hop that is not an address (or a line that is
        // not text) ends the walk: nothing left of it can be believed.
        let lines = req.headers().get_all("x-forwarded-for");
        let hops = lines.rev().flat_map(|line| match line.to_str() {
            Ok(l) => l.rsplit(',').map(Some).collect::<Vec<_>>(),
            Err(_) => vec![None],
        });
        for hop in hops {
            match hop.map(|h| h.trim().parse::<IpAddr>().map(|a| a.to_canonical())) {
                Some(Ok(a)) if trusted(&a) => continue,
                Some(Ok(a)) => {
                    ip = Some(a);
                    break;
                }
                _ => break,
            }
        }
    }
    ip
}

/// The client address and user agent, for audit events.
pub fn request_info(req: &HttpRequest, svc: &Services) -> RequestInfo {
    let ip = client_ip(req, svc);
    RequestInfo {
        ip: ip.map(|i| i.to_string()),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

pub fn cookie_name(svc: &Services) -> String {
    if svc.settings.is_https() {
        "__Host-ma-idp".into()
    } else {
        "ma-idp".into()
    }
}

fn session_middleware(svc: &Services) -> SessionMiddleware<DbSessionStore> {
    let ttl = actix_web::cookie::time::Duration::seconds(svc.settings.session_ttl);
    SessionMiddleware::builder(
        DbSessionStore::new(
            svc.store.clone(),
            svc.clock.clone(),
            svc.anonymous_sessions.clone(),
        ),
        Key::from(&svc.cookie_key),
    )
    .cookie_name(cookie_name(svc))
    .cookie_secure(svc.settings.is_https())
    .cookie_http_only(true)
    .cookie_same_site(SameSite::Lax)
    .cookie_path("/".into())
    .cookie_content_security(CookieContentSecurity::Private)
    .session_lifecycle(
        BrowserSession::default()
            .state_ttl(ttl)
            .state_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
    )
    .build()
}

/// Whether the admin UI is reached over https (the scheme in any case, as `is_https`).
fn admin_is_https(svc: &Services) -> bool {
    svc.settings
        .admin_base_url()
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
}

/// The admin UI's session cookie.
fn admin_cookie_name(svc: &Services) -> &'static str {
    if admin_is_https(svc) {
        "__Host-ma-idp-admin"
    } else {
        "ma-idp-admin"
    }
}

/// The admin UI's session: its own cookie, `SameSite=Strict`, `Secure` when the admin UI is
/// reached over https.
fn admin_session_middleware(svc: &Services) -> SessionMiddleware<DbSessionStore> {
    let ttl = actix_web::cookie::time::Duration::seconds(svc.settings.session_ttl.min(12 * 3600));
    let secure = admin_is_https(svc);
    SessionMiddleware::builder(
        DbSessionStore::new(
            svc.store.clone(),
            svc.clock.clone(),
            svc.anonymous_sessions.clone(),
        ),
        Key::from(&svc.cookie_key),
    )
    .cookie_name(admin_cookie_name(svc).into())
    .cookie_secure(secure)
    .cookie_http_only(true)
    .cookie_same_site(SameSite::Strict)
    .cookie_path("/".into())
    .cookie_content_security(CookieContentSecurity::Private)
    .session_lifecycle(
        BrowserSession::default()
            .state_ttl(ttl)
            .state_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
    )
    .build()
}

/// The admin UI under `/admin`.
pub fn configure_admin(cfg: &mut web::ServiceConfig, svc: &std::sync::Arc<Services>) {
    cfg.app_data(admin_ui::data(crate::admin::Port::shared(svc.clone())))
        // With the admin UI: on `admin_listen` when it is set, off the public listener (the
        // counters say when a household signs in and uses its links).
        .service(web::resource("/metrics").route(web::get().to(ops::metrics)))
        .service(
            web::scope("/admin")
                .wrap(actix_web::middleware::from_fn(middleware::quiet_redirects))
                .wrap(actix_web::middleware::from_fn(middleware::limit_new_visits))
                .wrap(admin_session_middleware(svc))
                .wrap(actix_web::middleware::from_fn(middleware::html_errors))
                .configure(admin_ui::configure),
        );
}

/// The browser pages' middleware (sign-in throttling for new visitors, the session, HTML
/// error pages) around the resources `routes` adds; anything else under the scope's prefix
/// is a 404 page.
fn browser_pages(
    svc: &Services,
    routes: impl FnOnce(&mut web::ServiceConfig),
) -> impl actix_web::dev::HttpServiceFactory + 'static {
    web::scope("")
        .wrap(actix_web::middleware::from_fn(middleware::limit_new_visits))
        .wrap(session_middleware(svc))
        .wrap(actix_web::middleware::from_fn(middleware::html_errors))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_BODY * 4)
                .error_handler(|e, _| {
                    Error::invalid_request(format!("malformed request: {e}")).into()
                }),
        )
        .configure(routes)
        .default_service(web::to(ops::not_found))
}

/// Every route. `with_admin`: also serve the admin UI here (no separate admin listener).
///
/// actix's router tries services in the order given and matches a pattern with a dynamic
/// segment by a regular expression: everything of a tenant is one scope, `/t/{t}` (one
/// expression), whose resources are static paths compared as strings, the busiest first;
/// the browser pages are a scope inside it (their own middleware). Every path is matched by
/// one resource at most, so the order changes nothing else.
pub fn configure(cfg: &mut web::ServiceConfig, svc: &std::sync::Arc<Services>, with_admin: bool) {
    if with_admin {
        configure_admin(cfg, svc);
    }
    cfg.service(
        web::scope("/t/{t}")
            .service(web::resource("/jwks.json").route(web::get().to(endpoints::jwks)))
            .service(web::resource("/token").route(web::post().to(endpoints::token)))
            .service(web::resource("/introspect").route(web::post().to(endpoints::introspect)))
            .service(
                web::resource("/.well-known/openid-configuration")
                    .route(web::get().to(endpoints::discovery)),
            )
            .service(
                web::resource("/userinfo")
                    .route(web::get().to(endpoints::userinfo))
                    .route(web::post().to(endpoints::userinfo)),
            )
            .service(web::resource("/revoke").route(web::post().to(endpoints::revoke)))
            .service(browser_pages(svc, tenant_pages)),
    )
    .service(web::resource("/alexa/token").route(web::post().to(endpoints::alexa_token)))
    .service(
        web::resource("/.well-known/oauth-authorization-server/t/{t}")
            .route(web::get().to(endpoints::discovery)),
    )
    .service(web::resource("/health").route(web::get().to(ops::health)))
    .service(web::resource("/ready").route(web::get().to(ops::ready)))
    .service(web::resource("/static/{file}").route(web::get().to(ops::static_file)))
    .service(browser_pages(svc, |cfg| {
        cfg.service(
            web::resource("/alexa/authorize")
                .route(web::get().to(authorize::alexa_authorize_get))
                .route(web::post().to(authorize::alexa_authorize_post)),
        );
    }));
}

/// A tenant's browser pages, under `/t/{t}`.
fn tenant_pages(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/authorize")
            .route(web::get().to(authorize::authorize_get))
            .route(web::post().to(authorize::authorize_post)),
    )
    .service(
        web::resource("/login")
            .route(web::get().to(account::login_get))
            .route(web::post().to(account::login_post)),
    )
    .service(web::resource("/passkeys/login/start").route(web::post().to(passkeys::login_start)))
    .service(web::resource("/passkeys/login/finish").route(web::post().to(passkeys::login_finish)))
    .service(
        web::resource("/passkeys/register/start").route(web::post().to(passkeys::register_start)),
    )
    .service(
        web::resource("/passkeys/register/finish").route(web::post().to(passkeys::register_finish)),
    )
    .service(web::resource("/enroll/{token}").route(web::get().to(passkeys::enroll_page)))
    .service(web::resource("/enroll/{token}/start").route(web::post().to(passkeys::enroll_start)))
    .service(web::resource("/enroll/{token}/finish").route(web::post().to(passkeys::enroll_finish)))
    .service(
        web::resource("/account/passkeys/{id}/{action}")
            .route(web::post().to(passkeys::account_passkey_action)),
    )
    .service(
        web::resource("/logout")
            .route(web::get().to(account::logout_get))
            .route(web::post().to(account::logout_post)),
    )
    .service(web::resource("/account").route(web::get().to(account::account)))
    .service(
        web::resource("/account/grants/{id}/revoke").route(web::post().to(account::revoke_grant)),
    )
    .service(
        web::resource("/account/sessions/{id}/end").route(web::post().to(account::end_session)),
    )
    .service(
        web::resource("/account/identities/{id}/unlink").route(web::post().to(federation::unlink)),
    )
    .service(web::resource("/federation/{provider}/start").route(web::post().to(federation::start)))
    .service(
        web::resource("/federation/{provider}/callback").route(web::get().to(federation::callback)),
    );
}
