//! Settings: defaults, then one TOML file, then `MA_IDP_*` environment variables, then the
//! command line. Parsed with figment.
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Its `Debug` is its serialized form, which leaves out the master key, with the database
/// URL's password replaced.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// The URL users and Alexa reach ma-idp under (scheme, host, optional port and path).
    pub public_url: String,
    /// Database URL; when empty, SQLite in `data_dir/ma-idp.db`.
    pub database_url: Option<String>,
    /// Where the SQLite database and the master key file live.
    pub data_dir: PathBuf,
    /// The master key (base64 or hex, 32 bytes). When absent, `data_dir/master.key` is used
    /// (created with mode 0600 on first start).
    #[serde(skip_serializing)]
    pub master_key: Option<String>,
    /// Tenant served under `/alexa/authorize` and `/alexa/token`. When unset and exactly one
    /// tenant exists, that tenant.
    #[serde(deserialize_with = "text")]
    pub default_tenant: Option<String>,
    /// A second address that serves the admin UI (`/admin`), e.g. on the LAN or loopback.
    /// When set, the public listener answers 404 for `/admin`.
    pub admin_listen: Option<String>,
    /// The URL admins reach the admin listener under (for the setup link and cookie
    /// flags); defaults to `http://{admin_listen}`.
    pub admin_url: Option<String>,
    /// Reverse proxies (exact IP addresses) whose `X-Forwarded-For` is believed for client
    /// addresses. The scheme and host always come from `public_url`.
    pub trusted_proxies: Vec<String>,
    /// HTTP worker threads; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Database pool size (at least 1); defaults to 8 on SQLite and 16 on PostgreSQL (see
    /// `db_pool_size`).
    pub db_max_connections: Option<u32>,
    /// How long tenants, clients and server settings are cached (milliseconds; 0 = off). A
    /// change made through this instance applies at once; one made through another
    /// instance sharing the database within this time.
    pub cache_ttl_ms: u64,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// Log lines as JSON.
    pub log_json: bool,
    /// Browser session lifetime in seconds.
    pub session_ttl: i64,
    /// Whether upstream identity providers (federation) may be on loopback, private or
    /// link-local addresses (a home network's own OpenID provider). Off: ma-idp refuses to
    /// configure or call such an upstream, so that a tenant's admin cannot make it fetch from
    /// the services beside it.
    pub allow_private_upstreams: bool,
    pub argon2: Argon2Settings,
    pub limits: Limits,
}

/// Brute-force limits. Per account (in the database, shared by every instance) and per
/// client IP (in memory, per instance).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Wrong passwords in a row from one client network (an IPv4 address, an IPv6 /64)
    /// before the account locks for that network.
    pub login_max_attempts: i64,
    /// Wrong passwords in a row from all networks together before the account locks for
    /// everyone (guesses spread over many networks).
    pub login_account_max_attempts: i64,
    /// The first lockout, in seconds; each further one doubles.
    pub login_lockout_seconds: i64,
    /// The longest lockout.
    pub login_lockout_max_seconds: i64,
    /// Sign-in attempts (password or passkey) per client IP per minute; 0 turns it off.
    pub sign_ins_per_ip_per_minute: u32,
    /// Token and revocation requests per client IP per minute; 0 turns it off.
    pub token_per_ip_per_minute: u32,
    /// Introspection requests per client IP per minute; 0 turns it off.
    pub introspect_per_ip_per_minute: u32,
    /// Live browser sessions nobody signed in to, in all (each kept an hour at most): beyond,
    /// new visits are answered 503 until some expire. The per-IP limit on new visits bounds
    /// one network; this bounds many (an IPv6 /48 holds 65,536 /64s). 0 turns it off.
    pub anonymous_sessions_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_max_attempts: 5,
            login_account_max_attempts: 20,
            login_lockout_seconds: 60,
            login_lockout_max_seconds: 3600,
            sign_ins_per_ip_per_minute: 30,
            token_per_ip_per_minute: 600,
            introspect_per_ip_per_minute: 3000,
            anonymous_sessions_max: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Argon2Settings {
    /// Memory cost in KiB. OWASP lists five argon2id settings of equal strength, from
    /// m=47104 t=1 to m=7168 t=5; the default is m=7168 (7 MiB) t=5 p=1, the one that needs
    /// least memory, which keeps `concurrency × m_cost` small on a household machine (two
    /// hashes at once: 14 MiB). It is also the fastest of the five here (BENCHMARKS.md).
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Hashes running at once; defaults to the number of cores.
    pub concurrency: Option<usize>,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            m_cost: 7168,
            t_cost: 5,
            p_cost: 1,
            concurrency: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        if let Some(u) = v.get_mut("database_url")
            && let Some(text) = u.as_str()
        {
            let shown = match url::Url::parse(text) {
                Ok(mut url) if url.password().is_some() => {
                    let _ = url.set_password(Some("redacted"));
                    url.to_string()
                }
                Ok(_) => text.to_string(),
                Err(_) => "(not a URL)".to_string(),
            };
            *u = serde_json::Value::String(shown);
        }
        write!(f, "Settings {v}")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8096".into(),
            public_url: "http://localhost:8096".into(),
            database_url: None,
            data_dir: PathBuf::from("./data"),
            master_key: None,
            default_tenant: None,
            admin_listen: None,
            admin_url: None,
            trusted_proxies: Vec::new(),
            workers: None,
            db_max_connections: None,
            cache_ttl_ms: 2000,
            log: "info".into(),
            log_json: false,
            session_ttl: 24 * 3600,
            allow_private_upstreams: false,
            argon2: Argon2Settings::default(),
            limits: Limits::default(),
        }
    }
}

