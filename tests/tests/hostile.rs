//! Hostile input to every route, over raw TCP (so that invalid UTF-8, NUL bytes, CRLF and
//! malformed requests really reach the server): odd percent-encodings, huge and repeated
//! parameters, injection strings, wrong content types, JSON to form endpoints and back,
//! absurd Authorization headers, very long paths. Randomized from a printed seed
//! (`HOSTILE_SEED=<n>` replays one; `HOSTILE_REQUESTS=<n>` changes the count).
//!
//! Never: a status >= 500, a panic in the server, a dead worker (/health after every batch),
//! an HTML answer without CSP / X-Frame-Options DENY / Referrer-Policy, a cookie without
//! HttpOnly and SameSite=Lax, a redirect to anything but ma-idp itself or a registered
//! redirect URI, reflected markup or an evaluated template expression, an injected header.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ma_idp::services::ClientSpec;
use ma_idp_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_backends!(hostile_input_never_breaks_the_server);

// ---------------------------------------------------------------------------------------
// A small PRNG (xorshift64*), seeded and printed.
// ---------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn ascii(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| 0x20 + self.below(0x5f) as u8).collect()
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

// ---------------------------------------------------------------------------------------
// Panics anywhere in the server (its threads live in this process).
// ---------------------------------------------------------------------------------------

static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_string();
            // The test's own threads are named after the test; anything else is the server.
            if !name.contains("hostile") {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
                PANIC_NOTES
                    .lock()
                    .unwrap()
                    .push(format!("thread {name}: {info}"));
            }
            default(info);
        }));
    });
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1.
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Req {
    route: &'static str,
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    chunked: bool,
    /// Send no Content-Length (one of the headers sets it, or none is wanted).
    no_length: bool,
}

impl Req {
    fn describe(&self) -> String {
        let mut s = format!(
            "[{}] {} {}",
            self.route,
            String::from_utf8_lossy(&self.method),
            clip(&self.target, 300)
        );
        for (k, v) in &self.headers {
            s.push_str(&format!(
                "\n  {}: {}",
                String::from_utf8_lossy(k),
                clip(v, 200)
            ));
        }
        if !self.body.is_empty() {
            s.push_str(&format!(
                "\n  body ({} bytes): {}",
                self.body.len(),
                clip(&self.body, 400)
            ));
        }
        s
    }
}

fn clip(b: &[u8], n: usize) -> String {
    let s = format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(n)]));
    if b.len() > n {
        format!("{s}… ({} bytes)", b.len())
    } else {
        s
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect()
    }
}

enum Sent {
    Answer(Resp),
    /// The server closed the connection without an answer (for example after refusing a
    /// malformed request head).
    NoAnswer(String),
    Timeout,
}

