//! Federation: sign in with Login with Amazon or any OpenID Connect provider, and the
//! explicit links between upstream identities and members.
//!
//! Design note. An upstream identity signs a member in only through a link that the member
//! or an admin made on purpose (or, when a provider allows it, a member created on the first
//! sign-in, or a link by an e-mail the upstream says is verified). The browser carries a
//! random `state`; the PKCE verifier, the nonce and where to go back to stay in the
//! server-side session under that state, so nothing the upstream or the browser sends back
//! can choose them. Upstream tokens are used once (to read the profile or the ID token) and
//! never stored.
pub mod amazon;
pub mod http_client;
pub mod oidc;

use entity::{tenant, upstream_identity, upstream_provider, user};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::{Error, Result};
use crate::secrets::Secret;
use crate::services::{By, Services};
use crate::store::{NewMember, Removal, Removed, new_id_pub};

/// What an upstream says about who signed in.
#[derive(Debug, Clone)]
pub struct UpstreamUser {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// The upstream's own `amr`, where known.
    pub amr: Vec<String>,
    /// When the person last authenticated at the upstream (its ID token's `auth_time`,
    /// seconds), where known.
    pub auth_time: Option<i64>,
}

/// `amr` values kept from an upstream, and the longest kept: short method names (RFC 8176's
/// are 2–5 letters), so that a code's `amr` column (200 characters) and the ID token stay
/// small whatever an upstream sends.
const UPSTREAM_AMR_MAX: usize = 4;
const UPSTREAM_AMR_LEN: usize = 32;

impl UpstreamUser {
    /// What ma-idp keeps of what an upstream said: e-mail and name without control characters
    /// (PostgreSQL refuses a NUL in text), `amr` as at most four short plain names.
    pub fn sanitized(&self) -> Self {
        let clean = |v: &Option<String>| -> Option<String> {
            v.as_ref()
                .map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>())
                .filter(|s| !s.is_empty())
        };
        Self {
            subject: self.subject.clone(),
            email: clean(&self.email),
            email_verified: self.email_verified,
            name: clean(&self.name),
            amr: self
                .amr
                .iter()
                .filter(|a| {
                    (1..=UPSTREAM_AMR_LEN).contains(&a.len())
                        && a.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                })
                .take(UPSTREAM_AMR_MAX)
                .cloned()
                .collect(),
            auth_time: self.auth_time,
        }
    }
}

/// A federation sign-in in progress, kept in the session under its `state`. Its `Debug` leaves
/// out the PKCE verifier and the nonce.
#[derive(Clone, Serialize, Deserialize)]
pub struct FedPending {
    pub provider_id: String,
    pub pkce_verifier: String,
    pub nonce: Option<String>,
    /// `sign_in` or `link`.
    pub purpose: String,
    /// For `link`: the member who started it. Kept here, not read from the session at the
    /// callback, because signing in at an upstream on the same site may replace the session's
    /// sign-in meanwhile.
    #[serde(default)]
    pub link_user_id: Option<String>,
    /// The pending authorization request to continue, and its base path.
    pub rid: Option<String>,
    pub back: String,
    pub created_at: i64,
    /// For `sign_in` for a pending request that needs an authentication at or after this
    /// time (its `auth_after`: `prompt=login`, `max_age`): the upstream was asked for a fresh
    /// one, and its ID token's `auth_time` must be this late.
    #[serde(default)]
    pub auth_after: Option<i64>,
}

impl std::fmt::Debug for FedPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedPending")
            .field("provider_id", &self.provider_id)
            .field("pkce_verifier", &"[redacted]")
            .field("nonce", &self.nonce.as_ref().map(|_| "[redacted]"))
            .field("purpose", &self.purpose)
            .field("link_user_id", &self.link_user_id)
            .field("rid", &self.rid)
            .field("back", &self.back)
            .field("created_at", &self.created_at)
            .field("auth_after", &self.auth_after)
            .finish()
    }
}

/// Why a federation sign-in failed: each has a clear page.
#[derive(Debug)]
pub enum FedError {
    Cancelled,
    StateMismatch,
    NonceMismatch,
    UpstreamError(String),
    BadIdToken(String),
    Unreachable(String),
    Misconfigured(String),
    /// The request needs a fresh authentication, and the upstream's ID token says of none
    /// (no `auth_time`) or of an older one.
    StaleAuthentication(String),
    /// The request needs a fresh authentication, and the provider has no way to ask for one
    /// (Login with Amazon).
    NoReauthentication,
}

