//! The authorization endpoint's pages: sign-in, then consent, then back to the client.
use actix_session::Session;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use entity::tenant;

use super::pages::{self, ScopeLine};
use super::{Svc, TOO_MANY, client_ip, read_form, read_query, request_info, too_many_page};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::login::limits::Bucket;
use crate::login::{self, SignedIn};
use crate::oauth::authorize::{AuthzError, AuthzRequest, is_registered};
use crate::oauth::params::Params;
use crate::oauth::scopes;
use crate::secrets::{Secret, random_id};

/// How long a pending authorization request lives in the session.
const PENDING_MAX_AGE: i64 = 30 * 60;

/// What an answer that sends the browser elsewhere answers, which decides how it is made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    /// A request the browser made by itself (a link, an address typed in): 302.
    Get,
    /// A form of ours (a POST): 303, so the browser follows with a GET.
    Form,
    /// A GET that may end a redirect chain a form of ours began (a pending request taken up
    /// again by its `rid`): 302.
    Resumed,
}

/// A redirect to `location`, made as `via` says. A form's answer, or the end of a chain a
/// form began, the pages' CSP would stop the browser from following
/// (`middleware::form_action_allows`: a native app's `http://[::1]` redirect URI) is a page
/// that sends the browser on by itself instead.
pub fn redirect(location: &str, via: Via) -> HttpResponse {
    if via != Via::Get
        && let Some(page) = continue_page(location)
    {
        return page;
    }
    let mut b = if via == Via::Form {
        HttpResponse::SeeOther()
    } else {
        HttpResponse::Found()
    };
    b.insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The page that sends the browser on to `location` by itself, where a redirect there may
/// be refused under the pages' CSP (`middleware::form_action_allows`): only plain-http
/// addresses, never another scheme.
fn continue_page(location: &str) -> Option<HttpResponse> {
    if location.starts_with("http://") && !super::middleware::form_action_allows(location) {
        pages::continue_to(location).ok()
    } else {
        None
    }
}

fn expired() -> Error {
    Error::bad_page(
        "This sign-in has expired",
        "Too much time passed, or the page was opened in another browser. Go back to the app (for example the Alexa app) and start linking again.",
    )
}

struct Ctx<'a> {
    svc: &'a Svc,
    req: &'a HttpRequest,
    session: &'a Session,
    tenant: &'a tenant::Model,
    base: String,
}

pub async fn authorize_get(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    let base = format!("/t/{}/authorize", tenant.slug);
    get_inner(Ctx {
        svc: &svc,
        req: &req,
        session: &session,
        tenant: &tenant,
        base,
    })
    .await
}

