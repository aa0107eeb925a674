//! HTTP load: scenarios, the workers that drive them, and the fixed-duration runner.
//!
//! Every worker is a tokio task with its own keep-alive HTTP client (its own connection), so
//! `concurrency` workers are `concurrency` independent clients. Set-up that a scenario needs
//! (signing a browser in, obtaining a refresh token) happens before the clock starts. An HTTP
//! error never stops a run: it is counted, with a sample of the answer.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::sync::Barrier;

use crate::sys;

/// What the workers share: where ma-idp is and the credentials set up for the run.
pub struct Ctx {
    pub base: String,
    pub slug: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub users: Vec<String>,
    pub password: String,
    /// A user's access token, for introspection.
    pub access_token: Mutex<String>,
    /// Codes collected by the authorize-redirect scenario for the code-exchange scenario.
    pub codes: Mutex<Vec<String>>,
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn authorize_path(&self) -> String {
        format!("/t/{}/authorize", self.slug)
    }

    fn token_url(&self) -> String {
        self.url(&format!("/t/{}/token", self.slug))
    }

    /// The authorization request an Alexa skill sends (no PKCE, a long opaque state).
    pub fn authorize_url(&self, state: &str) -> String {
        let mut u = url::Url::parse(&self.url(&self.authorize_path())).expect("base URL parses");
        u.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("state", state)
            .append_pair("scope", "music.control user:read");
        u.to_string()
    }

    fn basic(&self) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "Basic {}",
            STANDARD.encode(format!(
                "{}:{}",
                enc(&self.client_id),
                enc(&self.client_secret)
            ))
        )
    }

    fn state_for(&self, worker: usize) -> String {
        // Alexa's states run to several hundred characters.
        format!("bench-{worker}-{}", "s".repeat(200))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discovery,
    Jwks,
    ClientCredentials,
    Introspect,
    AuthorizePage,
    SignIn,
    Refresh,
    AuthorizeRedirect,
    CodeExchange,
}

impl Kind {
    /// In the order they run. The code exchange consumes the codes the authorize-redirect
    /// scenario collected, so it comes right after it.
    pub const ALL: [Kind; 9] = [
        Kind::Discovery,
        Kind::Jwks,
        Kind::ClientCredentials,
        Kind::Introspect,
        Kind::AuthorizePage,
        Kind::SignIn,
        Kind::Refresh,
        Kind::AuthorizeRedirect,
        Kind::CodeExchange,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Kind::Discovery => "discovery",
            Kind::Jwks => "jwks",
            Kind::ClientCredentials => "client-credentials",
            Kind::Introspect => "introspect",
            Kind::AuthorizePage => "authorize-page",
            Kind::SignIn => "sign-in",
            Kind::Refresh => "refresh",
            Kind::AuthorizeRedirect => "authorize-redirect",
            Kind::CodeExchange => "code-exchange",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Discovery => "discovery `GET /t/bench/.well-known/openid-configuration`",
            Kind::Jwks => "JWKS `GET /t/bench/jwks.json`",
            Kind::ClientCredentials => "`client_credentials` grant `POST /t/bench/token`",
            Kind::Introspect => "introspection of a user's access token `POST /t/bench/introspect`",
            Kind::AuthorizePage => {
                "authorize page, signed-out browser (renders sign-in) `GET /t/bench/authorize`"
            }
            Kind::SignIn => "password sign-in `POST /t/bench/authorize` action=login",
            Kind::Refresh => "`refresh_token` grant, one rotating chain per worker",
            Kind::AuthorizeRedirect => {
                "authorize, signed in + consent remembered (302 with code) `GET /t/bench/authorize`"
            }
            Kind::CodeExchange => "`authorization_code` exchange `POST /t/bench/token`",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == s)
    }

    /// Whether a request of this scenario ends in a status we expect.
    fn expected(self) -> u16 {
        match self {
            Kind::SignIn => 200,
            Kind::AuthorizeRedirect => 302,
            _ => 200,
        }
    }
}

