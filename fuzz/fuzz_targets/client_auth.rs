//! Client credentials: the `Authorization` header (HTTP Basic, form-encoded id and secret)
//! together with a form body, through `client_auth::extract`; and `jsonwebtoken::decode_header`
//! on the same bytes (Bearer values reach it at userinfo and introspection).
//!
//! Input: the header value, a newline, then the form body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ma_idp::oauth::Params;
use ma_idp::oauth::client_auth::{Method, extract};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(params) = Params::parse(body) else {
        return;
    };
    // Header values reach handlers only when they are visible ASCII (`to_str`).
    let header = std::str::from_utf8(header).ok();
    if let Ok(c) = extract(&params, header) {
        if c.method == Method::Basic {
            assert!(header.is_some());
            assert!(
                params.get("client_secret").is_none(),
                "two methods accepted"
            );
        }
        let _ = format!("{c:?}");
    }
    let _ = extract(&params, None);
    if let Some(h) = header {
        let _ = jsonwebtoken::decode_header(h);
        if let Some(rest) = h.strip_prefix("Bearer ") {
            let _ = jsonwebtoken::decode_header(rest);
        }
    }
});
