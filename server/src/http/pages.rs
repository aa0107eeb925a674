//! Server-rendered pages (tera 1, autoescaped). Templates are compiled into the binary so a
//! single file runs anywhere; they live in the repository's `templates/` folder.
use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use entity::browser_session;
use serde::Serialize;
use tera::{Context, Tera};

use crate::error::{Error, Result};
use crate::login::account::GrantView;

macro_rules! template {
    ($name:literal) => {
        ($name, include_str!(concat!("../../../templates/", $name)))
    };
}

static TERA: LazyLock<std::result::Result<Tera, String>> = LazyLock::new(|| {
    let mut t = Tera::default();
    t.autoescape_on(vec![".html"]);
    t.add_raw_templates(vec![
        template!("base.html"),
        template!("login.html"),
        template!("consent.html"),
        template!("error.html"),
        template!("message.html"),
        template!("account.html"),
        template!("enroll.html"),
    ])
    .map_err(|e| format!("{e:?}"))?;
    t.register_filter("datetime", datetime_filter);
    Ok(t)
});

fn datetime_filter(
    v: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let secs = v.as_i64().unwrap_or(0);
    Ok(tera::Value::String(format_time(secs)))
}

/// `YYYY-MM-DD HH:MM UTC` without a date crate.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

pub fn render(name: &str, ctx: &Context) -> Result<HttpResponse> {
    let tera = TERA
        .as_ref()
        .map_err(|e| Error::internal(format!("templates: {e}")))?;
    let body = tera
        .render(name, ctx)
        .map_err(|e| Error::internal(format!("render {name}: {e:?}")))?;
    Ok(html(StatusCode::OK, body))
}

/// The error page; plain text if the templates themselves are broken.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let mut ctx = Context::new();
    ctx.insert("title", title);
    ctx.insert("message", message);
    match TERA
        .as_ref()
        .ok()
        .and_then(|t| t.render("error.html", &ctx).ok())
    {
        Some(body) => html(status, body),
        None => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(format!("{title}\n\n{message}")),
    }
}

pub struct LoginView<'a> {
    pub tenant_name: &'a str,
    pub slug: &'a str,
    /// The page is served under `/alexa/authorize`.
    pub via_alexa: bool,
    /// The tenant refuses passwords.
    pub passkeys_only: bool,
    pub client_name: Option<&'a str>,
    pub action: &'a str,
    pub rid: Option<&'a str>,
    pub csrf: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    /// Upstream sign-in buttons: (provider slug, name).
    pub providers: &'a [(String, String)],
}

pub fn login(v: LoginView<'_>) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", "Sign in");
    ctx.insert("tenant_name", v.tenant_name);
    ctx.insert("client_name", &v.client_name);
    ctx.insert("action", v.action);
    ctx.insert("rid", &v.rid);
    ctx.insert("csrf", v.csrf);
    ctx.insert("username", v.username);
    ctx.insert("error", &v.error);
    ctx.insert("slug", v.slug);
    ctx.insert("via", if v.via_alexa { "alexa" } else { "tenant" });
    ctx.insert("passkeys_only", &v.passkeys_only);
    ctx.insert("providers", v.providers);
    ctx.insert(
        "fed_back",
        if v.via_alexa {
            "alexa"
        } else if v.rid.is_some() {
            "authorize"
        } else {
            "login"
        },
    );
    ctx.insert(
        "focus_password",
        &(v.error.is_some() && !v.username.is_empty()),
    );
    render("login.html", &ctx)
}

#[derive(Serialize)]
pub struct ScopeLine {
    pub name: String,
    pub text: String,
}

pub struct ConsentView<'a> {
    pub tenant_name: &'a str,
    pub client_name: &'a str,
    pub username: &'a str,
    pub scopes: &'a [ScopeLine],
    pub action: &'a str,
    pub rid: &'a str,
    pub csrf: &'a str,
    pub switch_url: &'a str,
    /// When the page answers a POST (the sign-in form): the address that shows it again,
    /// which the page gives its history entry (`static/consent.js`), so that a reload does
    /// not send the form again.
    pub reload_url: Option<&'a str>,
}

pub fn consent(v: ConsentView<'_>) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", "Allow access?");
    ctx.insert("tenant_name", v.tenant_name);
    ctx.insert("client_name", v.client_name);
    ctx.insert("username", v.username);
    ctx.insert("scopes", v.scopes);
    ctx.insert("action", v.action);
    ctx.insert("rid", v.rid);
    ctx.insert("csrf", v.csrf);
    ctx.insert("switch_url", v.switch_url);
    ctx.insert("reload_url", &v.reload_url);
    render("consent.html", &ctx)
}