pub async fn alexa_authorize_get(
    svc: Svc,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse> {
    let tenant = svc.default_tenant().await?;
    get_inner(Ctx {
        svc: &svc,
        req: &req,
        session: &session,
        tenant: &tenant,
        base: "/alexa/authorize".into(),
    })
    .await
}

pub async fn authorize_post(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = svc.tenant(&path).await?;
    let base = format!("/t/{}/authorize", tenant.slug);
    post_inner(
        Ctx {
            svc: &svc,
            req: &req,
            session: &session,
            tenant: &tenant,
            base,
        },
        payload,
    )
    .await
}

pub async fn alexa_authorize_post(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let tenant = svc.default_tenant().await?;
    post_inner(
        Ctx {
            svc: &svc,
            req: &req,
            session: &session,
            tenant: &tenant,
            base: "/alexa/authorize".into(),
        },
        payload,
    )
    .await
}

async fn get_inner(cx: Ctx<'_>) -> Result<HttpResponse> {
    let params = read_query(cx.req).map_err(Error::into_page)?;
    let now = cx.svc.now();
    if let Some(rid) = params.get("rid")
        && params.names().count() == 1
    {
        let areq: AuthzRequest =
            login::get_pending(cx.session, &cx.tenant.id, rid, now, PENDING_MAX_AGE)
                .ok_or_else(expired)?;
        // A pending request taken up again by its `rid` alone comes from our own pages or
        // redirects, often at the end of a chain a form of ours began (a provider button,
        // an upstream that sends the browser straight back): the browser holds the whole
        // chain to that page's `form-action`.
        return proceed(&cx, rid, areq, Via::Resumed).await;
    }
    begin(&cx, &params, Via::Get).await
}

/// A new authorization request (RFC 6749 §4.1.1), from the query string (`Via::Get`) or, as
/// OpenID Connect Core §3.1.2.1 also allows, a form POST (`Via::Form`).
async fn begin(cx: &Ctx<'_>, params: &Params, via: Via) -> Result<HttpResponse> {
    let now = cx.svc.now();
    let (_client, mut areq) = match cx.svc.validate_authorize(cx.tenant, params).await {
        Ok(x) => x,
        Err(AuthzError::Page(e)) => return Err(e),
        Err(AuthzError::Redirect(u)) => return Ok(redirect(&u, via)),
    };
    let rid = random_id();
    // prompt=login: sign in again even if a session exists. The pending request keeps asking
    // for a sign-in made from now on: coming back with its `rid` alone does not skip it.
    if areq.prompt.iter().any(|p| p == "login") {
        areq.prompt.retain(|p| p != "login");
        areq.require_auth_after(now);
        login::put_pending(cx.session, &cx.tenant.id, &rid, &areq, now)?;
        return login_page(cx, &rid, &areq, None, None).await;
    }
    proceed(cx, &rid, areq, via).await
}

/// Sign-in, consent or the redirect back, depending on where the browser stands.
async fn proceed(cx: &Ctx<'_>, rid: &str, areq: AuthzRequest, via: Via) -> Result<HttpResponse> {
    let now = cx.svc.now();
    let iss = cx.svc.issuer(cx.tenant);
    let signed = login::signed_in(cx.svc, cx.session, cx.tenant).await?;
    let none = areq.prompt.iter().any(|p| p == "none");
    let Some(signed) = signed.filter(|s| !areq.needs_login(Some(s))) else {
        if none {
            return Ok(authz_error(
                areq.error_redirect(&iss, "login_required", "the user is not signed in"),
                via,
            ));
        }
        login::put_pending(cx.session, &cx.tenant.id, rid, &areq, now)?;
        return login_page(cx, rid, &areq, None, None).await;
    };
    match cx.svc.needs_consent(&areq, &signed.user.id).await? {
        Some(grant_id) => {
            // A request taken up again (after a sign-in, or by its `rid`) may be of a client
            // disabled since it began: no code for it (its token requests are refused anyway).
            client_name(cx, &areq).await?;
            login::remove_pending(cx.session, &cx.tenant.id, rid);
            let url = cx
                .svc
                .issue_code(cx.tenant, &areq, &signed, &grant_id)
                .await?;
            Ok(redirect(&url, via))
        }
        None if none => Ok(authz_error(
            areq.error_redirect(&iss, "consent_required", "consent is required"),
            via,
        )),
        None => {
            login::put_pending(cx.session, &cx.tenant.id, rid, &areq, now)?;
            consent_page(cx, rid, &areq, &signed, via).await
        }
    }
}

fn authz_error(e: AuthzError, via: Via) -> HttpResponse {
    match e {
        AuthzError::Redirect(u) => redirect(&u, via),
        AuthzError::Page(e) => actix_web::ResponseError::error_response(&e),
    }
}

/// The name of the client a pending request is for, from the client cache (every sign-in and
/// consent page shows it; a change on this instance clears the cache), checked again as the
/// request goes on (a page, a sign-in, an answer): the client the request was made by, not
/// disabled since, and still registered with the request's redirect URI and scopes. An admin
/// may change a client while a request of it waits (up to `PENDING_MAX_AGE`), and no answer
/// may go to an address no longer registered (RFC 6749 §3.1.2.4).
async fn client_name(cx: &Ctx<'_>, areq: &AuthzRequest) -> Result<String> {
    let c = cx
        .svc
        .store
        .client_by_client_id(&cx.tenant.id, &areq.client_id)
        .await?
        .filter(|c| c.client.id == areq.client_pk && !c.client.disabled)
        .ok_or_else(|| {
            Error::bad_page(
                "Unknown application",
                "This application is no longer registered here.",
            )
        })?;
    if !is_registered(&c.redirect_uris, &areq.redirect_uri)
        || !scopes::subset(&areq.scope, &c.client.scopes)
    {
        return Err(Error::bad_page(
            "Application changed",
            "This application's registration changed while you were signing in. Go back to the app (for example the Alexa app) and start linking again.",
        ));
    }
    Ok(c.client.name)
}

async fn login_page(
    cx: &Ctx<'_>,
    rid: &str,
    areq: &AuthzRequest,
    username: Option<&str>,
    error: Option<&str>,
) -> Result<HttpResponse> {
    let csrf = login::csrf_token(cx.session)?;
    let name = client_name(cx, areq).await?;
    let providers = cx
        .svc
        .sign_in_buttons(cx.tenant, areq.auth_after.is_some())
        .await?;
    pages::login(pages::LoginView {
        tenant_name: &cx.tenant.name,
        slug: &cx.tenant.slug,
        via_alexa: cx.base.starts_with("/alexa/"),
        passkeys_only: cx.tenant.passkeys_required,
        client_name: Some(&name),
        action: &cx.base,
        rid: Some(rid),
        csrf: &csrf,
        username: username.unwrap_or(""),
        error,
        providers: &providers,
    })
}

/// When the pending request `rid` needs a sign-in at or after (`prompt=login`, `max_age`);
/// `None` also when there is no such request.
pub fn pending_auth_after(
    svc: &Svc,
    session: &Session,
    tenant: &tenant::Model,
    rid: &str,
) -> Option<i64> {
    login::get_pending::<AuthzRequest>(session, &tenant.id, rid, svc.now(), PENDING_MAX_AGE)?
        .auth_after
}

/// The sign-in page of the pending request `rid` (at `base`: `/t/{t}/authorize` or
/// `/alexa/authorize`) with `error` shown on it; `None` when the request is gone.
pub async fn pending_login_page(
    svc: &Svc,
    req: &HttpRequest,
    session: &Session,
    tenant: &tenant::Model,
    base: &str,
    rid: &str,
    error: &str,
) -> Result<Option<HttpResponse>> {
    let Some(areq) =
        login::get_pending::<AuthzRequest>(session, &tenant.id, rid, svc.now(), PENDING_MAX_AGE)
    else {
        return Ok(None);
    };
    let cx = Ctx {
        svc,
        req,
        session,
        tenant,
        base: base.to_string(),
    };
    Ok(Some(login_page(&cx, rid, &areq, None, Some(error)).await?))
}

async fn consent_page(
    cx: &Ctx<'_>,
    rid: &str,
    areq: &AuthzRequest,
    signed: &SignedIn,
    via: Via,
) -> Result<HttpResponse> {
    // The answer to a form: the page's own address to reload it by.
    let reload = (via == Via::Form).then(|| format!("{}?rid={rid}", cx.base));
    let csrf = login::csrf_token(cx.session)?;
    let name = client_name(cx, areq).await?;
    let lines: Vec<ScopeLine> = areq
        .scope
        .iter()
        .map(|s| ScopeLine {
            name: s.clone(),
            text: scopes::describe(s),
        })
        .collect();
    pages::consent(pages::ConsentView {
        tenant_name: &cx.tenant.name,
        client_name: &name,
        username: &signed.user.username,
        scopes: &lines,
        action: &cx.base,
        rid,
        csrf: &csrf,
        switch_url: &format!("/t/{}/logout", cx.tenant.slug),
        reload_url: reload.as_deref(),
    })
}

async fn post_inner(cx: Ctx<'_>, payload: web::Payload) -> Result<HttpResponse> {
    let params = read_form(cx.req, payload).await.map_err(Error::into_page)?;
    if params.get("csrf").is_none()
        && params.get("rid").is_none()
        && params.get("response_type").is_some()
    {
        // Not one of our forms: an authorization request sent as a form POST (OpenID Connect
        // Core §3.1.2.1), which any site may send, as it may link to the GET.
        return begin(&cx, &params, Via::Form).await;
    }
    login::check_csrf(cx.session, params.get("csrf"))?;
    let now = cx.svc.now();
    let rid = params.get("rid").ok_or_else(expired)?.to_string();
    let areq: AuthzRequest =
        login::get_pending(cx.session, &cx.tenant.id, &rid, now, PENDING_MAX_AGE)
            .ok_or_else(expired)?;
    let info = request_info(cx.req, cx.svc);
    let iss = cx.svc.issuer(cx.tenant);
    match params.get("action") {
        Some("login") => {
            let username = params.get("username").unwrap_or("");
            let password = Secret::new(params.get("password").unwrap_or(""));
            let outcome = if cx
                .svc
                .ip_limits
                .check(Bucket::SignIn, client_ip(cx.req, cx.svc))
            {
                cx.svc
                    .password_sign_in(cx.tenant, username, &password, &info)
                    .await?
            } else {
                return too_many_page(
                    login_page(&cx, &rid, &areq, Some(username), Some(TOO_MANY)).await?,
                );
            };
            if let login::PasswordOutcome::Ok(user, done) = outcome {
                login::sign_in_with_password(cx.session, cx.tenant, &user, now, &done)?;
                // The next step answers the form itself (the consent page, or the redirect
                // back to the client): one round trip fewer than a redirect to it.
                return proceed(&cx, &rid, areq, Via::Form).await;
            }
            let msg = outcome.message(now).unwrap_or_default();
            let mut resp = login_page(&cx, &rid, &areq, Some(username), Some(&msg)).await?;
            *resp.status_mut() = outcome.status();
            Ok(resp)
        }
        Some("approve") => {
            // Approving needs the sign-in the request asks for (`prompt=login`, `max_age`),
            // as reaching the consent page does: a hand-made approve is no way around it.
            let Some(signed) = login::signed_in(cx.svc, cx.session, cx.tenant)
                .await?
                .filter(|s| !areq.needs_login(Some(s)))
            else {
                return login_page(&cx, &rid, &areq, None, Some("Please sign in first.")).await;
            };
            // A client disabled since its consent page was shown gets no consent recorded and
            // no code (its token requests are refused anyway).
            client_name(&cx, &areq).await?;
            let grant_id = cx
                .svc
                .record_consent(cx.tenant, &areq, &signed.user.id, &info)
                .await?;
            login::remove_pending(cx.session, &cx.tenant.id, &rid);
            let url = cx
                .svc
                .issue_code(cx.tenant, &areq, &signed, &grant_id)
                .await?;
            Ok(redirect(&url, Via::Form))
        }
        Some("deny") => {
            login::remove_pending(cx.session, &cx.tenant.id, &rid);
            // The answer goes to the request's redirect URI: only while it is registered.
            client_name(&cx, &areq).await?;
            let mut ev = AuditEvent::new("consent", "denied", Some(&cx.tenant.id), &info)
                .client(&areq.client_id);
            if let Some(s) = login::signed_in(cx.svc, cx.session, cx.tenant).await? {
                ev = ev.user(&s.user.id);
            }
            cx.svc.store.insert_audit(ev, now).await?;
            Ok(authz_error(
                areq.error_redirect(&iss, "access_denied", "the user declined"),
                Via::Form,
            ))
        }
        _ => Err(Error::bad_page(
            "Unknown action",
            "The form was not understood. Go back and try again.",
        )),
    }
}
