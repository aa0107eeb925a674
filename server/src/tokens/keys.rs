//! Signing keys: generated per tenant and algorithm, private parts sealed under the master
//! key, rotated so that the next key is published before it signs and a retired key stays in
//! the JWKS until every token it signed has expired.
//!
//! Each tenant has, per algorithm, one `active` key (signs), one `next` key (published, not
//! yet signing) and any number of `retired` keys (published until `publish_until`). Rotation
//! retires the active key, promotes the next key, and creates a new next key. A validator that
//! refreshed its JWKS at any time before the rotation therefore already knows the key that
//! signs after it.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::secrets::random_id;
use crate::store::Store;
use crate::tokens::jwt::{self, AccessClaims};
use crate::tokens::master::KeySealer;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum SigningAlg {
    ES256,
    RS256,
    EdDSA,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(SigningAlg::ES256),
            "RS256" => Some(SigningAlg::RS256),
            "EdDSA" => Some(SigningAlg::EdDSA),
            _ => None,
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::RS256 => Algorithm::RS256,
            SigningAlg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// A published key, with its private half when it signs.
pub struct LoadedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub encoding: Option<EncodingKey>,
    pub decoding: DecodingKey,
}

/// What one tenant's keys look like right now.
pub struct TenantKeys {
    pub active: HashMap<SigningAlg, Arc<LoadedKey>>,
    pub by_kid: HashMap<String, Arc<LoadedKey>>,
    /// The serialized JWKS document.
    pub jwks: String,
    loaded_at: i64,
}

impl TenantKeys {
    pub fn signer(&self, alg: SigningAlg) -> Result<&LoadedKey> {
        self.active
            .get(&alg)
            .map(|k| k.as_ref())
            .ok_or_else(|| Error::internal(format!("tenant has no active {} key", alg.as_str())))
    }
}

/// A freshly generated key: its sealed private part and public JWK.
pub struct NewKey {
    pub id: String,
    pub kid: String,
    pub alg: SigningAlg,
    pub private_enc: Vec<u8>,
    pub public_jwk: String,
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn encoding_key(alg: SigningAlg, pkcs8: &[u8]) -> Result<EncodingKey> {
    match alg {
        SigningAlg::ES256 => Ok(EncodingKey::from_ec_der(pkcs8)),
        SigningAlg::EdDSA => Ok(EncodingKey::from_ed_der(pkcs8)),
        SigningAlg::RS256 => EncodingKey::from_rsa_pem(pem_wrap("PRIVATE KEY", pkcs8).as_bytes())
            .map_err(|e| Error::internal(format!("RSA key: {e}"))),
    }
}

fn generate_pkcs8(alg: SigningAlg) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let fail = |what: &str| Error::internal(format!("key generation failed: {what}"));
    Ok(match alg {
        SigningAlg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| fail("ES256"))?
            .as_ref()
            .to_vec(),
        SigningAlg::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(|_| fail("EdDSA"))?
            .as_ref()
            .to_vec(),
        SigningAlg::RS256 => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| fail("RS256"))?;
            let der: Pkcs8V1Der = kp.as_der().map_err(|_| fail("RS256 encoding"))?;
            der.as_ref().to_vec()
        }
    })
}

