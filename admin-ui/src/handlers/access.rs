//! Access: grants, browser sessions, signing keys.
use actix_session::Session;
use actix_web::{HttpRequest, web};

use super::{done, or_back};
use crate::Ui;
use crate::port::{AdminError, GrantFilter, SessionFilter};
use crate::web_util::{Fail, Res, View, confirm, form, scoped};

pub async fn grants(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let grants = ui.port.grants(&tenant.id, &GrantFilter::default()).await?;
    View::new(&session, "Grants")
        .actor(&actor)
        .tenant(&tenant)
        .with("grants", &grants)
        .with("back", &format!("/admin/t/{}/grants", tenant.slug))
        .render("admin/grants.html")
}

pub async fn revoke_grant(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    // An unknown id (or another tenant's, or an operator's grant to a tenant admin) is not
    // found, before and after confirming.
    let one = GrantFilter {
        grant_id: Some(id.clone()),
        ..GrantFilter::default()
    };
    let Some(grant) = ui.port.grants(&tenant.id, &one).await?.into_iter().next() else {
        return Err(Fail::Admin(AdminError::NotFound));
    };
    if !may_manage_owner(&ui, &actor, &tenant.id, Some(&grant.user_id)).await? {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            "Revoke this grant? Its refresh tokens stop working at once; the account must be linked again.",
            "Revoke",
        );
    }
    ui.port
        .revoke_grant(&actor, &tenant.id, &id, &ui.port.origin(&req))
        .await?;
    let back = match f.get("back") {
        // (A control character would not make a Location header.)
        b if b.starts_with(&format!("/admin/t/{}/", tenant.slug))
            && !b.contains("//")
            && !b.chars().any(char::is_control) =>
        {
            b.to_string()
        }
        _ => format!("/admin/t/{}/grants", tenant.slug),
    };
    done(
        &session,
        &back,
        &format!(
            "Grant revoked. Access tokens already issued stay valid for offline validators for at most {} (introspection says inactive now).",
            crate::web_util::human_duration(tenant.access_token_ttl)
        ),
    )
}

pub async fn sessions(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let sessions = ui
        .port
        .sessions(&tenant.id, &SessionFilter::default())
        .await?;
    View::new(&session, "Sessions")
        .actor(&actor)
        .tenant(&tenant)
        .with("sessions", &sessions)
        .render("admin/sessions.html")
}

pub async fn end_session(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    // As with grants: an operator's session is not a tenant admin's to end. An unknown id (or
    // another tenant's) is not found, before and after confirming.
    let one = SessionFilter {
        session_id: Some(id.clone()),
        ..SessionFilter::default()
    };
    let Some(target) = ui.port.sessions(&tenant.id, &one).await?.into_iter().next() else {
        return Err(Fail::Admin(AdminError::NotFound));
    };
    if !may_manage_owner(&ui, &actor, &tenant.id, target.user_id.as_deref()).await? {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            "End this session? That browser is signed out.",
            "End session",
        );
    }
    ui.port
        .end_session(&actor, &tenant.id, &id, &ui.port.origin(&req))
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/sessions", tenant.slug),
        "Session ended.",
    )
}

/// Whether `actor` may act on what belongs to the member `user_id` (a grant, a browser
/// session): an operator's belongings are an operator's to manage, as the operator's account
/// is (`authz::may_manage_user`). Nothing of a member, or of no member, is refused.
async fn may_manage_owner(
    ui: &Ui,
    actor: &crate::port::Actor,
    tenant_id: &str,
    user_id: Option<&str>,
) -> Result<bool, Fail> {
    let Some(uid) = user_id else {
        return Ok(true);
    };
    Ok(match ui.port.user(tenant_id, uid).await? {
        Some(u) => crate::authz::may_manage_user(actor, &u.role),
        None => true,
    })
}

pub async fn keys(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let keys = ui.port.keys(&tenant.id).await?;
    View::new(&session, "Signing keys")
        .actor(&actor)
        .tenant(&tenant)
        .with("keys", &keys)
        .render("admin/keys.html")
}

pub async fn rotate_keys(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            "Rotate the signing keys? New tokens are signed with new keys at once; the old keys stay published until the tokens they signed expire.",
            "Rotate keys",
        );
    }
    let page = format!("/admin/t/{}/keys", tenant.slug);
    // Refused (the next keys are too young): back to the keys page with the reason.
    or_back(
        &session,
        &page,
        (&req, &f),
        ui.port
            .rotate_keys(
                &actor,
                &tenant.id,
                &ui.port.origin(&req),
                f.get("force") == "yes",
            )
            .await
            .map_err(Fail::Admin),
    )?;
    done(&session, &page, "Signing keys rotated.")
}
