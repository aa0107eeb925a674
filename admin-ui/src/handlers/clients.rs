//! Clients: create (the secret is shown once), "Add Alexa skill", edit, rotate the secret,
//! revoke every grant of a client.
use actix_session::Session;
use actix_web::{HttpRequest, web};

use super::{done, or_back};
use crate::Ui;
use crate::port::{AdminError, ClientSettings, CreatedClient, GrantFilter, NewClient, TenantView};
use crate::web_util::{Fail, Res, View, confirm, form, invalid, opt_seconds, scoped};

pub async fn list(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let clients = ui.port.clients(&tenant.id).await?;
    View::new(&session, "Clients")
        .actor(&actor)
        .tenant(&tenant)
        .with("clients", &clients)
        .render("admin/clients.html")
}

fn lines(s: &str) -> Vec<String> {
    s.split(['\n', '\r', ' ', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn created(
    ui: &Ui,
    session: &Session,
    actor: &crate::port::Actor,
    tenant: &TenantView,
    c: CreatedClient,
    heading: &str,
) -> Res {
    let alexa = match c.client.alexa_vendor_id {
        Some(_) => Some(ui.port.alexa_values(&tenant.id, &c.client.id).await?),
        None => None,
    };
    View::new(session, heading)
        .actor(actor)
        .tenant(tenant)
        .with("client", &c.client)
        .with("secret", &c.secret)
        .with("alexa", &alexa)
        .render("admin/secret.html")
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
    let back = format!("/admin/t/{}/clients", tenant.slug);
    let scopes = Some(f.trimmed("scopes").to_string()).filter(|s| !s.is_empty());
    let r = ui
        .port
        .create_client(
            &actor,
            &tenant.id,
            NewClient {
                name: f.trimmed("name").to_string(),
                redirect_uris: lines(f.get("redirect_uris")),
                scopes,
                public: f.checked("public"),
                alexa_vendor_id: None,
            },
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    let c = or_back(&session, &back, (&req, &f), r)?;
    created(&ui, &session, &actor, &tenant, c, "Client created").await
}

/// "Add Alexa skill": one field, the Vendor ID.
pub async fn create_alexa(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let back = format!("/admin/t/{}/clients", tenant.slug);
    let name = match f.trimmed("name") {
        "" => "Alexa",
        n => n,
    };
    let r = ui
        .port
        .create_client(
            &actor,
            &tenant.id,
            NewClient {
                name: name.to_string(),
                redirect_uris: Vec::new(),
                scopes: None,
                public: false,
                alexa_vendor_id: Some(f.trimmed("vendor_id").to_string()),
            },
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    let c = or_back(&session, &back, (&req, &f), r)?;
    created(&ui, &session, &actor, &tenant, c, "Alexa skill added").await
}

pub async fn show(ui: web::Data<Ui>, session: Session, path: web::Path<(String, String)>) -> Res {
    let (slug, id) = path.into_inner();
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let client = ui
        .port
        .client(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    let alexa = match client.alexa_vendor_id {
        Some(_) => Some(ui.port.alexa_values(&tenant.id, &client.id).await?),
        None => None,
    };
    let grants = ui
        .port
        .grants(
            &tenant.id,
            &GrantFilter {
                user_id: None,
                client_pk: Some(client.id.clone()),
                grant_id: None,
            },
        )
        .await?;
    View::new(&session, &client.name)
        .actor(&actor)
        .tenant(&tenant)
        .with("client", &client)
        .with("redirect_text", &client.redirect_uris.join("\n"))
        .with("alexa", &alexa)
        .with("grants", &grants)
        .with(
            "back",
            &format!("/admin/t/{}/clients/{}", tenant.slug, client.id),
        )
        .render("admin/client.html")
}

pub async fn update(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let client = ui
        .port
        .client(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    let back = format!("/admin/t/{}/clients/{}", tenant.slug, client.id);
    let settings = (|| {
        let auth_method = f.trimmed("auth_method").to_string();
        if !["any", "client_secret_basic", "client_secret_post", "none"]
            .contains(&auth_method.as_str())
        {
            return Err(invalid("Choose a client authentication method."));
        }
        Ok(ClientSettings {
            name: f.trimmed("name").to_string(),
            redirect_uris: lines(f.get("redirect_uris")),
            scopes: f.trimmed("scopes").to_string(),
            access_token_ttl: opt_seconds(
                &f,
                "access_token_ttl",
                "The access-token lifetime",
                60,
                86_400,
            )?,
            refresh_token_ttl: opt_seconds(
                &f,
                "refresh_token_ttl",
                "The refresh-token lifetime",
                3600,
                10 * 365 * 86_400,
            )?,
            require_pkce: f.checked("require_pkce"),
            auth_method,
            disabled: f.checked("disabled"),
        })
    })();
    let settings = or_back(&session, &back, (&req, &f), settings)?;
    let r = ui
        .port
        .update_client(
            &actor,
            &tenant.id,
            &client.id,
            settings,
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    or_back(&session, &back, (&req, &f), r)?;
    done(&session, &back, "Client saved.")
}

pub async fn rotate_secret(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let client = ui
        .port
        .client(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            &format!(
                "Give {} a new client secret? The old one stops working at once: update it wherever it is configured (for Alexa, in the skill's account-linking settings).",
                client.name
            ),
            "Rotate secret",
        );
    }
    let r = ui
        .port
        .rotate_client_secret(&actor, &tenant.id, &client.id, &ui.port.origin(&req))
        .await
        .map_err(Into::into);
    let secret = or_back(
        &session,
        &format!("/admin/t/{}/clients/{}", tenant.slug, client.id),
        (&req, &f),
        r,
    )?;
    created(
        &ui,
        &session,
        &actor,
        &tenant,
        CreatedClient {
            client,
            secret: Some(secret),
        },
        "New client secret",
    )
    .await
}

pub async fn revoke_grants(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (slug, id) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &slug).await?;
    let client = ui
        .port
        .client(&tenant.id, &id)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            &format!(
                "Revoke every grant of {}? Every account linked through it must link again.",
                client.name
            ),
            "Revoke all",
        );
    }
    let n = ui
        .port
        .revoke_grants(
            &actor,
            &tenant.id,
            &GrantFilter {
                user_id: None,
                client_pk: Some(client.id.clone()),
                grant_id: None,
            },
            &ui.port.origin(&req),
        )
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/clients/{}", tenant.slug, client.id),
        &format!("{n} grant(s) of {} revoked.", client.name),
    )
}
