//! Per-client-IP rate limits (governor, in memory per instance). The per-account counter
//! lives in the database (`store::throttle`).
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

pub struct IpLimits {
    pub sign_in: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub token: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub introspect: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Passkey ceremonies started (each stores a challenge until it is used or expires):
    /// four times the sign-in allowance, since a sign-in page may start one (conditional UI)
    /// and a sign-in needs a start and a finish.
    pub ceremony: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Browser requests without a session cookie (each may start a session): as many as
    /// ceremonies.
    pub visit: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// Passkey ceremonies an IP may start per sign-in it may make.
pub const CEREMONIES_PER_SIGN_IN: u32 = 4;

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

/// What one browser allowance is counted by: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's network: a host there may take any of its 2^64 addresses, so counting single
/// addresses would be no limit at all). An IPv4-mapped IPv6 address counts as its IPv4 one.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    SignIn,
    Token,
    Introspect,
    /// Starting a passkey ceremony (sign-in or enrolment).
    Ceremony,
    /// A browser request without a session cookie (a new visit).
    Visit,
}

impl IpLimits {
    pub fn new(l: &Limits) -> Self {
        Self {
            sign_in: limiter(l.sign_ins_per_ip_per_minute),
            token: limiter(l.token_per_ip_per_minute),
            introspect: limiter(l.introspect_per_ip_per_minute),
            ceremony: limiter(
                l.sign_ins_per_ip_per_minute
                    .saturating_mul(CEREMONIES_PER_SIGN_IN),
            ),
            visit: limiter(
                l.sign_ins_per_ip_per_minute
                    .saturating_mul(CEREMONIES_PER_SIGN_IN),
            ),
        }
    }

    /// Whether this IP may make one more request of this kind now.
    pub fn check(&self, bucket: Bucket, ip: Option<IpAddr>) -> bool {
        let limiter = match bucket {
            Bucket::SignIn => &self.sign_in,
            Bucket::Token => &self.token,
            Bucket::Introspect => &self.introspect,
            Bucket::Ceremony => &self.ceremony,
            Bucket::Visit => &self.visit,
        };
        match (limiter, ip) {
            (Some(l), Some(ip)) => {
                // Browsers count by network (IPv6 /64); API callers (Alexa's servers, Music
                // Assistant) by address: a cloud subnet's hosts share a /64.
                let key = match bucket {
                    Bucket::SignIn | Bucket::Ceremony | Bucket::Visit => limit_key(ip),
                    Bucket::Token | Bucket::Introspect => ip,
                };
                let ok = l.check_key(&key).is_ok();
                if !ok {
                    let b = match bucket {
                        Bucket::SignIn => "sign_in",
                        Bucket::Token => "token",
                        Bucket::Introspect => "introspect",
                        Bucket::Ceremony => "passkey_ceremony",
                        Bucket::Visit => "new_visit",
                    };
                    metrics::counter!("ma_idp_rate_limited_total", "bucket" => b).increment(1);
                }
                ok
            }
            _ => true,
        }
    }

    /// Forget idle keys (called from housekeeping).
    pub fn shrink(&self) {
        for l in [
            &self.sign_in,
            &self.token,
            &self.introspect,
            &self.ceremony,
            &self.visit,
        ]
        .into_iter()
        .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Live sessions nobody signed in to, against `limits.anonymous_sessions_max` (one count for
/// all networks; the per-IP `Bucket::Visit` bounds each one). Kept as an estimate that is
/// never below the truth between counts: each new anonymous session adds one (see
/// `session_store`); sign-ins and expiries are seen when the table is counted again, which
/// happens only while the estimate is at the cap, at most every `RECOUNT_EVERY` seconds.
/// Instances sharing a PostgreSQL database count the same table.
pub struct AnonymousSessions {
    max: u64,
    estimate: AtomicU64,
    /// When the table was last counted (seconds; `i64::MIN`: never).
    counted_at: AtomicI64,
    counting: tokio::sync::Mutex<()>,
}

/// Seconds between two counts of the session table while the estimate is at the cap.
pub const RECOUNT_EVERY: i64 = 10;

impl AnonymousSessions {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            estimate: AtomicU64::new(0),
            counted_at: AtomicI64::new(i64::MIN),
            counting: tokio::sync::Mutex::new(()),
        }
    }

    /// A session nobody signed in to was stored.
    pub fn started(&self) {
        self.estimate.fetch_add(1, Relaxed);
    }

    /// Whether a new visit may start a session now. A failed count lets the visit through
    /// (the database's own error then answers it, if it is down).
    pub async fn has_room(&self, store: &crate::store::Store, now: i64) -> bool {
        if self.max == 0 || self.estimate.load(Relaxed) < self.max {
            return true;
        }
        let _one_count_at_a_time = self.counting.lock().await;
        let last = self.counted_at.load(Relaxed);
        if now.saturating_sub(last) >= RECOUNT_EVERY || now < last {
            match store.anonymous_sessions(now).await {
                Ok(n) => {
                    self.estimate.store(n, Relaxed);
                    self.counted_at.store(now, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting anonymous sessions failed");
                    return true;
                }
            }
        }
        let room = self.estimate.load(Relaxed) < self.max;
        if !room {
            metrics::counter!("ma_idp_rate_limited_total", "bucket" => "anonymous_sessions")
                .increment(1);
        }
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn an_ipv6_network_shares_one_allowance() {
        let limits = IpLimits::new(&Limits {
            sign_ins_per_ip_per_minute: 3,
            ..Limits::default()
        });
        // Three sign-ins from three addresses of one /64 use its allowance up.
        for a in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            assert!(limits.check(Bucket::SignIn, ip(a)), "{a}");
        }
        assert!(!limits.check(Bucket::SignIn, ip("2001:db8:1:2:abcd::1")));
        // Another /64, and an IPv4 address, have their own.
        assert!(limits.check(Bucket::SignIn, ip("2001:db8:1:3::1")));
        assert!(limits.check(Bucket::SignIn, ip("192.0.2.7")));
        // An IPv4-mapped address is its IPv4 address.
        assert!(limits.check(Bucket::SignIn, ip("::ffff:192.0.2.7")));
        assert!(limits.check(Bucket::SignIn, ip("192.0.2.7")));
        assert!(!limits.check(Bucket::SignIn, ip("::ffff:192.0.2.7")));
        // Token requests count by address: a cloud subnet's hosts share a /64.
        let limits = IpLimits::new(&Limits {
            token_per_ip_per_minute: 1,
            ..Limits::default()
        });
        assert!(limits.check(Bucket::Token, ip("2001:db8:1:2::1")));
        assert!(limits.check(Bucket::Token, ip("2001:db8:1:2::2")));
        assert!(!limits.check(Bucket::Token, ip("2001:db8:1:2::2")));
        assert_eq!(
            ip("2001:db8::1234:5678:9abc:def0").map(limit_key),
            ip("2001:db8::")
        );
    }
}
