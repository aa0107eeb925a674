//! Sign-in, sign-out, and the one-time operator setup link.
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};

use crate::Ui;
use crate::port::{AdminError, SignInResult};
use crate::web_util::{Fail, Res, View, admin, form, see_other, start_admin_session};

pub async fn login_get(ui: web::Data<Ui>, session: Session) -> Res {
    if admin(&ui, &session).await.is_ok() {
        return Ok(see_other("/admin"));
    }
    let default_slug = ui
        .port
        .tenants()
        .await?
        .into_iter()
        .find(|t| t.is_default)
        .map(|t| t.slug)
        .unwrap_or_default();
    View::new(&session, "Admin sign-in")
        .with("tenant_slug", &default_slug)
        .with("username", &"")
        .render("admin/login.html")
}

pub async fn login_post(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let slug = f.trimmed("tenant");
    let username = f.trimmed("username");
    let origin = ui.port.origin(&req);
    match ui
        .port
        .sign_in(slug, username, f.get("password"), &origin)
        .await?
    {
        SignInResult::Ok(actor) => {
            start_admin_session(&session, &actor)?;
            Ok(see_other("/admin"))
        }
        SignInResult::Refused(msg, status) => View::new(&session, "Admin sign-in")
            .with("tenant_slug", &slug)
            .with("username", &username)
            .with("error", &msg)
            .render_status("admin/login.html", status),
    }
}

pub async fn logout(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    body: web::Bytes,
) -> Res {
    form(&req, &body, &session)?;
    if let Ok(actor) = admin(&ui, &session).await {
        ui.port
            .record_sign_out(&actor, &ui.port.origin(&req))
            .await?;
    }
    session.purge();
    Ok(see_other("/admin/login"))
}

pub async fn setup_get(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    if !ui.port.setup_link_valid(&path).await? {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    let tenants = ui.port.tenants().await?;
    let slug = tenants
        .iter()
        .find(|t| t.is_default)
        .or(tenants.first())
        .map(|t| t.slug.clone())
        .unwrap_or_else(|| "home".into());
    View::new(&session, "Set up ma-idp")
        .with("tenant_slug", &slug)
        .with("tenant_name", &"Home")
        .with("tenant_exists", &!tenants.is_empty())
        .with("username", &"")
        .render("admin/setup.html")
}

pub async fn setup_post(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    if !ui.port.setup_link_valid(&path).await? {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    let (slug, name, username) = (
        f.trimmed("tenant"),
        f.trimmed("tenant_name"),
        f.trimmed("username"),
    );
    let err = if f.get("password") != f.get("password2") {
        Some("The two passwords differ.".to_string())
    } else {
        match ui
            .port
            .complete_setup(
                &path,
                slug,
                name,
                username,
                f.get("password"),
                &ui.port.origin(&req),
            )
            .await
        {
            Ok(actor) => {
                start_admin_session(&session, &actor)?;
                crate::web_util::flash(
                    &session,
                    "ok:Your operator account is ready. The setup link no longer works.",
                );
                return Ok(see_other("/admin"));
            }
            Err(AdminError::Invalid(m)) => Some(m),
            Err(e) => return Err(e.into()),
        }
    };
    let exists = ui.port.tenant_by_slug(slug).await?.is_some();
    View::new(&session, "Set up ma-idp")
        .with("tenant_slug", &slug)
        .with("tenant_name", &name)
        .with("tenant_exists", &exists)
        .with("username", &username)
        .with("error", &err)
        .render_status("admin/setup.html", StatusCode::BAD_REQUEST)
}
