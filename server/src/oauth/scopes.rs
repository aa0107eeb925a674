//! Scopes: syntax (RFC 6749 §3.3), defaults and plain-words descriptions for the consent page.

/// Scopes a new client may ask for unless it is given its own list.
pub const DEFAULT_CLIENT_SCOPES: &str =
    "openid profile email offline_access music.control music.read user:read";

/// Scopes that describe a user; a `client_credentials` token never carries them.
pub const USER_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`
pub fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Split a scope parameter; `None` when a token is malformed. Duplicates are dropped.
pub fn parse(scope: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !valid_scope_token(s) {
            return None;
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Some(out)
}

pub fn split(scope: &str) -> Vec<&str> {
    scope.split(' ').filter(|s| !s.is_empty()).collect()
}

pub fn subset(requested: &[String], allowed: &str) -> bool {
    let allowed = split(allowed);
    requested.iter().all(|r| allowed.contains(&r.as_str()))
}

/// The scope in plain words, for the consent page.
pub fn describe(scope: &str) -> String {
    match scope {
        "openid" => "Confirm who you are".into(),
        "profile" => "See your name and username".into(),
        "email" => "See your e-mail address".into(),
        "offline_access" => "Stay connected when you are not using it".into(),
        "music.control" => "Play, pause and choose music on your Music Assistant".into(),
        "music.read" => "See your players, library and what is playing".into(),
        "user:read" => "See your Music Assistant account".into(),
        other => format!("Use the permission \u{201c}{other}\u{201d}"),
    }
}
