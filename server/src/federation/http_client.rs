//! The HTTP client the `oauth2` and `openidconnect` crates call upstreams with: our reqwest,
//! no redirects followed, short timeouts, bounded response size.
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Largest upstream response read.
const MAX_RESPONSE: usize = 256 * 1024;

fn build(public_only: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("ma-idp/", env!("CARGO_PKG_VERSION")));
    if public_only {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    b.build().map_err(|e| e.to_string())
}

static PUBLIC_ONLY: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| build(true));
static ANY_ADDRESS: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| build(false));

/// The client for upstream requests: unless `allow_private` (the `allow_private_upstreams`
/// setting), one whose names resolve to public addresses only. Call [`guard`] on the URL
/// first: an address written in the URL is not resolved.
pub fn client(allow_private: bool) -> Result<&'static reqwest::Client, String> {
    let c = if allow_private {
        &ANY_ADDRESS
    } else {
        &PUBLIC_ONLY
    };
    c.as_ref().map_err(Clone::clone)
}

/// Refused: an upstream on a loopback, private, link-local or otherwise non-public address
/// while `allow_private_upstreams` is off. A tenant's admin configures upstreams; without
/// this, ma-idp would fetch, for them, from the services beside it (its host's loopback, the
/// home network, a cloud's metadata address).
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} is a loopback, private or link-local address: upstreams there are refused unless \
     the server's allow_private_upstreams setting is on"
)]
pub struct PrivateUpstream(pub String);

/// Whether an address is reachable on the public internet, as far as an upstream identity
/// provider goes: not loopback, unspecified, private (RFC 1918, IPv6 unique local), shared
/// (100.64/10), link-local, multicast, broadcast or documentation, nor in IPv6's `::/96`;
/// IPv4-mapped IPv6 addresses are judged by their IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            // `::/96` holds `::`, `::1` and the deprecated IPv4-compatible addresses.
            !(u128::from(v6) >> 32 == 0
                || v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Whether a URL's host names the local machine or a non-public address without DNS:
/// an IP address that is not public, `localhost` or a name under `.localhost`.
pub fn names_private_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => true,
    }
}

/// Refuse a request to a URL whose host is a non-public address written out (the resolver
/// of [`client`] sees only names), unless `allow_private`.
pub fn guard(url: &str, allow_private: bool) -> Result<(), HttpError> {
    if allow_private {
        return Ok(());
    }
    let u = url::Url::parse(url).map_err(|e| HttpError::new(format!("not a URL: {e}")))?;
    if names_private_host(&u) {
        return Err(HttpError::refused(&PrivateUpstream(
            u.host_str().unwrap_or_default().to_string(),
        )));
    }
    Ok(())
}

/// Resolves names as the system does, keeping only public addresses; a name with none is
/// refused ([`PrivateUpstream`]). The addresses connected to are the ones checked, so a
/// name that answers differently the second time (DNS rebinding) gains nothing.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(PrivateUpstream(host)) as _);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An upstream request that failed: why (never a secret nor a URL's query), and whether it
/// was refused as a non-public address ([`PrivateUpstream`]).
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct HttpError {
    pub msg: String,
    pub private: bool,
}

impl HttpError {
    pub fn new(msg: impl Into<String>) -> Self {
        HttpError {
            msg: msg.into(),
            private: false,
        }
    }

    fn refused(p: &PrivateUpstream) -> Self {
        HttpError {
            msg: p.to_string(),
            private: true,
        }
    }

    /// A reqwest error: a refusal by [`PublicOnly`] says why, anything else is [`describe`]d.
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        match refused_in(e) {
            Some(p) => HttpError::refused(p),
            None => HttpError::new(describe(e)),
        }
    }

    /// For the member's page and the audit log: a refused address is the admin's to fix
    /// (misconfigured), anything else the network's (unreachable).
    pub fn into_fed(self) -> super::FedError {
        if self.private {
            super::FedError::Misconfigured(self.msg)
        } else {
            super::FedError::Unreachable(self.msg)
        }
    }
}

/// The [`PrivateUpstream`] refusal behind a reqwest error, if that is what it is.
fn refused_in(e: &reqwest::Error) -> Option<&PrivateUpstream> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<PrivateUpstream>() {
            return Some(p);
        }
        source = s.source();
    }
    None
}

/// One request, as the `oauth2` crate's `AsyncHttpClient` wants it.
pub async fn send(
    req: http::Request<Vec<u8>>,
    allow_private: bool,
) -> Result<http::Response<Vec<u8>>, HttpError> {
    let client = client(allow_private).map_err(HttpError::new)?;
    let (parts, body) = req.into_parts();
    guard(&parts.uri.to_string(), allow_private)?;
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| HttpError::new(e.to_string()))?;
    let mut rb = client.request(method, parts.uri.to_string()).body(body);
    for (k, v) in parts.headers.iter() {
        rb = rb.header(k.as_str(), v.as_bytes());
    }
    let resp = rb.send().await.map_err(|e| HttpError::from_reqwest(&e))?;
    let status = resp.status().as_u16();
    let mut out = http::Response::builder().status(status);
    for (k, v) in resp.headers() {
        out = out.header(k.as_str(), v.as_bytes());
    }
    let body = read_body(resp).await?;
    out.body(body).map_err(|e| HttpError::new(e.to_string()))
}

/// A response's body, at most `MAX_RESPONSE` bytes (a larger one is an error, read no
/// further).
pub async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HttpError::from_reqwest(&e))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError::new("upstream response too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error without the URL's query (which may carry a code).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!(
            "{kind}: {}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        None => kind.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_are_told_from_the_others() {
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.170",
            "198.51.100.7",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(names_private_host(&u("https://LOCALHOST./x")));
        assert!(names_private_host(&u("https://a.b.localhost")));
        assert!(!names_private_host(&u("https://login.example.com")));
        assert!(!names_private_host(&u("https://localhost.example.com")));
        assert!(guard("http://127.0.0.1:1/x", false).is_err_and(|e| e.private));
        assert!(guard("http://127.0.0.1:1/x", true).is_ok());
        assert!(guard("https://login.example.com/x", false).is_ok());
    }
}
