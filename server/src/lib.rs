//! ma-idp: a self-hosted, multi-tenant OAuth 2.0 / OpenID Connect identity provider for
//! Music Assistant households.
//!
//! Layers (arrows point one way): `http` handlers -> services (`oauth`, `oidc`, `login`,
//! `tokens`) -> `store` -> `entity`. Handlers parse and render; services decide; the store is
//! the only place that queries.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod federation;
pub mod http;
pub mod login;
pub mod memory;
pub mod oauth;
pub mod oidc;
pub mod passkeys;
pub mod secrets;
pub mod services;
pub mod store;
pub mod tokens;

pub use app::{RunningServer, start_server};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Settings;
pub use services::Services;