/// A text setting that may look like a number or a boolean: the environment provider reads
/// `MA_IDP_DEFAULT_TENANT=2024` as the number 2024, a valid slug all the same.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Signed(i64),
        Unsigned(u64),
        Bool(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|v| match v {
        Scalar::Text(s) => s,
        Scalar::Signed(n) => n.to_string(),
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }))
}

impl Settings {
    /// Defaults < config file < `MA_IDP_*` environment. `MA_IDP_ARGON2__M_COST` reaches nested
    /// keys.
    pub fn load(config_file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            if !path.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    path.display()
                ))));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("MA_IDP_").split("__").ignore(&["config"]));
        fig.extract().map_err(Box::new)
    }

    /// The public URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// Plain-http development: cookies cannot be `Secure` nor `__Host-`.
    pub fn is_https(&self) -> bool {
        // URL schemes are case-insensitive: `HTTPS://…` is https too (and keeps its cookies
        // `Secure` and `__Host-`).
        self.public_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// The admin listener's address, when the admin UI has its own.
    pub fn admin_listen(&self) -> Option<&str> {
        self.admin_listen
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The base URL of the admin UI (without `/admin`).
    pub fn admin_base_url(&self) -> String {
        match (
            self.admin_listen(),
            self.admin_url.as_deref().filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(u)) => u.trim_end_matches('/').to_string(),
            (Some(l), None) => format!("http://{l}"),
            (None, _) => self.base_url().to_string(),
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ma-idp.db").display()
            ),
        }
    }

    /// The database pool size: `db_max_connections`, at least 1; by default 8 on SQLite and
    /// 16 on PostgreSQL. (Measured on SQLite with 2 cores, where ma-idp's writers take turns
    /// in-process and each connection is a thread with its own page and statement caches: 8
    /// connections answered as fast as 16 and kept the peak RSS of a sign-in storm 4 MiB
    /// lower. PostgreSQL commits in parallel and keeps 16.)
    pub fn db_pool_size(&self) -> u32 {
        let default = if self.database_url().starts_with("sqlite:") {
            8
        } else {
            16
        };
        self.db_max_connections.unwrap_or(default).max(1)
    }

    pub fn issuer(&self, tenant_slug: &str) -> String {
        format!("{}/t/{}", self.base_url(), tenant_slug)
    }

    /// Plain http on a host other than this machine: browsers get no `Secure` cookies and
    /// refuse passkeys (WebAuthn needs https, except on localhost), and every password and
    /// code crosses the network in the clear. Allowed (a test set-up, a TLS proxy that
    /// forgot its scheme) but worth a warning at start.
    pub fn plain_http_off_loopback(&self) -> bool {
        let Ok(u) = url::Url::parse(&self.public_url) else {
            return false;
        };
        if u.scheme() != "http" {
            return false;
        }
        match u.host() {
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.');
                !(d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().ends_with(".localhost"))
            }
            Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
            None => false,
        }
    }

    /// Check what figment cannot: the public URL parses and has no query.
    pub fn validate(&self) -> Result<(), String> {
        let u = url::Url::parse(&self.public_url)
            .map_err(|e| format!("public_url {:?} is not a URL: {e}", self.public_url))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(format!(
                "public_url {:?} must be an http(s) URL",
                self.public_url
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err("public_url must not have a query or fragment".into());
        }
        if self.session_ttl < 60 {
            return Err("session_ttl must be at least 60 seconds".into());
        }
        // An entry that is no address would match nothing, silently: every client would then
        // count as the proxy in the per-IP limits, and one attacker could lock everyone out.
        if let Some(bad) = self
            .trusted_proxies
            .iter()
            .find(|p| p.parse::<std::net::IpAddr>().is_err())
        {
            return Err(format!(
                "trusted_proxies entry {bad:?} is not an IP address (exact addresses like \
                 \"127.0.0.1\" or \"::1\"; no ranges, host names or spaces)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Neither the master key nor the database password reaches a `Debug` output.
    #[test]
    fn settings_keep_their_secrets_out_of_debug() {
        let s = super::Settings {
            master_key: Some("k3y-s3cr3t".into()),
            database_url: Some("postgres://ma:pa55-s3cr3t@db.example:5432/idp".into()),
            ..Default::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("postgres://ma:redacted@db.example:5432/idp"),
            "{shown}"
        );
        assert!(shown.contains("public_url"), "{shown}");
    }

    use super::Settings;

    #[test]
    fn trusted_proxies_are_addresses() {
        let with = |p: &[&str]| Settings {
            trusted_proxies: p.iter().map(|s| s.to_string()).collect(),
            ..Settings::default()
        };
        assert!(
            with(&["127.0.0.1", "::1", "172.30.96.10"])
                .validate()
                .is_ok()
        );
        for bad in ["10.0.0.0/8", "caddy", " 10.0.0.2", ""] {
            let e = with(&["127.0.0.1", bad])
                .validate()
                .err()
                .unwrap_or_default();
            assert!(e.contains("trusted_proxies entry"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pool_size_defaults_by_database_and_is_at_least_one() {
        let sqlite = Settings::default();
        assert_eq!(sqlite.db_pool_size(), 8);
        let pg = Settings {
            database_url: Some("postgres://u@db.example/idp".into()),
            ..Settings::default()
        };
        assert_eq!(pg.db_pool_size(), 16);
        let set = Settings {
            db_max_connections: Some(3),
            ..pg.clone()
        };
        assert_eq!(set.db_pool_size(), 3);
        let zero = Settings {
            db_max_connections: Some(0),
            ..Settings::default()
        };
        assert_eq!(zero.db_pool_size(), 1);
    }

    #[test]
    fn plain_http_is_noticed_only_off_this_machine() {
        for (url, warn) in [
            ("http://localhost:8096", false),
            ("http://LOCALHOST:8096", false),
            ("http://idp.localhost", false),
            ("http://127.0.0.1:8096", false),
            ("http://[::1]:8096", false),
            ("https://idp.example.org", false),
            ("http://idp.example.org", true),
            ("http://192.168.1.20:8096", true),
            ("http://[fd00::1]/", true),
            ("http://localhost.example.org", true),
        ] {
            let s = Settings {
                public_url: url.into(),
                ..Settings::default()
            };
            assert_eq!(s.plain_http_off_loopback(), warn, "{url}");
        }
    }

    #[test]
    fn https_is_read_whatever_the_scheme_case() {
        for (url, https) in [
            ("https://idp.example.org", true),
            ("HTTPS://idp.example.org", true),
            ("Https://idp.example.org/", true),
            ("http://localhost:8096", false),
            ("HTTP://idp.example.org", false),
            ("https:", false),
        ] {
            let s = Settings {
                public_url: url.into(),
                ..Settings::default()
            };
            assert_eq!(s.is_https(), https, "{url}");
        }
    }
}
