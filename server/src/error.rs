//! One error type. Each variant knows its HTTP status and, for OAuth endpoints, its RFC 6749
//! §5.2 error code; page errors render the HTML error page.
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use sea_orm::DbErr;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OAuth error answered as JSON (token, revoke, introspect, userinfo endpoints).
    #[error("{code}: {description}")]
    OAuth {
        code: &'static str,
        description: String,
        status: StatusCode,
        /// Answer with `WWW-Authenticate: Basic` (every `invalid_client`: RFC 9110 §15.5.2
        /// wants a challenge on each 401, and Basic is the scheme a client may use).
        basic_challenge: bool,
        /// Answer with `WWW-Authenticate: Bearer` (userinfo).
        bearer_challenge: bool,
    },
    /// An error shown as an HTML page.
    #[error("page {status}: {title}")]
    Page {
        status: StatusCode,
        title: String,
        message: String,
    },
    /// The database could not be reached or failed: 503, retry later.
    #[error("database unavailable: {0}")]
    Db(#[from] DbErr),
    /// A bug or broken configuration (e.g. a key that does not decrypt).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn oauth(code: &'static str, status: StatusCode, description: impl Into<String>) -> Self {
        Error::OAuth {
            code,
            description: description.into(),
            status,
            basic_challenge: false,
            bearer_challenge: false,
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::oauth("invalid_request", StatusCode::BAD_REQUEST, d)
    }
    /// 401 with a Basic challenge, whichever way the client authenticated: RFC 6749 §5.2 asks
    /// for one when the client used the `Authorization` header, and RFC 9110 §15.5.2 for one
    /// on every 401 (a client that sent its credentials in the body learns that Basic works).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Error::OAuth {
            code: "invalid_client",
            description: d.into(),
            status: StatusCode::UNAUTHORIZED,
            basic_challenge: true,
            bearer_challenge: false,
        }
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::oauth("invalid_grant", StatusCode::BAD_REQUEST, d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::oauth("unauthorized_client", StatusCode::BAD_REQUEST, d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::oauth("unsupported_grant_type", StatusCode::BAD_REQUEST, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::oauth("invalid_scope", StatusCode::BAD_REQUEST, d)
    }
    pub fn unsupported_token_type(d: impl Into<String>) -> Self {
        Self::oauth("unsupported_token_type", StatusCode::BAD_REQUEST, d)
    }
    pub fn invalid_token(d: impl Into<String>) -> Self {
        Error::OAuth {
            code: "invalid_token",
            description: d.into(),
            status: StatusCode::UNAUTHORIZED,
            basic_challenge: false,
            bearer_challenge: true,
        }
    }
    /// Too many requests from this client: 429 with `Retry-After`.
    pub fn too_many(d: impl Into<String>) -> Self {
        Self::oauth("temporarily_unavailable", StatusCode::TOO_MANY_REQUESTS, d)
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::Page {
            status: StatusCode::NOT_FOUND,
            title: "Not found".into(),
            message: what.into(),
        }
    }
    pub fn bad_page(title: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Page {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            message: message.into(),
        }
    }
    pub fn internal(d: impl std::fmt::Display) -> Self {
        Error::Internal(d.to_string())
    }

    /// The same error, but shown as a page (for browser-facing endpoints).
    pub fn into_page(self) -> Self {
        match self {
            Error::OAuth {
                description,
                status,
                code,
                ..
            } => Error::Page {
                status: if status == StatusCode::UNAUTHORIZED {
                    StatusCode::BAD_REQUEST
                } else {
                    status
                },
                title: match code {
                    "invalid_client" => "Unknown application".into(),
                    _ => "This request cannot be completed".into(),
                },
                message: description,
            },
            other => other,
        }
    }

    /// The OAuth error code, for metrics and audit.
    pub fn code(&self) -> &'static str {
        match self {
            Error::OAuth { code, .. } => code,
            Error::Page { .. } => "page",
            Error::Db(_) => "temporarily_unavailable",
            Error::Internal(_) => "server_error",
        }
    }
}

#[derive(Serialize)]
struct OAuthBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn json_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(OAuthBody {
            error: code,
            error_description: &rfc_description(description),
        })
}

/// `description` in the characters RFC 6749 allows an `error_description` (§5.2, §4.1.2.1:
/// `%x20-21 / %x23-5B / %x5D-7E`, printable ASCII but `"` and `\`): a double quote becomes a
/// single one, anything else outside them (a backslash, a control or non-ASCII character,
/// as in a parameter name a request made up) a `?`.
pub fn rfc_description(description: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
    if description.chars().all(allowed) {
        return description.into();
    }
    description
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if allowed(c) => c,
            _ => '?',
        })
        .collect::<String>()
        .into()
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::OAuth { status, .. } | Error::Page { status, .. } => *status,
            Error::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Error::OAuth {
                code,
                description,
                status,
                basic_challenge,
                bearer_challenge,
            } => {
                let mut resp = json_error(*status, code, description);
                if *status == StatusCode::TOO_MANY_REQUESTS {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                }
                if *basic_challenge {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"ma-idp\", charset=\"UTF-8\""),
                    );
                }
                if *bearer_challenge {
                    let v = format!("Bearer error=\"{code}\"");
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                    }
                }
                resp
            }
            Error::Page {
                status,
                title,
                message,
            } => crate::http::pages::error_page(*status, title, message),
            Error::Db(e) => {
                tracing::warn!(error = %e, "database error");
                let mut resp = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the database is unavailable; try again shortly",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                resp
            }
            Error::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }
}
