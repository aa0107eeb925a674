//! Offline validation of ma-idp access tokens (RFC 9068) for any Rust service, e.g. a Music
//! Assistant add-on or an Alexa skill backend.
//!
//! * fetches the tenant's JWKS and caches it as long as its `Cache-Control: max-age` allows;
//! * on a `kid` it does not know, refetches once (at most every `min_refetch_interval`), so a
//!   key rotation is picked up without a restart;
//! * accepts only an allow-list of algorithms and only the algorithm the key itself declares
//!   — never the token header's word alone (no `none`, no HS256-with-a-public-key);
//! * checks `typ: at+jwt`, `iss`, `aud`, `exp`, `nbf`, `iat` with a small leeway, the required
//!   claims and optionally a scope;
//! * optionally asks the introspection endpoint whether the token was revoked.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

/// Why a token was refused. The message is safe to log: it never contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("not an access token (typ must be at+jwt)")]
    WrongType,
    #[error("token has no key id")]
    NoKeyId,
    #[error("unknown signing key {0} (not in the JWKS, even after refetching it)")]
    UnknownKey(String),
    #[error("the token's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("invalid signature")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    #[error("scope {0} not granted")]
    MissingScope(String),
    #[error("token revoked or inactive")]
    Inactive,
    #[error("cannot fetch keys: {0}")]
    Fetch(String),
}

/// The claims of a valid ma-idp access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: serde_json::Value,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    pub jti: String,
    #[serde(default)]
    pub auth_time: Option<i64>,
}

impl Claims {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scope.split(' ').any(|x| x == s)
    }
}

/// Introspection (RFC 7662) settings, to learn of revocations before tokens expire.
#[derive(Clone)]
pub struct Introspection {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The tenant's issuer, e.g. `https://idp.example/t/home`.
    pub issuer: String,
    /// The audience this service accepts (ma-idp's default: `music-assistant`).
    pub audience: String,
    /// Defaults to `{issuer}/jwks.json`.
    pub jwks_uri: Option<String>,
    /// Accepted algorithms; never HS*. Default: ES256, RS256, EdDSA.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    /// A scope every token must carry.
    pub required_scope: Option<String>,
    /// Refetch the JWKS for an unknown `kid` at most this often.
    pub min_refetch_interval: Duration,
    /// When the JWKS response has no `max-age`, keep it this long.
    pub default_cache: Duration,
    pub introspection: Option<Introspection>,
}

impl Config {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into().trim_end_matches('/').to_string(),
            audience: audience.into(),
            jwks_uri: None,
            algorithms: vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA],
            leeway: 30,
            required_scope: None,
            min_refetch_interval: Duration::from_secs(10),
            default_cache: Duration::from_secs(300),
            introspection: None,
        }
    }
}

struct Cached {
    set: JwkSet,
    fetched: Instant,
    max_age: Duration,
}

