//! The master key: from `MA_IDP_MASTER_KEY`, or a key file created with mode 0600 on first
//! start. Every other key (key encryption, client-secret hashing, cookie signing) is derived
//! from it with HKDF, so one secret protects the database at rest.
use std::io::Write;
use std::path::Path;

use aws_lc_rs::{aead, hkdf};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::secrets::{SecretHasher, random_bytes};

pub struct MasterKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| e.to_string())?
    } else {
        STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| "the master key must be 32 bytes as hex or base64".to_string())?
    };
    bytes
        .try_into()
        .map_err(|_| "the master key must be exactly 32 bytes".to_string())
}

impl MasterKey {
    /// From the environment value if given, else from `data_dir/master.key`, creating it.
    pub fn load_or_create(env_value: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Ok(Self {
                bytes: parse_key(v)?,
            });
        }
        let path = data_dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self {
                bytes: parse_key(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
                let bytes = random_bytes::<32>();
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                match opts.open(&path) {
                    Ok(mut f) => {
                        f.write_all(STANDARD.encode(bytes).as_bytes())
                            .and_then(|_| f.sync_all())
                            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                        tracing::info!(path = %path.display(), "created a new master key file");
                        Ok(Self { bytes })
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(None, data_dir)
                    }
                    Err(e) => Err(format!("cannot create {}: {e}", path.display())),
                }
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// A key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    fn derive(&self, label: &[u8], len: usize) -> Vec<u8> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ma-idp master key v1");
        let prk = salt.extract(&self.bytes);
        let mut out = vec![0u8; len];
        let info = [label];
        // expand/fill only fail for lengths above 255 * 32 bytes.
        if let Ok(okm) = prk.expand(&info, Len(len)) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    pub fn secret_hasher(&self) -> SecretHasher {
        SecretHasher::new(&self.derive(b"client-secret-hmac", 32))
    }

    pub fn cookie_key(&self) -> Vec<u8> {
        self.derive(b"session-cookie", 64)
    }

    pub fn key_sealer(&self) -> Result<KeySealer, String> {
        let k = self.derive(b"signing-key-encryption", 32);
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &k)
                .map_err(|_| "bad AEAD key".to_string())?,
        );
        Ok(KeySealer { key })
    }
}

/// AES-256-GCM for private keys at rest. The key id is the associated data, so a ciphertext
/// cannot be moved to another key row.
pub struct KeySealer {
    key: aead::LessSafeKey,
}

impl KeySealer {
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let nonce_bytes = random_bytes::<12>();
        let nonce = aead::Nonce::assume_unique_for_key(nonce_bytes);
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce, aead::Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = Vec::with_capacity(12 + buf.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < 12 + 16 {
            return Err("sealed key too short".into());
        }
        let (n, ct) = sealed.split_at(12);
        let nonce =
            aead::Nonce::try_assume_unique_for_key(n).map_err(|_| "bad nonce".to_string())?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| "a signing key does not decrypt: wrong master key?".to_string())?;
        Ok(plain.to_vec())
    }
}