impl FedError {
    pub fn reason(&self) -> &'static str {
        match self {
            FedError::Cancelled => "cancelled",
            FedError::StateMismatch => "state_mismatch",
            FedError::NonceMismatch => "nonce_mismatch",
            FedError::UpstreamError(_) => "upstream_error",
            FedError::BadIdToken(_) => "bad_id_token",
            FedError::Unreachable(_) => "upstream_unreachable",
            FedError::Misconfigured(_) => "misconfigured",
            FedError::StaleAuthentication(_) => "stale_authentication",
            FedError::NoReauthentication => "reauthentication_unsupported",
        }
    }

    pub fn page(&self, provider: &str) -> (String, String) {
        match self {
            FedError::Cancelled => (
                "Sign-in cancelled".into(),
                format!(
                    "You did not finish signing in with {provider}. You can try again or sign in another way."
                ),
            ),
            FedError::StateMismatch => (
                "This sign-in could not be verified".into(),
                format!(
                    "The answer from {provider} does not belong to a sign-in started in this browser (it may have expired, or the page was opened twice). Start again."
                ),
            ),
            FedError::NonceMismatch => (
                "This sign-in could not be verified".into(),
                format!(
                    "The identity token from {provider} was not issued for this sign-in. Start again."
                ),
            ),
            FedError::UpstreamError(_) => (
                format!("{provider} refused the sign-in"),
                format!("{provider} answered with an error. Try again, or sign in another way."),
            ),
            FedError::BadIdToken(_) => (
                "This sign-in could not be verified".into(),
                format!(
                    "The identity token from {provider} did not pass verification (signature or claims). Sign in another way, and tell your admin."
                ),
            ),
            FedError::Unreachable(_) => (
                format!("{provider} cannot be reached"),
                format!(
                    "ma-idp could not reach {provider} just now. Try again in a minute, or sign in another way."
                ),
            ),
            FedError::Misconfigured(_) => (
                "Sign-in provider not set up correctly".into(),
                format!(
                    "{provider} is not configured correctly here. Sign in another way, and tell your admin."
                ),
            ),
            FedError::StaleAuthentication(_) => (
                "Sign in again".into(),
                format!(
                    "The app asks you to sign in again, and {provider} did not confirm a fresh sign-in. Try again and enter your {provider} credentials, or sign in with your password or passkey."
                ),
            ),
            FedError::NoReauthentication => (
                "Sign in again".into(),
                format!(
                    "The app asks you to sign in again, which {provider} cannot be asked to do. Sign in with your password or passkey."
                ),
            ),
        }
    }

    /// Detail for the audit log (never a secret: upstream error codes and descriptions).
    pub fn detail(&self) -> String {
        match self {
            FedError::UpstreamError(d)
            | FedError::BadIdToken(d)
            | FedError::Unreachable(d)
            | FedError::Misconfigured(d)
            | FedError::StaleAuthentication(d) => d.chars().take(300).collect(),
            _ => String::new(),
        }
    }
}

/// A provider with its secret opened and its endpoints resolved.
pub struct ProviderConfig {
    pub model: upstream_provider::Model,
    pub client_secret: Option<Secret>,
    pub redirect_uri: String,
    /// The server's `allow_private_upstreams`: whether requests may go to non-public
    /// addresses (`http_client::client`).
    pub allow_private: bool,
}

/// How a callback ended for the member.
pub enum FedOutcome {
    /// Signed in as this member (an existing link, a new member, or an e-mail link).
    SignedIn(user::Model, Vec<String>),
    /// The identity is now linked to the signed-in member.
    Linked,
    /// Not linked to anyone, and nothing allows linking it now.
    NotLinked,
    /// Already linked to another member.
    LinkedElsewhere,
}

pub struct NewProvider {
    pub slug: String,
    pub kind: String,
    pub display_name: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub scopes: Option<String>,
    pub region: Option<String>,
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub auto_create: bool,
    pub link_by_email: bool,
}

/// A new link of an upstream identity to a member.
fn identity_row(
    tenant: &tenant::Model,
    p: &upstream_provider::Model,
    up: &UpstreamUser,
    user_id: &str,
    now: i64,
) -> upstream_identity::Model {
    upstream_identity::Model {
        id: new_id_pub(),
        tenant_id: tenant.id.clone(),
        provider_id: p.id.clone(),
        // Whole (`plausible_subject` bounds it): it is looked up whole.
        subject: up.subject.clone(),
        user_id: user_id.to_string(),
        email: up.email.clone().map(|e| e.chars().take(320).collect()),
        name: up.name.clone().map(|n| n.chars().take(200).collect()),
        created_at: now,
        last_used_at: Some(now),
    }
}

