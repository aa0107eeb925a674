//! Short-lived read caches for the hottest lookups (a tenant by slug, a client by
//! `client_id`, a server setting): every token request needs them and they rarely change.
//!
//! Design note. Writes through this store invalidate the cache at once, so on one instance a
//! change (a rotated client secret, a disabled client, new tenant settings) takes effect for
//! the next request. Another instance sharing the database sees it within `TTL`. Nothing that
//! revocation depends on is cached: grants, refresh tokens and revoked access tokens are read
//! from the database on every request.
use std::time::Duration;

use entity::tenant;
use moka::sync::Cache;

use super::ClientWithUris;

/// How long another instance's change may go unseen, by default (`cache_ttl_ms`).
pub const TTL: Duration = Duration::from_secs(2);

/// Only entries that exist are cached: a tenant or client created elsewhere is seen at once.
pub struct Caches {
    /// A zero TTL turns caching off.
    pub enabled: bool,
    pub tenants: Cache<String, tenant::Model>,
    pub clients: Cache<(String, String), ClientWithUris>,
    pub settings: Cache<String, String>,
}

impl Caches {
    pub fn new(ttl: Duration) -> Self {
        let ttl_or_one = ttl.max(Duration::from_millis(1));
        Self {
            enabled: !ttl.is_zero(),
            tenants: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(ttl_or_one)
                .build(),
            clients: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl_or_one)
                .build(),
            settings: Cache::builder()
                .max_capacity(100)
                .time_to_live(ttl_or_one)
                .build(),
        }
    }

    pub fn tenants_changed(&self) {
        self.tenants.invalidate_all();
    }

    pub fn clients_changed(&self) {
        self.clients.invalidate_all();
    }

    pub fn settings_changed(&self) {
        self.settings.invalidate_all();
    }
}

impl Default for Caches {
    fn default() -> Self {
        Self::new(TTL)
    }
}