async fn send(port: u16, req: &Req) -> Sent {
    let mut raw = Vec::new();
    raw.extend_from_slice(&req.method);
    raw.push(b' ');
    raw.extend_from_slice(&req.target);
    raw.extend_from_slice(b" HTTP/1.1\r\n");
    raw.extend_from_slice(format!("Host: localhost:{port}\r\n").as_bytes());
    for (k, v) in &req.headers {
        raw.extend_from_slice(k);
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(v);
        raw.extend_from_slice(b"\r\n");
    }
    if req.chunked {
        raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else if !req.no_length {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", req.body.len()).as_bytes());
    }
    raw.extend_from_slice(b"Connection: close\r\n\r\n");
    if req.chunked {
        for chunk in req.body.chunks(1000) {
            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            raw.extend_from_slice(chunk);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
    } else {
        raw.extend_from_slice(&req.body);
    }
    let io = async {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut rd, mut wr) = s.into_split();
        // Write and read at once: the server may answer before it has read everything (and
        // then never read the rest).
        let writer = tokio::spawn(async move {
            let r = wr.write_all(&raw).await;
            (wr, r)
        });
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let read_err = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if response_complete(&out) {
                        break None;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        writer.abort();
        if out.is_empty() {
            return Err(format!("no answer (read: {read_err:?})"));
        }
        Ok(out)
    };
    match tokio::time::timeout(Duration::from_secs(20), io).await {
        Err(_) => Sent::Timeout,
        Ok(Err(e)) => Sent::NoAnswer(e),
        Ok(Ok(out)) => match parse_response(&out) {
            Some(r) => Sent::Answer(r),
            None => Sent::NoAnswer(format!("unparsable answer: {}", clip(&out, 200))),
        },
    }
}

/// A whole answer is in: the head, and the body by Content-Length or the last chunk.
fn response_complete(out: &[u8]) -> bool {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let body = &out[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

fn parse_response(out: &[u8]) -> Option<Resp> {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &out[..end];
    let mut lines = head.split(|b| *b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next()?).to_string();
    let status: u16 = status_line.split(' ').nth(1)?.trim().parse().ok()?;
    let mut headers = Vec::new();
    for l in lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let i = l.iter().position(|b| *b == b':')?;
        let name = String::from_utf8_lossy(&l[..i]).trim().to_ascii_lowercase();
        let mut v = &l[i + 1..];
        while v.first() == Some(&b' ') {
            v = &v[1..];
        }
        headers.push((name, v.to_vec()));
    }
    Some(Resp {
        status,
        headers,
        body: out[end + 4..].to_vec(),
    })
}

// ---------------------------------------------------------------------------------------
// Hostile material.
// ---------------------------------------------------------------------------------------

const XSS_MARKERS: [&str; 3] = [
    "<script>alert(7)</script>",
    "<img src=x onerror=alert(7)>",
    "<svg/onload=alert(7)>",
];
/// `1337*1337`: if this number shows up in a page, a template expression was evaluated.
const TEMPLATE_RESULT: &str = "1787569";

const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    "\" OR 1=1 --",
    "1; SELECT pg_sleep(10); --",
    "x' UNION SELECT secret_hash FROM clients --",
    "%' AND 1=0 UNION SELECT NULL --",
    "{{ 1337*1337 }}",
    "{% for x in range(end=9999999) %}x{% endfor %}",
    "{{ get_env(name=\"MA_IDP_MASTER_KEY\") }}",
    "${1337*1337}",
    "#{1337*1337}",
    "<script>alert(7)</script>",
    "\"><img src=x onerror=alert(7)>",
    "'><svg/onload=alert(7)>",
    "javascript:alert(7)",
    "\r\nX-Evil: 1",
    "\r\nSet-Cookie: evil=1",
    "\r\n\r\n<html>evil</html>",
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "https://evil.example/cb",
    "//evil.example/cb",
    "/\\evil.example",
    "https://pitangui.amazon.com/api/skill/link/MKXZK47785HJ2.evil.example",
    "https://pitangui.amazon.com/api/skill/link/MKXZK47785HJ2/../../evil",
    "https://pitangui.amazon.com/api/skill/link/MKXZK47785HJ2?x=1",
    "https://pitangui.amazon.com/api/skill/link/MKXZK47785HJ2#frag",
    "https://pitangui.amazon.com@evil.example/",
    "HTTPS://PITANGUI.AMAZON.COM/api/skill/link/MKXZK47785HJ2",
    "http://localhost:7777/cb",
    "http://localhost:7777/cb/../evil",
    "ｅｖｉｌ．ｅｘａｍｐｌｅ",
    "\u{202e}lanigiro",
    "😀😀😀",
    "\u{FEFF}admin",
    "null",
    "undefined",
    "NaN",
    "-1",
    "99999999999999999999999999",
    "0x7fffffffffffffff",
    "true",
    "[]",
    "{}",
    "\\u0000",
    "%s%s%s%n",
];

/// Bytes as they appear on the wire: already "encoded" the odd way.
const WIRE_ODDITIES: &[&[u8]] = &[
    b"%",
    b"%0",
    b"%zz",
    b"%%41",
    b"%C0%AF",
    b"%c0%80",
    b"%ED%A0%80",
    b"%FF%FE",
    b"%00",
    b"a%00b",
    b"%0d%0aX-Evil:%201",
    b"%0D%0ASet-Cookie:%20evil=1",
    b"%E2%80%AE",
    b"%2e%2e%2f%2e%2e%2f",
    b"%252e%252e%252f",
    b"%u0041",
    b"+++",
    b"%2B%2b",
    b"=",
    b"==",
    b"&&&",
    b";",
    b"\xff\xfe\xfd",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\x00",
    b"\x7f",
    b"\xe2\x80\xae",
];

fn oddity(rng: &mut Rng) -> &'static [u8] {
    WIRE_ODDITIES[rng.below(WIRE_ODDITIES.len())]
}

const PARAM_NAMES: &[&str] = &[
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
    "response_mode",
    "rid",
    "csrf",
    "action",
    "username",
    "password",
    "grant_type",
    "code",
    "refresh_token",
    "code_verifier",
    "client_secret",
    "token",
    "token_type_hint",
    "access_token",
    "name",
    "done",
    "via",
    "ceremony",
    "request",
    "request_uri",
    "claims",
];

const SLUGS: &[&[u8]] = &[
    b"home",
    b"home",
    b"home",
    b"home",
    b"nope",
    b"HOME",
    b"home%00",
    b"home%2F..",
    b"..",
    b"%2e%2e",
    b"-x",
    b"a-b-c",
    b"%FF",
    b"h%C3%B6me",
    b"'%20OR%201=1",
    b"%7B%7B1337*1337%7D%7D",
];

const CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=UTF-8",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/x-www-form-urlencoded; charset=ISO-8859-1",
    "application/x-www-form-urlencodedx",
    "application/json",
    "application/json; charset=utf-16",
    "text/json",
    "text/plain",
    "text/html",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/xml",
    "*/*",
    "",
    ";;;",
    "application/x-www-form-urlencoded\u{0}",
];

fn pct_encode(b: &[u8]) -> Vec<u8> {
    url::form_urlencoded::byte_serialize(b)
        .collect::<String>()
        .into_bytes()
}

