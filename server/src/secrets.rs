//! Secret values that cannot leak through `Debug` or `Display`, random tokens and the hashes
//! under which codes, refresh tokens and client secrets are stored.
use aws_lc_rs::{constant_time, digest, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A secret string (password, code, token, client secret). Its `Debug` prints no content.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        // SAFETY-free variant: replace the content with zeros of the same length.
        let len = self.0.len();
        self.0.clear();
        self.0.extend(std::iter::repeat_n('\0', len));
    }
}

/// `n` random bytes from the system CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system RNG failing is not recoverable; fall back to zeros would be unsafe, so
    // retry until it works (it only fails if the OS has no entropy source at all).
    while rand::fill(&mut buf).is_err() {
        std::thread::yield_now();
    }
    buf
}

/// A 256-bit random token, base64url without padding (43 characters).
pub fn random_token() -> Secret {
    Secret(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A 128-bit random identifier, base64url (22 characters). Not a secret by itself.
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

/// SHA-256 of a high-entropy token, base64url. Codes and refresh tokens are stored only so.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Keyed hash for client secrets: HMAC-SHA256 under a key derived from the master key. Client
/// secrets are generated with 256 bits of entropy, so a fast keyed hash is safe here; a slow
/// password hash would cap the token endpoint.
#[derive(Clone)]
pub struct SecretHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher(<redacted>)")
    }
}

impl SecretHasher {
    pub fn new(key_bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key_bytes),
        }
    }

    pub fn hash(&self, secret: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(secret.as_bytes()))
    }

    /// The raw keyed hash (32 bytes) of some bytes.
    pub fn mac(&self, data: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, data).as_ref().to_vec()
    }

    pub fn verify(&self, secret: &str, stored: &str) -> bool {
        ct_eq(&self.hash(secret), stored)
    }
}
