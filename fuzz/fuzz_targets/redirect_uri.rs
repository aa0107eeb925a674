//! `validate_redirect_uri`: arbitrary strings; what it accepts is https (or http on loopback)
//! without a fragment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ma_idp::services::validate_redirect_uri;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if validate_redirect_uri(&s).is_ok() {
        let u = url::Url::parse(&s).expect("accepted URIs parse");
        assert!(u.fragment().is_none());
        assert!(matches!(u.scheme(), "https" | "http"));
    }
});