pub struct Validator {
    cfg: Config,
    http: reqwest::Client,
    cache: RwLock<Option<Cached>>,
    last_refetch: Mutex<Option<Instant>>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `max-age` from a Cache-Control header (`no-store`/`no-cache` mean 0).
fn max_age(header: Option<&str>) -> Option<Duration> {
    let h = header?;
    let mut out = None;
    for d in h.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            out = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
}

impl Validator {
    pub fn new(cfg: Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            cfg,
            http,
            cache: RwLock::new(None),
            last_refetch: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn jwks_uri(&self) -> String {
        self.cfg
            .jwks_uri
            .clone()
            .unwrap_or_else(|| format!("{}/jwks.json", self.cfg.issuer))
    }

    async fn fetch(&self) -> Result<(), ValidationError> {
        let resp = self
            .http
            .get(self.jwks_uri())
            .send()
            .await
            .map_err(|e| ValidationError::Fetch(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(ValidationError::Fetch(format!(
                "JWKS answered {}",
                resp.status()
            )));
        }
        let age = max_age(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        )
        .unwrap_or(self.cfg.default_cache);
        let set: JwkSet = resp
            .json()
            .await
            .map_err(|e| ValidationError::Fetch(e.to_string()))?;
        *self.cache.write().await = Some(Cached {
            set,
            fetched: Instant::now(),
            max_age: age,
        });
        Ok(())
    }

    /// The key for `kid`: from the cache while fresh, else refetched; an unknown kid causes
    /// one refetch, rate-limited.
    async fn key(&self, kid: &str) -> Result<Jwk, ValidationError> {
        {
            let c = self.cache.read().await;
            if let Some(c) = c.as_ref()
                && c.fetched.elapsed() < c.max_age
                && let Some(k) = c.set.find(kid)
            {
                return Ok(k.clone());
            }
        }
        let stale = {
            let c = self.cache.read().await;
            c.as_ref().is_none_or(|c| c.fetched.elapsed() >= c.max_age)
        };
        if stale {
            self.fetch().await?;
        } else {
            // Fresh cache but unknown kid: a rotation may have happened. Refetch, rate-limited.
            let mut last = self.last_refetch.lock().await;
            if last.is_none_or(|t| t.elapsed() >= self.cfg.min_refetch_interval) {
                *last = Some(Instant::now());
                drop(last);
                self.fetch().await?;
            }
        }
        let c = self.cache.read().await;
        c.as_ref()
            .and_then(|c| c.set.find(kid).cloned())
            .ok_or_else(|| ValidationError::UnknownKey(kid.to_string()))
    }

    /// Validate an access token; the claims, or why not.
    pub async fn validate(&self, token: &str) -> Result<Claims, ValidationError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ValidationError::Malformed)?;
        if !self.cfg.algorithms.contains(&header.alg)
            || matches!(
                header.alg,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            )
        {
            return Err(ValidationError::AlgorithmNotAllowed(format!(
                "{:?}",
                header.alg
            )));
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
        {
            return Err(ValidationError::WrongType);
        }
        let kid = header.kid.clone().ok_or(ValidationError::NoKeyId)?;
        let jwk = self.key(&kid).await?;
        let key_alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok())
            .ok_or(ValidationError::AlgorithmMismatch)?;
        if key_alg != header.alg {
            return Err(ValidationError::AlgorithmMismatch);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| ValidationError::AlgorithmMismatch)?;
        let mut v = Validation::new(key_alg);
        v.leeway = self.cfg.leeway;
        v.validate_nbf = true;
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.required_spec_claims = ["exp", "iat", "iss", "aud", "sub"]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => ValidationError::BadSignature,
                K::InvalidIssuer => ValidationError::WrongIssuer,
                K::InvalidAudience => ValidationError::WrongAudience,
                K::ExpiredSignature => ValidationError::Expired,
                K::ImmatureSignature => ValidationError::NotYetValid,
                K::MissingRequiredClaim(c) => match c.as_str() {
                    "exp" => ValidationError::MissingClaim("exp"),
                    "iat" => ValidationError::MissingClaim("iat"),
                    "iss" => ValidationError::MissingClaim("iss"),
                    "aud" => ValidationError::MissingClaim("aud"),
                    _ => ValidationError::MissingClaim("sub"),
                },
                K::Json(_) => ValidationError::MissingClaim("client_id"),
                _ => ValidationError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.iat > now() + self.cfg.leeway as i64 {
            return Err(ValidationError::NotYetValid);
        }
        if let Some(s) = &self.cfg.required_scope
            && !claims.has_scope(s)
        {
            return Err(ValidationError::MissingScope(s.clone()));
        }
        if let Some(i) = &self.cfg.introspection
            && !self.introspect(i, token).await?
        {
            return Err(ValidationError::Inactive);
        }
        Ok(claims)
    }

    async fn introspect(&self, i: &Introspection, token: &str) -> Result<bool, ValidationError> {
        #[derive(Deserialize)]
        struct Answer {
            active: bool,
        }
        let resp = self
            .http
            .post(&i.endpoint)
            .basic_auth(&i.client_id, Some(&i.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| ValidationError::Fetch(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(ValidationError::Fetch(format!(
                "introspection answered {}",
                resp.status()
            )));
        }
        let a: Answer = resp
            .json()
            .await
            .map_err(|e| ValidationError::Fetch(e.to_string()))?;
        Ok(a.active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age(Some("public, max-age=300")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(Some("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(Some("public")), None);
        assert_eq!(max_age(None), None);
    }
}
