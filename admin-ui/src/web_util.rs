//! Shared by the handlers: templates, failures, forms, CSRF, flash messages, guards.
use std::collections::HashMap;
use std::sync::LazyLock;

use actix_session::Session;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use rand::RngCore;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tera::{Context, Tera};

use crate::port::{Actor, AdminError, TenantView};
use crate::{SESSION_REKEY, SESSION_TENANT, SESSION_USER, Ui, authz};

pub const MAX_FORM: usize = 64 * 1024;
const KEY_CSRF: &str = "admin_csrf";
const KEY_FLASH: &str = "admin_flash";
/// A refused form's submitted values, for the next page to show again (see `Form::keep`).
const KEY_KEPT: &str = "admin_kept";
/// Set only by the admin sign-in: a session made on the public pages is not an admin session.
const KEY_ADMIN: &str = "adm";

macro_rules! template {
    ($name:literal) => {
        (
            concat!("admin/", $name),
            include_str!(concat!("../../templates/admin/", $name)),
        )
    };
}

static TERA: LazyLock<Result<Tera, String>> = LazyLock::new(|| {
    let mut t = Tera::default();
    t.autoescape_on(vec![".html"]);
    t.add_raw_templates(vec![
        template!("base.html"),
        template!("login.html"),
        template!("setup.html"),
        template!("error.html"),
        template!("confirm.html"),
        template!("dashboard.html"),
        template!("tenants.html"),
        template!("settings.html"),
        template!("users.html"),
        template!("user.html"),
        template!("clients.html"),
        template!("client.html"),
        template!("secret.html"),
        template!("grants.html"),
        template!("sessions.html"),
        template!("keys.html"),
        template!("audit.html"),
        template!("link.html"),
        template!("grants_table.html"),
        template!("providers.html"),
        template!("provider.html"),
        template!("alexa_values.html"),
    ])
    .map_err(|e| format!("{e:?}"))?;
    t.register_filter("datetime", datetime_filter);
    t.register_filter("duration", duration_filter);
    Ok(t)
});

pub fn tera() -> Result<&'static Tera, String> {
    TERA.as_ref().map_err(Clone::clone)
}

fn datetime_filter(v: &tera::Value, _: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(match v.as_i64() {
        Some(secs) => format_time(secs),
        None => "—".into(),
    }))
}

fn duration_filter(v: &tera::Value, _: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(match v.as_i64() {
        Some(s) => human_duration(s),
        None => "—".into(),
    }))
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn format_time(secs: i64) -> String {
    let day = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02} UTC",
        crate::charts::date(day),
        rem / 3600,
        (rem % 3600) / 60
    )
}

pub fn human_duration(s: i64) -> String {
    let (n, unit) = if s % 86_400 == 0 && s >= 86_400 {
        (s / 86_400, "day")
    } else if s % 3600 == 0 && s >= 3600 {
        (s / 3600, "hour")
    } else if s % 60 == 0 && s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A request that ends early: a redirect, a refusal, or an error page.
#[derive(Debug)]
pub enum Fail {
    Redirect(String),
    Csrf,
    Admin(AdminError),
}

impl From<AdminError> for Fail {
    fn from(e: AdminError) -> Self {
        Fail::Admin(e)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Redirect(to) => write!(f, "redirect to {to}"),
            Fail::Csrf => f.write_str("CSRF check failed"),
            Fail::Admin(e) => e.fmt(f),
        }
    }
}