fn public_jwk(alg: SigningAlg, kid: &str, enc: &EncodingKey) -> Result<Jwk> {
    let mut jwk =
        Jwk::from_encoding_key(enc, alg.jwt()).map_err(|e| Error::internal(format!("JWK: {e}")))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

/// Generate a key and seal its private part.
pub fn generate(sealer: &KeySealer, alg: SigningAlg) -> Result<NewKey> {
    let pkcs8 = generate_pkcs8(alg)?;
    let kid = random_id();
    let enc = encoding_key(alg, &pkcs8)?;
    let jwk = public_jwk(alg, &kid, &enc)?;
    let private_enc = sealer.seal(&kid, &pkcs8).map_err(Error::internal)?;
    let public_jwk = serde_json::to_string(&jwk).map_err(Error::internal)?;
    Ok(NewKey {
        id: uuid::Uuid::now_v7().to_string(),
        kid,
        alg,
        private_enc,
        public_jwk,
    })
}

/// How long a tenant's key cache is trusted before the database is asked again. Keeps several
/// instances in agreement within seconds of a rotation.
const CACHE_TTL: i64 = 5;

/// How long resource servers may cache a JWKS (its `Cache-Control: max-age`).
pub const JWKS_MAX_AGE: u32 = 300;

/// The youngest a next key may be when a rotation makes it the signing key: by then every
/// JWKS cached before it was published has expired (the JWKS's max-age, and this server's
/// own key cache).
pub const MIN_NEXT_KEY_AGE: i64 = JWKS_MAX_AGE as i64 + CACHE_TTL;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// Rotated: the kids that sign from now on.
    Now(Vec<String>),
    /// Refused: the next keys were published this many seconds ago.
    TooSoon { next_age: i64 },
}

pub struct KeyService {
    store: Store,
    sealer: KeySealer,
    clock: SharedClock,
    cache: RwLock<HashMap<String, Arc<TenantKeys>>>,
    /// Access tokens whose signature and claims were verified, by SHA-256 of the token. A
    /// resource server introspects the same token again and again; a token seen before skips
    /// the ECDSA/RSA verification (a fifth of an introspection's CPU). Only the signature
    /// check is remembered: the key must still be published, the token unexpired, and
    /// revocation is checked in the database on every request by the callers.
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
}

struct Verified {
    tenant_id: String,
    issuer: String,
    kid: String,
    claims: AccessClaims,
}

/// Verified access tokens remembered at most (about 0.5 KiB each).
const VERIFIED_CAPACITY: u64 = 4096;

impl KeyService {
    pub fn new(store: Store, sealer: KeySealer, clock: SharedClock) -> Self {
        Self {
            store,
            sealer,
            clock,
            cache: RwLock::new(HashMap::new()),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
        }
    }

