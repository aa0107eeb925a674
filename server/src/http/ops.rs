//! Liveness, readiness, metrics, static files, not found.
use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::Svc;
use super::pages::error_page;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Request-duration histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Install the Prometheus recorder once per process. Histograms are rendered as Prometheus
/// histograms (fixed buckets: they add up across instances). The recorder keeps every raw
/// sample until upkeep folds it into the buckets, so a thread runs upkeep every 5 s: without
/// it, memory grew by ~8 bytes per request for as long as nobody scraped `/metrics`. The same
/// thread hands the allocator's free memory back to the system (`memory.rs`).
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .and_then(|b| b.install_recorder());
            match installed {
                Ok(h) => {
                    let upkeep = h.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP);
                                upkeep.run_upkeep();
                                crate::memory::release_free_memory();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "metrics upkeep thread not started");
                    }
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn ready(svc: Svc) -> HttpResponse {
    match svc.store.ready().await {
        Ok(true) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Ok(false) => HttpResponse::ServiceUnavailable().json(
            serde_json::json!({"status": "not ready", "reason": "database migrations pending"}),
        ),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not ready", "reason": "database unreachable"})),
    }
}

pub async fn metrics(svc: Svc) -> HttpResponse {
    let pools = svc.store.pool_stats();
    metrics::gauge!("ma_idp_db_pools").set(pools.pools as f64);
    metrics::gauge!("ma_idp_db_pool_connections").set(pools.size as f64);
    metrics::gauge!("ma_idp_db_pool_idle").set(pools.idle as f64);
    metrics::gauge!("ma_idp_db_pool_max").set(pools.max as f64);
    match install_metrics() {
        Some(h) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(h.render()),
        None => HttpResponse::ServiceUnavailable().body("metrics unavailable"),
    }
}

const STYLE_CSS: &str = include_str!("../../../static/style.css");
const PASSKEYS_JS: &str = include_str!("../../../static/passkeys.js");
const CONSENT_JS: &str = include_str!("../../../static/consent.js");
const ADMIN_CSS: &str = include_str!("../../../static/admin.css");

pub async fn static_file(path: web::Path<String>) -> HttpResponse {
    let (body, ct) = match path.as_str() {
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "passkeys.js" => (PASSKEYS_JS, "text/javascript; charset=utf-8"),
        "consent.js" => (CONSENT_JS, "text/javascript; charset=utf-8"),
        "admin.css" => (ADMIN_CSS, "text/css; charset=utf-8"),
        _ => return error_page(StatusCode::NOT_FOUND, "Not found", "There is no such file."),
    };
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(3600),
        ]))
        .insert_header((header::CONTENT_TYPE, ct))
        .body(body)
}

pub async fn not_found() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
    )
}
