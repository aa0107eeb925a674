//! `verify_access_token` against a real tenant's keys (made once, in a throw-away SQLite
//! database). Three kinds of input, by the first byte:
//! - 0: the rest is the token as sent;
//! - 1: `header JSON \n payload JSON \n signature`, base64url-encoded here; `$ES`, `$RS`, `$ED`
//!   in the header become the tenant's real key ids, so the fuzzer reaches signature checks;
//! - 2: `header-kind byte, payload JSON`: signed here with a real key, so the claim checks
//!   (issuer, expiry, types of claims) see arbitrary JSON.
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use ma_idp::config::Settings;
use ma_idp::tokens::jwt::verify_access_token;
use ma_idp::tokens::keys::{SigningAlg, TenantKeys};
use ma_idp::{Services, SystemClock};

const ISS: &str = "http://localhost:8096/t/fuzz";
const NOW: i64 = 1_800_000_000;

fn keys() -> &'static Arc<TenantKeys> {
    static KEYS: OnceLock<Arc<TenantKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ma-idp-fuzz-{}", std::process::id()));
        let settings = Settings {
            data_dir: dir.clone(),
            master_key: Some(base64::engine::general_purpose::STANDARD.encode([3u8; 32])),
            db_max_connections: Some(1),
            ..Settings::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let keys = rt.block_on(async {
            let svc = Services::init(settings, Arc::new(SystemClock))
                .await
                .unwrap();
            svc.store.migrate().await.unwrap();
            let t = svc.create_tenant("fuzz", None, "fuzz").await.unwrap();
            svc.keys.tenant_keys(&t.id).await.unwrap()
        });
        let _ = std::fs::remove_dir_all(dir);
        keys
    })
}

fn kid(keys: &TenantKeys, alg: SigningAlg) -> &str {
    &keys.active[&alg].kid
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            let _ = jsonwebtoken::decode_header(token);
            let _ = verify_access_token(keys, ISS, token, NOW);
        }
        1 => {
            let s = String::from_utf8_lossy(rest);
            let mut parts = s.splitn(3, '\n');
            let header = parts
                .next()
                .unwrap_or("")
                .replace("$ES", kid(keys, SigningAlg::ES256))
                .replace("$RS", kid(keys, SigningAlg::RS256))
                .replace("$ED", kid(keys, SigningAlg::EdDSA));
            let payload = parts.next().unwrap_or("");
            let sig = parts.next().unwrap_or("");
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload),
                sig
            );
            let _ = verify_access_token(keys, ISS, &token, NOW);
        }
        _ => {
            let Some((&kind, payload)) = rest.split_first() else {
                return;
            };
            let Ok(claims) = serde_json::from_slice::<serde_json::Value>(payload) else {
                return;
            };
            let alg = SigningAlg::ALL[(kind % 3) as usize];
            let key = &keys.active[&alg];
            let mut header = jsonwebtoken::Header::new(alg.jwt());
            header.typ = Some(if kind & 4 == 0 { "at+jwt" } else { "JWT" }.into());
            header.kid = Some(key.kid.clone());
            let Ok(token) = jsonwebtoken::encode(&header, &claims, key.encoding.as_ref().unwrap())
            else {
                return;
            };
            if let Ok((c, kid)) = verify_access_token(keys, ISS, &token, NOW) {
                assert_eq!(kid, key.kid);
                assert_eq!(c.iss, ISS);
                assert!(c.exp > NOW);
                assert_eq!(kind & 4, 0, "an ID token accepted as an access token");
            }
        }
    }
});
