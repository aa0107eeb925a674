//! The audit log: filters by tenant, user, client, kind and time; newest first; pages.
use actix_session::Session;
use actix_web::{HttpRequest, web};

use crate::Ui;
use crate::charts::parse_date;
use crate::port::{AuditFilter, TenantView};
use crate::web_util::{Res, View, admin, invalid, operator_only, query, scoped};

const PAGE: u64 = 50;

pub async fn tenant(
    ui: web::Data<Ui>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    show(&ui, &session, &req, actor, Some(tenant)).await
}

/// Every tenant's events (operators).
pub async fn all_tenants(ui: web::Data<Ui>, session: Session, req: HttpRequest) -> Res {
    let actor = admin(&ui, &session).await?;
    operator_only(&actor)?;
    show(&ui, &session, &req, actor, None).await
}

async fn show(
    ui: &Ui,
    session: &Session,
    req: &HttpRequest,
    actor: crate::port::Actor,
    tenant: Option<TenantView>,
) -> Res {
    let q = query(req);
    let get = |k: &str| q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let date = |k: &str, end: bool| -> Result<Option<i64>, crate::web_util::Fail> {
        match get(k) {
            None => Ok(None),
            Some(s) => parse_date(s)
                .map(|d| Some(d * 86_400 + if end { 86_399 } else { 0 }))
                .ok_or_else(|| invalid(format!("{s:?} is not a date (YYYY-MM-DD)."))),
        }
    };
    let filter = AuditFilter {
        tenant_id: tenant.as_ref().map(|t| t.id.clone()),
        user_id: get("user").map(str::to_string),
        client: get("client").map(str::to_string),
        kind: get("kind").map(str::to_string),
        from: date("from", false)?,
        to: date("to", true)?,
    };
    let offset = crate::web_util::offset_param(get("offset"));
    let page = ui.port.audit(&filter, offset, PAGE).await?;
    let kinds = ui.port.audit_kinds().await?;
    // The filter again, for the paging links.
    let keep: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            ["user", "client", "kind", "from", "to"]
                .iter()
                .filter_map(|k| get(k).map(|v| (*k, v))),
        )
        .finish();
    let base = match &tenant {
        Some(t) => format!("/admin/t/{}/audit", t.slug),
        None => "/admin/audit".to_string(),
    };
    let next =
        (offset + PAGE < page.total).then(|| format!("{base}?{keep}&offset={}", offset + PAGE));
    let prev =
        (offset > 0).then(|| format!("{base}?{keep}&offset={}", offset.saturating_sub(PAGE)));
    let mut v = View::new(session, "Audit log")
        .actor(&actor)
        .with("page", &page)
        .with("kinds", &kinds)
        .with("next", &next)
        .with("prev", &prev)
        .with("base", &base)
        .with("f_user", &get("user").unwrap_or(""))
        .with("f_client", &get("client").unwrap_or(""))
        .with("f_kind", &get("kind").unwrap_or(""))
        .with("f_from", &get("from").unwrap_or(""))
        .with("f_to", &get("to").unwrap_or(""));
    if let Some(t) = &tenant {
        v = v.tenant(t);
    }
    v.render("admin/audit.html")
}
