//! A tenant's dashboard: the last 30 days per day, and how much there is.
use actix_session::Session;
use actix_web::web;

use crate::Ui;
use crate::charts::bars;
use crate::web_util::{Res, View, scoped};

pub const DAYS: u32 = 30;

pub async fn tenant(ui: web::Data<Ui>, session: Session, path: web::Path<String>) -> Res {
    let (actor, tenant) = scoped(&ui, &session, &path).await?;
    let d = ui.port.dashboard(Some(&tenant.id), DAYS).await?;
    let series: [(&str, &Vec<u64>, &str); 4] = [
        ("Sign-ins", &d.sign_ins, "#0b63ce"),
        ("Failed sign-ins", &d.failed_sign_ins, "#b42318"),
        ("Token grants", &d.grants, "#2e7d32"),
        ("Refreshes", &d.refreshes, "#6a1b9a"),
    ];
    let charts: Vec<(&str, String, u64)> = series
        .iter()
        .map(|(title, values, color)| {
            (
                *title,
                bars(title, &d.days, values, color),
                values.iter().sum(),
            )
        })
        .collect();
    View::new(&session, "Dashboard")
        .actor(&actor)
        .tenant(&tenant)
        .with("charts", &charts)
        .with("d", &d)
        .render("admin/dashboard.html")
}
