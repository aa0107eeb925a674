//! ma-idp's admin web UI: routes, forms and views under `/admin`.
//!
//! This crate does not know the database. Everything an admin can do is a method of
//! [`port::AdminPort`], which the server implements with the same services as its other entry
//! points. Who may do what is decided in [`authz`]; every object is loaded through a
//! tenant-scoped method of the port, so an id from another tenant is simply not found.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod authz;
pub mod charts;
mod handlers;
pub mod port;
mod web_util;

use std::sync::Arc;

use actix_web::web;

pub use port::AdminPort;

/// Session keys. The server's session store reads the same two to list sessions by account.
pub const SESSION_TENANT: &str = "tid";
pub const SESSION_USER: &str = "uid";
/// Set (to `true`) at a sign-in: the server's session store then writes the session under a
/// fresh key in the same statement (no fixation: the old key stops working) and never stores
/// this key itself. actix-session's own `renew` costs a delete and an insert.
pub const SESSION_REKEY: &str = "_rekey";

/// The admin UI's state: the port the server implements.
pub struct Ui {
    pub port: Arc<dyn AdminPort>,
}

/// The admin UI's state for `App::app_data`.
pub fn data(port: Arc<dyn AdminPort>) -> web::Data<Ui> {
    web::Data::new(Ui { port })
}

/// Check that the templates compile (the server calls this at start-up).
pub fn check_templates() -> Result<(), String> {
    web_util::tera().map(|_| ())
}

/// The routes, to mount inside `web::scope("/admin")` wrapped in a session middleware.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers::*;
    cfg.app_data(web::PayloadConfig::default().limit(web_util::MAX_FORM))
        .route("", web::get().to(home))
        .route("/", web::get().to(home))
        .route("/login", web::get().to(auth::login_get))
        .route("/login", web::post().to(auth::login_post))
        .route("/logout", web::post().to(auth::logout))
        .route("/setup/{token}", web::get().to(auth::setup_get))
        .route("/setup/{token}", web::post().to(auth::setup_post))
        .route("/tenants", web::get().to(tenants::list))
        .route("/tenants", web::post().to(tenants::create))
        .route("/audit", web::get().to(audit::all_tenants))
        .route("/t/{t}", web::get().to(dashboard::tenant))
        .route("/t/{t}/settings", web::get().to(tenants::settings_get))
        .route("/t/{t}/settings", web::post().to(tenants::settings_post))
        .route("/t/{t}/default", web::post().to(tenants::make_default))
        .route("/t/{t}/users", web::get().to(users::list))
        .route("/t/{t}/users", web::post().to(users::create))
        .route("/t/{t}/users/{id}", web::get().to(users::show))
        .route("/t/{t}/users/{id}/{action}", web::post().to(users::action))
        .route(
            "/t/{t}/users/{id}/passkeys/{pid}/remove",
            web::post().to(users::remove_passkey),
        )
        .route(
            "/t/{t}/users/{id}/identities/{iid}/unlink",
            web::post().to(users::unlink_identity),
        )
        .route("/t/{t}/providers", web::get().to(tenants::providers))
        .route("/t/{t}/providers", web::post().to(tenants::add_provider))
        .route(
            "/t/{t}/providers/{slug}",
            web::get().to(tenants::provider_get),
        )
        .route(
            "/t/{t}/providers/{slug}",
            web::post().to(tenants::provider_post),
        )
        .route(
            "/t/{t}/providers/{slug}/remove",
            web::post().to(tenants::provider_remove),
        )
        .route("/t/{t}/clients", web::get().to(clients::list))
        .route("/t/{t}/clients", web::post().to(clients::create))
        .route(
            "/t/{t}/clients/alexa",
            web::post().to(clients::create_alexa),
        )
        .route("/t/{t}/clients/{id}", web::get().to(clients::show))
        .route("/t/{t}/clients/{id}", web::post().to(clients::update))
        .route(
            "/t/{t}/clients/{id}/secret",
            web::post().to(clients::rotate_secret),
        )
        .route(
            "/t/{t}/clients/{id}/revoke-grants",
            web::post().to(clients::revoke_grants),
        )
        .route("/t/{t}/grants", web::get().to(access::grants))
        .route(
            "/t/{t}/grants/{id}/revoke",
            web::post().to(access::revoke_grant),
        )
        .route("/t/{t}/sessions", web::get().to(access::sessions))
        .route(
            "/t/{t}/sessions/{id}/end",
            web::post().to(access::end_session),
        )
        .route("/t/{t}/keys", web::get().to(access::keys))
        .route("/t/{t}/keys/rotate", web::post().to(access::rotate_keys))
        .route("/t/{t}/audit", web::get().to(audit::tenant))
        .default_service(web::to(not_found));
}
