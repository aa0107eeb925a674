//! PKCE (RFC 7636), S256 only: `plain` is refused.
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::secrets::ct_eq;

fn unreserved(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A code challenge is the base64url SHA-256 of a verifier: 43 characters.
pub fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `code_verifier = 43*128unreserved`, and `BASE64URL(SHA256(verifier)) == challenge`.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if !(43..=128).contains(&verifier.len()) || !unreserved(verifier) {
        return false;
    }
    let d = digest::digest(&digest::SHA256, verifier.as_bytes());
    ct_eq(&URL_SAFE_NO_PAD.encode(d.as_ref()), challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_challenge(challenge));
        assert!(verify_s256(verifier, challenge));
        assert!(!verify_s256(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!verify_s256("short", challenge));
    }
}