pub fn http_client(cookies: bool) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .timeout(Duration::from_secs(30))
        .user_agent("Mozilla/5.0 (ma-idp-bench)")
        .build()?)
}

pub struct Resp {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// Send and read the whole answer; an I/O failure is returned as text.
pub async fn send(rb: reqwest::RequestBuilder) -> std::result::Result<Resp, String> {
    let r = rb.send().await.map_err(describe_reqwest)?;
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.text().await.map_err(describe_reqwest)?;
    Ok(Resp {
        status,
        location,
        body,
    })
}

fn describe_reqwest(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut msg = format!("{kind}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// The value of a hidden form field in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let needle = format!(r#"name="{name}" value=""#);
    let start = html.find(&needle)? + needle.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&#x2F;", "/")
            .replace("&#x3D;", "=")
            .replace("&#x2B;", "+")
            .replace("&amp;", "&"),
    )
}

/// A short, one-line version of an answer for the report: for an HTML page, its title and
/// text without tags.
fn short(s: &str) -> String {
    let text;
    let mut s = s.trim();
    let lower = s.get(..15).unwrap_or(s).to_ascii_lowercase();
    if lower.starts_with("<!doctype") || lower.starts_with("<html") {
        let body = s.find("<body").map(|i| &s[i..]).unwrap_or(s);
        let mut out = String::new();
        let mut in_tag = false;
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' => {
                    in_tag = false;
                    out.push(' ');
                }
                _ if !in_tag => out.push(c),
                _ => {}
            }
        }
        text = format!(
            "[HTML] {}",
            out.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        s = &text;
    }
    let mut out: String = s.chars().take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out.replace('\n', " ")
}

/// Authorize → sign in → consent (if asked) with a cookie-keeping browser; returns the
/// redirect back to the client.
pub async fn sign_in_and_consent(
    ctx: &Ctx,
    http: &reqwest::Client,
    user: &str,
    state: &str,
) -> Result<String> {
    let r = send(http.get(ctx.authorize_url(state)))
        .await
        .map_err(|e| anyhow!(e))?;
    if r.status == 302 {
        return r.location.context("302 without Location");
    }
    if r.status != 200 {
        bail!("authorize answered {}: {}", r.status, short(&r.body));
    }
    let csrf = hidden(&r.body, "csrf").context("no csrf field on the sign-in page")?;
    let rid = hidden(&r.body, "rid").context("no rid field on the sign-in page")?;
    let r = send(http.post(ctx.url(&ctx.authorize_path())).form(&[
        ("csrf", csrf.as_str()),
        ("rid", rid.as_str()),
        ("action", "login"),
        ("username", user),
        ("password", ctx.password.as_str()),
    ]))
    .await
    .map_err(|e| anyhow!(e))?;
    // The consent page, or (consent remembered) the redirect back to the client.
    if r.status == 303 {
        return r.location.context("303 without Location");
    }
    if r.status != 200 {
        bail!("sign-in answered {}: {}", r.status, short(&r.body));
    }
    let csrf = hidden(&r.body, "csrf").context("no csrf field on the consent page")?;
    let rid = hidden(&r.body, "rid").context("no rid field on the consent page")?;
    let r = send(http.post(ctx.url(&ctx.authorize_path())).form(&[
        ("csrf", csrf.as_str()),
        ("rid", rid.as_str()),
        ("action", "approve"),
    ]))
    .await
    .map_err(|e| anyhow!(e))?;
    if r.status != 303 {
        bail!("consent answered {}: {}", r.status, short(&r.body));
    }
    r.location.context("303 without Location")
}

/// The code in a redirect back to the client.
pub fn code_from(ctx: &Ctx, location: &str) -> Result<String> {
    if !location.starts_with(&ctx.redirect_uri) {
        bail!("redirected to {location}, not to the client");
    }
    let u = url::Url::parse(location)?;
    u.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no code in {location}"))
}

