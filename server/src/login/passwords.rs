//! Password hashing with argon2id (OWASP parameters), run on a dedicated pool of
//! `concurrency` threads, so at most that many hashes run at once, the async workers never
//! stall, and each hash thread keeps its argon2 memory from hash to hash while sign-ins are
//! queued (no allocation, page faults or zeroing per sign-in, at most `threads × m_cost` in
//! all) and gives it back to the system when the queue is empty.
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OnceCell, oneshot};

use crate::config::Argon2Settings;
use crate::error::{Error, Result};
use crate::secrets::{Secret, random_bytes};

thread_local! {
    /// This hash thread's argon2 memory, reused by every hash it computes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Hash threads run at the lowest priority: the `SCHED_IDLE` policy on Linux, else nice 19. A
/// hash yields the CPU to the HTTP workers (a sign-in storm on two cores otherwise made JWKS
/// and token answers wait for the scheduler, ~5x their p99 at rest), and still gets every
/// cycle nothing else wants. Under nice 19 alone a waking HTTP worker could still wait for a
/// hash's time slice; the kernel preempts a `SCHED_IDLE` thread for any other at once.
/// Lowering one's own priority needs no privilege; where it fails, hashing works as before.
fn lower_priority() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        match set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            // Under SCHED_IDLE the nice value plays no part.
            Ok(()) => return,
            Err(e) => tracing::debug!(error = ?e, "password hash thread keeps its policy"),
        }
    }
    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
        tracing::debug!(error = ?e, "password hash thread keeps its priority");
    }
}

/// Run `f` with `blocks` argon2 blocks of this thread's memory. The memory grows to the
/// configured cost (`keep` blocks) and stays; a stored hash with a larger cost gets memory of
/// its own for the one hash.
fn with_memory<T>(blocks: usize, keep: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    if blocks > keep {
        return f(&mut vec![Block::default(); blocks]);
    }
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, Block::default());
        }
        f(&mut m[..blocks])
    })
}

/// Nothing left to hash: give this thread's argon2 memory back to the system. During a storm
/// of sign-ins the queue is never empty and each thread keeps its memory from hash to hash;
/// a server at rest holds none (a lone sign-in pays ~2 ms of page faults for it).
fn release_memory() {
    let had = MEMORY.with(|m| !std::mem::take(&mut *m.borrow_mut()).is_empty());
    if had {
        crate::memory::release_free_memory();
    }
}

