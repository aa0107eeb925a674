//! Request handlers: parse, check, call the port, render.
pub mod access;
pub mod audit;
pub mod auth;
pub mod clients;
pub mod dashboard;
pub mod tenants;
pub mod users;

use actix_session::Session;
use actix_web::{HttpRequest, web};

use crate::Ui;
use crate::port::AdminError;
use crate::web_util::{Fail, Form, Res, admin, see_other};

/// `/admin`: the operator's tenant list, or a tenant admin's own tenant.
pub async fn home(ui: web::Data<Ui>, session: Session) -> Res {
    let actor = admin(&ui, &session).await?;
    if crate::authz::is_operator(&actor) {
        Ok(see_other("/admin/tenants"))
    } else {
        Ok(see_other(&format!("/admin/t/{}", actor.tenant_slug)))
    }
}

pub async fn not_found(ui: web::Data<Ui>, session: Session) -> Res {
    // Strangers are sent to sign in; they learn nothing about which pages exist.
    admin(&ui, &session).await?;
    Err(Fail::Admin(AdminError::NotFound))
}

/// After a failed form: an invalid input goes back to the page with the message on it, and
/// the form's values (see `Form::keep`) filled in again.
pub(crate) fn or_back<T>(
    session: &Session,
    to: &str,
    (req, f): (&HttpRequest, &Form),
    r: Result<T, Fail>,
) -> Result<T, Fail> {
    match r {
        Err(Fail::Admin(AdminError::Invalid(m))) => {
            crate::web_util::flash(session, &format!("error:{m}"));
            f.keep(session, req);
            Err(Fail::Redirect(to.to_string()))
        }
        other => other,
    }
}

pub(crate) fn done(session: &Session, to: &str, msg: &str) -> Res {
    crate::web_util::flash(session, &format!("ok:{msg}"));
    Ok(see_other(to))
}
