//! Short-lived read caches for the hottest lookups (a tenant by slug, a client by
//! `client_id`, a server setting): every token request needs them and they rarely change.
//!
//! Design note. Writes through this store invalidate the cache at once, so on one instance a
//! change (a rotated client secret, a disabled client, new tenant settings) takes effect for
//! the next request. Another instance sharing the database sees it within `TTL`. Nothing that
//! revocation depends on is cached: grants, refresh tokens and revoked access tokens are read
//! from the database on every request.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use entity::tenant;
use moka::sync::Cache;

use super::ClientWithUris;

/// How long another instance's change may go unseen, by default (`cache_ttl_ms`).
pub const TTL: Duration = Duration::from_secs(2);

/// One cache and its generation, bumped by every change. A lookup that read the database
/// before a change but stores its answer after the change's invalidation would otherwise put
/// the old row back for a whole `TTL`: `put` takes the generation seen before the read and
/// drops what it stored if a change came meanwhile.
pub struct Cached<K, V> {
    cache: Cache<K, V>,
    generation: AtomicU64,
}

impl<K, V> Cached<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn get<Q>(&self, k: &Q) -> Option<V>
    where
        Q: moka::Equivalent<K> + std::hash::Hash + ?Sized,
    {
        self.cache.get(k)
    }

    /// The generation to give `put`, read before the database is.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn put(&self, k: K, v: V, seen: u64) {
        self.cache.insert(k, v);
        // (A change's bump comes before its invalidation: if it came after this insert's
        // check, its invalidation comes after the insert too.)
        if self.generation.load(Ordering::SeqCst) != seen {
            self.cache.invalidate_all();
        }
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }
}

/// Only entries that exist are cached: a tenant or client created elsewhere is seen at once.
pub struct Caches {
    /// A zero TTL turns caching off.
    pub enabled: bool,
    pub tenants: Cached<String, tenant::Model>,
    pub clients: Cached<(String, String), ClientWithUris>,
    pub settings: Cached<String, String>,
}

impl Caches {
    pub fn new(ttl: Duration) -> Self {
        let ttl_or_one = ttl.max(Duration::from_millis(1));
        Self {
            enabled: !ttl.is_zero(),
            tenants: Cached::new(1_000, ttl_or_one),
            clients: Cached::new(10_000, ttl_or_one),
            settings: Cached::new(100, ttl_or_one),
        }
    }

    pub fn tenants_changed(&self) {
        self.tenants.changed();
    }

    pub fn clients_changed(&self) {
        self.clients.changed();
    }

    pub fn settings_changed(&self) {
        self.settings.changed();
    }
}

impl Default for Caches {
    fn default() -> Self {
        Self::new(TTL)
    }
}