/// Percent-encode what cannot stand in a request line, keep the rest (including `%`).
fn path_safe(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &c in b {
        if c.is_ascii_graphic() && c != b'?' && c != b'#' {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    out
}

struct World {
    client_id: String,
    client_secret: String,
    public_client_id: String,
    refresh_token: String,
    access_token: String,
    enroll_token: String,
    verifier: String,
}

/// A value as raw bytes (not yet encoded).
fn value(rng: &mut Rng, w: &World) -> Vec<u8> {
    match rng.below(14) {
        0 => Vec::new(),
        1 => {
            let n = rng.below(60);
            rng.ascii(n)
        }
        2 => {
            let n = *rng.pick(&[4097usize, 5000, 17_000, 70_000]);
            vec![b'A'; n]
        }
        3 => {
            let n = rng.below(40);
            rng.bytes(n)
        }
        4..=7 => rng.pick(INJECTIONS).as_bytes().to_vec(),
        8 => rng.pick(&alexa_redirects()).as_bytes().to_vec(),
        9 => rng
            .pick(&[
                w.client_id.as_str(),
                w.client_secret.as_str(),
                w.public_client_id.as_str(),
                w.refresh_token.as_str(),
                w.access_token.as_str(),
                w.verifier.as_str(),
            ])
            .as_bytes()
            .to_vec(),
        10 => rng
            .pick(&[
                "code",
                "token",
                "id_token",
                "S256",
                "plain",
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "password",
                "urn:ietf:params:oauth:grant-type:device_code",
                "openid music.control user:read",
                "login",
                "none",
                "consent",
                "approve",
                "deny",
                "access_token",
                "alexa",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ])
            .as_bytes()
            .to_vec(),
        11 => {
            // A long Unicode value.
            "é🎵".repeat(rng.below(2000)).into_bytes()
        }
        12 => {
            let mut v = rng.pick(INJECTIONS).as_bytes().to_vec();
            v.extend_from_slice(oddity(rng));
            v
        }
        _ => b"bob".to_vec(),
    }
}

/// A query string or form body: names and values, encoded properly, oddly, or not at all.
fn params(rng: &mut Rng, w: &World, preferred: &[&str]) -> Vec<u8> {
    let n = match rng.below(10) {
        0 => 0,
        1 => 65 + rng.below(40), // too many
        _ => 1 + rng.below(8),
    };
    let mut out = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.push(b'&');
        }
        let name: Vec<u8> = match rng.below(10) {
            0 => rng.pick(INJECTIONS).as_bytes().to_vec(),
            1 => oddity(rng).to_vec(),
            2 => vec![b'n'; 129 + rng.below(200)],
            3..=5 if !preferred.is_empty() => rng.pick(preferred).as_bytes().to_vec(),
            _ => rng.pick(PARAM_NAMES).as_bytes().to_vec(),
        };
        let repeat = rng.pct(8);
        for r in 0..if repeat { 2 } else { 1 } {
            if r > 0 {
                out.push(b'&');
            }
            let v = value(rng, w);
            match rng.below(10) {
                0 => {
                    // Raw, unencoded.
                    out.extend_from_slice(&name);
                    out.push(b'=');
                    out.extend_from_slice(&v);
                }
                1 => {
                    out.extend_from_slice(&pct_encode(&name));
                    out.push(b'=');
                    out.extend_from_slice(oddity(rng));
                }
                2 => out.extend_from_slice(&pct_encode(&name)), // no '='
                _ => {
                    out.extend_from_slice(&pct_encode(&name));
                    out.push(b'=');
                    out.extend_from_slice(&pct_encode(&v));
                }
            }
        }
    }
    out
}

fn hostile_json(rng: &mut Rng, w: &World) -> Vec<u8> {
    let s = |rng: &mut Rng| -> String {
        String::from_utf8_lossy(&value(rng, w))
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(|c: char| c.is_control(), "")
    };
    match rng.below(16) {
        0 => b"{}".to_vec(),
        1 => b"[]".to_vec(),
        2 => b"null".to_vec(),
        3 => b"\"just a string\"".to_vec(),
        4 => {
            let d = 200 + rng.below(5000);
            let mut v = "[".repeat(d).into_bytes();
            v.extend_from_slice("]".repeat(d).as_bytes());
            v
        }
        5 => format!("{{\"username\":\"{}\"}}", s(rng)).into_bytes(),
        6 => b"{\"username\": 1e999999}".to_vec(),
        7 => {
            let n = rng.below(60);
            rng.bytes(n)
        }
        8 => b"\xef\xbb\xbf{\"username\":\"alice\"}".to_vec(),
        9 => b"{\"username\":\"a\",\"username\":\"b\"}".to_vec(),
        10 => format!(
            "{{\"ceremony\":\"{}\",\"credential\":{{\"id\":\"{}\",\"rawId\":\"{}\",\"type\":\"public-key\",\
             \"response\":{{\"authenticatorData\":\"{}\",\"clientDataJSON\":\"{}\",\"signature\":\"{}\",\
             \"userHandle\":\"{}\"}},\"extensions\":{{}}}},\"rid\":\"{}\",\"via\":\"alexa\"}}",
            s(rng),
            s(rng),
            s(rng),
            s(rng),
            s(rng),
            s(rng),
            s(rng),
            s(rng)
        )
        .into_bytes(),
        11 => format!(
            "{{\"ceremony\":\"{}\",\"name\":\"{}\",\"credential\":{{\"id\":\"AAAA\",\"rawId\":\"AAAA\",\
             \"type\":\"public-key\",\"response\":{{\"attestationObject\":\"{}\",\"clientDataJSON\":\"{}\",\
             \"transports\":[\"usb\",\"{}\"]}},\"extensions\":{{}}}}}}",
            s(rng),
            s(rng),
            s(rng),
            s(rng),
            s(rng)
        )
        .into_bytes(),
        12 => format!("{{\"username\":\"{}\"", s(rng)).into_bytes(), // truncated
        13 => {
            let mut v = b"{\"username\":\"".to_vec();
            v.extend_from_slice(&rng.bytes(20));
            v.extend_from_slice(b"\"}");
            v
        }
        14 => format!(
            "{{\"username\":\"{}\",\"x\":\"{}\"}}",
            s(rng),
            "A".repeat(70_000)
        )
        .into_bytes(),
        _ => params(rng, w, &["username", "ceremony"]), // a form to a JSON endpoint
    }
}