/// An upstream subject we store and look up whole: 1 to 255 bytes (OpenID Connect Core
/// §5.1 bounds `sub` at 255 ASCII characters; Amazon's `user_id` is far shorter), with no
/// control characters (PostgreSQL refuses NUL in text).
pub fn plausible_subject(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control)
}

fn check_url(label: &str, u: &Option<String>, allow_private: bool) -> Result<()> {
    if let Some(u) = u {
        if u.len() > 2000 {
            return Err(Error::invalid_request(format!(
                "{label} is at most 2000 characters"
            )));
        }
        let parsed = url::Url::parse(u)
            .map_err(|_| Error::invalid_request(format!("{label} {u:?} is not a URL")))?;
        let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err(Error::invalid_request(format!(
                "{label} must use https (http only for localhost)"
            )));
        }
        // A name is checked when it is resolved (`http_client::client`); an address written
        // out, or `localhost`, here already.
        if !allow_private && http_client::names_private_host(&parsed) {
            return Err(Error::invalid_request(format!(
                "{label}: {}",
                http_client::PrivateUpstream(parsed.host_str().unwrap_or_default().into())
            )));
        }
    }
    Ok(())
}

/// A provider after a change, and how many linked identities the change removed (see
/// [`Services::update_provider`]).
pub struct ProviderUpdated {
    pub provider: upstream_provider::Model,
    pub links_removed: u64,
}

/// What changes in a provider; `None` keeps the current value. An empty endpoint clears
/// its override.
#[derive(Default)]
pub struct ProviderChange {
    pub display_name: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretChange>,
    pub scopes: Option<String>,
    pub region: Option<String>,
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub auto_create: Option<bool>,
    pub link_by_email: Option<bool>,
    pub enabled: Option<bool>,
    /// The client ID and issuer the change was decided on (an admin page's): when either is
    /// no longer the stored one, nothing is changed. `None`: not checked.
    pub seen_client_id: Option<String>,
    pub seen_issuer: Option<String>,
}

pub enum SecretChange {
    Replace(Secret),
    /// A public upstream client (no secret).
    Remove,
}

/// The checks a provider's settings pass, new or changed. Returns its scopes and region
/// (defaults filled in).
fn checked_provider(p: &NewProvider, allow_private: bool) -> Result<(String, Option<String>)> {
    let (scopes, region) = match p.kind.as_str() {
        "amazon" => {
            let r = p.region.as_deref().unwrap_or("NA").to_ascii_uppercase();
            if !matches!(r.as_str(), "NA" | "EU" | "FE") {
                return Err(Error::invalid_request("an Amazon region is NA, EU or FE"));
            }
            let s = p.scopes.clone().unwrap_or_else(|| "profile".into());
            if !matches!(s.as_str(), "profile" | "profile:user_id") {
                return Err(Error::invalid_request(
                    "Login with Amazon scopes are profile or profile:user_id",
                ));
            }
            (s, Some(r))
        }
        "oidc" => {
            if p.issuer.as_deref().is_none_or(str::is_empty) {
                return Err(Error::invalid_request("an OIDC provider needs --issuer"));
            }
            // (`openid` is always asked for, whether listed or not.)
            let s = p
                .scopes
                .clone()
                .unwrap_or_else(|| "openid email profile".into());
            (s, None)
        }
        _ => return Err(Error::invalid_request("a provider kind is amazon or oidc")),
    };
    for (l, u) in [
        ("issuer", &p.issuer),
        ("authorization endpoint", &p.authorization_endpoint),
        ("token endpoint", &p.token_endpoint),
        ("userinfo endpoint", &p.userinfo_endpoint),
        ("JWKS URI", &p.jwks_uri),
    ] {
        check_url(l, u, allow_private)?;
    }
    if scopes.len() > 400 {
        return Err(Error::invalid_request("scopes are at most 400 characters"));
    }
    if p.client_id.is_empty() || p.client_id.len() > 400 {
        return Err(Error::invalid_request("a client ID is 1-400 characters"));
    }
    let name = p.display_name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::invalid_request("a display name is 1-200 characters"));
    }
    Ok((scopes, region))
}

impl Services {
    fn secret_aad(tenant_id: &str, slug: &str) -> String {
        format!("upstream-secret:{tenant_id}:{slug}")
    }

