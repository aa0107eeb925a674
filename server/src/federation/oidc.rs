//! Any OpenID Connect provider, through discovery, with the `openidconnect` crate: PKCE,
//! `state`, `nonce`, and the ID token's signature and claims checked.
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthUrl, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, JsonWebKeySetUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse, TokenUrl,
};

use super::http_client::send;
use super::{FedError, FedPending, ProviderConfig, UpstreamUser};

fn misconfigured(e: impl std::fmt::Display) -> FedError {
    FedError::Misconfigured(e.to_string())
}

/// Discover the provider (endpoints and keys), then apply the configured overrides.
async fn metadata(cfg: &ProviderConfig) -> Result<CoreProviderMetadata, FedError> {
    let m = &cfg.model;
    let issuer = IssuerUrl::new(m.issuer.clone().unwrap_or_default()).map_err(misconfigured)?;
    let http = |r| send(r, cfg.allow_private);
    let mut meta = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .map_err(|e| match e {
            openidconnect::DiscoveryError::Request(e) => e.into_fed(),
            other => FedError::Misconfigured(format!("discovery: {other}")),
        })?;
    if let Some(a) = &m.authorization_endpoint {
        meta = meta.set_authorization_endpoint(AuthUrl::new(a.clone()).map_err(misconfigured)?);
    }
    if let Some(t) = &m.token_endpoint {
        meta = meta.set_token_endpoint(Some(TokenUrl::new(t.clone()).map_err(misconfigured)?));
    }
    if let Some(j) = &m.jwks_uri {
        let url = JsonWebKeySetUrl::new(j.clone()).map_err(misconfigured)?;
        let keys = CoreJsonWebKeySet::fetch_async(&url, &http)
            .await
            .map_err(|e| match e {
                openidconnect::DiscoveryError::Request(e) => e.into_fed(),
                other => FedError::Unreachable(format!("jwks: {other}")),
            })?;
        meta = meta.set_jwks_uri(url).set_jwks(keys);
    }
    Ok(meta)
}

/// The authorization URL, the state, the PKCE verifier and the nonce. `reauth`: ask for a
/// fresh authentication (`prompt=login`) no older than this many seconds (`max_age`).
pub async fn authorize_url(
    cfg: &ProviderConfig,
    reauth: Option<u64>,
) -> Result<(String, String, String, Option<String>), FedError> {
    let meta = metadata(cfg).await?;
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(cfg.model.client_id.clone()),
        cfg.client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().to_string())),
    )
    .set_redirect_uri(RedirectUrl::new(cfg.redirect_uri.clone()).map_err(misconfigured)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in cfg
        .model
        .scopes
        .split_whitespace()
        .filter(|s| *s != "openid")
    {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    if let Some(max_age) = reauth {
        req = req
            .add_prompt(CoreAuthPrompt::Login)
            .set_max_age(std::time::Duration::from_secs(max_age));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    Ok((
        url.to_string(),
        state.secret().clone(),
        verifier.secret().clone(),
        Some(nonce.secret().clone()),
    ))
}

pub async fn identify(
    cfg: &ProviderConfig,
    pending: &FedPending,
    code: &str,
) -> Result<UpstreamUser, FedError> {
    let meta = metadata(cfg).await?;
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(cfg.model.client_id.clone()),
        cfg.client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().to_string())),
    )
    .set_redirect_uri(RedirectUrl::new(cfg.redirect_uri.clone()).map_err(misconfigured)?);
    let http = |r| send(r, cfg.allow_private);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(misconfigured)?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&http)
        .await
        .map_err(super::amazon::token_error)?;
    let id_token = token
        .id_token()
        .ok_or_else(|| FedError::BadIdToken("the token response has no id_token".into()))?;
    let nonce = Nonce::new(pending.nonce.clone().unwrap_or_default());
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .map_err(|e| match e {
            ClaimsVerificationError::InvalidNonce(_) => FedError::NonceMismatch,
            other => FedError::BadIdToken(other.to_string()),
        })?;
    if !super::plausible_subject(claims.subject()) {
        return Err(FedError::BadIdToken(
            "the subject is not 1 to 255 bytes without control characters".into(),
        ));
    }
    Ok(UpstreamUser {
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
        amr: claims
            .auth_method_refs()
            .map(|v| v.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
        auth_time: claims.auth_time().map(|t| t.timestamp()),
    })
}
