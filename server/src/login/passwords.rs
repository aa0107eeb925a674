//! Password hashing with argon2id (OWASP parameters), run on the blocking pool behind a
//! semaphore so that at most `concurrency` hashes run at once (threads × memory cost fits in
//! RAM) and the async workers never stall.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::config::Argon2Settings;
use crate::error::{Error, Result};
use crate::secrets::{Secret, random_bytes};

pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// A hash of a random password, verified against when the user does not exist, so a
    /// failed sign-in takes as long either way.
    dummy: OnceCell<String>,
}

impl PasswordHasher {
    pub fn new(s: &Argon2Settings) -> Result<Self> {
        let params = Params::new(s.m_cost, s.t_cost, s.p_cost, None)
            .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
        let n = s
            .concurrency
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(n)),
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy: OnceCell::new(),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("ma_idp_password_hash_queue")
            .set(self.waiting.load(Ordering::Relaxed) as f64);
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("ma_idp_password_hash_queue")
            .set(self.waiting.load(Ordering::Relaxed) as f64);
        let permit = permit.map_err(|_| Error::internal("password hasher closed"))?;
        let a = self.argon2();
        let out = tokio::task::spawn_blocking(move || {
            let r = f(a);
            drop(permit);
            r
        })
        .await
        .map_err(|e| Error::internal(format!("password hash task: {e}")))?;
        Ok(out)
    }

    pub async fn hash(&self, password: &Secret) -> Result<String> {
        let pw = password.clone();
        self.run(move |a| {
            let salt = SaltString::encode_b64(&random_bytes::<16>())
                .map_err(|e| Error::internal(format!("salt: {e}")))?;
            a.hash_password(pw.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("hash: {e}")))
        })
        .await?
    }

    /// Verify a password against a stored PHC string. `None` verifies against a dummy hash
    /// and returns false, taking the same time.
    pub async fn verify(&self, password: &Secret, phc: Option<String>) -> Result<bool> {
        let (phc, real) = match phc {
            Some(p) => (p, true),
            None => (self.dummy_hash().await?, false),
        };
        let pw = password.clone();
        let ok = self
            .run(move |a| match PasswordHash::new(&phc) {
                Ok(parsed) => a.verify_password(pw.expose().as_bytes(), &parsed).is_ok(),
                Err(_) => false,
            })
            .await?;
        Ok(ok && real)
    }

    async fn dummy_hash(&self) -> Result<String> {
        self.dummy
            .get_or_try_init(|| async {
                let random = Secret::new(crate::secrets::random_id());
                self.hash(&random).await
            })
            .await
            .cloned()
    }
}