    /// Add an upstream provider to a tenant. Its client secret is sealed at rest.
    pub async fn add_provider(
        &self,
        tenant: &tenant::Model,
        p: NewProvider,
        by: impl Into<By>,
    ) -> Result<upstream_provider::Model> {
        let by = by.into();
        if !crate::services::valid_slug(&p.slug) {
            return Err(Error::invalid_request(
                "a provider slug is 1-64 characters of a-z, 0-9 and '-'",
            ));
        }
        let (scopes, region) = checked_provider(&p, self.settings.allow_private_upstreams)?;
        if self
            .store
            .provider_by_slug(&tenant.id, &p.slug)
            .await?
            .is_some()
        {
            return Err(Error::invalid_request(format!(
                "provider {:?} already exists in this tenant",
                p.slug
            )));
        }
        let sealed = match &p.client_secret {
            Some(s) => Some(self.seal_upstream_secret(tenant, &p.slug, s)?),
            None => None,
        };
        let now = self.now();
        let m = upstream_provider::Model {
            id: new_id_pub(),
            tenant_id: tenant.id.clone(),
            slug: p.slug.clone(),
            kind: p.kind.clone(),
            display_name: p.display_name.trim().to_string(),
            client_id: p.client_id.clone(),
            client_secret_enc: sealed,
            scopes,
            region,
            issuer: p.issuer.clone(),
            authorization_endpoint: p.authorization_endpoint.clone(),
            token_endpoint: p.token_endpoint.clone(),
            userinfo_endpoint: p.userinfo_endpoint.clone(),
            jwks_uri: p.jwks_uri.clone(),
            auto_create: p.auto_create,
            link_by_email: p.link_by_email,
            enabled: true,
            created_at: now,
        };
        // One of that slug added since the check above is the same answer.
        if !self.store.insert_provider(m.clone()).await? {
            return Err(Error::invalid_request(format!(
                "provider {:?} already exists in this tenant",
                p.slug
            )));
        }
        self.store
            .insert_audit(
                AuditEvent::new("provider_added", "ok", Some(&tenant.id), &by.req)
                    .actor(&by.actor)
                    .detail(serde_json::json!({"slug": m.slug, "kind": m.kind})),
                now,
            )
            .await?;
        Ok(m)
    }

    fn seal_upstream_secret(
        &self,
        tenant: &tenant::Model,
        slug: &str,
        secret: &Secret,
    ) -> Result<Vec<u8>> {
        self.keys
            .sealer()
            .seal(
                &Self::secret_aad(&tenant.id, slug),
                secret.expose().as_bytes(),
            )
            .map_err(Error::internal)
    }

