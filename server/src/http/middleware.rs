//! Security headers on every answer, per-route metrics, and request spans that never record
//! query strings (they can carry codes or state).
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self' https: http://localhost:* http://127.0.0.1:*; frame-ancestors 'none'; base-uri 'none'";

/// The plain-http hosts `CSP`'s `form-action` names. A browser holds a form's answer to it
/// too: a redirect after a POST elsewhere is refused.
const FORM_ACTION_HTTP_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Whether a redirect answering a form of ours may go to `location` under `CSP`'s
/// `form-action`: a path of this server, an https address, or http to a loopback name the
/// policy can spell. A CSP source cannot name an IPv6 address, so a native app's
/// `http://[::1]:…` redirect URI (RFC 8252 §7.3) is not one of them.
pub fn form_action_allows(location: &str) -> bool {
    if location.starts_with('/') && !location.starts_with("//") {
        return true;
    }
    match url::Url::parse(location) {
        Ok(u) => match u.scheme() {
            "https" => true,
            "http" => u
                .host_str()
                .is_some_and(|h| FORM_ACTION_HTTP_HOSTS.contains(&h)),
            _ => false,
        },
        Err(_) => false,
    }
}

pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let https = req
        .app_data::<actix_web::web::Data<crate::services::Services>>()
        .is_some_and(|s| s.settings.is_https());
    let mut res = next.call(req).await?;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    Ok(res)
}

pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    // A fixed set of labels: a client cannot grow the metrics with made-up method names.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16().to_string();
    let elapsed = start.elapsed().as_secs_f64();
    metrics::counter!("ma_idp_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("ma_idp_http_request_duration_seconds", "route" => route, "method" => method).record(elapsed);
    Ok(res)
}

/// A path with an encoded NUL (`%00`) names nothing here: 404 before any handler runs, so
/// that no path parameter with a NUL reaches the database (PostgreSQL refuses NUL in text and
/// the statement would fail as if the database were down).
pub async fn refuse_nul_in_path(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if req.path().contains("%00") {
        return Ok(req.into_response(super::ops::not_found().await));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A browser request that comes without a session (no cookie, or one whose session is gone:
/// ended, expired or made up) is a new visit, and may start a session: a row in the database,
/// kept an hour when nobody signs in (`login::session_store`). Each client IP may make
/// `Bucket::Visit` of them a minute (429 beyond), so a loop of first visits cannot fill the
/// database; and while `limits.anonymous_sessions_max` sessions nobody signed in to are live,
/// new visits from anywhere get 503 (many networks at once cannot fill it either). Runs
/// inside the session middleware, which has loaded the session by then.
pub async fn limit_new_visits(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_session::SessionExt;
    use actix_web::http::StatusCode;
    let refused = match req.app_data::<super::Svc>() {
        Some(svc) if req.get_session().entries().is_empty() => {
            let ip = super::client_ip(req.request(), svc);
            if !svc.ip_limits.check(crate::login::limits::Bucket::Visit, ip) {
                Some((
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    "Too many new visits from your network. Wait a minute and try again.",
                    "60",
                ))
            // Many networks at once: the cap on all sessions nobody signed in to.
            } else if !svc.anonymous_sessions.has_room(&svc.store, svc.now()).await {
                Some((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Busy",
                    "Too many sign-ins are under way just now. Wait a few minutes and try again.",
                    "300",
                ))
            } else {
                None
            }
        }
        _ => None,
    };
    if let Some((status, title, text, retry_after)) = refused {
        let mut p = super::pages::error_page(status, title, text);
        p.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
        return Ok(req.into_response(p));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Root span per request: method and path, never the query string, and never the one-time
/// token of a setup or enrollment link (`/admin/setup/{token}`, `/t/{t}/enroll/{token}/…`),
/// which stands in the path.
pub struct QuietRootSpan;

/// The path as logged: the segment after `setup` or `enroll` is replaced by `…`. Segments
/// are compared percent-decoded, as the router matches them (`/t/home/%65nroll/{token}` is an
/// enrollment link too).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') && !path.contains("/setup/") && !path.contains("/enroll/") {
        return path.into();
    }
    let mut secret_next = false;
    let parts: Vec<&str> = path
        .split('/')
        .map(|seg| {
            let out = if secret_next && !seg.is_empty() {
                "\u{2026}"
            } else {
                seg
            };
            let name = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
            secret_next = name == "setup" || name == "enroll";
            out
        })
        .collect();
    parts.join("/").into()
}

impl RootSpanBuilder for QuietRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing::info_span!(
            "http",
            method = %request.method(),
            path = %loggable_path(request.path()),
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        if let Ok(res) = outcome {
            span.record("status", res.status().as_u16());
            let _g = span.enter();
            tracing::debug!(status = res.status().as_u16(), "request done");
        }
    }
}

/// On browser pages, a database outage or internal error is shown as a page, not JSON.
pub async fn html_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let res = match next.call(req).await {
        Ok(r) => r,
        // The session store failing (the database is down) ends here: answer with a page.
        Err(e) => {
            tracing::warn!(error = %e, "page request failed");
            let mut p = super::pages::error_page(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database right now. Please try again in a minute.",
            );
            p.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Err(actix_web::error::InternalError::from_response(e, p).into());
        }
    };
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json && status.is_server_error() {
        let (req, _) = res.into_parts();
        let page = if status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
            let mut p = super::pages::error_page(
                status,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database right now. Please try again in a minute.",
            );
            p.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            p
        } else {
            super::pages::error_page(
                status,
                "Something went wrong",
                "Please try again. If it keeps happening, tell your admin.",
            )
        };
        return Ok(ServiceResponse::new(req, page));
    }
    Ok(res.map_into_boxed_body())
}