impl ResponseError for Fail {
    fn status_code(&self) -> StatusCode {
        match self {
            Fail::Redirect(_) => StatusCode::SEE_OTHER,
            Fail::Csrf => StatusCode::BAD_REQUEST,
            Fail::Admin(AdminError::NotFound) => StatusCode::NOT_FOUND,
            Fail::Admin(AdminError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Fail::Admin(AdminError::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Fail::Admin(AdminError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Fail::Redirect(to) = self {
            return see_other(to);
        }
        let (title, text) = match self {
            Fail::Redirect(_) => ("", String::new()),
            Fail::Csrf => (
                "This form has expired",
                "For your safety the form was not submitted. Go back, reload the page and try again."
                    .to_string(),
            ),
            Fail::Admin(AdminError::NotFound) => (
                "Not found",
                "There is nothing here, or it is not yours to see.".to_string(),
            ),
            Fail::Admin(AdminError::Invalid(m)) => ("That did not work", m.clone()),
            Fail::Admin(AdminError::Unavailable) => (
                "Temporarily unavailable",
                "The database cannot be reached right now. Try again in a moment.".to_string(),
            ),
            Fail::Admin(AdminError::Internal(m)) => {
                tracing::error!(error = %m, "admin UI: internal error");
                (
                    "Something went wrong",
                    "The server could not complete this request. It has been logged.".to_string(),
                )
            }
        };
        let mut ctx = Context::new();
        ctx.insert("title", title);
        ctx.insert("text", &text);
        let mut resp = render_ctx("admin/error.html", &ctx);
        *resp.status_mut() = self.status_code();
        if matches!(self, Fail::Admin(AdminError::Unavailable)) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        resp
    }
}

pub type Res = Result<HttpResponse, Fail>;

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn render_ctx(name: &str, ctx: &Context) -> HttpResponse {
    let body = match tera().and_then(|t| t.render(name, ctx).map_err(|e| format!("{e:?}"))) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(template = name, error = %e, "admin template failed");
            return HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The admin page could not be rendered.");
        }
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// A page: the template plus what every admin page shows (who, where, CSRF, flash).
pub struct View<'a> {
    pub ctx: Context,
    session: &'a Session,
}

impl<'a> View<'a> {
    pub fn new(session: &'a Session, title: &str) -> Self {
        let mut ctx = Context::new();
        ctx.insert("title", title);
        Self { ctx, session }
    }

    pub fn with(mut self, key: &str, v: &impl Serialize) -> Self {
        self.ctx.insert(key, v);
        self
    }

    pub fn actor(self, actor: &Actor) -> Self {
        let op = authz::is_operator(actor);
        self.with("actor", actor).with("is_operator", &op)
    }

    pub fn tenant(self, t: &TenantView) -> Self {
        self.with("tenant", t)
    }

    pub fn render(mut self, name: &str) -> Res {
        self.ctx.insert("csrf", &csrf_token(self.session)?);
        if let Ok(Some(f)) = self.session.get::<String>(KEY_FLASH) {
            self.session.remove(KEY_FLASH);
            self.ctx.insert("flash", &f);
        }
        // A refused form's values: `kept_action` is the path it was posted to (a page's forms
        // compare it with their own action), `kept` its fields.
        let kept = match self.session.get::<Kept>(KEY_KEPT) {
            Ok(Some(k)) => {
                self.session.remove(KEY_KEPT);
                k
            }
            _ => Kept::default(),
        };
        self.ctx.insert("kept_action", &kept.action);
        self.ctx.insert("kept", &kept.fields);
        Ok(render_ctx(name, &self.ctx))
    }

    pub fn render_status(self, name: &str, status: StatusCode) -> Res {
        let mut r = self.render(name)?;
        *r.status_mut() = status;
        Ok(r)
    }
}

fn session_fail(e: impl std::fmt::Display) -> Fail {
    Fail::Admin(AdminError::Internal(format!("session: {e}")))
}

pub fn csrf_token(session: &Session) -> Result<String, Fail> {
    if let Ok(Some(t)) = session.get::<String>(KEY_CSRF) {
        return Ok(t);
    }
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
    session.insert(KEY_CSRF, &t).map_err(session_fail)?;
    Ok(t)
}

pub fn flash(session: &Session, msg: &str) {
    let _ = session.insert(KEY_FLASH, msg);
}

/// A refused form's non-secret fields and where it was posted.
#[derive(Default, Serialize, serde::Deserialize)]
struct Kept {
    action: String,
    fields: std::collections::BTreeMap<String, String>,
}

/// A submitted form: checked for its content type, size and CSRF token.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, k: &str) -> &str {
        self.0.get(k).map(|s| s.as_str()).unwrap_or("")
    }
    /// A field's value, or `None` when the form has no such field.
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    pub fn trimmed(&self, k: &str) -> &str {
        self.get(k).trim()
    }
    pub fn checked(&self, k: &str) -> bool {
        matches!(self.get(k), "on" | "true" | "1" | "yes")
    }
    pub fn confirmed(&self) -> bool {
        self.get("confirm") == "yes"
    }
    /// Keep this refused form's values for the next page (the one it goes back to), so it
    /// shows them again with the message: every field but the CSRF token, the confirmation
    /// and anything secret (a password, a client secret). When one is over 4 KiB nothing is
    /// kept (the page shows the stored values: a field left out would come back empty).
    pub fn keep(&self, session: &Session, req: &HttpRequest) {
        let kept: Vec<(&String, &String)> = self
            .0
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "csrf" | "confirm")
                    && !k.contains("password")
                    && !k.contains("secret")
            })
            .collect();
        if kept.iter().any(|(_, v)| v.len() > 4096) {
            return;
        }
        let fields = kept
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let _ = session.insert(
            KEY_KEPT,
            Kept {
                action: req.path().to_string(),
                fields,
            },
        );
    }

    /// Every field but the CSRF token and the confirmation, to carry through a confirm page.
    pub fn carry(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|(k, _)| k.as_str() != "csrf" && k.as_str() != "confirm")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort();
        v
    }
}

