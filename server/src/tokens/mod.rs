//! Tokens and keys: the master key, signing keys (generation, encryption at rest, rotation,
//! the JWKS) and JWT signing and verification.
pub mod jwt;
pub mod keys;
pub mod master;

pub use jwt::{AccessClaims, IdClaims};
pub use keys::{KeyService, SigningAlg};
pub use master::MasterKey;