fn exchange_request(ctx: &Ctx, http: &reqwest::Client, code: &str) -> reqwest::RequestBuilder {
    http.post(ctx.token_url())
        .header("authorization", ctx.basic())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", ctx.redirect_uri.as_str()),
        ])
}

/// A user's tokens through the real flow: (access token, refresh token).
pub async fn user_tokens(ctx: &Ctx, user: &str, state: &str) -> Result<(String, String)> {
    let browser = http_client(true)?;
    let loc = sign_in_and_consent(ctx, &browser, user, state).await?;
    let code = code_from(ctx, &loc)?;
    let r = send(exchange_request(ctx, &http_client(false)?, &code))
        .await
        .map_err(|e| anyhow!(e))?;
    if r.status != 200 {
        bail!("code exchange answered {}: {}", r.status, short(&r.body));
    }
    let v: Value = serde_json::from_str(&r.body)?;
    let at = v["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string();
    let rt = v["refresh_token"]
        .as_str()
        .context("no refresh_token in the code exchange answer")?
        .to_string();
    Ok((at, rt))
}

enum Outcome {
    Ok,
    Err {
        kind: String,
        detail: String,
    },
    /// No more work (the code queue is empty).
    Done,
}

fn http_err(r: &Resp) -> Outcome {
    Outcome::Err {
        kind: format!("HTTP {}", r.status),
        detail: short(&r.body),
    }
}

fn io_err(e: String) -> Outcome {
    let kind = e.split(':').next().unwrap_or("io").to_string();
    Outcome::Err {
        kind: format!("I/O {kind}"),
        detail: short(&e),
    }
}

struct Worker {
    kind: Kind,
    i: usize,
    http: reqwest::Client,
    state: String,
    user: String,
    refresh: String,
    /// The refresh chain is dead and must be re-established (untimed).
    broken: bool,
    /// The lean client of the high-rate scenarios (see `raw`).
    raw: Option<crate::raw::RawClient>,
    /// Password sign-in: the pending request the worker signs in to, again and again.
    rid: String,
}

impl Worker {
    async fn setup(kind: Kind, ctx: &Ctx, i: usize) -> Result<Worker> {
        let user = ctx.users[i % ctx.users.len()].clone();
        let state = ctx.state_for(i);
        let cookies = kind == Kind::AuthorizeRedirect;
        let mut w = Worker {
            kind,
            i,
            http: http_client(cookies)?,
            state,
            user,
            refresh: String::new(),
            rid: String::new(),
            broken: false,
            raw: None,
        };
        let raw = match kind {
            Kind::Discovery => Some(crate::raw::RawClient::get(
                &ctx.base,
                &format!("/t/{}/.well-known/openid-configuration", ctx.slug),
            )),
            Kind::Jwks => Some(crate::raw::RawClient::get(
                &ctx.base,
                &format!("/t/{}/jwks.json", ctx.slug),
            )),
            Kind::ClientCredentials => Some(crate::raw::RawClient::post_form(
                &ctx.base,
                &format!("/t/{}/token", ctx.slug),
                &ctx.basic(),
                &[("grant_type", "client_credentials")],
            )),
            Kind::Introspect => {
                let at = ctx
                    .access_token
                    .lock()
                    .map(|t| t.clone())
                    .unwrap_or_default();
                Some(crate::raw::RawClient::post_form(
                    &ctx.base,
                    &format!("/t/{}/introspect", ctx.slug),
                    &ctx.basic(),
                    &[("token", at.as_str())],
                ))
            }
            _ => None,
        };
        w.raw = raw.transpose().map_err(|e| anyhow!(e))?;
        match kind {
            Kind::SignIn => w.open_sign_in(ctx).await?,
            Kind::Refresh => {
                let (_, rt) = user_tokens(ctx, &w.user, &w.state).await?;
                w.refresh = rt;
            }
            Kind::AuthorizeRedirect => {
                let loc = sign_in_and_consent(ctx, &w.http, &w.user, &w.state).await?;
                code_from(ctx, &loc)?;
            }
            _ => {}
        }
        Ok(w)
    }

    /// Password sign-in: post the password form of the worker's pending request with this
    /// CSRF token.
    fn set_sign_in_form(&mut self, ctx: &Ctx, csrf: &str) {
        if let Some(raw) = self.raw.as_mut() {
            raw.set_post_form(
                &ctx.authorize_path(),
                None,
                &[
                    ("csrf", csrf),
                    ("rid", self.rid.as_str()),
                    ("action", "login"),
                    ("username", self.user.as_str()),
                    ("password", ctx.password.as_str()),
                ],
            );
        }
    }

    async fn recover(&mut self, ctx: &Ctx) -> Result<()> {
        match self.kind {
            Kind::Refresh => {
                let (_, rt) = user_tokens(ctx, &self.user, &self.state).await?;
                self.refresh = rt;
            }
            Kind::SignIn => self.open_sign_in(ctx).await?,
            _ => {}
        }
        self.broken = false;
        Ok(())
    }

    /// Password sign-in: a browser opens the sign-in page of a new authorization request; it
    /// then posts the password form again and again, taking the session cookie each sign-in
    /// renews. Also after a failed sign-in (untimed), whose CSRF token may be stale.
    async fn open_sign_in(&mut self, ctx: &Ctx) -> Result<()> {
        let mut raw = crate::raw::RawClient::browser(&ctx.base).map_err(|e| anyhow!(e))?;
        // `prompt=consent`: after each sign-in the consent page is shown (as at a first
        // linking) even though earlier scenarios' flows granted this client.
        let url = url::Url::parse(&format!(
            "{}&prompt=consent",
            ctx.authorize_url(&self.state)
        ))?;
        raw.set_get(&format!("{}?{}", url.path(), url.query().unwrap_or("")));
        let r = raw.send().await.map_err(|e| anyhow!(e))?;
        if r.status != 200 {
            bail!("authorize answered {}: {}", r.status, short(&r.body));
        }
        let csrf = hidden(&r.body, "csrf").context("no csrf")?;
        self.rid = hidden(&r.body, "rid").context("no rid")?;
        self.raw = Some(raw);
        self.set_sign_in_form(ctx, &csrf);
        Ok(())
    }

    async fn step(&mut self, ctx: &Ctx) -> Outcome {
        let expected = self.kind.expected();
        let sent = match self.raw.as_mut() {
            Some(raw) => raw.send().await,
            None => match self.request(ctx) {
                Some(rb) => send(rb).await,
                None => return Outcome::Done,
            },
        };
        let r = match sent {
            Ok(r) => r,
            // A lost answer to a refresh: retry the same token (the grace window covers it). A
            // lost answer to a sign-in may have renewed the CSRF token: start over.
            Err(e) => {
                if self.kind == Kind::SignIn {
                    self.broken = true;
                }
                return io_err(e);
            }
        };
        self.check(ctx, expected, r)
    }

    /// The next request of a scenario driven through reqwest; `None` when there is no more
    /// work (the code exchange ran out of codes) or the scenario has no reqwest request.
    fn request(&mut self, ctx: &Ctx) -> Option<reqwest::RequestBuilder> {
        Some(match self.kind {
            // Driven by the raw client, which `setup` gives every worker of these scenarios.
            Kind::Discovery
            | Kind::Jwks
            | Kind::ClientCredentials
            | Kind::Introspect
            | Kind::SignIn => {
                return None;
            }
            Kind::AuthorizePage | Kind::AuthorizeRedirect => {
                self.http.get(ctx.authorize_url(&self.state))
            }
            Kind::Refresh => self
                .http
                .post(ctx.token_url())
                .header("authorization", ctx.basic())
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", self.refresh.as_str()),
                ]),
            Kind::CodeExchange => {
                let code = ctx.codes.lock().ok().and_then(|mut q| q.pop())?;
                exchange_request(ctx, &self.http, &code)
            }
        })
    }

    /// Whether an answer is what the scenario expects; a refresh takes its next token.
    fn check(&mut self, ctx: &Ctx, expected: u16, r: Resp) -> Outcome {
        if r.status != expected {
            if (self.kind == Kind::Refresh && r.status == 400) || self.kind == Kind::SignIn {
                self.broken = true;
            }
            return http_err(&r);
        }
        match self.kind {
            Kind::ClientCredentials | Kind::CodeExchange if !r.body.contains("access_token") => {
                Outcome::Err {
                    kind: "no access_token".into(),
                    detail: short(&r.body),
                }
            }
            Kind::Introspect if !r.body.contains(r#""active":true"#) => Outcome::Err {
                kind: "token not active".into(),
                detail: short(&r.body),
            },
            // Signed in: answered with the consent page of the same request, whose CSRF token
            // (a sign-in renews it) the next sign-in needs.
            Kind::SignIn => match hidden(&r.body, "csrf") {
                Some(csrf) if r.body.contains("value=\"approve\"") => {
                    self.set_sign_in_form(ctx, &csrf);
                    Outcome::Ok
                }
                _ => {
                    self.broken = true;
                    Outcome::Err {
                        kind: "not the consent page".into(),
                        detail: short(&r.body),
                    }
                }
            },
            Kind::AuthorizePage if !r.body.contains("name=\"rid\"") => Outcome::Err {
                kind: "not the sign-in page".into(),
                detail: short(&r.body),
            },
            Kind::Refresh => {
                let next = serde_json::from_str::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v["refresh_token"].as_str().map(str::to_string));
                match next {
                    Some(t) => {
                        self.refresh = t;
                        Outcome::Ok
                    }
                    None => {
                        self.broken = true;
                        Outcome::Err {
                            kind: "no refresh_token".into(),
                            detail: short(&r.body),
                        }
                    }
                }
            }
            Kind::AuthorizeRedirect => match r.location.as_deref().map(|l| code_from(ctx, l)) {
                Some(Ok(code)) => {
                    if let Ok(mut q) = ctx.codes.lock() {
                        q.push(code);
                    }
                    Outcome::Ok
                }
                _ => Outcome::Err {
                    kind: "302 without a code".into(),
                    detail: format!("Location: {:?}", r.location),
                },
            },
            _ => Outcome::Ok,
        }
    }
}