    /// [`jwt::verify_access_token`], remembering tokens already verified (see `verified`).
    pub fn verify_access_token(
        &self,
        tenant_id: &str,
        keys: &TenantKeys,
        issuer: &str,
        token: &str,
        now: i64,
    ) -> Result<AccessClaims> {
        let mut id = [0u8; 32];
        id.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
        );
        if let Some(v) = self.verified.get(&id)
            && v.tenant_id == tenant_id
            && v.issuer == issuer
            && v.claims.exp > now
            && keys.by_kid.contains_key(&v.kid)
        {
            return Ok(v.claims.clone());
        }
        let (claims, kid) = jwt::verify_access_token(keys, issuer, token, now)?;
        self.verified.insert(
            id,
            Arc::new(Verified {
                tenant_id: tenant_id.to_string(),
                issuer: issuer.to_string(),
                kid,
                claims: claims.clone(),
            }),
        );
        Ok(claims)
    }

    pub fn sealer(&self) -> &KeySealer {
        &self.sealer
    }

    /// Create the active and next keys a tenant lacks (on tenant creation and at start-up).
    /// Whether the master key opens this database's signing keys (one active key of any
    /// tenant is opened); `None` when there is no key yet. A server started with another
    /// master key than the database was made with would answer every token request with an
    /// error: `serve` refuses to start instead.
    pub async fn master_key_opens(&self) -> Result<Option<bool>> {
        Ok(self
            .store
            .any_active_signing_key()
            .await?
            .map(|k| self.sealer.open(&k.kid, &k.private_enc).is_ok()))
    }

    pub async fn ensure_tenant_keys(&self, tenant_id: &str) -> Result<()> {
        let rows = self.store.signing_keys(tenant_id).await?;
        let mut new = Vec::new();
        for alg in SigningAlg::ALL {
            for state in ["active", "next"] {
                if !rows
                    .iter()
                    .any(|r| r.alg == alg.as_str() && r.state == state)
                {
                    new.push((generate(&self.sealer, alg)?, state));
                }
            }
        }
        if !new.is_empty() {
            self.store
                .insert_signing_keys(tenant_id, new, self.clock.now())
                .await?;
            self.invalidate(tenant_id);
        }
        Ok(())
    }

    /// Rotate every algorithm of a tenant. `keep_published` is how long retired keys stay in
    /// the JWKS (the longest lifetime of a token they signed, plus leeway). Unless `force`,
    /// a rotation is refused while the next keys, which it would make the signing keys, are
    /// younger than [`MIN_NEXT_KEY_AGE`]: a resource server that cached the JWKS before they
    /// were published would not know them yet.
    pub async fn rotate(
        &self,
        tenant_id: &str,
        keep_published: i64,
        force: bool,
    ) -> Result<Rotated> {
        let mut new_next = Vec::new();
        for alg in SigningAlg::ALL {
            new_next.push(generate(&self.sealer, alg)?);
        }
        let now = self.clock.now();
        let refused = self
            .store
            .rotate_signing_keys(
                tenant_id,
                now,
                now + keep_published,
                new_next,
                (!force).then_some(MIN_NEXT_KEY_AGE),
            )
            .await?;
        if let Some(next_age) = refused {
            return Ok(Rotated::TooSoon { next_age });
        }
        self.invalidate(tenant_id);
        let keys = self.tenant_keys(tenant_id).await?;
        Ok(Rotated::Now(
            SigningAlg::ALL
                .iter()
                .filter_map(|a| keys.active.get(a).map(|k| k.kid.clone()))
                .collect(),
        ))
    }

    pub fn invalidate(&self, tenant_id: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.remove(tenant_id);
        }
    }

    /// The tenant's keys, from a cache refreshed every few seconds.
    pub async fn tenant_keys(&self, tenant_id: &str) -> Result<Arc<TenantKeys>> {
        let now = self.clock.now();
        if let Ok(c) = self.cache.read()
            && let Some(k) = c.get(tenant_id)
            && now - k.loaded_at < CACHE_TTL
            && now >= k.loaded_at
        {
            return Ok(k.clone());
        }
        let loaded = Arc::new(self.load(tenant_id, now).await?);
        if let Ok(mut c) = self.cache.write() {
            c.insert(tenant_id.to_string(), loaded.clone());
        }
        Ok(loaded)
    }

    async fn load(&self, tenant_id: &str, now: i64) -> Result<TenantKeys> {
        let rows = self.store.signing_keys(tenant_id).await?;
        let mut active = HashMap::new();
        let mut by_kid = HashMap::new();
        let mut set = JwkSet { keys: Vec::new() };
        for row in rows {
            let published = match row.state.as_str() {
                "active" | "next" => true,
                "retired" => row.publish_until.is_some_and(|t| t > now),
                _ => false,
            };
            if !published {
                continue;
            }
            let Some(alg) = SigningAlg::parse(&row.alg) else {
                continue;
            };
            let jwk: Jwk = serde_json::from_str(&row.public_jwk).map_err(Error::internal)?;
            let decoding =
                DecodingKey::from_jwk(&jwk).map_err(|e| Error::internal(format!("JWK: {e}")))?;
            let encoding = if row.state == "active" {
                let pkcs8 = self
                    .sealer
                    .open(&row.kid, &row.private_enc)
                    .map_err(Error::internal)?;
                Some(encoding_key(alg, &pkcs8)?)
            } else {
                None
            };
            let key = Arc::new(LoadedKey {
                kid: row.kid.clone(),
                alg,
                encoding,
                decoding,
            });
            if row.state == "active" {
                active.insert(alg, key.clone());
            }
            by_kid.insert(row.kid.clone(), key);
            set.keys.push(jwk);
        }
        let jwks = serde_json::to_string(&set).map_err(Error::internal)?;
        Ok(TenantKeys {
            active,
            by_kid,
            jwks,
            loaded_at: now,
        })
    }
}
