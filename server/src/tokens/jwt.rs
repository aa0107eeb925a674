//! JWT access tokens (RFC 9068) and ID tokens (OIDC Core §2), signed with the tenant's keys,
//! and verification of our own access tokens for introspection and userinfo.
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokens::keys::{SigningAlg, TenantKeys};

/// RFC 9068 claims, plus `fam`: the refresh-token family the token was issued from, so that
/// revoking the family or its grant makes introspection answer `active: false` at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fam: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub amr: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    pub azp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

fn sign<T: Serialize>(keys: &TenantKeys, alg: SigningAlg, typ: &str, claims: &T) -> Result<String> {
    let key = keys.signer(alg)?;
    let enc = key
        .encoding
        .as_ref()
        .ok_or_else(|| Error::internal("active key without private part"))?;
    let mut header = Header::new(alg.jwt());
    header.typ = Some(typ.to_string());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, enc).map_err(|e| Error::internal(format!("signing: {e}")))
}

pub fn sign_access_token(
    keys: &TenantKeys,
    alg: SigningAlg,
    claims: &AccessClaims,
) -> Result<String> {
    sign(keys, alg, "at+jwt", claims)
}

pub fn sign_id_token(keys: &TenantKeys, alg: SigningAlg, claims: &IdClaims) -> Result<String> {
    sign(keys, alg, "JWT", claims)
}

/// OIDC `at_hash`: the left half of the hash of the access token, base64url. The hash is the
/// one of the ID token's algorithm (SHA-256 for RS256/ES256, SHA-512 for Ed25519).
pub fn at_hash(access_token: &str, alg: SigningAlg) -> String {
    let d = match alg {
        SigningAlg::EdDSA => digest::digest(&digest::SHA512, access_token.as_bytes()),
        _ => digest::digest(&digest::SHA256, access_token.as_bytes()),
    };
    let bytes = d.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

/// Verify one of our access tokens: a key of this tenant, the key's own algorithm (never the
/// header's word alone), `typ: at+jwt`, the issuer, and expiry against `now`. Returns the
/// claims and the key id that signed them.
pub fn verify_access_token(
    keys: &TenantKeys,
    issuer: &str,
    token: &str,
    now: i64,
) -> Result<(AccessClaims, String)> {
    let bad = |why: &str| Error::invalid_token(why.to_string());
    if token.len() > 8192 {
        return Err(bad("token too long"));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed token"))?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    {
        return Err(bad("not an access token"));
    }
    let kid = header.kid.ok_or_else(|| bad("token has no key id"))?;
    let key = keys
        .by_kid
        .get(&kid)
        .ok_or_else(|| bad("unknown signing key"))?;
    if header.alg != key.alg.jwt() {
        return Err(bad("algorithm does not match the key"));
    }
    let mut v = Validation::new(key.alg.jwt());
    v.validate_exp = false; // checked below against the injectable clock
    v.validate_aud = false;
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &v)
        .map_err(|_| bad("invalid token"))?;
    if data.claims.exp <= now {
        return Err(bad("token expired"));
    }
    Ok((data.claims, kid))
}
