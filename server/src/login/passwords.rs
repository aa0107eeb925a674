//! Password hashing with argon2id (OWASP parameters), run on a dedicated pool of
//! `concurrency` threads, so at most that many hashes run at once (threads × memory cost fits
//! in RAM), the async workers never stall, and the memory a hash needs is reused by the same
//! few threads instead of piling up in the allocator arenas of many blocking threads.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OnceCell, oneshot};

use crate::config::Argon2Settings;
use crate::error::{Error, Result};
use crate::secrets::{Secret, random_bytes};

pub struct PasswordHasher {
    params: Params,
    pool: rayon::ThreadPool,
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("argon2-{i}"))
            // A panicking job must not abort the process: its caller gets an error instead.
            .panic_handler(|_| tracing::error!("a password hash job panicked"))
            .build()
            .map_err(|e| Error::internal(format!("password hash pool: {e}")))?;
        Ok(Self {
            params,
            pool,
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
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("ma_idp_password_hash_queue").set(queued as f64);
        let waiting = self.waiting.clone();
        let a = self.argon2();
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let left = waiting.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            metrics::gauge!("ma_idp_password_hash_queue").set(left as f64);
            let _ = tx.send(f(a));
        });
        rx.await
            .map_err(|_| Error::internal("password hash task ended"))
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
