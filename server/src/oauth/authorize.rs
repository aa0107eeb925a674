//! The authorization endpoint's decisions (RFC 6749 §4.1.1, OIDC Core §3.1.2). Errors before
//! the client and redirect URI are known show a page; after, they redirect to the registered
//! redirect URI with `error`, `state` and `iss` (RFC 9207).
use entity::{authorization_code, tenant};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::{Error, Result};
use crate::login::SignedIn;
use crate::oauth::params::Params;
use crate::oauth::{pkce, scopes};
use crate::secrets::{random_token, token_hash};
use crate::services::Services;
use crate::store::{ClientWithUris, NewCode, new_id_pub};

/// A validated authorization request, kept in the browser session between pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthzRequest {
    pub client_pk: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    /// A sign-in at or after this time (seconds) is needed: the request's time less its
    /// `max_age`, or the request's time itself with `prompt=login`. A sign-in made while the
    /// request waits always counts, so neither can send the browser round in circles.
    #[serde(default)]
    pub auth_after: Option<i64>,
}

/// How an authorization request fails.
#[derive(Debug)]
pub enum AuthzError {
    /// Show a page: the redirect URI cannot be trusted.
    Page(Error),
    /// Redirect to the client with an error.
    Redirect(String),
}

impl From<Error> for AuthzError {
    fn from(e: Error) -> Self {
        AuthzError::Page(e.into_page())
    }
}

/// Whether `given` is one of a client's registered redirect URIs: the same string, or, for a
/// loopback IP literal (`http://127.0.0.1`, `http://[::1]`), the same but for its port: a
/// native app listens on whatever port the system gives it at the time (RFC 8252 §7.3, which
/// leaves `localhost` out, §8.3). Both must be written as the URL parser writes them, so that
/// nothing but the port can differ.
pub fn is_registered(registered: &[String], given: &str) -> bool {
    registered.iter().any(|r| r == given) || {
        let unported = |s: &str| {
            let mut u = url::Url::parse(s).ok()?;
            let loopback = match u.host() {
                Some(url::Host::Ipv4(a)) => a == std::net::Ipv4Addr::LOCALHOST,
                Some(url::Host::Ipv6(a)) => a == std::net::Ipv6Addr::LOCALHOST,
                _ => false,
            };
            (u.scheme() == "http" && loopback && u.as_str() == s && u.set_port(None).is_ok())
                .then(|| u.to_string())
        };
        unported(given).is_some_and(|g| registered.iter().any(|r| unported(r) == Some(g.clone())))
    }
}

/// `redirect_uri?{params}&state=..&iss=..`, keeping any query the registered URI has.
pub fn redirect_with(
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
    iss: &str,
) -> Result<String> {
    let mut u = url::Url::parse(redirect_uri)
        .map_err(|_| Error::bad_page("Bad redirect", "The redirect URI is invalid."))?;
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", iss);
    }
    Ok(u.to_string())
}

impl AuthzRequest {
    pub fn error_redirect(&self, iss: &str, code: &str, description: &str) -> AuthzError {
        match redirect_with(
            &self.redirect_uri,
            &[
                ("error", code),
                (
                    "error_description",
                    &crate::error::rfc_description(description),
                ),
            ],
            self.state.as_deref(),
            iss,
        ) {
            Ok(u) => AuthzError::Redirect(u),
            Err(e) => AuthzError::Page(e),
        }
    }

    pub fn needs_login(&self, s: Option<&SignedIn>) -> bool {
        match s {
            None => true,
            Some(s) => self.auth_after.is_some_and(|t| s.auth_time < t),
        }
    }

    /// Ask for a sign-in at or after `t`, on top of what is asked already.
    pub fn require_auth_after(&mut self, t: i64) {
        self.auth_after = Some(self.auth_after.map_or(t, |a| a.max(t)));
    }
}

