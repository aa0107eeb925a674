//! The HTTP client the `oauth2` and `openidconnect` crates call upstreams with: our reqwest,
//! no redirects followed, short timeouts, bounded response size.
use std::sync::LazyLock;
use std::time::Duration;

/// Largest upstream response read.
const MAX_RESPONSE: usize = 256 * 1024;

static CLIENT: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("ma-idp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
});

pub fn client() -> Result<&'static reqwest::Client, String> {
    CLIENT.as_ref().map_err(Clone::clone)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// One request, as the `oauth2` crate's `AsyncHttpClient` wants it.
pub async fn send(req: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, HttpError> {
    let client = client().map_err(HttpError)?;
    let (parts, body) = req.into_parts();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| HttpError(e.to_string()))?;
    let mut rb = client.request(method, parts.uri.to_string()).body(body);
    for (k, v) in parts.headers.iter() {
        rb = rb.header(k.as_str(), v.as_bytes());
    }
    let resp = rb.send().await.map_err(|e| HttpError(describe(&e)))?;
    let status = resp.status().as_u16();
    let mut out = http::Response::builder().status(status);
    for (k, v) in resp.headers() {
        out = out.header(k.as_str(), v.as_bytes());
    }
    let body = read_body(resp).await?;
    out.body(body).map_err(|e| HttpError(e.to_string()))
}

/// A response's body, at most `MAX_RESPONSE` bytes (a larger one is an error, read no
/// further).
pub async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError(describe(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError("upstream response too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error without the URL's query (which may carry a code).
pub fn describe(e: &reqwest::Error) -> String {
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
