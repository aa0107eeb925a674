//! The services every entry point shares (HTTP handlers, the CLI, later the admin UI).
use std::sync::Arc;

use entity::{client, tenant, user};

use crate::audit::{AuditEvent, RequestInfo};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::login::passwords::PasswordHasher;
use crate::oauth::scopes::DEFAULT_CLIENT_SCOPES;
use crate::secrets::{Secret, SecretHasher, random_id, random_token};
use crate::store::{NewClient, Store, new_id_pub};
use crate::tokens::keys::{JWKS_MAX_AGE, MIN_NEXT_KEY_AGE, Rotated};
use crate::tokens::{KeyService, MasterKey};

pub struct Services {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub keys: KeyService,
    pub clock: SharedClock,
    pub secret_hasher: SecretHasher,
    pub passwords: PasswordHasher,
    pub cookie_key: Vec<u8>,
    pub webauthn: webauthn_rs::prelude::Webauthn,
    pub ip_limits: crate::login::limits::IpLimits,
    pub anonymous_sessions: Arc<crate::login::limits::AnonymousSessions>,
    /// `settings.trusted_proxies`, parsed (checked by `Settings::validate`) and in canonical
    /// form (an IPv4-mapped IPv6 address as its IPv4 one), for `http::client_ip`.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Defaults for a new tenant.
pub const DEFAULT_ACCESS_TTL: i64 = 3600;
pub const DEFAULT_REFRESH_TTL: i64 = 180 * 24 * 3600;
pub const DEFAULT_REFRESH_GRACE: i64 = 60;
pub const DEFAULT_CODE_TTL: i64 = 60;
pub const DEFAULT_AUDIENCE: &str = "music-assistant";

/// Who did something and from where, for the audit log. `"cli"` converts into one.
#[derive(Debug, Clone, Default)]
pub struct By {
    pub actor: String,
    pub req: RequestInfo,
}

impl From<&str> for By {
    fn from(actor: &str) -> Self {
        By {
            actor: actor.to_string(),
            req: RequestInfo::default(),
        }
    }
}

pub struct NewUserSpec {
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub role: String,
}

/// What a new client looks like.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub name: String,
    pub client_id: Option<String>,
    pub redirect_uris: Vec<String>,
    pub alexa_vendor_id: Option<String>,
    pub public: bool,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    /// Also allow the `client_credentials` grant (confidential clients only).
    pub client_credentials: bool,
}

pub struct CreatedClient {
    pub client: client::Model,
    pub secret: Option<Secret>,
    pub redirect_uris: Vec<String>,
}

/// The three regional redirect URIs of an Alexa skill.
pub fn alexa_redirect_uris(vendor_id: &str) -> Vec<String> {
    [
        "https://pitangui.amazon.com/api/skill/link/",
        "https://layla.amazon.com/api/skill/link/",
        "https://alexa.amazon.co.jp/api/skill/link/",
    ]
    .iter()
    .map(|p| format!("{p}{vendor_id}"))
    .collect()
}

/// A redirect URI must be absolute, without fragment, and https unless it is a loopback
/// address (native apps, development).
pub fn validate_redirect_uri(uri: &str) -> std::result::Result<(), String> {
    if uri.len() > 2000 {
        return Err("redirect URI too long".into());
    }
    let u = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URL"))?;
    if u.fragment().is_some() {
        return Err(format!("{uri:?} must not contain a fragment"));
    }
    let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{uri:?} must use https (http only for localhost)")),
    }
}

/// A new tenant with the default lifetimes (not yet stored).
pub fn new_tenant_model(slug: &str, name: &str, now: i64) -> tenant::Model {
    tenant::Model {
        id: new_id_pub(),
        slug: slug.to_string(),
        name: name.chars().take(200).collect(),
        access_token_ttl: DEFAULT_ACCESS_TTL,
        refresh_token_ttl: DEFAULT_REFRESH_TTL,
        refresh_grace: DEFAULT_REFRESH_GRACE,
        code_ttl: DEFAULT_CODE_TTL,
        passkeys_required: false,
        fed_auto_create: false,
        fed_link_by_email: false,
        created_at: now,
    }
}

pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