    /// Change a provider of this tenant (its kind and slug stay: the slug is in the redirect
    /// URI registered at the upstream). Checked as a new provider is; audited with the names
    /// of the fields that changed (never the secret's value). `None` when the tenant has no
    /// such provider.
    ///
    /// A linked identity is the upstream's subject, which is unique only per issuer (and, for
    /// pairwise subjects or Login with Amazon's `user_id`, per client): when the issuer or
    /// the client ID changes, every identity linked through this provider is unlinked in the
    /// same transaction, so that an account at the new upstream whose subject happens to
    /// match cannot sign in as a member. The members sign in another way and link again (with
    /// `link_by_email`, a verified e-mail links them again; with `auto_create`, their next
    /// upstream sign-in creates a new member instead).
    pub async fn update_provider(
        &self,
        tenant: &tenant::Model,
        slug: &str,
        change: ProviderChange,
        by: impl Into<By>,
    ) -> Result<Option<ProviderUpdated>> {
        let by = by.into();
        let Some(old) = self.store.provider_by_slug(&tenant.id, slug).await? else {
            return Ok(None);
        };
        // (The store's update is made only while both are still as read here.)
        if change
            .seen_client_id
            .as_ref()
            .is_some_and(|c| *c != old.client_id)
            || change
                .seen_issuer
                .as_ref()
                .is_some_and(|i| i != old.issuer.as_deref().unwrap_or(""))
        {
            return Err(Error::invalid_request(admin_ui::port::PROVIDER_CHANGED));
        }
        // An empty endpoint clears its override (back to the default or discovery).
        let endpoint = |new: Option<String>, old: &Option<String>| match new {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v.trim().to_string()),
            None => old.clone(),
        };
        let merged = NewProvider {
            slug: old.slug.clone(),
            kind: old.kind.clone(),
            display_name: change
                .display_name
                .unwrap_or_else(|| old.display_name.clone()),
            client_id: change.client_id.unwrap_or_else(|| old.client_id.clone()),
            client_secret: None,
            scopes: Some(change.scopes.unwrap_or_else(|| old.scopes.clone())),
            region: change.region.or_else(|| old.region.clone()),
            issuer: change.issuer.or_else(|| old.issuer.clone()),
            authorization_endpoint: endpoint(
                change.authorization_endpoint,
                &old.authorization_endpoint,
            ),
            token_endpoint: endpoint(change.token_endpoint, &old.token_endpoint),
            userinfo_endpoint: endpoint(change.userinfo_endpoint, &old.userinfo_endpoint),
            jwks_uri: endpoint(change.jwks_uri, &old.jwks_uri),
            auto_create: change.auto_create.unwrap_or(old.auto_create),
            link_by_email: change.link_by_email.unwrap_or(old.link_by_email),
        };
        let (scopes, region) = checked_provider(&merged, self.settings.allow_private_upstreams)?;
        let client_secret_enc = match change.client_secret {
            Some(SecretChange::Replace(s)) => Some(self.seal_upstream_secret(tenant, slug, &s)?),
            Some(SecretChange::Remove) => None,
            None => old.client_secret_enc.clone(),
        };
        let new = upstream_provider::Model {
            display_name: merged.display_name.trim().to_string(),
            client_id: merged.client_id,
            client_secret_enc,
            scopes,
            region,
            issuer: merged.issuer,
            authorization_endpoint: merged.authorization_endpoint,
            token_endpoint: merged.token_endpoint,
            userinfo_endpoint: merged.userinfo_endpoint,
            jwks_uri: merged.jwks_uri,
            auto_create: merged.auto_create,
            link_by_email: merged.link_by_email,
            enabled: change.enabled.unwrap_or(old.enabled),
            ..old.clone()
        };
        let changed: Vec<&str> = [
            ("display_name", old.display_name != new.display_name),
            ("client_id", old.client_id != new.client_id),
            (
                "client_secret",
                old.client_secret_enc != new.client_secret_enc,
            ),
            ("scopes", old.scopes != new.scopes),
            ("region", old.region != new.region),
            ("issuer", old.issuer != new.issuer),
            (
                "authorization_endpoint",
                old.authorization_endpoint != new.authorization_endpoint,
            ),
            ("token_endpoint", old.token_endpoint != new.token_endpoint),
            (
                "userinfo_endpoint",
                old.userinfo_endpoint != new.userinfo_endpoint,
            ),
            ("jwks_uri", old.jwks_uri != new.jwks_uri),
            ("auto_create", old.auto_create != new.auto_create),
            ("link_by_email", old.link_by_email != new.link_by_email),
            ("enabled", old.enabled != new.enabled),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        if changed.is_empty() {
            return Ok(Some(ProviderUpdated {
                provider: old,
                links_removed: 0,
            }));
        }
        let unlink = old.issuer != new.issuer || old.client_id != new.client_id;
        let ev = AuditEvent::new("provider_changed", "ok", Some(&tenant.id), &by.req)
            .actor(&by.actor)
            .detail(serde_json::json!({"slug": new.slug, "changed": changed}));
        let Some(links_removed) = self
            .store
            .update_provider(&old, &new, unlink, ev, self.now())
            .await?
        else {
            // Gone, or changed by someone else since it was read.
            if self
                .store
                .provider_by_slug(&tenant.id, slug)
                .await?
                .is_some()
            {
                return Err(Error::invalid_request(
                    "This provider was changed meanwhile. Reload it and try again.",
                ));
            }
            return Ok(None);
        };
        Ok(Some(ProviderUpdated {
            provider: new,
            links_removed,
        }))
    }

    /// Remove a provider of this tenant and every identity linked through it (members who
    /// signed in only with it keep their accounts and can be given a password or passkey).
    /// Returns how many links went with it; `None` when the tenant has no such provider.
    pub async fn remove_provider(
        &self,
        tenant: &tenant::Model,
        slug: &str,
        by: impl Into<By>,
    ) -> Result<Option<u64>> {
        let by = by.into();
        let Some(p) = self.store.provider_by_slug(&tenant.id, slug).await? else {
            return Ok(None);
        };
        let ev = AuditEvent::new("provider_removed", "ok", Some(&tenant.id), &by.req)
            .actor(&by.actor)
            .detail(serde_json::json!({"slug": p.slug, "kind": p.kind}));
        self.store
            .remove_provider(&tenant.id, &p.id, ev, self.now())
            .await
    }

    /// The enabled providers of a tenant, for sign-in buttons: (slug, name).
    pub async fn provider_buttons(&self, tenant: &tenant::Model) -> Result<Vec<(String, String)>> {
        self.sign_in_buttons(tenant, false).await
    }

    /// The sign-in page's provider buttons: (slug, name). For a request that needs a fresh
    /// authentication (`reauth`), only the providers that can be asked for one (OpenID
    /// Connect): Login with Amazon cannot, and its sign-in would be refused.
    pub async fn sign_in_buttons(
        &self,
        tenant: &tenant::Model,
        reauth: bool,
    ) -> Result<Vec<(String, String)>> {
        Ok(self
            .store
            .providers_of_tenant(&tenant.id)
            .await?
            .into_iter()
            .filter(|p| p.enabled && !(reauth && p.kind == "amazon"))
            .map(|p| (p.slug, p.display_name))
            .collect())
    }

