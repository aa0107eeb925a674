//! Login with Amazon: plain OAuth 2.0 (no ID token, no discovery) with the `oauth2` crate.
//! The identity is the profile's `user_id` (`amzn1.account....`).
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::Deserialize;

use super::http_client::{HttpError, client, guard, read_body, send};
use super::{FedError, FedPending, ProviderConfig, UpstreamUser};

/// Amazon's hosts per region: authorization, token, profile.
pub fn endpoints(region: &str) -> (&'static str, &'static str, &'static str) {
    match region {
        "EU" => (
            "https://eu.account.amazon.com/ap/oa",
            "https://api.amazon.co.uk/auth/o2/token",
            "https://api.amazon.co.uk/user/profile",
        ),
        "FE" => (
            "https://apac.account.amazon.com/ap/oa",
            "https://api.amazon.co.jp/auth/o2/token",
            "https://api.amazon.co.jp/user/profile",
        ),
        _ => (
            "https://www.amazon.com/ap/oa",
            "https://api.amazon.com/auth/o2/token",
            "https://api.amazon.com/user/profile",
        ),
    }
}

struct Urls {
    auth: String,
    token: String,
    profile: String,
}

fn urls(cfg: &ProviderConfig) -> Urls {
    let m = &cfg.model;
    let (a, t, p) = endpoints(m.region.as_deref().unwrap_or("NA"));
    Urls {
        auth: m.authorization_endpoint.clone().unwrap_or_else(|| a.into()),
        token: m.token_endpoint.clone().unwrap_or_else(|| t.into()),
        profile: m.userinfo_endpoint.clone().unwrap_or_else(|| p.into()),
    }
}

fn misconfigured(e: impl std::fmt::Display) -> FedError {
    FedError::Misconfigured(e.to_string())
}

type Client = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn oauth_client(cfg: &ProviderConfig) -> Result<Client, FedError> {
    let u = urls(cfg);
    let mut c = BasicClient::new(ClientId::new(cfg.model.client_id.clone()))
        .set_auth_uri(AuthUrl::new(u.auth).map_err(misconfigured)?)
        .set_token_uri(TokenUrl::new(u.token).map_err(misconfigured)?)
        .set_redirect_uri(RedirectUrl::new(cfg.redirect_uri.clone()).map_err(misconfigured)?)
        // LWA reads the client credentials from the request body.
        .set_auth_type(AuthType::RequestBody);
    if let Some(s) = &cfg.client_secret {
        c = c.set_client_secret(ClientSecret::new(s.expose().to_string()));
    }
    Ok(c)
}

/// The authorization URL, the state, the PKCE verifier (and no nonce: LWA has no ID token).
pub fn authorize_url(
    cfg: &ProviderConfig,
) -> Result<(String, String, String, Option<String>), FedError> {
    let c = oauth_client(cfg)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = c.authorize_url(CsrfToken::new_random);
    for s in cfg.model.scopes.split_whitespace() {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    let (url, state) = req.set_pkce_challenge(challenge).url();
    Ok((
        url.to_string(),
        state.secret().clone(),
        verifier.secret().clone(),
        None,
    ))
}

#[derive(Deserialize)]
struct Profile {
    user_id: String,
    name: Option<String>,
    email: Option<String>,
}

pub async fn identify(
    cfg: &ProviderConfig,
    pending: &FedPending,
    code: &str,
) -> Result<UpstreamUser, FedError> {
    let c = oauth_client(cfg)?;
    let http = |r| send(r, cfg.allow_private);
    let token = c
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&http)
        .await
        .map_err(token_error)?;
    let u = urls(cfg);
    guard(&u.profile, cfg.allow_private).map_err(HttpError::into_fed)?;
    let resp = client(cfg.allow_private)
        .map_err(FedError::Unreachable)?
        .get(&u.profile)
        .bearer_auth(token.access_token().secret())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| HttpError::from_reqwest(&e).into_fed())?;
    let status = resp.status();
    let body = read_body(resp).await.map_err(HttpError::into_fed)?;
    if !status.is_success() {
        return Err(FedError::UpstreamError(format!(
            "profile: HTTP {status}: {}",
            upstream_error_text(&body)
        )));
    }
    let p: Profile = serde_json::from_slice(&body)
        .map_err(|e| FedError::UpstreamError(format!("profile: unexpected answer: {e}")))?;
    if !super::plausible_subject(&p.user_id) {
        return Err(FedError::UpstreamError(
            "profile: no usable user_id (1 to 255 bytes, no control characters)".into(),
        ));
    }
    Ok(UpstreamUser {
        subject: p.user_id,
        // Amazon does not say whether the e-mail is verified: never link by it.
        email: p.email,
        email_verified: false,
        name: p.name,
        amr: Vec::new(),
        // Amazon does not say when the person authenticated.
        auth_time: None,
    })
}

/// `error` and `error_description` of an OAuth error body, if it is one.
pub fn upstream_error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: Option<String>,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(E {
            error: Some(e),
            error_description,
        }) => format!("{e}: {}", error_description.unwrap_or_default()),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

pub fn token_error<T: oauth2::ErrorResponse + std::fmt::Display + 'static>(
    e: RequestTokenError<HttpError, T>,
) -> FedError {
    match e {
        RequestTokenError::ServerResponse(r) => FedError::UpstreamError(format!("token: {r}")),
        RequestTokenError::Request(e) => e.into_fed(),
        RequestTokenError::Parse(e, _) => {
            FedError::UpstreamError(format!("token: unexpected answer: {e}"))
        }
        RequestTokenError::Other(e) => FedError::UpstreamError(format!("token: {e}")),
    }
}