/// An optional text field as stored: trimmed, empty as none, at most `max` characters.
pub(crate) fn clean_field(v: &Option<String>, max: usize) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(max).collect::<String>())
}

/// A new member's row (`username` already normalized and checked; the other fields are
/// cleaned here) and the audit event of its creation: one shape for every way a member is made.
pub(crate) fn new_member(
    tenant: &tenant::Model,
    username: String,
    spec: (&Option<String>, &Option<String>, &str),
    actor: &str,
    req: &RequestInfo,
    now: i64,
) -> (user::Model, AuditEvent) {
    let (display_name, email, role) = spec;
    let u = user::Model {
        id: new_id_pub(),
        tenant_id: tenant.id.clone(),
        username,
        display_name: clean_field(display_name, 200),
        email: clean_field(email, 320),
        role: role.to_owned(),
        disabled: false,
        created_at: now,
    };
    let ev = AuditEvent::new("user_created", "ok", Some(&tenant.id), req)
        .actor(actor)
        .user(&u.id)
        .detail(serde_json::json!({"username": u.username, "role": u.role}));
    (u, ev)
}

impl Services {
    /// How a member's own removal of a passkey or linked identity is checked: never the last
    /// way to sign in (a password counts unless the tenant requires passkeys). Without one,
    /// only an admin could let them in again; with a provider that creates members, their
    /// next upstream sign-in would create a second member and strand the first one's grants.
    pub fn own_removal(tenant: &tenant::Model) -> crate::store::Removal {
        crate::store::Removal::KeepOneWayIn {
            password_counts: !tenant.passkeys_required,
        }
    }