/// Hash into a fresh PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), as the argon2
/// crate's `PasswordHasher` writes it, with this thread's memory.
fn hash_phc(params: &Params, password: &[u8]) -> std::result::Result<String, String> {
    let salt_bytes = random_bytes::<16>();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| format!("salt: {e}"))?;
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    let n = params.block_count();
    with_memory(n, n, |mem| {
        a.hash_password_into_with_memory(password, &salt_bytes, &mut out, mem)
    })
    .map_err(|e| format!("hash: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| format!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| format!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Verify a password against a PHC string with the parameters the string names; the
/// comparison is constant-time (`Output`'s equality).
fn verify_phc(phc: &str, password: &[u8], keep: usize) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(alg), Ok(params), Some(expected), Some(salt)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.hash,
        parsed.salt,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let a = Argon2::new(alg, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let hashed = with_memory(params.block_count(), keep, |mem| {
        a.hash_password_into_with_memory(password, salt, &mut out, mem)
    });
    hashed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

/// Hash jobs that may wait per hash thread. Beyond that a job is refused at once (503, "busy")
/// instead of queued: a flood of sign-ins (from many addresses, past the per-IP limits) must
/// not make every sign-in wait for seconds nor hold ever more memory. With a hash of ~11 ms,
/// a full queue is waited out in under a second.
const WAITING_PER_THREAD: usize = 64;

/// The answer when the hash queue is full.
pub fn busy() -> Error {
    Error::Page {
        status: actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        title: "Busy".into(),
        message: "Too many sign-ins at once. Try again in a minute.".into(),
    }
}

pub struct PasswordHasher {
    params: Params,
    pool: rayon::ThreadPool,
    waiting: Arc<AtomicUsize>,
    /// Jobs that may wait at most (`WAITING_PER_THREAD` per hash thread).
    max_waiting: usize,
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
            .start_handler(|_| lower_priority())
            // A panicking job must not abort the process: its caller gets an error instead.
            .panic_handler(|_| tracing::error!("a password hash job panicked"))
            .build()
            .map_err(|e| Error::internal(format!("password hash pool: {e}")))?;
        Ok(Self {
            params,
            pool,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: n.saturating_mul(WAITING_PER_THREAD),
            dummy: OnceCell::new(),
        })
    }

    /// Whether a hash asked for now would be taken (not refused as busy): asked before a
    /// sign-in counts its attempt, so that a refusal for load does not count against the
    /// account.
    pub fn has_room(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) < self.max_waiting
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Params) -> T + Send + 'static,
    ) -> Result<T> {
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        if queued > self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("ma_idp_password_hashes_refused_total").increment(1);
            return Err(busy());
        }
        metrics::gauge!("ma_idp_password_hash_queue").set(queued as f64);
        let waiting = self.waiting.clone();
        let params = self.params.clone();
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let left = waiting.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            metrics::gauge!("ma_idp_password_hash_queue").set(left as f64);
            let _ = tx.send(f(&params));
            if waiting.load(Ordering::Relaxed) == 0 {
                release_memory();
            }
        });
        rx.await
            .map_err(|_| Error::internal("password hash task ended"))
    }

    pub async fn hash(&self, password: &Secret) -> Result<String> {
        let pw = password.clone();
        self.run(move |params| hash_phc(params, pw.expose().as_bytes()))
            .await?
            .map_err(Error::internal)
    }

    /// Whether a stored hash was made with other parameters than the configured ones (it is
    /// then replaced at the member's next successful sign-in).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        let same = Algorithm::try_from(parsed.algorithm) == Ok(Algorithm::Argon2id)
            && parsed.version == Some(Version::V0x13.into())
            && Params::try_from(&parsed).is_ok_and(|p| {
                p.m_cost() == self.params.m_cost()
                    && p.t_cost() == self.params.t_cost()
                    && p.p_cost() == self.params.p_cost()
            });
        !same
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
            .run(move |params| verify_phc(&phc, pw.expose().as_bytes(), params.block_count()))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use argon2::password_hash::PasswordHasher as _;

    use super::*;

    fn hasher(m_cost: u32, t_cost: u32) -> PasswordHasher {
        PasswordHasher::new(&Argon2Settings {
            m_cost,
            t_cost,
            p_cost: 1,
            concurrency: Some(1),
        })
        .unwrap()
    }

    /// The hash threads run under `SCHED_IDLE` (Linux: field 41 of the thread's stat;
    /// `SCHED_IDLE` is policy 5).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hash_threads_yield_to_the_http_workers() {
        let h = hasher(1024, 1);
        let policy = h
            .run(|_| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
                let after_name: Vec<&str> =
                    stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
                after_name[38].parse::<i32>().unwrap()
            })
            .await
            .unwrap();
        assert_eq!(policy, 5, "SCHED_IDLE");
    }

    /// Past its waiting room the hasher refuses at once (503), and takes jobs again once the
    /// queue has moved.
    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let h = std::sync::Arc::new(hasher(1024, 1));
        // Hold the one hash thread until released, then fill the waiting room.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let h = h.clone();
            tokio::spawn(async move {
                h.run(move |_| {
                    let _ = started_tx.send(());
                    let _ = held.recv();
                })
                .await
            })
        };
        while started.try_recv().is_err() {
            tokio::task::yield_now().await;
        }
        let mut queued = Vec::new();
        for _ in 0..WAITING_PER_THREAD {
            let h = h.clone();
            queued.push(tokio::spawn(async move { h.run(|_| 1).await }));
        }
        while h.waiting.load(Ordering::Relaxed) != WAITING_PER_THREAD {
            tokio::task::yield_now().await;
        }
        assert!(!h.has_room());
        match h.run(|_| 1).await {
            Err(Error::Page { status, .. }) => assert_eq!(status.as_u16(), 503),
            other => panic!("expected busy, got {:?}", other.map(|_| ())),
        }
        assert_eq!(h.waiting.load(Ordering::Relaxed), WAITING_PER_THREAD);
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for q in queued {
            assert_eq!(q.await.unwrap().unwrap(), 1);
        }
        assert!(h.has_room());
        assert_eq!(h.run(|_| 2).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn hashes_verify_with_reused_memory() {
        let h = hasher(1024, 2);
        let pw = Secret::new("correct horse");
        let a = h.hash(&pw).await.unwrap();
        let b = h.hash(&pw).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        for phc in [&a, &b] {
            assert!(h.verify(&pw, Some(phc.clone())).await.unwrap());
            assert!(
                !h.verify(&Secret::new("correct horsf"), Some(phc.clone()))
                    .await
                    .unwrap()
            );
        }
        assert!(
            !h.verify(&pw, None).await.unwrap(),
            "no hash never verifies"
        );
        assert!(!h.verify(&pw, Some("garbage".into())).await.unwrap());
        assert!(!h.needs_rehash(&a));
    }

    /// Hashes written by the argon2 crate's own `PasswordHasher` (as earlier versions stored
    /// them), with other parameters than the configured ones, still verify, including one
    /// that needs more memory than the hash threads keep; they are marked for rehashing.
    #[tokio::test]
    async fn hashes_from_the_crate_and_other_costs_verify() {
        let h = hasher(1024, 2);
        let pw = "a password";
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        for (m, t) in [(1024, 2), (2048, 1), (512, 3)] {
            let a = Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(m, t, 1, None).unwrap(),
            );
            let phc = a.hash_password(pw.as_bytes(), &salt).unwrap().to_string();
            assert!(h.verify(&Secret::new(pw), Some(phc.clone())).await.unwrap());
            assert!(
                !h.verify(&Secret::new("other"), Some(phc.clone()))
                    .await
                    .unwrap()
            );
            assert_eq!(h.needs_rehash(&phc), (m, t) != (1024, 2), "{phc}");
        }
        // Our own output is byte-for-byte what the crate writes for the same salt.
        let params = Params::new(1024, 2, 1, None).unwrap();
        let ours = hash_phc(&params, pw.as_bytes()).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(pw.as_bytes(), parsed.salt.unwrap())
            .unwrap()
            .to_string();
        assert_eq!(ours, theirs);
    }
}
