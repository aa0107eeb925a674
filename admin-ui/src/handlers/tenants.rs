//! Tenants: list and create (operators), settings, the default tenant for `/alexa/*`.
use actix_session::Session;
use actix_web::{HttpRequest, web};

use super::{done, or_back};
use crate::Ui;
use crate::port::{AdminError, ProviderEditForm, ProviderView, TenantSettings};
use crate::web_util::{
    Fail, Res, View, admin, confirm, form, operator_only, scoped, seconds, see_other,
};

pub async fn list(ui: web::Data<Ui>, session: Session) -> Res {
    let actor = admin(&ui, &session).await?;
    if !crate::authz::is_operator(&actor) {
        return Ok(see_other(&format!("/admin/t/{}", actor.tenant_slug)));
    }
    let tenants = ui.port.tenants().await?;
    View::new(&session, "Tenants")
        .actor(&actor)
        .with("tenants", &tenants)
        .render("admin/tenants.html")
}

pub async fn create(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let actor = admin(&ui, &session).await?;
    operator_only(&actor)?;
    let r = ui
        .port
        .create_tenant(
            &actor,
            f.trimmed("slug"),
            f.trimmed("name"),
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    let t = or_back(&session, "/admin/tenants", (&req, &f), r)?;
    done(
        &session,
        &format!("/admin/t/{}", t.slug),
        &format!("Tenant {} created, with its signing keys.", t.name),
    )
}

pub async fn settings_get(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    View::new(&session, "Settings")
        .actor(&actor)
        .tenant(&tenant)
        .render("admin/settings.html")
}

pub async fn settings_post(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let back = format!("/admin/t/{}/settings", tenant.slug);
    let settings = (|| {
        Ok(TenantSettings {
            name: f.trimmed("name").to_string(),
            access_token_ttl: seconds(
                &f,
                "access_token_ttl",
                "The access-token lifetime",
                60,
                86_400,
            )?,
            refresh_token_ttl: seconds(
                &f,
                "refresh_token_ttl",
                "The refresh-token lifetime",
                3600,
                10 * 365 * 86_400,
            )?,
            refresh_grace: seconds(&f, "refresh_grace", "The refresh grace window", 0, 300)?,
            passkeys_required: f.checked("passkeys_required"),
            fed_auto_create: f.checked("fed_auto_create"),
            fed_link_by_email: f.checked("fed_link_by_email"),
        })
    })();
    let settings = or_back(&session, &back, (&req, &f), settings)?;
    let r = ui
        .port
        .update_tenant(&actor, &tenant.id, settings, &ui.port.origin(&req))
        .await
        .map_err(Into::into);
    or_back(&session, &back, (&req, &f), r)?;
    done(&session, &back, "Settings saved.")
}

pub async fn make_default(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    operator_only(&actor)?;
    if !f.confirmed() {
        return crate::web_util::confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            &format!(
                "Make {} the tenant behind /alexa/authorize and /alexa/token? Alexa skills linked to another tenant through those URLs stop working.",
                tenant.name
            ),
            "Make default",
        );
    }
    ui.port
        .set_default_tenant(&actor, &tenant.id, &ui.port.origin(&req))
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/settings", tenant.slug),
        &format!("{} now answers /alexa/*.", tenant.name),
    )
}

pub async fn providers(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let providers = ui.port.providers(&tenant.id).await?;
    View::new(&session, "Sign-in providers")
        .actor(&actor)
        .tenant(&tenant)
        .with("providers", &providers)
        .render("admin/providers.html")
}