fn auth_header(rng: &mut Rng, w: &World) -> Vec<u8> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    match rng.below(22) {
        0 => b"Basic".to_vec(),
        1 => b"Basic ".to_vec(),
        2 => b"Basic ====".to_vec(),
        3 => format!("Basic {}", STANDARD.encode(":")).into_bytes(),
        4 => format!("Basic {}", STANDARD.encode(b"\xff\xfe:\xc0")).into_bytes(),
        5 => format!("Basic {}", STANDARD.encode("a:b:c")).into_bytes(),
        6 => format!("Basic {}", "QUFB".repeat(3000)).into_bytes(),
        7 => format!("Basic {}", STANDARD.encode("%zz:%00")).into_bytes(),
        8 => format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", w.client_id, "x".repeat(5000)))
        )
        .into_bytes(),
        9 => basic_header(&w.client_id, &w.client_secret).into_bytes(),
        10 => basic_header(&w.public_client_id, "").into_bytes(),
        11 => b"Bearer".to_vec(),
        12 => b"Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.".to_vec(),
        13 => format!("Bearer {}", w.access_token).into_bytes(),
        14 => format!("bearer    {}   ", w.access_token).into_bytes(),
        15 => format!("Bearer {}", "eyJ".repeat(4000)).into_bytes(),
        16 => b"Digest username=\"x\", realm=\"y\"".to_vec(),
        17 => b"Basic \xff\xfe\xfd".to_vec(),
        18 => b"Bearer a.b.c.d.e".to_vec(),
        19 => {
            let mut v = b"Basic ".to_vec();
            v.extend_from_slice(rng.pick(INJECTIONS).as_bytes());
            v.retain(|b| *b != b'\r' && *b != b'\n');
            v
        }
        20 => format!("Negotiate {}", STANDARD.encode(rng.bytes(100))).into_bytes(),
        _ => {
            let n = rng.below(300);
            rng.ascii(n)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Body {
    None,
    Form,
    Json,
}

struct Route {
    name: &'static str,
    method: &'static str,
    /// `{t}` tenant, `{id}`, `{action}`, `{token}`, `{file}`, `{any}`.
    path: &'static str,
    body: Body,
    /// Parameter names this route reads.
    names: &'static [&'static str],
    session: bool,
}

const AUTHZ: &[&str] = &[
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
    "rid",
];
const TOKEN: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "refresh_token",
    "code_verifier",
    "client_id",
    "client_secret",
    "scope",
];

fn routes() -> Vec<Route> {
    let r = |name, method, path, body, names, session| Route {
        name,
        method,
        path,
        body,
        names,
        session,
    };
    vec![
        r(
            "discovery",
            "GET",
            "/t/{t}/.well-known/openid-configuration",
            Body::None,
            &[],
            false,
        ),
        r(
            "rfc8414",
            "GET",
            "/.well-known/oauth-authorization-server/t/{t}",
            Body::None,
            &[],
            false,
        ),
        r("jwks", "GET", "/t/{t}/jwks.json", Body::None, &[], false),
        r("token", "POST", "/t/{t}/token", Body::Form, TOKEN, false),
        r(
            "alexa-token",
            "POST",
            "/alexa/token",
            Body::Form,
            TOKEN,
            false,
        ),
        r(
            "revoke",
            "POST",
            "/t/{t}/revoke",
            Body::Form,
            &["token", "token_type_hint", "client_id", "client_secret"],
            false,
        ),
        r(
            "introspect",
            "POST",
            "/t/{t}/introspect",
            Body::Form,
            &["token", "token_type_hint", "client_id", "client_secret"],
            false,
        ),
        r(
            "userinfo-get",
            "GET",
            "/t/{t}/userinfo",
            Body::None,
            &["access_token"],
            false,
        ),
        r(
            "userinfo-post",
            "POST",
            "/t/{t}/userinfo",
            Body::Form,
            &["access_token"],
            false,
        ),
        r(
            "authorize-get",
            "GET",
            "/t/{t}/authorize",
            Body::None,
            AUTHZ,
            true,
        ),
        r(
            "authorize-post",
            "POST",
            "/t/{t}/authorize",
            Body::Form,
            &["csrf", "rid", "action", "username", "password"],
            true,
        ),
        r(
            "alexa-authorize-get",
            "GET",
            "/alexa/authorize",
            Body::None,
            AUTHZ,
            true,
        ),
        r(
            "alexa-authorize-post",
            "POST",
            "/alexa/authorize",
            Body::Form,
            &["csrf", "rid", "action", "username", "password"],
            true,
        ),
        r("login-get", "GET", "/t/{t}/login", Body::None, &[], true),
        r(
            "login-post",
            "POST",
            "/t/{t}/login",
            Body::Form,
            &["csrf", "username", "password"],
            true,
        ),
        r("logout-get", "GET", "/t/{t}/logout", Body::None, &[], true),
        r(
            "logout-post",
            "POST",
            "/t/{t}/logout",
            Body::Form,
            &["csrf"],
            true,
        ),
        r(
            "account",
            "GET",
            "/t/{t}/account",
            Body::None,
            &["done"],
            true,
        ),
        r(
            "grant-revoke",
            "POST",
            "/t/{t}/account/grants/{id}/revoke",
            Body::Form,
            &["csrf"],
            true,
        ),
        r(
            "session-end",
            "POST",
            "/t/{t}/account/sessions/{id}/end",
            Body::Form,
            &["csrf"],
            true,
        ),
        r(
            "passkey-action",
            "POST",
            "/t/{t}/account/passkeys/{id}/{action}",
            Body::Form,
            &["csrf", "name"],
            true,
        ),
        r(
            "passkey-login-start",
            "POST",
            "/t/{t}/passkeys/login/start",
            Body::Json,
            &[],
            true,
        ),
        r(
            "passkey-login-finish",
            "POST",
            "/t/{t}/passkeys/login/finish",
            Body::Json,
            &[],
            true,
        ),
        r(
            "passkey-register-start",
            "POST",
            "/t/{t}/passkeys/register/start",
            Body::Json,
            &[],
            true,
        ),
        r(
            "passkey-register-finish",
            "POST",
            "/t/{t}/passkeys/register/finish",
            Body::Json,
            &[],
            true,
        ),
        r(
            "enroll-page",
            "GET",
            "/t/{t}/enroll/{token}",
            Body::None,
            &[],
            true,
        ),
        r(
            "enroll-start",
            "POST",
            "/t/{t}/enroll/{token}/start",
            Body::Json,
            &[],
            true,
        ),
        r(
            "enroll-finish",
            "POST",
            "/t/{t}/enroll/{token}/finish",
            Body::Json,
            &[],
            true,
        ),
        r("health", "GET", "/health", Body::None, &[], false),
        r("ready", "GET", "/ready", Body::None, &[], false),
        r("metrics", "GET", "/metrics", Body::None, &[], false),
        r("static", "GET", "/static/{file}", Body::None, &[], false),
        r("unknown", "GET", "/{any}", Body::None, &[], true),
        r("unknown-post", "POST", "/{any}", Body::Form, &[], true),
        r("admin", "GET", "/admin/{any}", Body::None, &[], true),
        r("admin-post", "POST", "/admin/{any}", Body::Form, &[], true),
        r(
            "admin-login",
            "POST",
            "/admin/login",
            Body::Form,
            &["csrf", "tenant", "username", "password"],
            true,
        ),
        r(
            "admin-setup",
            "GET",
            "/admin/setup/{token}",
            Body::None,
            &[],
            true,
        ),
        r(
            "admin-tenant",
            "GET",
            "/admin/t/{t}/{action}",
            Body::None,
            &["q", "offset", "kind", "user", "client", "from", "to"],
            true,
        ),
        r(
            "fed-start",
            "POST",
            "/t/{t}/federation/{any}/start",
            Body::Form,
            &["csrf", "purpose", "rid", "back"],
            true,
        ),
        r(
            "fed-callback",
            "GET",
            "/t/{t}/federation/{any}/callback",
            Body::None,
            &["code", "state", "error", "error_description"],
            true,
        ),
        r(
            "identity-unlink",
            "POST",
            "/t/{t}/account/identities/{id}/unlink",
            Body::Form,
            &["csrf"],
            true,
        ),
    ]
}

