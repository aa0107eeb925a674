//! `Params::parse`: the strict form/query parser behind every endpoint. Whatever the bytes,
//! it returns a value or an `invalid_request`, never panics; what it accepts is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ma_idp::oauth::Params;
use ma_idp::oauth::params::{MAX_PARAMS, MAX_VALUE};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Params::parse(data) else {
        return;
    };
    let names: Vec<String> = p.names().map(str::to_string).collect();
    assert!(names.len() <= MAX_PARAMS);
    for (i, n) in names.iter().enumerate() {
        assert!(!names[..i].contains(n), "a repeated name was accepted");
        if let Some(v) = p.get(n) {
            assert!(!v.is_empty(), "empty values count as absent");
            assert!(v.len() <= MAX_VALUE);
            assert!(!v.contains('\0'));
        }
        let _ = p.required(n);
    }
    let _ = p.is_empty();
    let _ = format!("{p:?}");
});
