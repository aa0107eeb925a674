//! Interoperability with the `openidconnect` and `oauth2` crates as clients: discovery,
//! code + PKCE + nonce, ID-token validation (signature, issuer, audience, nonce, at_hash),
//! userinfo and refresh — through the real sign-in and consent pages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ma_idp::services::ClientSpec;
use ma_idp_tests::*;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

both_backends!(openidconnect_crate_full_flow, oauth2_crate_alexa_style_flow);

const CB: &str = "http://localhost:9/cb";

async fn rp_client(app: &TestApp) -> (String, String) {
    let t = app.svc.tenant("home").await.unwrap();
    let c = app
        .svc
        .create_client(
            &t,
            ClientSpec {
                name: "Relying party".into(),
                redirect_uris: vec![CB.into()],
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    (c.client.client_id, c.secret.unwrap().expose().to_string())
}

fn http_client() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn openidconnect_crate_full_flow(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    app.setup("home").await;
    let (id, secret) = rp_client(&app).await;
    let http = http_client();
    let issuer = IssuerUrl::new(app.url("/t/home")).unwrap();
    let meta = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .expect("discovery");
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(id),
        Some(ClientSecret::new(secret)),
    )
    .set_redirect_uri(RedirectUrl::new(CB.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();
    let loc = app
        .browser()
        .sign_in_and_consent_url(url.as_str(), "alice", PASSWORD)
        .await;
    let (code, _) = parse_code(&loc, CB, state.secret());
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("the ID token verifies");
    let expected = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected);
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some("alice")
    );
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().to_owned(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject(), claims.subject());
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        tokens.refresh_token().unwrap().secret()
    );
    assert!(refreshed.expires_in().is_some());
    app.stop().await;
}

async fn oauth2_crate_alexa_style_flow(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let setup = app.setup("home").await;
    let redirect = alexa_redirects()[0].clone();
    let client = oauth2::basic::BasicClient::new(oauth2::ClientId::new(setup.client_id.clone()))
        .set_client_secret(oauth2::ClientSecret::new(setup.client_secret.clone()))
        .set_auth_uri(oauth2::AuthUrl::new(app.url("/alexa/authorize")).unwrap())
        .set_token_uri(oauth2::TokenUrl::new(app.url("/alexa/token")).unwrap())
        .set_redirect_uri(oauth2::RedirectUrl::new(redirect.clone()).unwrap());
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(oauth2::CsrfToken::new_random)
        .add_scope(oauth2::Scope::new("music.control".into()))
        .set_pkce_challenge(challenge)
        .url();
    let loc = app
        .browser()
        .sign_in_and_consent_url(url.as_str(), "alice", PASSWORD)
        .await;
    let (code, _) = parse_code(&loc, &redirect, state.secret());
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let tokens = client
        .exchange_code(oauth2::AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    app.verify_access_token("home", tokens.access_token().secret())
        .await;
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .request_async(&http)
        .await
        .expect("refresh");
    app.verify_access_token("home", refreshed.access_token().secret())
        .await;
    assert!(refreshed.expires_in().is_some());
    app.stop().await;
}
