//! Passkey ceremonies over JSON (called by `static/passkeys.js`), the enrollment-link page,
//! and the account page's passkey forms.
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use entity::tenant;
use serde::Deserialize;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::account::last_way_in;
use super::authorize::{Via, redirect};
use super::pages;
use super::{Svc, client_ip, request_info};
use crate::error::{Error, Result};
use crate::login;
use crate::login::limits::Bucket;
use crate::services::Services;
use crate::store::{Removal, Removed};

fn forbidden(msg: &str) -> Error {
    Error::OAuth {
        code: "invalid_request",
        description: msg.to_string(),
        status: StatusCode::FORBIDDEN,
        basic_challenge: false,
        bearer_challenge: false,
    }
}

/// JSON endpoints take the session's CSRF token in `X-CSRF-Token`.
fn check_csrf(req: &HttpRequest, session: &Session) -> Result<()> {
    let header = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    login::check_csrf(session, header)
        .map_err(|_| forbidden("This page has expired. Reload it and try again."))
}

async fn json_tenant(svc: &Svc, slug: &str) -> Result<tenant::Model> {
    svc.tenant(slug).await.map_err(|e| match e {
        Error::Page { .. } => forbidden("unknown tenant"),
        other => other,
    })
}

/// Each start stores a challenge (until used or expired): bounded per client IP.
fn may_start_ceremony(svc: &Svc, req: &HttpRequest) -> Result<()> {
    if svc.ip_limits.check(Bucket::Ceremony, client_ip(req, svc)) {
        Ok(())
    } else {
        Err(Error::too_many(super::TOO_MANY))
    }
}

#[derive(Deserialize)]
pub struct LoginStart {
    #[serde(default)]
    username: Option<String>,
}

pub async fn login_start(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
    body: web::Json<LoginStart>,
) -> Result<HttpResponse> {
    let tenant = json_tenant(&svc, &path).await?;
    check_csrf(&req, &session)?;
    may_start_ceremony(&svc, &req)?;
    let (ceremony, options) = svc
        .passkey_login_start(&tenant, body.username.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"ceremony": ceremony, "options": options})))
}

#[derive(Deserialize)]
pub struct LoginFinish {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    rid: Option<String>,
    /// `alexa` when the sign-in page was served under `/alexa/authorize`.
    #[serde(default)]
    via: Option<String>,
}

pub async fn login_finish(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
    body: web::Json<LoginFinish>,
) -> Result<HttpResponse> {
    let tenant = json_tenant(&svc, &path).await?;
    check_csrf(&req, &session)?;
    if !svc.ip_limits.check(Bucket::SignIn, client_ip(&req, &svc)) {
        return Err(Error::too_many(super::TOO_MANY));
    }
    let (user, amr) = svc
        .passkey_login_finish(
            &tenant,
            &body.ceremony,
            &body.credential,
            &request_info(&req, &svc),
        )
        .await?;
    login::sign_in(&session, &tenant, &user, &amr, svc.now())?;
    let next = match body.rid.as_deref().filter(|r| {
        !r.is_empty()
            && r.len() < 64
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        Some(rid) if body.via.as_deref() == Some("alexa") => format!("/alexa/authorize?rid={rid}"),
        Some(rid) => format!("/t/{}/authorize?rid={rid}", tenant.slug),
        None => format!("/t/{}/account", tenant.slug),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({"redirect": next})))
}

pub async fn register_start(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = json_tenant(&svc, &path).await?;
    check_csrf(&req, &session)?;
    may_start_ceremony(&svc, &req)?;
    let signed = login::signed_in(&svc, &session, &tenant)
        .await?
        .ok_or_else(|| forbidden("Sign in first."))?;
    let (ceremony, options) = svc.passkey_register_start(&tenant, &signed.user).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"ceremony": ceremony, "options": options})))
}

#[derive(Deserialize)]
pub struct RegisterFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: Option<String>,
}

pub async fn register_finish(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
    body: web::Json<RegisterFinish>,
) -> Result<HttpResponse> {
    let tenant = json_tenant(&svc, &path).await?;
    check_csrf(&req, &session)?;
    let signed = login::signed_in(&svc, &session, &tenant)
        .await?
        .ok_or_else(|| forbidden("Sign in first."))?;
    let pk = svc
        .passkey_register_finish(
            &tenant,
            &signed.user,
            &body.ceremony,
            &body.credential,
            body.name.as_deref(),
            &request_info(&req, &svc),
        )
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"id": pk.id, "name": pk.name, "redirect": format!("/t/{}/account?done=passkey", tenant.slug)})))
}