pub fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", title);
    ctx.insert("message", text);
    ctx.insert("link_url", &link.map(|l| l.0));
    ctx.insert("link_text", &link.map(|l| l.1));
    render("message.html", &ctx)
}

/// The answer to a form whose redirect the page's CSP would stop (see
/// `authorize::redirect`): a page that sends the browser to `location` at once (a navigation
/// of its own, which `form-action` does not govern), with a link for a browser that does not.
pub fn continue_to(location: &str) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", "Back to the app");
    ctx.insert(
        "message",
        "Your browser is going back to the app. If nothing happens, use the link below.",
    );
    ctx.insert("refresh_url", location);
    ctx.insert("link_url", &Some(location));
    ctx.insert("link_text", &Some("Continue to the app"));
    render("message.html", &ctx)
}

pub fn logout(tenant_name: &str, action: &str, csrf: &str) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", "Sign out");
    ctx.insert(
        "message",
        &format!("Sign out of {tenant_name} on this browser?"),
    );
    ctx.insert("form_action", action);
    ctx.insert("csrf", csrf);
    ctx.insert("link_url", &None::<&str>);
    ctx.insert("link_text", &None::<&str>);
    render("message.html", &ctx)
}

#[derive(Serialize)]
struct GrantLine<'a> {
    id: &'a str,
    client_name: &'a str,
    scopes: Vec<String>,
    created_at: i64,
    last_refreshed_at: Option<i64>,
}

#[derive(Serialize)]
struct SessionLine<'a> {
    id: &'a str,
    created_at: i64,
    updated_at: i64,
}

pub struct AccountView<'a> {
    pub tenant_name: &'a str,
    pub slug: &'a str,
    pub username: &'a str,
    pub csrf: &'a str,
    pub grants: &'a [GrantView],
    pub sessions: &'a [browser_session::Model],
    pub passkeys: &'a [crate::passkeys::PasskeyView],
    pub notice: Option<&'a str>,
    /// Why the last change was refused (the `refused` query parameter).
    pub refusal: Option<&'a str>,
    /// Linked upstream identities: (id, provider name, subject, e-mail).
    pub identities: &'a [(String, String, String, Option<String>)],
    /// Providers the member can link: (slug, name).
    pub providers: &'a [(String, String)],
}

pub fn account(v: AccountView<'_>) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", "Your account");
    ctx.insert("tenant_name", v.tenant_name);
    ctx.insert("slug", v.slug);
    ctx.insert("username", v.username);
    ctx.insert("csrf", v.csrf);
    let grants: Vec<GrantLine> = v
        .grants
        .iter()
        .map(|g| GrantLine {
            id: &g.id,
            client_name: &g.client_name,
            scopes: crate::oauth::scopes::split(&g.scope)
                .into_iter()
                .map(crate::oauth::scopes::describe)
                .collect(),
            created_at: g.created_at,
            last_refreshed_at: g.last_refreshed_at,
        })
        .collect();
    ctx.insert("grants", &grants);
    let sessions: Vec<SessionLine> = v
        .sessions
        .iter()
        .map(|s| SessionLine {
            id: &s.id,
            created_at: s.created_at,
            updated_at: s.updated_at,
        })
        .collect();
    ctx.insert("sessions", &sessions);
    ctx.insert("passkeys", v.passkeys);
    ctx.insert("identities", v.identities);
    ctx.insert("providers", v.providers);
    ctx.insert(
        "notice",
        &match v.notice {
            Some("revoked") => {
                Some("Access revoked. That application can no longer use your account.")
            }
            Some("ended") => Some("Session ended."),
            Some("passkey") => Some("Passkey added. You can now sign in with it."),
            Some("passkey-rename") => Some("Passkey renamed."),
            Some("passkey-remove") => Some("Passkey removed. It can no longer sign in."),
            Some("linked") => Some("Account linked. You can now sign in with it."),
            Some("unlinked") => Some("Account unlinked. It can no longer sign you in."),
            _ => None,
        },
    );
    ctx.insert(
        "refusal",
        &match v.refusal {
            Some("last-way") => Some(
                "That is your last way to sign in, so it stays. Add a passkey or link \
                 another account first, then remove it.",
            ),
            _ => None,
        },
    );
    render("account.html", &ctx)
}

pub fn enroll(
    tenant_name: &str,
    slug: &str,
    username: &str,
    token: &str,
    csrf: &str,
) -> Result<HttpResponse> {
    let mut ctx = Context::new();
    ctx.insert("title", "Create a passkey");
    ctx.insert("tenant_name", tenant_name);
    ctx.insert("slug", slug);
    ctx.insert("username", username);
    ctx.insert("token", token);
    ctx.insert("csrf", csrf);
    render("enroll.html", &ctx)
}
