//! A minimal HTTP/1.1 keep-alive client for the high-rate scenarios (discovery, JWKS,
//! `client_credentials`, introspection, password sign-in): one fixed request written as bytes
//! (plus, for a browser, the cookies the server set), the answer read by its `Content-Length`. On two shared cores a general-purpose client (reqwest: connection
//! pool, header maps, tower layers) spends about as much CPU per request as ma-idp does to
//! answer, so it halves what the benchmark can show; this one spends a fraction of that. It
//! only understands what ma-idp sends for these endpoints: a status line, headers and a body
//! of known length. Anything else (a chunked body, a closed connection) is an error that is
//! counted and reported, and the next request opens a new connection.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::Resp;

/// How long one request may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct RawClient {
    addr: String,
    /// The request line and headers, each line ending in CRLF, without the blank line.
    head: Vec<u8>,
    body: Vec<u8>,
    /// `Some` for a browser: the cookies the server set (name, value), sent back with every
    /// request.
    cookies: Option<Vec<(String, String)>>,
    /// The request as written (head, cookies, body), rebuilt when cookies change.
    request: Vec<u8>,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

impl RawClient {
    fn new(base: &str) -> Result<RawClient, String> {
        Ok(RawClient {
            addr: host_of(base)?,
            head: Vec::new(),
            body: Vec::new(),
            cookies: None,
            request: Vec::new(),
            conn: None,
            buf: Vec::with_capacity(8192),
        })
    }

    /// `GET path` with the `Host` header of `base`.
    pub fn get(base: &str, path: &str) -> Result<RawClient, String> {
        let mut c = RawClient::new(base)?;
        c.set_get(path);
        Ok(c)
    }

    /// `POST path` with a form body and an `Authorization` header.
    pub fn post_form(
        base: &str,
        path: &str,
        authorization: &str,
        form: &[(&str, &str)],
    ) -> Result<RawClient, String> {
        let mut c = RawClient::new(base)?;
        c.set_post_form(path, Some(authorization), form);
        Ok(c)
    }

    /// A client that keeps the cookies the server sets, like a browser (one site, no
    /// attributes: the benchmark talks to one server over plain HTTP). Give it a request with
    /// `set_get` or `set_post_form`.
    pub fn browser(base: &str) -> Result<RawClient, String> {
        let mut c = RawClient::new(base)?;
        c.cookies = Some(Vec::new());
        Ok(c)
    }