    /// The callback URL registered at the upstream.
    pub fn federation_redirect_uri(&self, tenant: &tenant::Model, provider_slug: &str) -> String {
        format!(
            "{}/federation/{provider_slug}/callback",
            self.issuer(tenant)
        )
    }

    pub async fn provider_config(
        &self,
        tenant: &tenant::Model,
        slug: &str,
    ) -> Result<Option<ProviderConfig>> {
        let Some(m) = self
            .store
            .provider_by_slug(&tenant.id, slug)
            .await?
            .filter(|p| p.enabled)
        else {
            return Ok(None);
        };
        let secret = match &m.client_secret_enc {
            Some(enc) => {
                let raw = self
                    .keys
                    .sealer()
                    .open(&Self::secret_aad(&tenant.id, &m.slug), enc)
                    .map_err(Error::internal)?;
                Some(Secret::new(
                    String::from_utf8(raw).map_err(|_| Error::internal("upstream secret"))?,
                ))
            }
            None => None,
        };
        Ok(Some(ProviderConfig {
            allow_private: self.settings.allow_private_upstreams,
            redirect_uri: self.federation_redirect_uri(tenant, &m.slug),
            model: m,
            client_secret: secret,
        }))
    }

    /// Where to send the browser to sign in upstream, and what to keep in the session.
    pub async fn federation_start(
        &self,
        cfg: &ProviderConfig,
        purpose: &str,
        link_user_id: Option<String>,
        rid: Option<String>,
        back: String,
        auth_after: Option<i64>,
    ) -> std::result::Result<(String, String, FedPending), FedError> {
        let now = self.now();
        let (url, state, verifier, nonce) = match cfg.model.kind.as_str() {
            // Login with Amazon has no `prompt=login`, no `max_age` and no `auth_time`.
            "amazon" if auth_after.is_some() => return Err(FedError::NoReauthentication),
            "amazon" => amazon::authorize_url(cfg)?,
            _ => {
                // Ask for an authentication at or after `t` (OIDC Core §3.1.2.1): `max_age` the
                // seconds since then, and `prompt=login` for one that happens now.
                let reauth = auth_after.map(|t| u64::try_from(now.saturating_sub(t)).unwrap_or(0));
                oidc::authorize_url(cfg, reauth).await?
            }
        };
        Ok((
            url,
            state,
            FedPending {
                provider_id: cfg.model.id.clone(),
                pkce_verifier: verifier,
                nonce,
                purpose: purpose.to_string(),
                link_user_id,
                rid,
                back,
                created_at: now,
                auth_after,
            },
        ))
    }

    /// Exchange the code and learn who signed in upstream. Where the sign-in needs a fresh
    /// authentication (`pending.auth_after`), the upstream must say when it authenticated
    /// (`auth_time`), no earlier than asked.
    pub async fn federation_identify(
        &self,
        cfg: &ProviderConfig,
        pending: &FedPending,
        code: &str,
    ) -> std::result::Result<UpstreamUser, FedError> {
        let up = match cfg.model.kind.as_str() {
            "amazon" => amazon::identify(cfg, pending, code).await?,
            _ => oidc::identify(cfg, pending, code).await?,
        };
        if let Some(t) = pending.auth_after {
            match up.auth_time {
                Some(a) if a >= t => {}
                Some(a) => {
                    return Err(FedError::StaleAuthentication(format!(
                        "auth_time {a} is before {t}"
                    )));
                }
                None => {
                    return Err(FedError::StaleAuthentication(
                        "the ID token has no auth_time".into(),
                    ));
                }
            }
        }
        Ok(up)
    }