/// The admin UI sends strangers to its sign-in page by returning an error whose answer is a
/// redirect. A redirect is not a failure: drop the error so the request log does not report
/// one.
pub async fn quiet_redirects(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let res = next.call(req).await?.map_into_boxed_body();
    if res.status().is_redirection() && res.response().error().is_some() {
        let (req, resp) = res.into_parts();
        let mut clean = actix_web::HttpResponse::build(resp.status());
        for (k, v) in resp.headers() {
            clean.append_header((k.clone(), v.clone()));
        }
        return Ok(ServiceResponse::new(req, clean.finish()));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::{CSP, FORM_ACTION_HTTP_HOSTS, form_action_allows, loggable_path};

    #[test]
    fn form_action_allows_what_the_policy_names() {
        // The hosts the function lets through are the ones the policy spells out.
        let sources: Vec<&str> = CSP
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix("form-action "))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let mut named = vec!["'self'".to_string(), "https:".to_string()];
        named.extend(FORM_ACTION_HTTP_HOSTS.map(|h| format!("http://{h}:*")));
        assert_eq!(sources, named);
        for ok in [
            "/t/home/account",
            "https://layla.amazon.com/api/skill/link/M2",
            "http://localhost:9999/cb?code=x",
            "http://localhost/cb",
            "http://127.0.0.1:8000/cb",
        ] {
            assert!(form_action_allows(ok), "{ok}");
        }
        for no in [
            "http://[::1]:8000/cb?code=x",
            "http://[::1]/cb",
            "//evil.example/cb",
            "http://example.com/cb",
            "com.example.app:/cb",
            "not a url",
        ] {
            assert!(!form_action_allows(no), "{no}");
        }
    }

    #[test]
    fn link_tokens_stay_out_of_the_logged_path() {
        for (path, logged) in [
            ("/t/home/authorize", "/t/home/authorize"),
            ("/admin/setup/s3cr3tT0ken", "/admin/setup/\u{2026}"),
            ("/admin/setup/s3cr3tT0ken/", "/admin/setup/\u{2026}/"),
            ("/t/home/enroll/s3cr3tT0ken", "/t/home/enroll/\u{2026}"),
            (
                "/t/home/enroll/s3cr3tT0ken/start",
                "/t/home/enroll/\u{2026}/start",
            ),
            (
                "/t/setup/enroll/s3cr3tT0ken/finish",
                "/t/setup/\u{2026}/\u{2026}/finish",
            ),
            ("/admin/setup", "/admin/setup"),
            // Percent-encoded as the router decodes it.
            ("/t/home/%65nroll/s3cr3tT0ken", "/t/home/%65nroll/\u{2026}"),
            ("/admin/s%65tup/s3cr3tT0ken", "/admin/s%65tup/\u{2026}"),
            ("/t/home/%2Fenroll/x", "/t/home/%2Fenroll/x"),
        ] {
            assert_eq!(loggable_path(path), logged, "{path}");
            assert!(!loggable_path(path).contains("s3cr3t"), "{path}");
        }
    }
}
