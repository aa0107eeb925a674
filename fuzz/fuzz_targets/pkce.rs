//! PKCE (RFC 7636, S256): `valid_challenge` and `verify_s256` on arbitrary strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ma_idp::oauth::pkce::{valid_challenge, verify_s256};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // "verifier\nchallenge"; without a newline, the same string is both.
    let (verifier, challenge) = s.split_once('\n').unwrap_or((s, s));
    let ok = valid_challenge(challenge);
    if ok {
        assert_eq!(challenge.len(), 43);
    }
    if verify_s256(verifier, challenge) {
        assert!(ok, "a verifier matched a malformed challenge");
        assert!((43..=128).contains(&verifier.len()));
    }
    let _ = valid_challenge(verifier);
    let _ = verify_s256(challenge, verifier);
});