/// The browser whose cookie a request carries.
#[derive(Clone)]
struct Session {
    cookie: String,
    csrf: String,
}

fn segment(rng: &mut Rng, w: &World, real: &[&str]) -> Vec<u8> {
    match rng.below(8) {
        0 | 1 if !real.is_empty() => rng.pick(real).as_bytes().to_vec(),
        2 => oddity(rng).to_vec(),
        3 => vec![b'x'; 100 + rng.below(20_000)],
        4 => b"..%2F..%2F..%2Fetc%2Fpasswd".to_vec(),
        _ => path_safe(&value(rng, w)),
    }
}

/// A request that is valid but for one or two hostile changes, so that it gets deep into the
/// authorization and token logic (and its redirects).
fn near_valid(rng: &mut Rng, w: &World, route: &str) -> Option<Vec<u8>> {
    let mut pairs: Vec<(String, Vec<u8>)> = match route {
        "authorize-get" | "alexa-authorize-get" => {
            let public = rng.pct(25);
            let mut p = vec![
                (
                    "client_id".to_string(),
                    if public {
                        &w.public_client_id
                    } else {
                        &w.client_id
                    }
                    .as_bytes()
                    .to_vec(),
                ),
                ("response_type".into(), b"code".to_vec()),
                (
                    "redirect_uri".into(),
                    if public {
                        b"http://localhost:7777/cb".to_vec()
                    } else {
                        rng.pick(&alexa_redirects()).as_bytes().to_vec()
                    },
                ),
                ("state".into(), value(rng, w)),
                ("scope".into(), b"music.control user:read".to_vec()),
            ];
            if public || rng.pct(30) {
                p.push((
                    "code_challenge".into(),
                    pkce_challenge(&w.verifier).into_bytes(),
                ));
                p.push(("code_challenge_method".into(), b"S256".to_vec()));
            }
            if rng.pct(40) {
                p.push((
                    "prompt".into(),
                    rng.pick(&["none", "login", "consent", "none login", "select_account"])
                        .as_bytes()
                        .to_vec(),
                ));
            }
            p
        }
        "token" | "alexa-token" => match rng.below(3) {
            0 => vec![
                ("grant_type".into(), b"refresh_token".to_vec()),
                ("refresh_token".into(), w.refresh_token.as_bytes().to_vec()),
            ],
            1 => vec![
                ("grant_type".into(), b"authorization_code".to_vec()),
                ("code".into(), value(rng, w)),
                (
                    "redirect_uri".into(),
                    rng.pick(&alexa_redirects()).as_bytes().to_vec(),
                ),
                ("code_verifier".into(), w.verifier.as_bytes().to_vec()),
            ],
            _ => vec![
                ("grant_type".into(), b"client_credentials".to_vec()),
                ("scope".into(), value(rng, w)),
            ],
        },
        "introspect" | "revoke" => vec![
            (
                "token".into(),
                if rng.pct(50) {
                    &w.access_token
                } else {
                    &w.refresh_token
                }
                .as_bytes()
                .to_vec(),
            ),
            (
                "token_type_hint".into(),
                rng.pick(&["access_token", "refresh_token", "id_token", ""])
                    .as_bytes()
                    .to_vec(),
            ),
        ],
        _ => return None,
    };
    for _ in 0..1 + rng.below(2) {
        match rng.below(4) {
            0 if !pairs.is_empty() => {
                let i = rng.below(pairs.len());
                pairs[i].1 = value(rng, w);
            }
            1 if !pairs.is_empty() => {
                let i = rng.below(pairs.len());
                pairs.remove(i);
            }
            2 => pairs.push((rng.pick(PARAM_NAMES).to_string(), value(rng, w))),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(&pct_encode(k.as_bytes()));
        out.push(b'=');
        out.extend_from_slice(&pct_encode(v));
    }
    Some(out)
}

fn build(rng: &mut Rng, w: &World, route: &Route, signed_in: &Session) -> Req {
    let mut method = route.method.as_bytes().to_vec();
    if rng.pct(8) {
        method = rng
            .pick(&[
                "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW", "get",
            ])
            .as_bytes()
            .to_vec();
    }
    // The path.
    let mut path = Vec::new();
    let mut rest = route.path.as_bytes();
    while !rest.is_empty() {
        if rest[0] == b'{' {
            let close = rest.iter().position(|b| *b == b'}').unwrap();
            let var = &rest[1..close];
            let seg: Vec<u8> = match var {
                b"t" => rng.pick(SLUGS).to_vec(),
                b"id" => segment(rng, w, &["01a20f56-5392-71df-9a51-20ab1095ea6f", "1"]),
                b"action" => segment(rng, w, &["rename", "remove", "rename", "remove"]),
                b"token" => segment(rng, w, &[w.enroll_token.as_str()]),
                b"file" => segment(rng, w, &["style.css", "passkeys.js", "../Cargo.toml"]),
                _ => {
                    let mut p = Vec::new();
                    for i in 0..1 + rng.below(4) {
                        if i > 0 {
                            p.push(b'/');
                        }
                        p.extend_from_slice(&segment(rng, w, &["", ".", "..", "t", "home"]));
                    }
                    p
                }
            };
            path.extend_from_slice(&seg);
            rest = &rest[close + 1..];
        } else {
            path.push(rest[0]);
            rest = &rest[1..];
        }
    }
    match rng.below(30) {
        0 => path = [b"//".as_slice(), &path].concat(),
        1 => path.extend_from_slice(b"/"),
        2 => path.extend_from_slice(&b"/x".repeat(3000)),
        3 => path = [b"/./".as_slice(), &path[1..]].concat(),
        4 => path.extend_from_slice(b"%00"),
        5 => path.extend_from_slice(b"\xff\xfe"),
        _ => {}
    }
    let mut target = path;
    let near = if rng.pct(45) {
        near_valid(rng, w, route.name)
    } else {
        None
    };
    let want_query = route.body == Body::None && rng.pct(75) || rng.pct(10);
    if let (Some(q), Body::None) = (&near, route.body) {
        target.push(b'?');
        target.extend_from_slice(q);
    } else if want_query {
        target.push(b'?');
        let q = params(rng, w, route.names);
        // Raw bytes that cannot stand in a request line are encoded, except sometimes.
        if rng.pct(10) {
            target.extend_from_slice(&q);
        } else {
            target.extend_from_slice(&path_safe(&q));
        }
    }
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut body = Vec::new();
    let session = if route.session {
        match rng.below(10) {
            0..=3 => Some(signed_in.clone()),
            4 => Some(Session {
                cookie: format!(
                    "ma-idp={}",
                    String::from_utf8_lossy(&path_safe(&value(rng, w)))
                ),
                csrf: String::new(),
            }),
            _ => None,
        }
    } else if rng.pct(5) {
        Some(signed_in.clone())
    } else {
        None
    };
    // The body.
    let as_json = match route.body {
        Body::Json => !rng.pct(15),
        Body::Form => rng.pct(10),
        Body::None => rng.pct(5),
    };
    let content_type = if route.body == Body::None && !rng.pct(10) {
        None
    } else if rng.pct(80) {
        Some(if as_json {
            "application/json".to_string()
        } else {
            "application/x-www-form-urlencoded".to_string()
        })
    } else {
        Some(rng.pick(CONTENT_TYPES).to_string())
    };
    if route.body != Body::None || rng.pct(10) {
        if let (Some(b), false) = (&near, as_json) {
            body = b.clone();
        } else if as_json {
            body = hostile_json(rng, w);
        } else {
            body = params(rng, w, route.names);
            if let Some(s) = &session
                && !s.csrf.is_empty()
                && rng.pct(60)
            {
                // The real CSRF token, so the request gets past the check.
                let mut with = format!("csrf={}&", s.csrf).into_bytes();
                if route.name.contains("authorize") && rng.pct(50) {
                    with.extend_from_slice(b"action=login&username=bob&password=wrong&rid=x&");
                }
                with.extend_from_slice(&body);
                body = with;
            }
        }
    }
    if let Some(ct) = content_type {
        headers.push((b"Content-Type".to_vec(), ct.into_bytes()));
    }
    if let Some(s) = &session {
        headers.push((b"Cookie".to_vec(), s.cookie.clone().into_bytes()));
        if route.body == Body::Json && !s.csrf.is_empty() && rng.pct(70) {
            headers.push((b"X-CSRF-Token".to_vec(), s.csrf.clone().into_bytes()));
        }
    }
    // Authorization.
    let machine = matches!(
        route.name,
        "token" | "alexa-token" | "revoke" | "introspect" | "userinfo-get" | "userinfo-post"
    );
    if near.is_some() && machine && rng.pct(70) {
        headers.push((
            b"Authorization".to_vec(),
            basic_header(&w.client_id, &w.client_secret).into_bytes(),
        ));
    } else if rng.pct(if machine { 60 } else { 8 }) {
        headers.push((b"Authorization".to_vec(), auth_header(rng, w)));
        if rng.pct(5) {
            headers.push((b"Authorization".to_vec(), auth_header(rng, w)));
        }
    }
    // Other hostile headers.
    let mut no_length = false;
    let mut chunked = false;
    match rng.below(30) {
        0 => headers.push((
            b"X-Forwarded-For".to_vec(),
            b"1.2.3.4, ' OR 1=1, ::1, \xff".to_vec(),
        )),
        1 => headers.push((b"X-CSRF-Token".to_vec(), b"\xff\xfe garbage".to_vec())),
        2 => headers.push((
            b"Cookie".to_vec(),
            b"ma-idp=\xff\xfe; ma-idp=2; ma-idp=".to_vec(),
        )),
        3 => headers.push((b"User-Agent".to_vec(), vec![b'U'; 8000])),
        4 => {
            for i in 0..150 {
                headers.push((format!("X-Many-{i}").into_bytes(), b"1".to_vec()));
            }
        }
        5 => chunked = true,
        6 => {
            // Both lengths: a smuggling shape.
            headers.push((b"Transfer-Encoding".to_vec(), b"chunked".to_vec()));
            headers.push((
                b"Content-Length".to_vec(),
                body.len().to_string().into_bytes(),
            ));
            chunked = false;
            no_length = true;
            body = [
                format!("{:x}\r\n", body.len()).as_bytes(),
                &body,
                b"\r\n0\r\n\r\n",
            ]
            .concat();
            if let Some((_, v)) = headers.last_mut() {
                *v = body.len().to_string().into_bytes();
            }
        }
        7 => {
            headers.push((b"Content-Length".to_vec(), b"-1".to_vec()));
            no_length = true;
            body.clear();
        }
        8 => headers.push((b"Accept".to_vec(), b"application/json".to_vec())),
        9 => headers.push((b"Origin".to_vec(), b"https://evil.example".to_vec())),
        10 => headers.push((b"Host".to_vec(), b"evil.example".to_vec())),
        11 => headers.push((
            b"Accept-Encoding".to_vec(),
            b"gzip, br, zstd, \xff".to_vec(),
        )),
        12 => headers.push((b"Content-Encoding".to_vec(), b"gzip".to_vec())),
        _ => {}
    }
    Req {
        route: route.name,
        method,
        target,
        headers,
        body,
        chunked,
        no_length,
    }
}

// ---------------------------------------------------------------------------------------
// What every answer must respect.
// ---------------------------------------------------------------------------------------

fn check(resp: &Resp, base: &str, registered: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    if resp.status >= 500 {
        bad.push(format!("status {}: {}", resp.status, clip(&resp.body, 300)));
    }
    let ct = resp.header("content-type").unwrap_or_default();
    if ct.starts_with("text/html") {
        match resp.header("content-security-policy") {
            Some(csp) if csp.contains("frame-ancestors 'none'") => {}
            other => bad.push(format!("HTML without a proper CSP: {other:?}")),
        }
        if resp.header("x-frame-options").as_deref() != Some("DENY") {
            bad.push("HTML without X-Frame-Options: DENY".into());
        }
        if resp.header("referrer-policy").is_none() {
            bad.push("HTML without Referrer-Policy".into());
        }
        let body = String::from_utf8_lossy(&resp.body);
        for m in XSS_MARKERS {
            if body.contains(m) {
                bad.push(format!("markup reflected unescaped: {m}"));
            }
        }
        if body.contains(TEMPLATE_RESULT) {
            bad.push("a template expression was evaluated (1337*1337 in the page)".into());
        }
    }
    for c in resp.all("set-cookie") {
        let l = c.to_ascii_lowercase();
        // Browser cookies are Lax (they must survive the redirect back from an upstream);
        // the admin UI's cookie is Strict.
        let same_site_ok = l.contains("samesite=lax")
            || (l.starts_with("ma-idp-admin=") || l.starts_with("__host-ma-idp-admin="))
                && l.contains("samesite=strict");
        if !l.contains("httponly") || !same_site_ok {
            bad.push(format!("cookie without HttpOnly/SameSite: {c}"));
        }
        if l.starts_with("evil") {
            bad.push(format!("injected cookie: {c}"));
        }
    }
    if resp.headers.iter().any(|(k, _)| k == "x-evil") {
        bad.push("injected header X-Evil".into());
    }
    for loc in resp.all("location") {
        let own_path = loc.starts_with('/')
            && !loc.starts_with("//")
            && !loc.starts_with("/\\")
            && !loc.contains(|c: char| c.is_control() || c == '\\');
        let own_url = loc.starts_with(&format!("{base}/"));
        let registered_uri = registered.iter().any(|r| {
            loc == *r || loc.starts_with(&format!("{r}?")) || loc.starts_with(&format!("{r}#"))
        });
        if !(own_path || own_url || registered_uri) {
            bad.push(format!("redirect to an unregistered place: {loc}"));
        }
    }
    bad
}

// ---------------------------------------------------------------------------------------
// Set-up helpers.
// ---------------------------------------------------------------------------------------

fn cookie_pair(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ma-idp="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

/// Sign `alice` in with a plain client and keep the cookie and CSRF token by hand.
async fn sign_in(app: &TestApp) -> Session {
    let r = app.http.get(app.url("/t/home/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = cookie_pair(&r).expect("a session cookie");
    let csrf = hidden(&r.text().await.unwrap(), "csrf");
    let r = app
        .http
        .post(app.url("/t/home/login"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "alice signs in");
    let cookie = cookie_pair(&r).unwrap_or(cookie);
    Session { cookie, csrf }
}

async fn still_signed_in(app: &TestApp, s: &Session) -> bool {
    app.http
        .get(app.url("/t/home/account"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .map(|r| r.status() == 200)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------

async fn hostile_input_never_breaks_the_server(backend: Backend) {
    watch_panics();
    let Some(app) = TestApp::start_with(backend, |s| {
        s.limits.sign_ins_per_ip_per_minute = 0;
        s.limits.token_per_ip_per_minute = 0;
        s.limits.introspect_per_ip_per_minute = 0;
    })
    .await
    else {
        return;
    };
    let seed = seed();
    eprintln!("hostile[{backend:?}] seed {seed} (replay with HOSTILE_SEED={seed})");
    let mut rng = Rng::new(seed);
    let total: usize = std::env::var("HOSTILE_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);

    let setup = app.setup("home").await;
    let tenant = app.svc.tenant("home").await.unwrap();
    let bob = app.add_member(&tenant, "bob").await;
    let public = app
        .svc
        .create_client(
            &tenant,
            ClientSpec {
                name: "App".into(),
                client_id: Some("app".into()),
                redirect_uris: vec!["http://localhost:7777/cb".into()],
                public: true,
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let (enroll_url, _) = app
        .svc
        .create_enrollment_link(&tenant, &bob, "test")
        .await
        .unwrap();
    let enroll_token = enroll_url.rsplit('/').next().unwrap().to_string();
    let tok = app.link(&setup, "s").await;
    let world = Arc::new(World {
        client_id: setup.client_id.clone(),
        client_secret: setup.client_secret.clone(),
        public_client_id: public.client.client_id.clone(),
        refresh_token: tok["refresh_token"].as_str().unwrap().to_string(),
        access_token: tok["access_token"].as_str().unwrap().to_string(),
        enroll_token,
        verifier: new_verifier(),
    });
    let mut registered = alexa_redirects();
    registered.push("http://localhost:7777/cb".into());
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let routes = routes();
    let mut session = sign_in(&app).await;

    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut per_route: BTreeMap<&str, usize> = BTreeMap::new();
    let mut time_per_route: BTreeMap<&str, (Duration, Duration)> = BTreeMap::new();
    let mut no_answer: Vec<String> = Vec::new();
    let mut html = 0usize;
    let mut redirects = 0usize;
    let mut sent = 0usize;
    const BATCH: usize = 100;
    while sent < total {
        let n = BATCH.min(total - sent);
        let batch: Vec<Req> = (0..n)
            .map(|i| {
                // Every route in turn, then at random.
                let route = if sent + i < routes.len() {
                    &routes[sent + i]
                } else {
                    rng.pick(&routes)
                };
                build(&mut rng, &world, route, &session)
            })
            .collect();
        let results: Vec<(Req, Sent, Duration)> = futures_util::stream::iter(batch)
            .map(|req| async move {
                let t = Instant::now();
                let r = send(port, &req).await;
                (req, r, t.elapsed())
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (req, r, took) in results {
            *per_route.entry(req.route).or_default() += 1;
            let slot = time_per_route.entry(req.route).or_default();
            slot.0 += took;
            slot.1 = slot.1.max(took);
            match r {
                Sent::Answer(resp) => {
                    *statuses.entry(resp.status).or_default() += 1;
                    if resp
                        .header("content-type")
                        .is_some_and(|c| c.starts_with("text/html"))
                    {
                        html += 1;
                    }
                    if resp.header("location").is_some() {
                        redirects += 1;
                    }
                    for problem in check(&resp, &app.base, &registered) {
                        failures.push(format!("{problem}\n  request: {}", req.describe()));
                    }
                }
                Sent::NoAnswer(e) => no_answer.push(format!("{e}: {}", clip(&req.target, 80))),
                Sent::Timeout => failures.push(format!(
                    "no answer within 20 s\n  request: {}",
                    req.describe()
                )),
            }
        }
        sent += n;
        // No worker died: liveness and readiness still answer.
        let h = app.http.get(app.url("/health")).send().await;
        assert!(
            h.as_ref().is_ok_and(|r| r.status() == 200),
            "/health after {sent} hostile requests: {h:?}"
        );
        let r = app.http.get(app.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), 200, "/ready after {sent} hostile requests");
        if !still_signed_in(&app, &session).await {
            session = sign_in(&app).await;
        }
    }
    let elapsed = started.elapsed();
    // The real flow still works after all that.
    let body = app.link(&setup, "after").await;
    assert!(
        body["access_token"].is_string(),
        "Alexa still links after the hostile run: {body}"
    );

    eprintln!(
        "hostile[{backend:?}] seed {seed}: {sent} requests in {elapsed:?}; statuses {statuses:?}; \
         {html} HTML answers, {redirects} redirects, {} closed without an answer; per route {per_route:?}",
        no_answer.len()
    );
    let mut slowest: Vec<_> = time_per_route.into_iter().collect();
    slowest.sort_by_key(|(_, (total, _))| std::cmp::Reverse(*total));
    eprintln!(
        "hostile[{backend:?}] slowest routes (total, max): {:?}",
        &slowest[..slowest.len().min(6)]
    );
    if !no_answer.is_empty() {
        eprintln!(
            "closed without an answer (first 5): {:#?}",
            &no_answer[..no_answer.len().min(5)]
        );
    }
    let panics = SERVER_PANICS.load(Ordering::SeqCst);
    assert_eq!(
        panics,
        0,
        "server panics: {:#?}",
        PANIC_NOTES.lock().unwrap()
    );
    if !failures.is_empty() {
        failures.sort();
        failures.dedup();
        panic!(
            "{} problems (seed {seed}); first 25:\n{}",
            failures.len(),
            failures
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
    app.stop().await;
}
