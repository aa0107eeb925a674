//! OAuth 2.0: the authorization endpoint, one file per grant type, client authentication,
//! PKCE, revocation (RFC 7009) and introspection (RFC 7662).
pub mod authorize;
pub mod client_auth;
pub mod grant_authorization_code;
pub mod grant_client_credentials;
pub mod grant_refresh_token;
pub mod introspect;
pub mod issue;
pub mod params;
pub mod pkce;
pub mod revoke;
pub mod scopes;

pub use issue::TokenResponse;
pub use params::Params;