    /// Connect to the database and load the master key. Does not migrate.
    pub async fn init(settings: Settings, clock: SharedClock) -> anyhow::Result<Arc<Self>> {
        settings.validate().map_err(|e| anyhow::anyhow!(e))?;
        if settings.database_url.as_deref().is_none_or(str::is_empty) && !settings.data_dir.exists()
        {
            std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
                anyhow::anyhow!("cannot create {}: {e}", settings.data_dir.display())
            })?;
            // The database holds sealed keys and hashes: only its owner may enter.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &settings.data_dir,
                    std::fs::Permissions::from_mode(0o700),
                );
            }
        }
        let master = MasterKey::load_or_create(settings.master_key.as_deref(), &settings.data_dir)
            .map_err(|e| anyhow::anyhow!(e))?;
        let store = Store::connect(
            &settings.database_url(),
            settings.db_pool_size(),
            std::time::Duration::from_millis(settings.cache_ttl_ms),
        )
        .await?;
        let sealer = master.key_sealer().map_err(|e| anyhow::anyhow!(e))?;
        Ok(Arc::new(Self {
            keys: KeyService::new(store.clone(), sealer, clock.clone()),
            passwords: PasswordHasher::new(&settings.argon2)?,
            secret_hasher: master.secret_hasher(),
            cookie_key: master.cookie_key(),
            webauthn: crate::passkeys::build_webauthn(&settings)?,
            ip_limits: crate::login::limits::IpLimits::new(&settings.limits),
            anonymous_sessions: Arc::new(crate::login::limits::AnonymousSessions::new(
                settings.limits.anonymous_sessions_max,
            )),
            trusted_proxies: settings
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse::<std::net::IpAddr>().ok())
                .map(|p| p.to_canonical())
                .collect(),
            settings: Arc::new(settings),
            store,
            clock,
        }))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn issuer(&self, tenant: &tenant::Model) -> String {
        self.settings.issuer(&tenant.slug)
    }

    pub async fn tenant(&self, slug: &str) -> Result<tenant::Model> {
        if !valid_slug(slug) {
            return Err(Error::not_found(format!(
                "There is no tenant {slug:?} here."
            )));
        }
        self.store
            .tenant_by_slug(slug)
            .await?
            .ok_or_else(|| Error::not_found(format!("There is no tenant {slug:?} here.")))
    }

    /// The tenant behind `/alexa/*`: the one an operator chose in the admin UI, else the
    /// configured default, else the only tenant.
    pub async fn default_tenant(&self) -> Result<tenant::Model> {
        if let Some(slug) = self.store.setting(crate::admin::DEFAULT_TENANT_KEY).await?
            && let Some(t) = self.store.tenant_by_slug(&slug).await?
        {
            return Ok(t);
        }
        if let Some(slug) = self
            .settings
            .default_tenant
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            return self.tenant(slug).await;
        }
        let all = self.store.tenants().await?;
        match <[tenant::Model; 1]>::try_from(all) {
            Ok([t]) => Ok(t),
            Err(_) => Err(Error::not_found(
                "No default tenant is configured: set default_tenant (MA_IDP_DEFAULT_TENANT) or use /t/{tenant}/ URLs.",
            )),
        }
    }

    pub async fn create_tenant(
        &self,
        slug: &str,
        name: Option<&str>,
        by: impl Into<By>,
    ) -> Result<tenant::Model> {
        let by = by.into();
        if !valid_slug(slug) {
            return Err(Error::invalid_request(
                "a tenant slug is 1-64 characters of a-z, 0-9 and '-', not starting with '-'",
            ));
        }
        // The same rule as a rename (`update_tenant`): a name the settings page would refuse
        // to save is refused here too.
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(slug);
        if name.len() > 200 {
            return Err(Error::invalid_request("a tenant name has 1-200 characters"));
        }
        if self.store.tenant_by_slug(slug).await?.is_some() {
            return Err(Error::invalid_request(format!(
                "tenant {slug:?} already exists"
            )));
        }
        let now = self.now();
        let t = new_tenant_model(slug, name, now);
        // A tenant of that slug created since the check above (two admins at once) is the
        // same answer, not a database error.
        if !self.store.insert_tenant(t.clone()).await? {
            return Err(Error::invalid_request(format!(
                "tenant {slug:?} already exists"
            )));
        }
        self.keys.ensure_tenant_keys(&t.id).await?;
        self.store
            .insert_audit(
                AuditEvent::new("tenant_created", "ok", Some(&t.id), &by.req)
                    .actor(&by.actor)
                    .detail(serde_json::json!({"slug": t.slug})),
                now,
            )
            .await?;
        Ok(t)
    }

    pub async fn update_tenant(
        &self,
        tenant: &tenant::Model,
        name: Option<&str>,
        passkeys_required: Option<bool>,
        by: impl Into<By>,
    ) -> Result<tenant::Model> {
        let by = by.into();
        let name = name.map(str::trim).unwrap_or(&tenant.name);
        if name.is_empty() || name.len() > 200 {
            return Err(Error::invalid_request("a tenant name has 1-200 characters"));
        }
        let pk = passkeys_required.unwrap_or(tenant.passkeys_required);
        self.store.update_tenant(&tenant.id, name, pk).await?;
        self.store
            .insert_audit(
                AuditEvent::new("tenant_updated", "ok", Some(&tenant.id), &by.req)
                    .actor(&by.actor)
                    .detail(serde_json::json!({"name": name, "passkeys_required": pk})),
                self.now(),
            )
            .await?;
        Ok(tenant::Model {
            name: name.to_string(),
            passkeys_required: pk,
            ..tenant.clone()
        })
    }

    pub async fn create_user(
        &self,
        tenant: &tenant::Model,
        username: &str,
        password: Option<&Secret>,
        admin: bool,
        by: impl Into<By>,
    ) -> Result<user::Model> {
        let role = if admin { "admin" } else { "member" };
        self.create_user_with(
            tenant,
            NewUserSpec {
                username: username.to_string(),
                display_name: None,
                email: None,
                role: role.to_string(),
            },
            password,
            by,
        )
        .await
    }

    /// Create a user with a role (`member`, `admin` of the tenant, or `operator`). Audited.
    pub async fn create_user_with(
        &self,
        tenant: &tenant::Model,
        spec: NewUserSpec,
        password: Option<&Secret>,
        by: impl Into<By>,
    ) -> Result<user::Model> {
        let by = by.into();
        let username = spec.username.as_str();
        if !matches!(spec.role.as_str(), "member" | "admin" | "operator") {
            return Err(Error::invalid_request(
                "a role is member, admin or operator",
            ));
        }
        let username = crate::login::normalize_username(username);
        if username.is_empty()
            || username.len() > 128
            || username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid_request(
                "a username is 1-128 characters without spaces",
            ));
        }
        if let Some(p) = password
            && (p.expose().chars().count() < 8 || p.expose().len() > 1024)
        {
            return Err(Error::invalid_request(
                "a password has 8 to 1024 characters",
            ));
        }
        if self
            .store
            .user_by_username(&tenant.id, &username)
            .await?
            .is_some()
        {
            return Err(Error::invalid_request(format!(
                "user {username:?} already exists in this tenant"
            )));
        }
        let phc = match password {
            Some(p) => Some(self.passwords.hash(p).await?),
            None => None,
        };
        let now = self.now();
        let (u, ev) = new_member(
            tenant,
            username.clone(),
            (&spec.display_name, &spec.email, &spec.role),
            &by.actor,
            &by.req,
            now,
        );
        // A member of that name created since the check above (two admins at once) is the
        // same answer, not a database error.
        if !self.store.insert_user(u.clone(), phc).await? {
            return Err(Error::invalid_request(format!(
                "user {username:?} already exists in this tenant"
            )));
        }
        self.store.insert_audit(ev, now).await?;
        Ok(u)
    }

    pub async fn create_client(
        &self,
        tenant: &tenant::Model,
        spec: ClientSpec,
        by: impl Into<By>,
    ) -> Result<CreatedClient> {
        let by = by.into();
        let name = spec.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::invalid_request(
                "a client needs a name of 1-200 characters",
            ));
        }
        let mut uris = spec.redirect_uris.clone();
        if let Some(v) = &spec.alexa_vendor_id {
            if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Error::invalid_request(
                    "an Alexa Vendor ID is letters and digits",
                ));
            }
            uris.extend(alexa_redirect_uris(v));
        }
        uris.dedup();
        for u in &uris {
            validate_redirect_uri(u).map_err(Error::invalid_request)?;
        }
        let client_id = match &spec.client_id {
            Some(c) => {
                if c.is_empty()
                    || c.len() > 128
                    || !c.chars().all(|ch| ch.is_ascii_graphic())
                    || c.contains(':')
                {
                    return Err(Error::invalid_request(
                        "a client_id is 1-128 printable characters without ':'",
                    ));
                }
                c.clone()
            }
            None => random_id(),
        };
        if self
            .store
            .client_by_client_id(&tenant.id, &client_id)
            .await?
            .is_some()
        {
            return Err(Error::invalid_request(format!(
                "client_id {client_id:?} already exists"
            )));
        }
        let scopes = match &spec.scopes {
            Some(s) if !s.is_empty() => {
                for sc in s {
                    if !crate::oauth::scopes::valid_scope_token(sc) {
                        return Err(Error::invalid_request(format!(
                            "{sc:?} is not a valid scope"
                        )));
                    }
                }
                s.join(" ")
            }
            _ => DEFAULT_CLIENT_SCOPES.to_string(),
        };
        if scopes.len() > 2000 {
            return Err(Error::invalid_request(
                "a client's scopes are at most 2000 characters in all",
            ));
        }
        if let Some(a) = &spec.audience
            && (a.is_empty() || a.len() > 200 || !a.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(Error::invalid_request(
                "the audience is 1-200 printable characters without spaces",
            ));
        }
        if spec.public && spec.client_credentials {
            return Err(Error::invalid_request(
                "a public client cannot use client_credentials",
            ));
        }
        let secret = (!spec.public).then(random_token);
        let now = self.now();
        let model = client::Model {
            id: new_id_pub(),
            tenant_id: tenant.id.clone(),
            client_id,
            name: name.to_string(),
            secret_hash: secret.as_ref().map(|s| self.secret_hasher.hash(s.expose())),
            public: spec.public,
            require_pkce: spec.public,
            scopes,
            audience: spec
                .audience
                .clone()
                .unwrap_or_else(|| DEFAULT_AUDIENCE.to_string()),
            access_token_ttl: None,
            refresh_token_ttl: None,
            access_token_alg: "ES256".into(),
            id_token_alg: "RS256".into(),
            auth_method: if spec.public {
                "none".into()
            } else {
                "any".into()
            },
            grant_types: if spec.client_credentials {
                "authorization_code refresh_token client_credentials".into()
            } else {
                "authorization_code refresh_token".into()
            },
            disabled: false,
            created_at: now,
        };
        let inserted = self
            .store
            .insert_client(NewClient {
                client: model.clone(),
                redirect_uris: uris.clone(),
            })
            .await?;
        if !inserted {
            // Created by someone else since the check above.
            return Err(Error::invalid_request(format!(
                "client_id {:?} already exists",
                model.client_id
            )));
        }
        self.store
            .insert_audit(
                AuditEvent::new("client_created", "ok", Some(&tenant.id), &by.req)
                    .actor(&by.actor)
                    .client(&model.client_id)
                    .detail(serde_json::json!({"name": model.name, "redirect_uris": uris})),
                now,
            )
            .await?;
        Ok(CreatedClient {
            client: model,
            secret,
            redirect_uris: uris,
        })
    }

    /// Every tenant, each with the signing keys it lacks made first (at start-up): a tenant
    /// left without them (a crash while they were made, just after the tenant) would answer
    /// every token request with an error.
    pub async fn tenants_with_keys(&self) -> Result<Vec<tenant::Model>> {
        let tenants = self.store.tenants().await?;
        for t in &tenants {
            self.keys.ensure_tenant_keys(&t.id).await?;
        }
        Ok(tenants)
    }

    /// The longest access-token lifetime any client of the tenant has (as tokens are issued:
    /// with Alexa's minimum applied): how long a retired key must stay published.
    pub async fn max_token_ttl(&self, tenant: &tenant::Model) -> Result<i64> {
        let clients = self.store.clients_of_tenant(&tenant.id).await?;
        let tenant_ttl = tenant
            .access_token_ttl
            .max(crate::oauth::issue::MIN_ACCESS_TTL);
        Ok(clients
            .iter()
            .map(|c| crate::oauth::issue::access_ttl(tenant, c))
            .chain([tenant_ttl])
            .max()
            .unwrap_or(tenant_ttl))
    }

    /// Rotate a tenant's signing keys (see `Keys::rotate`); `force` promotes next keys
    /// however young (a key is compromised). A refusal changes nothing and says when to
    /// come back.
    pub async fn rotate_keys(
        &self,
        tenant: &tenant::Model,
        by: impl Into<By>,
        force: bool,
    ) -> Result<Vec<String>> {
        let by = by.into();
        // Every token the retiring key signed expires within the longest lifetime issued
        // while it was active: as lifetimes may have been lowered since, the longest any
        // setting allows, or a longer one in force now. A forced rotation (the key may have
        // leaked) keeps it only for the lifetime in force now, as before.
        let in_force = self.max_token_ttl(tenant).await?;
        let keep = if force {
            in_force
        } else {
            in_force.max(crate::oauth::issue::MAX_ACCESS_TTL)
        } + 300;
        self.keys.ensure_tenant_keys(&tenant.id).await?;
        let kids = match self.keys.rotate(&tenant.id, keep, force).await? {
            Rotated::Now(kids) => kids,
            Rotated::TooSoon { next_age } => {
                let wait = MIN_NEXT_KEY_AGE - next_age;
                self.store
                    .insert_audit(
                        AuditEvent::new("keys_rotated", "refused", Some(&tenant.id), &by.req)
                            .actor(&by.actor)
                            .detail(serde_json::json!({"reason": "next keys too young", "next_key_age": next_age})),
                        self.now(),
                    )
                    .await?;
                return Err(Error::bad_page(
                    "Too soon to rotate the signing keys",
                    format!(
                        "Too soon to rotate the signing keys: the next keys, which a rotation makes the signing keys, were published {next_age} s ago, and resource servers that fetched the JWKS before then may keep it for up to {JWKS_MAX_AGE} s and would refuse the new tokens. Rotate again in {wait} s, or force the rotation now if a key is compromised."
                    ),
                ));
            }
        };
        self.store
            .insert_audit(
                AuditEvent::new("keys_rotated", "ok", Some(&tenant.id), &by.req)
                    .actor(&by.actor)
                    .detail(serde_json::json!({"active": kids, "forced": force})),
                self.now(),
            )
            .await?;
        Ok(kids)
    }
}
