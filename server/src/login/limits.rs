//! Per-client-IP rate limits (governor, in memory per instance). The per-account counter
//! lives in the database (`store::throttle`).
use std::net::IpAddr;
use std::num::NonZeroU32;

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
}

/// Passkey ceremonies an IP may start per sign-in it may make.
pub const CEREMONIES_PER_SIGN_IN: u32 = 4;

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    SignIn,
    Token,
    Introspect,
    /// Starting a passkey ceremony (sign-in or enrolment).
    Ceremony,
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
        }
    }

    /// Whether this IP may make one more request of this kind now.
    pub fn check(&self, bucket: Bucket, ip: Option<IpAddr>) -> bool {
        let limiter = match bucket {
            Bucket::SignIn => &self.sign_in,
            Bucket::Token => &self.token,
            Bucket::Introspect => &self.introspect,
            Bucket::Ceremony => &self.ceremony,
        };
        match (limiter, ip) {
            (Some(l), Some(ip)) => {
                let ok = l.check_key(&ip).is_ok();
                if !ok {
                    let b = match bucket {
                        Bucket::SignIn => "sign_in",
                        Bucket::Token => "token",
                        Bucket::Introspect => "introspect",
                        Bucket::Ceremony => "passkey_ceremony",
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
        for l in [&self.sign_in, &self.token, &self.introspect, &self.ceremony]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
