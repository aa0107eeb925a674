//! Federation pages: start an upstream sign-in (or a link), the callback, and unlinking.
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::account::member_form;
use super::authorize::{Via, pending_auth_after, pending_login_page, redirect};
use super::{Svc, pages, read_form, read_query, request_info};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::federation::{FedError, FedOutcome, FedPending};
use crate::login;
use crate::services::Services;
use crate::store::Removed;

/// How long an upstream sign-in may take.
const FED_MAX_AGE: i64 = 15 * 60;

fn pending_key(state: &str) -> String {
    format!("fed.{state}")
}

/// Only our own pages are places to go back to.
fn safe_back(slug: &str, back: &str) -> String {
    match back {
        "alexa" => "/alexa/authorize".into(),
        "authorize" => format!("/t/{slug}/authorize"),
        "login" => format!("/t/{slug}/login"),
        _ => format!("/t/{slug}/account"),
    }
}

fn with_rid(back: &str, rid: Option<&str>) -> String {
    match rid {
        Some(r) if back.ends_with("/authorize") => format!("{back}?rid={r}"),
        _ => back.to_string(),
    }
}

/// POST `/t/{t}/federation/{provider}/start`: from the sign-in page (purpose `sign_in`) or
/// the account page (purpose `link`).
pub async fn start(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, provider) = path.into_inner();
    let tenant = svc.tenant(&slug).await?;
    let params = read_form(&req, payload).await.map_err(Error::into_page)?;
    login::check_csrf(&session, params.get("csrf"))?;
    let cfg = svc
        .provider_config(&tenant, &provider)
        .await?
        .ok_or_else(|| Error::not_found("There is no such sign-in provider here."))?;
    let purpose = match params.get("purpose") {
        Some("link") => "link",
        _ => "sign_in",
    };
    let link_user_id = if purpose == "link" {
        match login::signed_in(&svc, &session, &tenant).await? {
            Some(s) => Some(s.user.id),
            None => return Ok(redirect(&format!("/t/{}/login", tenant.slug), Via::Form)),
        }
    } else {
        None
    };
    let rid = params
        .get("rid")
        .filter(|r| {
            r.len() <= 64
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_string);
    let back = safe_back(&tenant.slug, params.get("back").unwrap_or("account"));
    let name = cfg.model.display_name.clone();
    // A sign-in for a pending request that needs a fresh authentication (`prompt=login`,
    // `max_age`) asks the upstream for one, and checks that it happened.
    let auth_after = match (purpose, rid.as_deref()) {
        ("sign_in", Some(r)) => pending_auth_after(&svc, &session, &tenant, r),
        _ => None,
    };
    match svc
        .federation_start(
            &cfg,
            purpose,
            link_user_id,
            rid.clone(),
            back.clone(),
            auth_after,
        )
        .await
    {
        Ok((url, state, pending)) => {
            // At most a few upstream sign-ins in flight per browser.
            let old: Vec<String> = session
                .entries()
                .keys()
                .filter(|k| k.starts_with("fed."))
                .cloned()
                .collect();
            if old.len() >= 4 {
                for k in old {
                    session.remove(&k);
                }
            }
            session
                .insert(pending_key(&state), &pending)
                .map_err(|e| Error::internal(format!("session: {e}")))?;
            Ok(redirect(&url, Via::Form))
        }
        Err(e) => {
            fail_audit(&svc, &req, &tenant.id, &cfg.model.slug, &e).await?;
            refusal(
                &svc,
                &req,
                &session,
                &tenant,
                &e,
                &name,
                (&back, rid.as_deref()),
            )
            .await
        }
    }
}

/// The answer to a failed upstream sign-in for `(back, rid)`. One refused for want of a fresh
/// authentication is the pending request's sign-in page with the reason on it (a password or
/// passkey is the way on); any other, or one whose request is gone, the error's page.
async fn refusal(
    svc: &Svc,
    req: &HttpRequest,
    session: &Session,
    tenant: &entity::tenant::Model,
    e: &FedError,
    provider: &str,
    (back, rid): (&str, Option<&str>),
) -> Result<HttpResponse> {
    if matches!(
        e,
        FedError::StaleAuthentication(_) | FedError::NoReauthentication
    ) && back.ends_with("/authorize")
        && let Some(rid) = rid
        && let Some(mut page) =
            pending_login_page(svc, req, session, tenant, back, rid, &e.page(provider).1).await?
    {
        *page.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(page);
    }
    fed_error_page(e, provider, &with_rid(back, rid))
}

async fn fail_audit(
    svc: &Svc,
    req: &HttpRequest,
    tenant_id: &str,
    provider: &str,
    e: &FedError,
) -> Result<()> {
    svc.store
        .insert_audit(
            AuditEvent::new(
                "sign_in",
                "failed",
                Some(tenant_id),
                &request_info(req, svc),
            )
            .detail(serde_json::json!({
                "method": "federation",
                "provider": provider,
                "reason": e.reason(),
                "upstream": e.detail(),
            })),
            svc.now(),
        )
        .await
}