    /// From now on, send `GET path`.
    pub fn set_get(&mut self, path: &str) {
        self.head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ma-idp-bench\r\n",
            self.addr
        )
        .into_bytes();
        self.body.clear();
        self.rebuild();
    }

    /// From now on, send `POST path` with a form body (and an `Authorization` header if given).
    pub fn set_post_form(
        &mut self,
        path: &str,
        authorization: Option<&str>,
        form: &[(&str, &str)],
    ) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        self.head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ma-idp-bench\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        self.body = body.into_bytes();
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        if let Some(jar) = self.cookies.as_ref().filter(|j| !j.is_empty()) {
            let line = jar
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            self.request.extend_from_slice(b"Cookie: ");
            self.request.extend_from_slice(line.as_bytes());
            self.request.extend_from_slice(b"\r\n");
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(&self.body);
    }

    /// Take a `Set-Cookie` value into the jar (a browser client only); an empty value or
    /// `Max-Age=0` removes the cookie. True when the jar changed.
    fn take_cookie(&mut self, set_cookie: &str) -> bool {
        let Some(jar) = self.cookies.as_mut() else {
            return false;
        };
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return false;
        };
        let (name, value) = (name.trim(), value.trim());
        let removed = value.is_empty() || parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        let at = jar.iter().position(|(n, _)| n == name);
        match (at, removed) {
            (Some(i), true) => {
                jar.remove(i);
            }
            (Some(i), false) if jar[i].1 != value => jar[i].1 = value.to_string(),
            (None, false) => jar.push((name.to_string(), value.to_string())),
            _ => return false,
        }
        true
    }

    /// Send the request and read the whole answer. A failure drops the connection.
    pub async fn send(&mut self) -> Result<Resp, String> {
        match tokio::time::timeout(TIMEOUT, self.exchange()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err("timeout".into())
            }
        }
    }

    async fn exchange(&mut self) -> Result<Resp, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| format!("connect: {e}"))?;
            self.conn = Some(s);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("connect: no connection".into());
        };
        conn.write_all(&self.request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        // Headers.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err("headers over 64 KiB".into());
            }
            read_more(conn, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "headers are not UTF-8".to_string())?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {}", head.lines().next().unwrap_or("")))?;
        let mut length = None;
        let mut location = None;
        let mut close = false;
        let mut set_cookies = Vec::new();
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("unsupported transfer-encoding: {value}"));
            } else if name.eq_ignore_ascii_case("location") {
                location = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("set-cookie") {
                set_cookies.push(value.to_string());
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
        let length = length.ok_or_else(|| "answer without Content-Length".to_string())?;
        while self.buf.len() < head_end + length {
            read_more(conn, &mut self.buf).await?;
        }
        if self.buf.len() > head_end + length {
            return Err("more bytes than the answer's Content-Length".into());
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..]).into_owned();
        if close {
            self.conn = None;
        }
        let mut changed = false;
        for c in &set_cookies {
            changed |= self.take_cookie(c);
        }
        if changed {
            self.rebuild();
        }
        Ok(Resp {
            status,
            location,
            body,
        })
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 8192];
    let n = conn
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed before the answer was complete".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn host_of(base: &str) -> Result<String, String> {
    base.strip_prefix("http://")
        .map(|h| h.trim_end_matches('/').to_string())
        .ok_or_else(|| format!("not a plain-HTTP base URL: {base}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection server that answers each request with the next canned answer.
    async fn serve(answers: Vec<&'static [u8]>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            for a in answers {
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    let mut c = [0u8; 1024];
                    let n = s.read(&mut c).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&c[..n]);
                }
                s.write_all(a).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_answers_by_length_on_one_connection() {
        let base = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello",
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ])
        .await;
        let mut c = RawClient::get(&base, "/x").unwrap();
        let r = c.send().await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        let r = c.send().await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (401, ""));
        let e = c.send().await.err().unwrap();
        assert!(e.contains("transfer-encoding"), "{e}");
    }

    #[tokio::test]
    async fn a_browser_sends_back_the_cookies_it_was_set() {
        let base = serve(vec![
            b"HTTP/1.1 200 OK\r\nset-cookie: id=one; Path=/; HttpOnly\r\nset-cookie: other=x\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 303 See Other\r\nset-cookie: id=two; Path=/\r\nlocation: /next\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nset-cookie: other=; Max-Age=0\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let mut c = RawClient::browser(&base).unwrap();
        c.set_get("/page");
        assert!(!String::from_utf8_lossy(&c.request).contains("Cookie:"));
        c.send().await.unwrap();
        c.set_post_form("/form", None, &[("a", "1")]);
        let req = String::from_utf8(c.request.clone()).unwrap();
        assert!(req.contains("\r\nCookie: id=one; other=x\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\na=1"), "{req}");
        assert!(!req.contains("Authorization"), "{req}");
        let r = c.send().await.unwrap();
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/next")));
        let req = String::from_utf8(c.request.clone()).unwrap();
        assert!(req.contains("\r\nCookie: id=two; other=x\r\n"), "{req}");
        c.send().await.unwrap();
        let req = String::from_utf8(c.request.clone()).unwrap();
        assert!(req.contains("\r\nCookie: id=two\r\n"), "{req}");
    }

    #[test]
    fn a_plain_client_keeps_no_cookies() {
        let mut c = RawClient::get("http://127.0.0.1:1", "/x").unwrap();
        assert!(!c.take_cookie("id=one"));
        assert!(!String::from_utf8_lossy(&c.request).contains("Cookie"));
    }

    #[test]
    fn form_requests_carry_their_length() {
        let c = RawClient::post_form(
            "http://127.0.0.1:1",
            "/t/a/token",
            "Basic eA==",
            &[("token", "a b+c")],
        )
        .unwrap();
        let req = String::from_utf8(c.request).unwrap();
        assert!(req.ends_with("\r\n\r\ntoken=a+b%2Bc"), "{req}");
        assert!(req.contains("Content-Length: 13\r\n"), "{req}");
        assert!(req.contains("Host: 127.0.0.1:1\r\n"), "{req}");
    }
}
