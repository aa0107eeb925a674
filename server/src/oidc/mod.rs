//! OpenID Connect: discovery (and RFC 8414 metadata), userinfo. ID tokens are built in
//! `oauth::issue`; the JWKS comes from `tokens::keys`.
pub mod discovery;
pub mod userinfo;