fn fed_error_page(e: &FedError, provider: &str, back: &str) -> Result<HttpResponse> {
    let (title, text) = e.page(provider);
    let mut resp = pages::message(&title, &text, Some((back, "Back to sign-in")))?;
    *resp.status_mut() = match e {
        FedError::Unreachable(_) => StatusCode::BAD_GATEWAY,
        FedError::Misconfigured(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    Ok(resp)
}

/// GET `/t/{t}/federation/{provider}/callback`: the upstream sends the browser back here.
pub async fn callback(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, provider) = path.into_inner();
    let tenant = svc.tenant(&slug).await?;
    let cfg = svc
        .provider_config(&tenant, &provider)
        .await?
        .ok_or_else(|| Error::not_found("There is no such sign-in provider here."))?;
    let name = cfg.model.display_name.clone();
    let params = read_query(&req).map_err(Error::into_page)?;
    let now = svc.now();
    let state = params.get("state").unwrap_or("");
    let pending: Option<FedPending> = if state.is_empty() || state.len() > 200 {
        None
    } else {
        let p = session
            .get::<FedPending>(&pending_key(state))
            .ok()
            .flatten();
        session.remove(&pending_key(state));
        p
    };
    let default_back = format!("/t/{}/login", tenant.slug);
    let Some(pending) =
        pending.filter(|p| p.provider_id == cfg.model.id && now - p.created_at <= FED_MAX_AGE)
    else {
        let e = FedError::StateMismatch;
        fail_audit(&svc, &req, &tenant.id, &cfg.model.slug, &e).await?;
        return fed_error_page(&e, &name, &default_back);
    };
    let back = with_rid(&pending.back, pending.rid.as_deref());
    if let Some(err) = params.get("error") {
        let e = if err == "access_denied" {
            FedError::Cancelled
        } else {
            FedError::UpstreamError(format!(
                "{err}: {}",
                params.get("error_description").unwrap_or("")
            ))
        };
        fail_audit(&svc, &req, &tenant.id, &cfg.model.slug, &e).await?;
        return fed_error_page(&e, &name, &back);
    }
    let Some(code) = params
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        let e = FedError::UpstreamError("the callback has no code".into());
        fail_audit(&svc, &req, &tenant.id, &cfg.model.slug, &e).await?;
        return fed_error_page(&e, &name, &back);
    };
    let up = match svc.federation_identify(&cfg, &pending, code).await {
        Ok(u) => u,
        Err(e) => {
            fail_audit(&svc, &req, &tenant.id, &cfg.model.slug, &e).await?;
            return refusal(
                &svc,
                &req,
                &session,
                &tenant,
                &e,
                &name,
                (&pending.back, pending.rid.as_deref()),
            )
            .await;
        }
    };
    let info = request_info(&req, &svc);
    // (A refusal here, such as the provider's settings changing during this sign-in, is a
    // page: a browser is on the other end.)
    let outcome = svc
        .federation_finish(&tenant, &cfg, &up, &pending, &info)
        .await
        .map_err(Error::into_page)?;
    match outcome {
        FedOutcome::SignedIn(user, amr) => {
            let amr: Vec<&str> = amr.iter().map(String::as_str).collect();
            // A sign-in that had to be fresh took place when the upstream says (checked to be
            // late enough by `federation_identify`), never later than now.
            let auth_time = match (pending.auth_after, up.auth_time) {
                (Some(_), Some(a)) => a.min(now),
                _ => now,
            };
            login::sign_in(&session, &tenant, &user, &amr, auth_time)?;
            Ok(redirect(&back, Via::Get))
        }
        FedOutcome::Linked => Ok(redirect(
            &format!("/t/{}/account?done=linked", tenant.slug),
            Via::Get,
        )),
        FedOutcome::NotLinked => {
            let mut r = pages::message(
                &format!("This {name} account is not linked yet"),
                &format!(
                    "No member of {} has linked this {name} account. Sign in with your password or passkey first, then link {name} from your account page — or ask an admin to link it for you.",
                    tenant.name
                ),
                Some((&back, "Back to sign-in")),
            )?;
            *r.status_mut() = StatusCode::FORBIDDEN;
            Ok(r)
        }
        FedOutcome::LinkedElsewhere => {
            let mut r = pages::message(
                &format!("This {name} account belongs to another member"),
                &format!(
                    "This {name} account is already linked to another member of {}. An account can be linked to one member only; ask an admin if this is wrong.",
                    tenant.name
                ),
                Some((
                    &format!("/t/{}/account", tenant.slug),
                    "Back to your account",
                )),
            )?;
            *r.status_mut() = StatusCode::CONFLICT;
            Ok(r)
        }
    }
}

/// POST `/t/{t}/account/identities/{id}/unlink`.
pub async fn unlink(
    svc: Svc,
    req: HttpRequest,
    session: Session,
    payload: web::Payload,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (slug, id) = path.into_inner();
    let (tenant, s, _) = match member_form(&svc, &req, &session, payload, &slug).await? {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    match svc
        .unlink_identity(
            &tenant,
            &s.user.id,
            &id,
            Services::own_removal(&tenant),
            "self",
            &request_info(&req, &svc),
        )
        .await?
    {
        Removed::Done => {}
        Removed::NotFound => return Err(Error::not_found("There is no such linked account.")),
        Removed::LastWayIn => return Ok(super::account::last_way_in(&tenant)),
    }
    Ok(redirect(
        &format!("/t/{}/account?done=unlinked", tenant.slug),
        Via::Form,
    ))
}