    /// Decide what an upstream identity means here: sign in, link, or refuse. Audited.
    pub async fn federation_finish(
        &self,
        tenant: &tenant::Model,
        cfg: &ProviderConfig,
        up: &UpstreamUser,
        pending: &FedPending,
        req: &RequestInfo,
    ) -> Result<FedOutcome> {
        let up = &up.sanitized();
        let purpose = pending.purpose.as_str();
        let linker = match &pending.link_user_id {
            Some(uid) => self
                .store
                .user_by_id(&tenant.id, uid)
                .await?
                .filter(|u| !u.disabled),
            None => None,
        };
        let signed_in_user = linker.as_ref();
        let now = self.now();
        let p = &cfg.model;
        let existing = self
            .store
            .identity_by_subject(&tenant.id, &p.id, &up.subject)
            .await?;
        let ev = |kind: &'static str, outcome: &'static str| {
            AuditEvent::new(kind, outcome, Some(&tenant.id), req).detail(serde_json::json!({
                "method": "federation",
                "provider": p.slug,
                "subject": up.subject,
            }))
        };
        let mut amr = vec!["fed".to_string()];
        amr.extend(up.amr.iter().filter(|a| a.as_str() != "fed").cloned());
        if purpose == "link" {
            let Some(me) = signed_in_user else {
                return Ok(FedOutcome::NotLinked);
            };
            return match existing {
                Some(i) if i.user_id == me.id => Ok(FedOutcome::Linked),
                Some(_) => {
                    self.store
                        .insert_audit(ev("identity_linked", "failed").user(&me.id), now)
                        .await?;
                    Ok(FedOutcome::LinkedElsewhere)
                }
                None => {
                    if self
                        .link_identity(tenant, p, up, &me.id, "self", req)
                        .await?
                    {
                        Ok(FedOutcome::Linked)
                    } else {
                        Ok(FedOutcome::LinkedElsewhere)
                    }
                }
            };
        }
        let linked_sign_in = |i: upstream_identity::Model, amr: Vec<String>| async move {
            let user = self
                .store
                .user_by_id(&tenant.id, &i.user_id)
                .await?
                .filter(|u| !u.disabled);
            match user {
                Some(u) => {
                    self.store.touch_identity(&i.id, now).await?;
                    self.store
                        .insert_audit(ev("sign_in", "ok").user(&u.id), now)
                        .await?;
                    metrics::counter!("ma_idp_sign_ins_total", "method" => "federation", "outcome" => "ok").increment(1);
                    Ok(FedOutcome::SignedIn(u, amr))
                }
                None => {
                    self.store
                        .insert_audit(ev("sign_in", "failed").user(&i.user_id), now)
                        .await?;
                    Ok(FedOutcome::NotLinked)
                }
            }
        };
        if let Some(i) = existing {
            return linked_sign_in(i, amr).await;
        }
        // Unlinked. By verified e-mail, when the provider allows it; never to an operator's
        // account: a tenant admin chooses the provider (and so what it calls verified), and
        // must not become the operator through it. An operator links a provider by hand.
        if (p.link_by_email || tenant.fed_link_by_email)
            && up.email_verified
            && let Some(email) = &up.email
        {
            let matches = self.store.users_by_email(&tenant.id, email).await?;
            if let [u] = matches.as_slice()
                && !u.disabled
                && u.role != "operator"
                && self
                    .link_identity(tenant, p, up, &u.id, "email", req)
                    .await?
            {
                self.store
                    .insert_audit(ev("sign_in", "ok").user(&u.id), now)
                    .await?;
                return Ok(FedOutcome::SignedIn(u.clone(), amr));
            }
        }
        if p.auto_create || tenant.fed_auto_create {
            let base = up
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .filter(|s| !s.is_empty())
                .unwrap_or(&p.slug)
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .take(40)
                .collect::<String>();
            let base = if base.is_empty() {
                p.slug.clone()
            } else {
                base
            };
            for n in 0..20 {
                let name = if n == 0 {
                    base.clone()
                } else {
                    format!("{base}{}", n + 1)
                };
                let name = crate::login::normalize_username(&name);
                if self
                    .store
                    .user_by_username(&tenant.id, &name)
                    .await?
                    .is_some()
                {
                    continue;
                }
                let verified_email = up.email.clone().filter(|_| up.email_verified);
                let (u, created) = crate::services::new_member(
                    tenant,
                    name,
                    (&up.name, &verified_email, "member"),
                    &format!("federation:{}", p.slug),
                    req,
                    now,
                );
                // The member, its link and the events, in one transaction (as
                // `create_user_with` and `link_identity` would write them).
                let audit = vec![
                    created,
                    AuditEvent::new("identity_linked", "ok", Some(&tenant.id), req)
                        .user(&u.id)
                        .detail(serde_json::json!({
                            "provider": p.slug, "subject": up.subject, "via": "created",
                        })),
                    ev("sign_in", "ok").user(&u.id),
                ];
                let link = identity_row(tenant, p, up, &u.id, now);
                match self
                    .store
                    .insert_user_with_identity(u.clone(), link, p, audit, now)
                    .await?
                {
                    NewMember::Created => return Ok(FedOutcome::SignedIn(u, amr)),
                    NewMember::UsernameTaken => continue,
                    // A first sign-in of this identity at the same moment created its member:
                    // that member is signing in.
                    NewMember::IdentityTaken => {
                        return match self
                            .store
                            .identity_by_subject(&tenant.id, &p.id, &up.subject)
                            .await?
                        {
                            Some(i) => linked_sign_in(i, amr).await,
                            None => Ok(FedOutcome::NotLinked),
                        };
                    }
                }
            }
        }
        self.store
            .insert_audit(
                ev("sign_in", "failed").detail(serde_json::json!({
                    "method": "federation", "provider": p.slug, "subject": up.subject,
                    "reason": "not linked",
                })),
                now,
            )
            .await?;
        metrics::counter!("ma_idp_sign_ins_total", "method" => "federation", "outcome" => "failed")
            .increment(1);
        Ok(FedOutcome::NotLinked)
    }