pub fn form(req: &HttpRequest, body: &web::Bytes, session: &Session) -> Result<Form, Fail> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(Fail::Admin(AdminError::Invalid(
            "Forms must be sent as application/x-www-form-urlencoded.".into(),
        )));
    }
    let mut m = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if m.len() >= 64 {
            break;
        }
        // No field takes a NUL (PostgreSQL refuses it in text).
        if k.contains('\0') || v.contains('\0') {
            return Err(Fail::Admin(AdminError::Invalid(
                "A field contains a NUL character.".into(),
            )));
        }
        m.insert(k.into_owned(), v.into_owned());
    }
    let f = Form(m);
    let expected = session.get::<String>(KEY_CSRF).ok().flatten();
    match expected {
        Some(e) if bool::from(e.as_bytes().ct_eq(f.get("csrf").as_bytes())) => Ok(f),
        _ => Err(Fail::Csrf),
    }
}

/// Query string fields (filters, paging); a value with a NUL is ignored.
pub fn query(req: &HttpRequest) -> HashMap<String, String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .take(32)
        .filter(|(k, v)| !k.contains('\0') && !v.contains('\0'))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A list page's `offset` parameter: absent or not a number is 0, and it is capped far below
/// what the database's signed 64-bit `OFFSET` (and `offset + page`) can hold.
pub fn offset_param(v: Option<&str>) -> u64 {
    const MOST: u64 = 1 << 40;
    v.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0).min(MOST)
}

/// Record an admin sign-in in the session: a fresh session key (no fixation) and a fresh
/// CSRF token (the signed-out session's may be known to whoever planted it).
pub fn start_admin_session(session: &Session, actor: &Actor) -> Result<(), Fail> {
    session.insert(SESSION_REKEY, true).map_err(session_fail)?;
    session.remove(KEY_CSRF);
    session
        .insert(SESSION_TENANT, &actor.tenant_id)
        .map_err(session_fail)?;
    session
        .insert(SESSION_USER, &actor.user_id)
        .map_err(session_fail)?;
    session.insert(KEY_ADMIN, true).map_err(session_fail)?;
    Ok(())
}

