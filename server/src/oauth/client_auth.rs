//! Client authentication at the token, revocation and introspection endpoints: HTTP Basic
//! (RFC 6749 §2.3.1, form-urlencoded id and secret) or `client_id` + `client_secret` in the
//! body, never both; public clients send only `client_id`.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use entity::tenant;

use crate::error::{Error, Result};
use crate::oauth::params::Params;
use crate::secrets::Secret;
use crate::services::Services;
use crate::store::ClientWithUris;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Basic,
    Post,
    None,
}

#[derive(Debug)]
pub struct Credentials {
    pub client_id: String,
    pub secret: Option<Secret>,
    pub method: Method,
}

/// One form-urlencoded value (RFC 6749 §2.3.1: the Basic user and password are the client
/// id and secret, form-urlencoded). A raw `&` cannot stand in one: it is refused, not cut at.
fn form_decode(s: &str) -> Result<String> {
    if s.contains('&') {
        return Err(Error::invalid_client("malformed Basic credentials"));
    }
    let p = Params::parse(format!("v={s}").as_bytes())?;
    Ok(p.get("v").unwrap_or_default().to_string())
}

/// Read the client's credentials from the Authorization header and the body.
pub fn extract(params: &Params, authorization: Option<&str>) -> Result<Credentials> {
    let basic = match authorization {
        Some(h) => {
            let (scheme, value) = h.trim().split_once(' ').unwrap_or((h, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(Error::invalid_client(
                    "unsupported Authorization scheme; use Basic",
                ));
            }
            let raw = STANDARD
                .decode(value.trim())
                .map_err(|_| Error::invalid_client("malformed Basic credentials"))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| Error::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = raw
                .split_once(':')
                .ok_or_else(|| Error::invalid_client("malformed Basic credentials"))?;
            let id = form_decode(id)
                .map_err(|_| Error::invalid_client("malformed Basic credentials"))?;
            let secret = form_decode(secret)
                .map_err(|_| Error::invalid_client("malformed Basic credentials"))?;
            Some((id, Secret::new(secret)))
        }
        None => None,
    };
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    match basic {
        Some((id, secret)) => {
            if body_secret.is_some() {
                return Err(Error::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(Error::invalid_request(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            Ok(Credentials {
                client_id: id,
                secret: Some(secret),
                method: Method::Basic,
            })
        }
        None => {
            let id =
                body_id.ok_or_else(|| Error::invalid_client("client authentication required"))?;
            Ok(match body_secret {
                Some(s) => Credentials {
                    client_id: id.to_string(),
                    secret: Some(Secret::new(s)),
                    method: Method::Post,
                },
                None => Credentials {
                    client_id: id.to_string(),
                    secret: None,
                    method: Method::None,
                },
            })
        }
    }
}

impl Services {
    /// Authenticate a client of this tenant. Every failure is `invalid_client` (401, with a
    /// Basic challenge) and says no more than needed.
    pub async fn authenticate_client(
        &self,
        tenant: &tenant::Model,
        creds: &Credentials,
    ) -> Result<ClientWithUris> {
        let fail = |why: &str| Error::invalid_client(why.to_string());
        if creds.client_id.is_empty() || creds.client_id.len() > 128 {
            return Err(fail("unknown client or wrong credentials"));
        }
        let Some(c) = self
            .store
            .client_by_client_id(&tenant.id, &creds.client_id)
            .await?
        else {
            // Spend the same time as a real check.
            if let Some(s) = &creds.secret {
                let _ = self.secret_hasher.verify(s.expose(), "");
            }
            return Err(fail("unknown client or wrong credentials"));
        };
        // Whether it is disabled or public is said only to whoever proved to be the client.
        match (&c.client.secret_hash, &creds.secret) {
            (Some(hash), Some(secret)) => {
                if !self.secret_hasher.verify(secret.expose(), hash) {
                    return Err(fail("unknown client or wrong credentials"));
                }
                let allowed = match c.client.auth_method.as_str() {
                    "client_secret_basic" => creds.method == Method::Basic,
                    "client_secret_post" => creds.method == Method::Post,
                    _ => true,
                };
                if !allowed {
                    return Err(fail("this client must use another authentication method"));
                }
            }
            (Some(_), None) => return Err(fail("client authentication required")),
            (None, Some(s)) => {
                let _ = self.secret_hasher.verify(s.expose(), "");
                return Err(fail("unknown client or wrong credentials"));
            }
            (None, None) => {}
        }
        if c.client.disabled {
            return Err(fail("this client is disabled"));
        }
        Ok(c)
    }
}