pub async fn enroll_page(
    svc: Svc,
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, token) = path.into_inner();
    let tenant = svc.tenant(&slug).await?;
    let (_, user) = svc.enrollment_target(&tenant, &token).await?;
    let csrf = login::csrf_token(&session)?;
    pages::enroll(&tenant.name, &tenant.slug, &user.username, &token, &csrf)
}

const LINK_GONE: &str = "This enrollment link has expired or was already used.";

/// An enrollment link that does not work is a 403 for the page's script; a database that
/// could not be asked stays a 503 (try again), not "expired".
fn unusable_link(e: Error, gone: impl FnOnce() -> Error) -> Error {
    match e {
        Error::Db(_) | Error::Internal(_) => e,
        _ => gone(),
    }
}

pub async fn enroll_start(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, token) = path.into_inner();
    let tenant = json_tenant(&svc, &slug).await?;
    check_csrf(&req, &session)?;
    may_start_ceremony(&svc, &req)?;
    let (_, user) = svc
        .enrollment_target(&tenant, &token)
        .await
        .map_err(|e| unusable_link(e, || forbidden(LINK_GONE)))?;
    let (ceremony, options) = svc.passkey_register_start(&tenant, &user).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"ceremony": ceremony, "options": options})))
}

pub async fn enroll_finish(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<(String, String)>,
    body: web::Json<RegisterFinish>,
) -> Result<HttpResponse> {
    let (slug, token) = path.into_inner();
    let tenant = json_tenant(&svc, &slug).await?;
    check_csrf(&req, &session)?;
    let gone = || forbidden(LINK_GONE);
    let (link, user) = svc
        .enrollment_target(&tenant, &token)
        .await
        .map_err(|e| unusable_link(e, gone))?;
    let info = request_info(&req, &svc);
    // Verify and store the credential first (a failed attempt leaves the link usable), then
    // use the link up; if another request used it meanwhile, the new passkey is withdrawn.
    let pk = svc
        .passkey_register_finish(
            &tenant,
            &user,
            &body.ceremony,
            &body.credential,
            body.name.as_deref(),
            &info,
        )
        .await?;
    if !svc
        .store
        .consume_enrollment_link(&link.id, svc.now())
        .await?
    {
        svc.store
            .delete_passkey(&tenant.id, &user.id, &pk.id, Removal::Any)
            .await?;
        return Err(gone());
    }
    // Enrolling with the link proves possession of the new passkey: sign in with it, as at a
    // passkey sign-in.
    let amr = crate::passkeys::passkey_amr(pk.backup_eligible);
    login::sign_in(&session, &tenant, &user, &amr, svc.now())?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"redirect": format!("/t/{}/account?done=passkey", tenant.slug)})))
}

pub async fn account_passkey_action(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let (slug, id, action) = path.into_inner();
    let (tenant, s, params) =
        match super::account::member_form(&svc, &req, &session, payload, &slug).await? {
            Ok(x) => x,
            Err(to_login) => return Ok(to_login),
        };
    let done = match action.as_str() {
        "rename" => svc
            .rename_passkey(&tenant, &s.user.id, &id, params.get("name").unwrap_or(""))
            .await
            .map_err(Error::into_page)?,
        "remove" => match svc
            .remove_passkey(
                &tenant,
                &s.user.id,
                &id,
                Services::own_removal(&tenant),
                "self",
                &request_info(&req, &svc),
            )
            .await?
        {
            Removed::Done => true,
            Removed::NotFound => false,
            Removed::LastWayIn => return Ok(last_way_in(&tenant)),
        },
        _ => return Err(Error::not_found("No such action.")),
    };
    if !done {
        return Err(Error::not_found(
            "There is no such passkey on your account.",
        ));
    }
    Ok(redirect(
        &format!("/t/{}/account?done=passkey-{action}", tenant.slug),
        Via::Form,
    ))
}

#[cfg(test)]
mod tests {
    use super::{Error, LINK_GONE, forbidden, unusable_link};
    use actix_web::ResponseError;

    /// A link that does not work is a 403; a database that could not be asked stays a 503.
    #[test]
    fn only_a_link_that_does_not_work_is_gone() {
        let gone = || forbidden(LINK_GONE);
        let db = Error::Db(sea_orm::DbErr::Custom("down".into()));
        assert_eq!(unusable_link(db, gone).status_code().as_u16(), 503);
        let page = Error::bad_page("This enrollment link does not work", "expired");
        assert_eq!(unusable_link(page, gone).status_code().as_u16(), 403);
    }
}
