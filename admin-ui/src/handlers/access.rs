//! Access: grants, browser sessions, signing keys.
use actix_session::Session;
use actix_web::{HttpRequest, web};

use super::done;
use crate::Ui;
use crate::port::{AdminError, GrantFilter};
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
    if !f.confirmed() {
        // An unknown id (or another tenant's) is not found, before and after confirming.
        let one = GrantFilter {
            grant_id: Some(id.clone()),
            ..GrantFilter::default()
        };
        if ui.port.grants(&tenant.id, &one).await?.is_empty() {
            return Err(Fail::Admin(AdminError::NotFound));
        }
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
        b if b.starts_with(&format!("/admin/t/{}/", tenant.slug)) && !b.contains("//") => {
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
    let sessions = ui.port.sessions(&tenant.id, None).await?;
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
    if !f.confirmed() {
        let sessions = ui.port.sessions(&tenant.id, None).await?;
        if !sessions.iter().any(|s| s.id == id) {
            return Err(Fail::Admin(AdminError::NotFound));
        }
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
    ui.port
        .rotate_keys(&actor, &tenant.id, &ui.port.origin(&req))
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/keys", tenant.slug),
        "Signing keys rotated.",
    )
}
