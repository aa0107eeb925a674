//! Strict parsing of `application/x-www-form-urlencoded` bodies and query strings: a
//! parameter given twice, invalid UTF-8, a malformed escape or an oversized value is an
//! `invalid_request`, never a guess.
use crate::error::{Error, Result};

/// Largest value of one parameter (Alexa's `state` is several hundred characters).
pub const MAX_VALUE: usize = 4096;
/// Most parameters in one request.
pub const MAX_PARAMS: usize = 64;

#[derive(Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for Params {
    // Values may be secrets (passwords, codes, tokens): print names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.pairs.iter().map(|(k, _)| k))
            .finish()
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(part: &[u8]) -> Result<String> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        match part[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (Some(h), Some(l)) = (
                    part.get(i + 1).copied().and_then(hex),
                    part.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Error::invalid_request("malformed percent-encoding"));
                };
                out.push(h * 16 + l);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::invalid_request("parameters must be UTF-8"))
}

impl Params {
    pub fn parse(input: &[u8]) -> Result<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for piece in input.split(|b| *b == b'&') {
            if piece.is_empty() {
                continue;
            }
            let (k, v) = match piece.iter().position(|b| *b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &b""[..]),
            };
            let k = decode(k)?;
            let v = decode(v)?;
            if k.len() > 128 {
                return Err(Error::invalid_request("parameter name too long"));
            }
            if v.len() > MAX_VALUE {
                return Err(Error::invalid_request(format!(
                    "parameter '{k}' is too long"
                )));
            }
            if v.chars().any(|c| c == '\0') {
                return Err(Error::invalid_request(format!(
                    "parameter '{k}' contains a NUL character"
                )));
            }
            if pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(Error::invalid_request(format!(
                    "parameter '{k}' is repeated"
                )));
            }
            if pairs.len() >= MAX_PARAMS {
                return Err(Error::invalid_request("too many parameters"));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| Error::invalid_request(format!("missing parameter '{name}'")))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}