pub async fn add_provider(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Res {
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let back = format!("/admin/t/{}/providers", tenant.slug);
    let opt = |k: &str| Some(f.trimmed(k).to_string()).filter(|s| !s.is_empty());
    let kind = f.trimmed("kind").to_string();
    let slug = opt("slug").unwrap_or_else(|| kind.clone());
    let name = opt("display_name").unwrap_or_else(|| {
        if kind == "amazon" {
            "Amazon".into()
        } else {
            slug.clone()
        }
    });
    let r = ui
        .port
        .add_provider(
            &actor,
            &tenant.id,
            crate::port::NewProviderForm {
                kind,
                slug,
                display_name: name,
                client_id: f.trimmed("client_id").to_string(),
                client_secret: f.get("client_secret").trim().to_string(),
                region: opt("region"),
                issuer: opt("issuer"),
                scopes: opt("scopes"),
                auto_create: f.checked("auto_create"),
                link_by_email: f.checked("link_by_email"),
            },
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    let p = or_back(&session, &back, (&req, &f), r)?;
    done(
        &session,
        &back,
        &format!(
            "{} added. Register this redirect URI at the provider: {}",
            p.display_name, p.redirect_uri
        ),
    )
}

/// One provider's page: its settings to change, and its removal.
pub async fn provider_get(
    ui: web::Data<Ui>,
    session: Session,
    path: web::Path<(String, String)>,
) -> Res {
    let (t, slug) = path.into_inner();
    let (actor, tenant) = scoped(&ui, &session, &t).await?;
    let p = provider_of(&ui, &tenant.id, &slug).await?;
    View::new(&session, &p.display_name)
        .actor(&actor)
        .tenant(&tenant)
        .with("p", &p)
        .render("admin/provider.html")
}

pub async fn provider_post(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (t, slug) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &t).await?;
    let p = provider_of(&ui, &tenant.id, &slug).await?;
    let back = format!("/admin/t/{}/providers/{}", tenant.slug, p.slug);
    let amazon = p.kind == "amazon";
    let seen_client_id = f.opt("seen_client_id").map(str::to_string);
    let seen_issuer = f.opt("seen_issuer").filter(|_| !amazon).map(str::to_string);
    // A page opened before another change of the client ID or issuer is not saved over it;
    // the page then shows the settings as they are now (the submitted values are not kept).
    if seen_client_id.as_ref().is_some_and(|c| *c != p.client_id)
        || seen_issuer
            .as_ref()
            .is_some_and(|i| i != p.issuer.as_deref().unwrap_or(""))
    {
        crate::web_util::flash(
            &session,
            &format!("error:{}", crate::port::PROVIDER_CHANGED),
        );
        return Ok(crate::web_util::see_other(&back));
    }
    let r = ui
        .port
        .update_provider(
            &actor,
            &tenant.id,
            &p.slug,
            ProviderEditForm {
                display_name: f.trimmed("display_name").to_string(),
                client_id: f.trimmed("client_id").to_string(),
                client_secret: f.get("client_secret").trim().to_string(),
                scopes: f.trimmed("scopes").to_string(),
                region: amazon.then(|| f.trimmed("region").to_string()),
                issuer: (!amazon).then(|| f.trimmed("issuer").to_string()),
                auto_create: f.checked("auto_create"),
                link_by_email: f.checked("link_by_email"),
                enabled: f.checked("enabled"),
                seen_client_id,
                seen_issuer,
            },
            &ui.port.origin(&req),
        )
        .await
        .map_err(Into::into);
    let (p, links_removed) = or_back(&session, &back, (&req, &f), r)?;
    let msg = match links_removed {
        0 => format!("{} saved.", p.display_name),
        n => format!(
            "{} saved. Its issuer or client ID changed, so {n} linked sign-in{} removed: \
             those members sign in another way and link it again on their account page.",
            p.display_name,
            if n == 1 { " was" } else { "s were" }
        ),
    };
    done(&session, &back, &msg)
}

pub async fn provider_remove(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Res {
    let (t, slug) = path.into_inner();
    let f = form(&req, &body, &session)?;
    let (actor, tenant) = scoped(&ui, &session, &t).await?;
    // An unknown slug (or another tenant's) is not found, before and after confirming.
    let p = provider_of(&ui, &tenant.id, &slug).await?;
    if !f.confirmed() {
        return confirm(
            &session,
            &req,
            &f,
            (&actor, &tenant),
            &format!(
                "Remove {}? Its sign-in button goes, and every account linked through it is unlinked; members keep their other ways to sign in.",
                p.display_name
            ),
            "Remove",
        );
    }
    let links = ui
        .port
        .remove_provider(&actor, &tenant.id, &p.slug, &ui.port.origin(&req))
        .await?;
    done(
        &session,
        &format!("/admin/t/{}/providers", tenant.slug),
        &format!(
            "{} removed ({links} linked account{} unlinked).",
            p.display_name,
            if links == 1 { "" } else { "s" }
        ),
    )
}

/// A provider of this tenant, or not found (also when it is another tenant's).
async fn provider_of(ui: &Ui, tenant_id: &str, slug: &str) -> Result<ProviderView, Fail> {
    ui.port
        .provider(tenant_id, slug)
        .await?
        .ok_or(Fail::Admin(AdminError::NotFound))
}