/// The signed-in admin, or a redirect to the sign-in page.
pub async fn admin(ui: &Ui, session: &Session) -> Result<Actor, Fail> {
    let tid = session.get::<String>(SESSION_TENANT).ok().flatten();
    let uid = session.get::<String>(SESSION_USER).ok().flatten();
    let adm = session.get::<bool>(KEY_ADMIN).ok().flatten() == Some(true);
    if let (Some(tid), Some(uid), true) = (tid, uid, adm) {
        if let Some(a) = ui.port.actor(&tid, &uid).await? {
            return Ok(a);
        }
        // No longer an admin (disabled, demoted or removed): end this session.
        session.purge();
    }
    Err(Fail::Redirect("/admin/login".into()))
}

/// The signed-in admin and a tenant they may act on; any other tenant is not found.
pub async fn scoped(ui: &Ui, session: &Session, slug: &str) -> Result<(Actor, TenantView), Fail> {
    let actor = admin(ui, session).await?;
    let tenant = ui
        .port
        .tenant_by_slug(slug)
        .await?
        .filter(|t| authz::may_access_tenant(&actor, t))
        .ok_or(Fail::Admin(AdminError::NotFound))?;
    Ok((actor, tenant))
}

/// Only operators; for anyone else the page does not exist.
pub fn operator_only(actor: &Actor) -> Result<(), Fail> {
    if authz::is_operator(actor) {
        Ok(())
    } else {
        Err(Fail::Admin(AdminError::NotFound))
    }
}

/// A destructive action asks first: render a page that posts the same form with `confirm=yes`.
pub fn confirm(
    session: &Session,
    req: &HttpRequest,
    f: &Form,
    (actor, tenant): (&Actor, &TenantView),
    question: &str,
    button: &str,
) -> Res {
    View::new(session, "Please confirm")
        .actor(actor)
        .tenant(tenant)
        .with("question", &question)
        .with("button", &button)
        .with("action", &req.path())
        .with("cancel", &cancel_url(req.path()))
        .with("fields", &f.carry())
        .render("admin/confirm.html")
}

/// Where "Cancel" on a confirmation goes: the page the action was started from.
fn cancel_url(action: &str) -> String {
    let parts: Vec<&str> = action.trim_end_matches('/').split('/').collect();
    // /admin/t/{t}/grants/{id}/revoke and /admin/t/{t}/sessions/{id}/end: the list.
    if parts.len() == 7 && matches!(parts[4], "grants" | "sessions") {
        return parts[..5].join("/");
    }
    // /admin/t/{t}/default: the settings.
    if parts.len() == 5 && parts[4] == "default" {
        return format!("{}/settings", parts[..4].join("/"));
    }
    // /admin/t/{t}/users/{id}/passkeys/{pid}/remove: the user.
    if parts.len() == 9 && matches!(parts[6], "passkeys" | "identities") {
        return parts[..6].join("/");
    }
    match parts.len() {
        n if n > 4 => parts[..n - 1].join("/"),
        _ => "/admin".into(),
    }
}

pub fn invalid(m: impl Into<String>) -> Fail {
    Fail::Admin(AdminError::Invalid(m.into()))
}

/// Parse a whole number of seconds from a form field within bounds.
pub fn seconds(f: &Form, k: &str, label: &str, min: i64, max: i64) -> Result<i64, Fail> {
    let v = f.trimmed(k);
    v.parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "{label} must be a whole number of seconds from {min} to {max}."
            ))
        })
}

/// An optional number of seconds (empty: inherit).
pub fn opt_seconds(
    f: &Form,
    k: &str,
    label: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, Fail> {
    if f.trimmed(k).is_empty() {
        Ok(None)
    } else {
        seconds(f, k, label, min, max).map(Some)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses() {
        let t = super::tera();
        assert!(t.is_ok(), "{:?}", t.err());
    }
}