impl Services {
    /// Check an authorization request.
    pub async fn validate_authorize(
        &self,
        tenant: &tenant::Model,
        p: &Params,
    ) -> std::result::Result<(ClientWithUris, AuthzRequest), AuthzError> {
        let client_id = p.get("client_id").ok_or_else(|| {
            Error::bad_page(
                "Missing client",
                "The request does not say which application is asking (client_id).",
            )
        })?;
        let client = self
            .store
            .client_by_client_id(&tenant.id, client_id)
            .await
            .map_err(AuthzError::Page)?
            .filter(|c| !c.client.disabled)
            .ok_or_else(|| {
                Error::bad_page(
                    "Unknown application",
                    "This application is not registered here.",
                )
            })?;
        let given = p.get("redirect_uri");
        let redirect_uri = match given {
            Some(r) if is_registered(&client.redirect_uris, r) => r.to_string(),
            Some(_) => {
                return Err(AuthzError::Page(Error::bad_page(
                    "Unregistered redirect",
                    "The application asked to return to an address that is not registered for it.",
                )));
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => {
                return Err(AuthzError::Page(Error::bad_page(
                    "Missing redirect",
                    "The request does not say where to return (redirect_uri).",
                )));
            }
        };
        let iss = self.issuer(tenant);
        let mut req = AuthzRequest {
            client_pk: client.client.id.clone(),
            client_id: client.client.client_id.clone(),
            redirect_uri,
            redirect_uri_given: given.is_some(),
            scope: Vec::new(),
            state: p.get("state").map(str::to_string),
            nonce: p.get("nonce").map(str::to_string),
            code_challenge: None,
            prompt: Vec::new(),
            auth_after: None,
        };
        if p.get("request").is_some() {
            return Err(req.error_redirect(
                &iss,
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if p.get("request_uri").is_some() {
            return Err(req.error_redirect(
                &iss,
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        match p.get("response_type") {
            Some("code") => {}
            Some(_) => {
                return Err(req.error_redirect(
                    &iss,
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
            None => {
                return Err(req.error_redirect(
                    &iss,
                    "invalid_request",
                    "response_type is required",
                ));
            }
        }
        if let Some(m) = p.get("response_mode")
            && m != "query"
        {
            return Err(req.error_redirect(
                &iss,
                "invalid_request",
                "only response_mode=query is supported",
            ));
        }
        req.scope = match p.get("scope") {
            Some(s) => match scopes::parse(s) {
                Some(v) => v,
                None => return Err(req.error_redirect(&iss, "invalid_scope", "malformed scope")),
            },
            None => Vec::new(),
        };
        if req.scope.is_empty() {
            return Err(req.error_redirect(&iss, "invalid_scope", "no scope requested"));
        }
        if !scopes::subset(&req.scope, &client.client.scopes) {
            return Err(req.error_redirect(
                &iss,
                "invalid_scope",
                "a requested scope is not allowed for this client",
            ));
        }
        match (p.get("code_challenge"), p.get("code_challenge_method")) {
            (Some(ch), Some("S256")) if pkce::valid_challenge(ch) => {
                req.code_challenge = Some(ch.to_string())
            }
            (Some(_), Some("S256")) => {
                return Err(req.error_redirect(
                    &iss,
                    "invalid_request",
                    "malformed code_challenge",
                ));
            }
            (Some(_), Some(_)) | (None, Some(_)) => {
                return Err(req.error_redirect(
                    &iss,
                    "invalid_request",
                    "only code_challenge_method=S256 is supported",
                ));
            }
            (Some(_), None) => {
                return Err(req.error_redirect(
                    &iss,
                    "invalid_request",
                    "code_challenge_method=S256 is required (plain is refused)",
                ));
            }
            (None, None) => {
                if client.client.public || client.client.require_pkce {
                    return Err(req.error_redirect(
                        &iss,
                        "invalid_request",
                        "PKCE (code_challenge, S256) is required",
                    ));
                }
            }
        }
        if let Some(n) = &req.nonce
            && n.len() > 512
        {
            return Err(req.error_redirect(&iss, "invalid_request", "nonce too long"));
        }
        if let Some(pr) = p.get("prompt") {
            req.prompt = pr
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if req
                .prompt
                .iter()
                .any(|x| !matches!(x.as_str(), "none" | "login" | "consent" | "select_account"))
                || (req.prompt.iter().any(|x| x == "none") && req.prompt.len() > 1)
            {
                return Err(req.error_redirect(&iss, "invalid_request", "invalid prompt"));
            }
        }
        if let Some(m) = p.get("max_age") {
            match m.parse::<i64>() {
                Ok(v) if v >= 0 => req.require_auth_after(self.now().saturating_sub(v)),
                _ => return Err(req.error_redirect(&iss, "invalid_request", "invalid max_age")),
            }
        }
        Ok((client, req))
    }

    /// Whether the user must see the consent page for this request: `Some(grant id)` where a
    /// remembered consent covers it. `prompt=select_account` shows the page too (OIDC Core
    /// §3.1.2.1): it names the member signed in and offers to sign out and start again, the
    /// account choice this server has; no code goes out without the member seeing it.
    pub async fn needs_consent(&self, req: &AuthzRequest, user_id: &str) -> Result<Option<String>> {
        if req
            .prompt
            .iter()
            .any(|p| p == "consent" || p == "select_account")
        {
            return Ok(None);
        }
        Ok(self
            .store
            .active_grant(user_id, &req.client_pk)
            .await?
            .filter(|g| scopes::subset(&req.scope, &g.scope))
            .map(|g| g.id))
    }

    /// Record consent (audited). Returns the grant id.
    pub async fn record_consent(
        &self,
        tenant: &tenant::Model,
        req: &AuthzRequest,
        user_id: &str,
        info: &RequestInfo,
    ) -> Result<String> {
        let now = self.now();
        let id = self
            .store
            .upsert_grant(
                &tenant.id,
                user_id,
                &req.client_pk,
                &req.scope.join(" "),
                now,
            )
            .await?;
        self.store
            .insert_audit(
                AuditEvent::new("consent", "ok", Some(&tenant.id), info)
                    .client(&req.client_id)
                    .user(user_id)
                    .detail(serde_json::json!({"scope": req.scope.join(" ")})),
                now,
            )
            .await?;
        Ok(id)
    }

    /// Issue an authorization code (stored as a hash, committed before it is returned) and
    /// build the redirect back to the client.
    pub async fn issue_code(
        &self,
        tenant: &tenant::Model,
        req: &AuthzRequest,
        user: &SignedIn,
        grant_id: &str,
    ) -> Result<String> {
        let now = self.now();
        let code = random_token();
        let amr = if user.amr.is_empty() {
            "pwd".to_string()
        } else {
            user.amr.join(" ")
        };
        self.store
            .insert_code(NewCode {
                code: authorization_code::Model {
                    id: new_id_pub(),
                    code_hash: token_hash(code.expose()),
                    tenant_id: tenant.id.clone(),
                    client_id: req.client_pk.clone(),
                    user_id: user.user.id.clone(),
                    grant_id: grant_id.to_string(),
                    redirect_uri: if req.redirect_uri_given {
                        req.redirect_uri.clone()
                    } else {
                        String::new()
                    },
                    scope: req.scope.join(" "),
                    nonce: req.nonce.clone(),
                    code_challenge: req.code_challenge.clone(),
                    auth_time: user.auth_time,
                    amr,
                    created_at: now,
                    expires_at: now + tenant.code_ttl.clamp(10, 600),
                    consumed_at: None,
                },
            })
            .await?;
        redirect_with(
            &req.redirect_uri,
            &[("code", code.expose())],
            req.state.as_deref(),
            &self.issuer(tenant),
        )
    }
}
