//! Scope parsing (RFC 6749 §3.3): `parse`, `subset`, `describe` on arbitrary strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ma_idp::oauth::scopes;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (requested, allowed) = s
        .split_once('\n')
        .unwrap_or((s, scopes::DEFAULT_CLIENT_SCOPES));
    if let Some(list) = scopes::parse(requested) {
        for (i, t) in list.iter().enumerate() {
            assert!(scopes::valid_scope_token(t));
            assert!(!list[..i].contains(t), "duplicates are dropped");
            let _ = scopes::describe(t);
        }
        let _ = scopes::subset(&list, allowed);
        assert!(scopes::subset(&list, &list.join(" ")));
    }
    let _ = scopes::split(requested);
});