const SETUP_ATTEMPTS: usize = 5;

/// The latencies one JWKS consumer sees: a single keep-alive connection fetching the JWKS
/// every `interval` (paced, so the probe itself adds almost no load).
#[derive(Clone)]
pub struct Probe {
    pub hist: Histogram<u64>,
    pub errors: u64,
}

impl Probe {
    /// A probe that could not run: no samples, one error.
    fn failed() -> Probe {
        Probe {
            hist: new_hist(),
            errors: 1,
        }
    }

    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// How the probe's own thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePriority {
    /// Like every other thread of the load generator.
    Normal,
    /// `SCHED_FIFO` (needs root or `RLIMIT_RTPRIO`): the probe's own wake-ups never wait
    /// for a CPU behind the load generator, ma-idp or the database, as a resource server on
    /// another machine would not, so its latency leaves out its own scheduling.
    Realtime,
}

/// Give the calling thread `SCHED_FIFO` priority 10. False where that is refused.
fn make_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sets the calling thread's (pid 0) policy; `param` outlives the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// The JWKS probe on a thread of its own with its own single-threaded runtime, so that the
/// time it measures is ma-idp's answer and not how long the load generator's busy runtime
/// (32 workers) took to poll the probe again. `None` when `Realtime` was asked for and
/// refused.
pub async fn jwks_probe_alone(
    ctx: Arc<Ctx>,
    duration: Duration,
    interval: Duration,
    priority: ProbePriority,
) -> Option<Probe> {
    let thread = std::thread::Builder::new()
        .name("jwks-probe".into())
        .spawn(move || {
            if priority == ProbePriority::Realtime && !make_realtime() {
                return None;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            Some(match rt {
                Ok(rt) => rt.block_on(jwks_probe(ctx, duration, interval)),
                Err(_) => Probe::failed(),
            })
        });
    match thread {
        Ok(t) => tokio::task::spawn_blocking(move || t.join().unwrap_or(Some(Probe::failed())))
            .await
            .unwrap_or(Some(Probe::failed())),
        Err(_) => Some(Probe::failed()),
    }
}

/// The normal and the real-time probe side by side (two clients, each one request every
/// `interval`).
pub async fn jwks_probes(
    ctx: Arc<Ctx>,
    duration: Duration,
    interval: Duration,
) -> (Probe, Option<Probe>) {
    let rt = tokio::spawn(jwks_probe_alone(
        ctx.clone(),
        duration,
        interval,
        ProbePriority::Realtime,
    ));
    let normal = jwks_probe_alone(ctx, duration, interval, ProbePriority::Normal)
        .await
        .unwrap_or_else(Probe::failed);
    (normal, rt.await.ok().flatten())
}

pub async fn jwks_probe(ctx: Arc<Ctx>, duration: Duration, interval: Duration) -> Probe {
    let mut probe = Probe {
        hist: new_hist(),
        errors: 0,
    };
    let Ok(http) = http_client(false) else {
        probe.errors += 1;
        return probe;
    };
    let url = ctx.url(&format!("/t/{}/jwks.json", ctx.slug));
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        match send(http.get(&url)).await {
            Ok(r) if r.status == 200 => {
                let us = t.elapsed().as_micros().max(1) as u64;
                let _ = probe.hist.record(us.min(120_000_000));
            }
            _ => probe.errors += 1,
        }
    }
    probe
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

struct WorkerOut {
    ok: u64,
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
    /// When this worker stopped: the deadline, or when it ran out of work.
    finished: Instant,
    ran_out: bool,
    setup_failures: Vec<String>,
    /// Set-up failed every time: this worker did not take part.
    gave_up: bool,
}

impl WorkerOut {
    fn new(now: Instant) -> WorkerOut {
        WorkerOut {
            ok: 0,
            hist: new_hist(),
            errors: BTreeMap::new(),
            samples: Vec::new(),
            finished: now,
            ran_out: false,
            setup_failures: Vec::new(),
            gave_up: false,
        }
    }

    fn error(&mut self, kind: String, detail: String) {
        if self.samples.len() < 3 {
            self.samples.push(format!("{kind}: {detail}"));
        }
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// The outcome of one scenario.
#[derive(Clone)]
pub struct PhaseResult {
    pub kind: Kind,
    pub ok: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub samples: Vec<String>,
    /// ma-idp's CPU time during the scenario.
    pub server_cpu: Duration,
    /// This load generator's CPU time during the scenario.
    pub client_cpu: Duration,
    /// Share of the machine's CPU that was busy (everything: ma-idp, the load generator,
    /// the database, other users).
    pub host_busy: f64,
    /// Failed set-up attempts (untimed), with a sample of each kind.
    pub setup_failures: BTreeMap<String, u64>,
    /// Workers whose set-up never succeeded.
    pub workers_missing: usize,
    /// ma-idp's VmRSS right after the scenario, KiB.
    pub rss_after_kib: Option<u64>,
    /// ma-idp's thread count right after the scenario.
    pub threads_after: Option<u64>,
    /// ma-idp's peak RSS (VmHWM) during the scenario, KiB.
    pub peak_kib: Option<u64>,
    /// ma-idp's CPU time during the scenario by thread name (`argon2`, `actix-rt|system`,
    /// `sqlx-sqlite-worker`, ...), largest first.
    pub thread_cpu: Vec<(String, Duration)>,
    /// ma-idp's context switches during the scenario by thread name: (name, voluntary,
    /// involuntary), in the order of `thread_cpu`.
    pub thread_switches: Vec<(String, u64, u64)>,
    /// Password sign-in: one argon2id hash's time measured just before this round (the
    /// machine's speed drifts during a run; the round is judged against its own ceiling).
    pub hash_floor_secs: Option<f64>,
}

impl PhaseResult {
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A latency quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    /// ma-idp CPU per completed request, in milliseconds.
    pub fn cpu_ms_per_request(&self) -> Option<f64> {
        let n = self.ok + self.error_count();
        (n > 0).then(|| self.server_cpu.as_secs_f64() * 1000.0 / n as f64)
    }

    /// Load-generator CPU per completed request, in milliseconds.
    pub fn client_cpu_ms_per_request(&self) -> Option<f64> {
        let n = self.ok + self.error_count();
        (n > 0).then(|| self.client_cpu.as_secs_f64() * 1000.0 / n as f64)
    }
}

/// Run one scenario for `duration` with `concurrency` workers against the server `pid`.
pub async fn run_phase(
    kind: Kind,
    ctx: Arc<Ctx>,
    concurrency: usize,
    duration: Duration,
    pid: u32,
    perf: Option<PathBuf>,
) -> PhaseResult {
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut handles = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let ctx = ctx.clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            // Set-up (untimed) is retried: a failure here is a finding, reported apart from
            // the timed requests, but should not leave the scenario short of workers.
            let mut setup_failures = Vec::new();
            let mut setup = Worker::setup(kind, &ctx, i).await;
            for attempt in 1..SETUP_ATTEMPTS {
                match &setup {
                    Ok(_) => break,
                    Err(e) => setup_failures.push(short(&format!("{e:#}"))),
                }
                tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                setup = Worker::setup(kind, &ctx, i).await;
            }
            barrier.wait().await;
            let start = Instant::now();
            let deadline = start + duration;
            let mut out = WorkerOut::new(start);
            out.setup_failures = setup_failures;
            let mut w = match setup {
                Ok(w) => w,
                Err(e) => {
                    out.setup_failures.push(short(&format!("{e:#}")));
                    out.gave_up = true;
                    return out;
                }
            };
            debug_assert_eq!(w.i, i);
            loop {
                let t = Instant::now();
                if t >= deadline {
                    out.finished = deadline;
                    break;
                }
                let o = w.step(&ctx).await;
                let done = Instant::now();
                if done > deadline {
                    // Finished after the clock stopped: not counted.
                    out.finished = deadline;
                    break;
                }
                match o {
                    Outcome::Ok => {
                        out.ok += 1;
                        let us = done.duration_since(t).as_micros().max(1) as u64;
                        let _ = out.hist.record(us.min(120_000_000));
                    }
                    Outcome::Err { kind, detail } => {
                        out.error(kind, detail);
                        if w.broken
                            && let Err(e) = w.recover(&ctx).await
                        {
                            out.error("re-establishing failed".into(), short(&format!("{e:#}")));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Outcome::Done => {
                        out.finished = done;
                        out.ran_out = true;
                        break;
                    }
                }
            }
            out
        }));
    }
    barrier.wait().await;
    let hwm_reset = sys::reset_hwm(pid);
    let profiler = perf.as_deref().and_then(|p| start_perf(pid, p));
    let t0 = Instant::now();
    let threads0 = sys::thread_use(pid);
    let cpu0 = sys::proc_cpu_ticks(pid);
    let me = std::process::id();
    let own0 = sys::proc_cpu_ticks(me);
    let host0 = sys::HostCpu::now();
    let mut result = PhaseResult {
        kind,
        ok: 0,
        elapsed: duration,
        hist: new_hist(),
        errors: BTreeMap::new(),
        samples: Vec::new(),
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
        host_busy: 0.0,
        setup_failures: BTreeMap::new(),
        workers_missing: 0,
        rss_after_kib: None,
        threads_after: None,
        peak_kib: None,
        thread_cpu: Vec::new(),
        thread_switches: Vec::new(),
        hash_floor_secs: None,
    };
    // Sample CPU at the deadline (or when every worker ran out of work), not after the
    // requests still in flight at the deadline have finished.
    let deadline = t0 + duration;
    while Instant::now() < deadline && !handles.iter().all(|h| h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu1 = sys::proc_cpu_ticks(pid);
    let threads1 = sys::thread_use(pid);
    let own1 = sys::proc_cpu_ticks(me);
    if let (Some(child), Some(p)) = (profiler, perf.as_deref()) {
        stop_perf(child, p);
    }
    result.host_busy = sys::HostCpu::now().busy_since(&host0);
    let tck = sys::clk_tck() as f64;
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        result.server_cpu = Duration::from_secs_f64(b.saturating_sub(a) as f64 / tck);
    }
    if let (Some(a), Some(b)) = (own0, own1) {
        result.client_cpu = Duration::from_secs_f64(b.saturating_sub(a) as f64 / tck);
    }
    result.thread_cpu = threads1
        .iter()
        .map(|(name, b)| {
            let a = threads0.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                Duration::from_secs_f64(b.ticks.saturating_sub(a.ticks) as f64 / tck),
            )
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    result
        .thread_cpu
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    result.thread_switches = result
        .thread_cpu
        .iter()
        .filter_map(|(name, _)| {
            let (a, b) = (
                threads0.get(name).copied().unwrap_or_default(),
                threads1.get(name)?,
            );
            Some((
                name.clone(),
                b.voluntary.saturating_sub(a.voluntary),
                b.involuntary.saturating_sub(a.involuntary),
            ))
        })
        .collect();
    let mut any_ran_out = false;
    let mut last_finish = t0;
    for h in handles {
        match h.await {
            Ok(out) => {
                result.ok += out.ok;
                let _ = result.hist.add(&out.hist);
                for (k, v) in out.errors {
                    *result.errors.entry(k).or_default() += v;
                }
                for s in out.samples {
                    if result.samples.len() < 5 && !result.samples.contains(&s) {
                        result.samples.push(s);
                    }
                }
                for f in out.setup_failures {
                    *result.setup_failures.entry(f).or_default() += 1;
                }
                result.workers_missing += usize::from(out.gave_up);
                any_ran_out |= out.ran_out;
                last_finish = last_finish.max(out.finished);
            }
            Err(e) => {
                *result.errors.entry("worker panicked".into()).or_default() += 1;
                result.samples.push(format!("worker: {e}"));
            }
        }
    }
    result.rss_after_kib = sys::proc_status_kib(pid, "VmRSS");
    result.threads_after = sys::proc_status_kib(pid, "Threads");
    if hwm_reset {
        result.peak_kib = sys::proc_status_kib(pid, "VmHWM");
    }
    if any_ran_out {
        result.elapsed = last_finish.duration_since(t0).min(duration);
    }
    result
}

/// `perf record` on the server process (software clock: works in VMs without PMU access).
fn start_perf(pid: u32, out: &Path) -> Option<Child> {
    match Command::new("perf")
        .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("perf record could not start: {e}");
            None
        }
    }
}

/// Stop `perf record` (SIGINT writes the file) and write a flat text profile beside it.
fn stop_perf(mut child: Child, out: &Path) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let txt = out.with_extension("txt");
    let report = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none"])
        .args(["--percent-limit", "0.7", "--sort", "dso,sym", "-i"])
        .arg(out)
        .stderr(Stdio::null())
        .output();
    match report {
        Ok(o) => {
            let _ = std::fs::write(&txt, &o.stdout);
            eprintln!(
                "perf profile: {} (summary {})",
                out.display(),
                txt.display()
            );
        }
        Err(e) => eprintln!("perf report failed: {e}"),
    }
}
