//! SeaORM entities, one file per table. Timestamps are Unix seconds (UTC); ids are UUIDv7 text.

pub mod audit_event;
pub mod authorization_code;
pub mod browser_session;
pub mod client;
pub mod client_redirect_uri;
pub mod enrollment_link;
pub mod grant;
pub mod login_throttle;
pub mod passkey;
pub mod password_credential;
pub mod refresh_family;
pub mod refresh_token;
pub mod revoked_access_token;
pub mod server_setting;
pub mod setup_link;
pub mod signing_key;
pub mod tenant;
pub mod upstream_identity;
pub mod upstream_provider;
pub mod user;
pub mod webauthn_ceremony;
