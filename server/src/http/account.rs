//! Sign-in outside an authorization, sign-out, and the account page.
use actix_session::Session;
use actix_web::{HttpRequest, HttpResponse, web};

use super::authorize::{Via, redirect};
use super::pages;
use super::{Svc, TOO_MANY, client_ip, read_form, request_info, too_many_page};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::login;
use crate::login::limits::Bucket;
use crate::secrets::Secret;

pub async fn login_get(
    svc: Svc,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    if login::signed_in(&svc, &session, &tenant).await?.is_some() {
        return Ok(redirect(&format!("/t/{}/account", tenant.slug), Via::Get));
    }
    let csrf = login::csrf_token(&session)?;
    let providers = svc.provider_buttons(&tenant).await?;
    pages::login(pages::LoginView {
        tenant_name: &tenant.name,
        slug: &tenant.slug,
        via_alexa: false,
        passkeys_only: tenant.passkeys_required,
        client_name: None,
        action: &format!("/t/{}/login", tenant.slug),
        rid: None,
        csrf: &csrf,
        username: "",
        error: None,
        providers: &providers,
    })
}

pub async fn login_post(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    let params = read_form(&req, payload).await.map_err(Error::into_page)?;
    login::check_csrf(&session, params.get("csrf"))?;
    let username = params.get("username").unwrap_or("");
    let password = Secret::new(params.get("password").unwrap_or(""));
    let allowed = svc.ip_limits.check(Bucket::SignIn, client_ip(&req, &svc));
    let (msg, status) = if allowed {
        let outcome = svc
            .password_sign_in(&tenant, username, &password, &request_info(&req, &svc))
            .await?;
        if let login::PasswordOutcome::Ok(user, done) = outcome {
            login::sign_in_with_password(&session, &tenant, &user, svc.now(), &done)?;
            return Ok(redirect(&format!("/t/{}/account", tenant.slug), Via::Form));
        }
        (
            outcome.message(svc.now()).unwrap_or_default(),
            outcome.status(),
        )
    } else {
        (
            TOO_MANY.to_string(),
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        )
    };
    let csrf = login::csrf_token(&session)?;
    let providers = svc.provider_buttons(&tenant).await?;
    let mut resp = pages::login(pages::LoginView {
        tenant_name: &tenant.name,
        slug: &tenant.slug,
        via_alexa: false,
        passkeys_only: tenant.passkeys_required,
        client_name: None,
        action: &format!("/t/{}/login", tenant.slug),
        rid: None,
        csrf: &csrf,
        username,
        error: Some(&msg),
        providers: &providers,
    })?;
    if !allowed {
        // The network's limit, as on the authorization page: with its `Retry-After`.
        return too_many_page(resp);
    }
    *resp.status_mut() = status;
    Ok(resp)
}

pub async fn logout_get(
    svc: Svc,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    let csrf = login::csrf_token(&session)?;
    pages::logout(&tenant.name, &format!("/t/{}/logout", tenant.slug), &csrf)
}

pub async fn logout_post(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    let params = read_form(&req, payload).await.map_err(Error::into_page)?;
    login::check_csrf(&session, params.get("csrf"))?;
    if let Some(s) = login::signed_in(&svc, &session, &tenant).await? {
        svc.store
            .insert_audit(
                AuditEvent::new(
                    "sign_out",
                    "ok",
                    Some(&tenant.id),
                    &request_info(&req, &svc),
                )
                .user(&s.user.id),
                svc.now(),
            )
            .await?;
    }
    login::sign_out(&session);
    pages::message(
        "Signed out",
        "You are signed out on this browser. Links you approved (for example Alexa) keep working; manage them on your account page.",
        Some((&format!("/t/{}/login", tenant.slug), "Sign in again")),
    )
}

pub async fn account(
    svc: Svc,
    session: Session,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    let Some(s) = login::signed_in(&svc, &session, &tenant).await? else {
        return Ok(redirect(&format!("/t/{}/login", tenant.slug), Via::Get));
    };
    let csrf = login::csrf_token(&session)?;
    let grants = svc.my_grants(&tenant, &s.user.id).await?;
    let sessions = svc.my_sessions(&tenant, &s.user.id).await?;
    let passkeys = svc.my_passkeys(&tenant, &s.user.id).await?;
    let identities: Vec<(String, String, String, Option<String>)> = svc
        .linked_identities(&tenant, &s.user.id)
        .await?
        .into_iter()
        .map(|(i, name)| (i.id, name, i.subject, i.email))
        .collect();
    let providers = svc.provider_buttons(&tenant).await?;
    let query = crate::oauth::Params::parse(req.query_string().as_bytes()).ok();
    let notice = query
        .as_ref()
        .and_then(|p| p.get("done").map(str::to_string));
    let refusal = query
        .as_ref()
        .and_then(|p| p.get("refused").map(str::to_string));
    pages::account(pages::AccountView {
        tenant_name: &tenant.name,
        slug: &tenant.slug,
        username: &s.user.username,
        csrf: &csrf,
        grants: &grants,
        sessions: &sessions,
        passkeys: &passkeys,
        notice: notice.as_deref(),
        refusal: refusal.as_deref(),
        identities: &identities,
        providers: &providers,
    })
}

/// The account page again, saying the member's last way to sign in stays.
pub fn last_way_in(tenant: &entity::tenant::Model) -> HttpResponse {
    redirect(
        &format!("/t/{}/account?refused=last-way", tenant.slug),
        Via::Form,
    )
}

/// A form POST from the account page: the tenant, the signed-in member and the form — or the
/// redirect to sign in first.
pub(super) async fn member_form(
    svc: &Svc,
    req: &HttpRequest,
    session: &Session,
    payload: web::Payload,
    slug: &str,
) -> Result<
    std::result::Result<
        (entity::tenant::Model, login::SignedIn, crate::oauth::Params),
        HttpResponse,
    >,
> {
    let tenant = svc.tenant(slug).await?;
    let params = read_form(req, payload).await.map_err(Error::into_page)?;
    login::check_csrf(session, params.get("csrf"))?;
    match login::signed_in(svc, session, &tenant).await? {
        Some(s) => Ok(Ok((tenant, s, params))),
        None => Ok(Err(redirect(
            &format!("/t/{}/login", tenant.slug),
            Via::Form,
        ))),
    }
}

pub async fn revoke_grant(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, id) = path.into_inner();
    let (tenant, s, _) = match member_form(&svc, &req, &session, payload, &slug).await? {
        Ok(x) => x,
        Err(to_login) => return Ok(to_login),
    };
    if !svc
        .revoke_my_grant(&tenant, &s.user.id, &id, &request_info(&req, &svc))
        .await?
    {
        return Err(Error::not_found("There is no such link on your account."));
    }
    Ok(redirect(
        &format!("/t/{}/account?done=revoked", tenant.slug),
        Via::Form,
    ))
}

pub async fn end_session(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, id) = path.into_inner();
    let (tenant, s, _) = match member_form(&svc, &req, &session, payload, &slug).await? {
        Ok(x) => x,
        Err(to_login) => return Ok(to_login),
    };
    if !svc
        .end_my_session(&tenant, &s.user.id, &id, &request_info(&req, &svc))
        .await?
    {
        return Err(Error::not_found(
            "There is no such session on your account.",
        ));
    }
    Ok(redirect(
        &format!("/t/{}/account?done=ended", tenant.slug),
        Via::Form,
    ))
}