    /// Link an upstream identity to a member; false when it is linked already. Audited.
    pub async fn link_identity(
        &self,
        tenant: &tenant::Model,
        p: &upstream_provider::Model,
        up: &UpstreamUser,
        user_id: &str,
        via: &str,
        req: &RequestInfo,
    ) -> Result<bool> {
        let now = self.now();
        let ok = self
            .store
            .insert_identity(identity_row(tenant, p, up, user_id, now), p)
            .await?;
        self.store
            .insert_audit(
                AuditEvent::new(
                    "identity_linked",
                    if ok { "ok" } else { "failed" },
                    Some(&tenant.id),
                    req,
                )
                .user(user_id)
                .detail(serde_json::json!({"provider": p.slug, "subject": up.subject, "via": via})),
                now,
            )
            .await?;
        Ok(ok)
    }

    /// Unlink one of a member's identities. `removal` says whether it may be the member's
    /// last way to sign in (see [`Services::own_removal`]). Audited when done.
    pub async fn unlink_identity(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
        identity_id: &str,
        removal: Removal,
        actor: &str,
        req: &RequestInfo,
    ) -> Result<Removed> {
        let ok = self
            .store
            .delete_identity(&tenant.id, user_id, identity_id, removal)
            .await?;
        if ok == Removed::Done {
            self.store
                .insert_audit(
                    AuditEvent::new("identity_unlinked", "ok", Some(&tenant.id), req)
                        .user(user_id)
                        .actor(actor)
                        .detail(serde_json::json!({"identity": identity_id})),
                    self.now(),
                )
                .await?;
        }
        Ok(ok)
    }

    /// A member's linked identities with their providers' names.
    pub async fn linked_identities(
        &self,
        tenant: &tenant::Model,
        user_id: &str,
    ) -> Result<Vec<(upstream_identity::Model, String)>> {
        let providers = self.store.providers_of_tenant(&tenant.id).await?;
        Ok(self
            .store
            .identities_of_user(&tenant.id, user_id)
            .await?
            .into_iter()
            .map(|i| {
                let name = providers
                    .iter()
                    .find(|p| p.id == i.provider_id)
                    .map(|p| p.display_name.clone())
                    .unwrap_or_else(|| "(removed provider)".into());
                (i, name)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::plausible_subject;

    #[test]
    fn a_pending_sign_in_keeps_its_secrets_out_of_debug() {
        let p = super::FedPending {
            provider_id: "p1".into(),
            pkce_verifier: "verifier-s3cr3t".into(),
            nonce: Some("nonce-s3cr3t".into()),
            purpose: "sign_in".into(),
            link_user_id: None,
            rid: Some("rid1".into()),
            back: "/t/home/login".into(),
            created_at: 1,
            auth_after: None,
        };
        let shown = format!("{p:?} {p:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("p1") && shown.contains("rid1"), "{shown}");
    }

    #[test]
    fn upstream_strings_are_kept_small_and_printable() {
        let up = super::UpstreamUser {
            subject: "s".into(),
            email: Some("a\u{0}li\nce@example.com".into()),
            email_verified: true,
            name: Some("\u{7}".into()),
            amr: vec![
                "pwd".into(),
                "x".repeat(33),
                "mfa".into(),
                "bad value".into(),
                "otp".into(),
                "hwk".into(),
                "sms".into(),
            ],
            auth_time: None,
        }
        .sanitized();
        assert_eq!(up.email.as_deref(), Some("alice@example.com"));
        assert_eq!(up.name, None);
        assert_eq!(up.amr, ["pwd", "mfa", "otp", "hwk"]);
    }

    #[test]
    fn subjects_are_bounded_and_printable() {
        assert!(plausible_subject("248289761001"));
        assert!(plausible_subject("amzn1.account.AFEXAMPLE"));
        assert!(plausible_subject(&"a".repeat(255)));
        assert!(!plausible_subject(""));
        assert!(!plausible_subject(&"a".repeat(256)));
        assert!(!plausible_subject("a\0b"));
        assert!(!plausible_subject("a\nb"));
        // 128 two-byte characters are 256 bytes: over the bound a column can hold whole.
        assert!(!plausible_subject(&"é".repeat(128)));
    }
}
