//! Users: search, create, disable/enable, role, password reset, enrollment links, passkeys,
//! linked identities, sessions and grants.
use actix_session::Session;
use actix_web::{HttpRequest, web};

use super::{done, or_back};
use crate::Ui;
use crate::port::{AdminError, GrantFilter, NewUser, SessionFilter};
use crate::web_util::{Fail, Res, View, confirm, form, invalid, query, scoped};

const PAGE: u64 = 25;

pub async fn list(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let q = query(&req);
    let search = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    let offset = crate::web_util::offset_param(q.get("offset").map(String::as_str));
    let page = ui.port.users(&tenant.id, &search, offset, PAGE).await?;
    let enc: String = form_urlencoded::byte_serialize(search.as_bytes()).collect();
    let base = format!("/admin/t/{}/users?q={enc}", tenant.slug);
    let next = (offset + PAGE < page.total).then(|| format!("{base}&offset={}", offset + PAGE));
    let prev = (offset > 0).then(|| format!("{base}&offset={}", offset.saturating_sub(PAGE)));
    View::new(&session, "Users")
        .actor(&actor)
        .tenant(&tenant)
        .with("page", &page)
        .with("q", &search)
        .with("next", &next)
        .with("prev", &prev)
        .render("admin/users.html")
}

pub async fn create(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let back = format!("/admin/t/{}/users", tenant.slug);
    let role = match f.trimmed("role") {
        "" => "member",
        r => r,
    };
    if !crate::authz::may_assign_role(&actor, role) {
        return or_back(
            &session,
            &back,
            (&req, &f),
            Err(invalid("You cannot give that role.")),
        );
    }
    let opt = |k: &str| Some(f.trimmed(k).to_string()).filter(|s| !s.is_empty());
    let r = ui
        .port
        .create_user(
            &actor,
            &tenant.id,
            NewUser {
                username: f.trimmed("username").to_string(),
                display_name: opt("display_name"),
                email: opt("email"),
                password: f.get("password").to_string(),
                role: role.to_string(),
            },
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    let u = or_back(&session, &back, (&req, &f), r)?;
    done(
        &session,
        &format!("/admin/t/{}/users/{}", tenant.slug, u.id),
        &format!("User {} created.", u.username),
    )
}

pub async fn show(ui: web::Data<Ui>, session: Session, path: web::Path<(String, String)>) -> Res {
    let (slug, id) = path.into_inner();
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let user = ui
        .port
        .user(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    let passkeys = ui.port.passkeys(&tenant.id, &user.id).await?;
    let identities = ui.port.identities(&tenant.id, &user.id).await?;
    let providers = ui.port.providers(&tenant.id).await?;
    let sessions = ui
        .port
        .sessions(
            &tenant.id,
            &SessionFilter {
                user_id: Some(user.id.clone()),
                ..SessionFilter::default()
            },
        )
        .await?;
    let grants = ui
        .port
        .grants(
            &tenant.id,
            &GrantFilter {
                user_id: Some(user.id.clone()),
                client_pk: None,
                grant_id: None,
            },
        )
        .await?;
    let manage = crate::authz::may_manage_user(&actor, &user.role);
    View::new(&session, &user.username)
        .actor(&actor)
        .tenant(&tenant)
        .with("user", &user)
        .with("passkeys", &passkeys)
        .with("identities", &identities)
        .with("providers", &providers)
        .with("sessions", &sessions)
        .with("grants", &grants)
        .with("may_manage", &manage)
        .with(
            "back",
            &format!("/admin/t/{}/users/{}", tenant.slug, user.id),
        )
        .render("admin/user.html")
}

pub async fn action(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id, action) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let user = ui
        .port
        .user(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    let back = format!("/admin/t/{}/users/{}", tenant.slug, user.id);
    if !crate::authz::may_manage_user(&actor, &user.role) {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    let origin = ui.port.origin(&req);
    let (port, tid, uid) = (&ui.port, tenant.id.as_str(), user.id.as_str());
    let name = &user.username;
    match action.as_str() {
        "disable" => {
            if !f.confirmed() {
                return confirm(
                    &session,
                    &req,
                    &f,
                    (&actor, &tenant),
                    &format!(
                        "Disable {name}? They can no longer sign in, and their sessions end. Their linked apps stop working while the account is disabled (Alexa unlinks it)."
                    ),
                    "Disable",
                );
            }
            port.set_user_disabled(&actor, tid, uid, true, &origin)
                .await?;
            done(&session, &back, &format!("{name} is disabled."))
        }
        "enable" => {
            port.set_user_disabled(&actor, tid, uid, false, &origin)
                .await?;
            done(&session, &back, &format!("{name} is enabled."))
        }
        "role" => {
            let role = f.trimmed("role");
            if !crate::authz::may_assign_role(&actor, role) {
                return or_back(
                    &session,
                    &back,
                    (&req, &f),
                    Err(invalid("You cannot give that role.")),
                );
            }
            let r = port
                .set_user_role(&actor, tid, uid, role, &origin)
                .await
                .map_err(Into::into);
            or_back(&session, &back, (&req, &f), r)?;
            done(&session, &back, &format!("{name} is now {role}."))
        }
        "password" => {
            if f.get("password") != f.get("password2") {
                return or_back(
                    &session,
                    &back,
                    (&req, &f),
                    Err(invalid("The two passwords differ.")),
                );
            }
            let r = port
                .reset_password(&actor, tid, uid, f.get("password"), &origin)
                .await
                .map_err(Into::into);
            or_back(&session, &back, (&req, &f), r)?;
            done(
                &session,
                &back,
                &format!(
                    "The password of {name} was changed; browsers signed in as {name} are signed out."
                ),
            )
        }
        "enroll" => {
            let link = port.enrollment_link(&actor, tid, uid, &origin).await?;
            View::new(&session, "Passkey enrollment link")
                .actor(&actor)
                .tenant(&tenant)
                .with("user", &user)
                .with("link", &link)
                .render("admin/link.html")
        }
        "end-sessions" => {
            if !f.confirmed() {
                return confirm(
                    &session,
                    &req,
                    &f,
                    (&actor, &tenant),
                    &format!("Sign {name} out of every browser?"),
                    "End sessions",
                );
            }
            let n = port.end_user_sessions(&actor, tid, uid, &origin).await?;
            done(&session, &back, &format!("{n} session(s) of {name} ended."))
        }
        "revoke-grants" => {
            if !f.confirmed() {
                return confirm(
                    &session,
                    &req,
                    &f,
                    (&actor, &tenant),
                    &format!(
                        "Revoke every app {name} has linked? Their refresh tokens stop working at once."
                    ),
                    "Revoke all",
                );
            }
            let n = port
                .revoke_grants(
                    &actor,
                    tid,
                    &GrantFilter {
                        user_id: Some(uid.to_string()),
                        client_pk: None,
                        grant_id: None,
                    },
                    &origin,
                )
                .await?;
            done(&session, &back, &format!("{n} grant(s) of {name} revoked."))
        }
        "link" => {
            let r = port
                .link_identity(
                    &actor,
                    tid,
                    uid,
                    f.trimmed("provider"),
                    f.trimmed("subject"),
                    &origin,
                )
                .await
                .map_err(Into::into);
            or_back(&session, &back, (&req, &f), r)?;
            done(&session, &back, &format!("Linked to {name}."))
        }
        _ => Err(Fail::Admin(AdminError::NotFound)),
    }
}

pub async fn unlink_identity(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id, iid) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let user = ui
        .port
        .user(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    if !crate::authz::may_manage_user(&actor, &user.role) {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    let ids = ui.port.identities(&tenant.id, &user.id).await?;
    if !ids.iter().any(|i| i.id == iid) {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            &format!(
                "Unlink this sign-in account from {}? It can no longer sign them in.",
                user.username
            ),
            "Unlink",
        );
    }
    ui.port
        .unlink_identity(&actor, &tenant.id, &user.id, &iid, &ui.port.origin(&req))
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/users/{}", tenant.slug, user.id),
        "Sign-in account unlinked.",
    )
}

pub async fn remove_passkey(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id, pid) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let user = ui
        .port
        .user(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    if !crate::authz::may_manage_user(&actor, &user.role) {
        return Err(Fail::Admin(AdminError::NotFound));
    }
    if !f.confirmed() {
        // An unknown passkey (or another user's) is not found, before and after confirming.
        let passkeys = ui.port.passkeys(&tenant.id, &user.id).await?;
        if !passkeys.iter().any(|p| p.id == pid) {
            return Err(Fail::Admin(AdminError::NotFound));
        }
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            &format!(
                "Remove this passkey of {}? It can no longer sign in.",
                user.username
            ),
            "Remove passkey",
        );
    }
    ui.port
        .remove_passkey(&actor, &tenant.id, &user.id, &pid, &ui.port.origin(&req))
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/users/{}", tenant.slug, user.id),
        "Passkey removed.",
    )
}
