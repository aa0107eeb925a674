//! The admin UI's port, implemented with the server's services. Every method takes the
//! tenant its object must belong to and loads it through a tenant-scoped query.
use std::sync::Arc;

use admin_ui::port::*;
use entity::{tenant, user};

use crate::audit::{AuditEvent, RequestInfo};
use crate::error::Error;
use crate::login::PasswordOutcome;
use crate::login::limits::Bucket;
use crate::secrets::{Secret, random_token, token_hash};
use crate::services::{
    By, ClientSpec, NewUserSpec, Services, alexa_redirect_uris, validate_redirect_uri,
};
use crate::store::{AuditQuery, Removal, Removed};

/// How long a setup link works.
pub const SETUP_LINK_TTL: i64 = 24 * 3600;
/// The server setting that names the tenant behind `/alexa/*`.
pub const DEFAULT_TENANT_KEY: &str = "default_tenant";

pub struct Port {
    svc: Arc<Services>,
}

impl Port {
    pub fn shared(svc: Arc<Services>) -> Arc<dyn AdminPort> {
        Arc::new(Port { svc })
    }
}

fn ae(e: Error) -> AdminError {
    match e {
        Error::Db(e) => {
            tracing::warn!(error = %e, "admin UI: database error");
            AdminError::Unavailable
        }
        Error::OAuth { description, .. } => AdminError::Invalid(capitalize(&description)),
        Error::Page {
            status, message, ..
        } if status.as_u16() == 404 => {
            let _ = message;
            AdminError::NotFound
        }
        Error::Page { message, .. } => AdminError::Invalid(message),
        Error::Internal(m) => AdminError::Internal(m),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

fn by(actor: &Actor, o: &Origin) -> By {
    By {
        actor: actor.label(),
        req: info(o),
    }
}

fn info(o: &Origin) -> RequestInfo {
    RequestInfo {
        ip: o.ip.clone(),
        user_agent: o.user_agent.clone(),
    }
}

/// An id from a URL that could name a stored object. Anything else (a NUL, which PostgreSQL
/// refuses in text, or an absurd length) is simply not found, without asking the database.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 100 && !id.contains('\0')
}

fn role_of(u: &user::Model) -> Option<Role> {
    match u.role.as_str() {
        "operator" => Some(Role::Operator),
        "admin" => Some(Role::TenantAdmin),
        _ => None,
    }
}

impl Port {
    async fn audit(&self, ev: AuditEvent) -> AdminResult<()> {
        self.svc
            .store
            .insert_audit(ev, self.svc.now())
            .await
            .map_err(ae)
    }

    fn event(&self, kind: &'static str, tenant_id: &str, actor: &Actor, o: &Origin) -> AuditEvent {
        AuditEvent::new(kind, "ok", Some(tenant_id), &info(o)).actor(&actor.label())
    }

    async fn tenant(&self, id: &str) -> AdminResult<tenant::Model> {
        self.svc
            .store
            .tenant_by_id(id)
            .await
            .map_err(ae)?
            .ok_or(AdminError::NotFound)
    }

    async fn default_slug(&self) -> AdminResult<Option<String>> {
        match self.svc.default_tenant().await {
            Ok(t) => Ok(Some(t.slug)),
            Err(Error::Db(_)) => Err(AdminError::Unavailable),
            Err(_) => Ok(None),
        }
    }

    fn tenant_view(&self, t: tenant::Model, default: Option<&str>) -> TenantView {
        TenantView {
            issuer: self.svc.issuer(&t),
            is_default: default == Some(t.slug.as_str()),
            id: t.id,
            slug: t.slug,
            name: t.name,
            access_token_ttl: t.access_token_ttl,
            refresh_token_ttl: t.refresh_token_ttl,
            refresh_grace: t.refresh_grace,
            passkeys_required: t.passkeys_required,
            fed_auto_create: t.fed_auto_create,
            fed_link_by_email: t.fed_link_by_email,
            created_at: t.created_at,
        }
    }

    async fn user_model(&self, tenant_id: &str, user_id: &str) -> AdminResult<user::Model> {
        if !plausible_id(user_id) {
            return Err(AdminError::NotFound);
        }
        self.svc
            .store
            .user_by_id(tenant_id, user_id)
            .await
            .map_err(ae)?
            .ok_or(AdminError::NotFound)
    }

    fn user_view(u: user::Model, has_password: bool) -> UserView {
        UserView {
            id: u.id,
            username: u.username,
            display_name: u.display_name,
            email: u.email,
            role: u.role,
            disabled: u.disabled,
            has_password,
            created_at: u.created_at,
        }
    }

    async fn client_view(&self, c: entity::client::Model) -> AdminResult<ClientView> {
        let uris = self.svc.store.redirect_uris_of(&c.id).await.map_err(ae)?;
        let vendor = alexa_vendor(&uris);
        Ok(ClientView {
            id: c.id,
            client_id: c.client_id,
            name: c.name,
            public: c.public,
            require_pkce: c.require_pkce,
            scopes: c.scopes,
            audience: c.audience,
            redirect_uris: uris,
            auth_method: c.auth_method,
            grant_types: c.grant_types,
            access_token_ttl: c.access_token_ttl,
            refresh_token_ttl: c.refresh_token_ttl,
            disabled: c.disabled,
            created_at: c.created_at,
            alexa_vendor_id: vendor,
        })
    }

    async fn client_model(&self, tenant_id: &str, pk: &str) -> AdminResult<entity::client::Model> {
        if !plausible_id(pk) {
            return Err(AdminError::NotFound);
        }
        self.svc
            .store
            .client_by_pk(tenant_id, pk)
            .await
            .map_err(ae)?
            .ok_or(AdminError::NotFound)
    }
}

impl Port {
    fn provider_view(
        &self,
        t: &tenant::Model,
        p: entity::upstream_provider::Model,
    ) -> ProviderView {
        ProviderView {
            redirect_uri: self.svc.federation_redirect_uri(t, &p.slug),
            has_secret: p.client_secret_enc.is_some(),
            slug: p.slug,
            kind: p.kind,
            display_name: p.display_name,
            client_id: p.client_id,
            region: p.region,
            issuer: p.issuer,
            scopes: p.scopes,
            auto_create: p.auto_create,
            link_by_email: p.link_by_email,
            enabled: p.enabled,
            created_at: p.created_at,
        }
    }
}

/// A client registered with all three regional Alexa redirect URIs of one vendor.
fn alexa_vendor(uris: &[String]) -> Option<String> {
    let prefix = "https://pitangui.amazon.com/api/skill/link/";
    let v = uris.iter().find_map(|u| u.strip_prefix(prefix))?;
    let all = alexa_redirect_uris(v);
    all.iter().all(|u| uris.contains(u)).then(|| v.to_string())
}

#[async_trait::async_trait]
impl AdminPort for Port {
    fn now(&self) -> i64 {
        self.svc.now()
    }

    fn origin(&self, req: &actix_web::HttpRequest) -> Origin {
        let i = crate::http::request_info(req, &self.svc);
        Origin {
            ip: i.ip,
            user_agent: i.user_agent,
        }
    }

    fn public_url(&self) -> String {
        self.svc.settings.base_url().to_string()
    }

    async fn setup_link_valid(&self, token: &str) -> AdminResult<bool> {
        if token.len() > 100 {
            return Ok(false);
        }
        // Only while there is no operator (one made on the command line ends every link).
        Ok(self
            .svc
            .store
            .setup_link(&token_hash(token), self.svc.now())
            .await
            .map_err(ae)?
            .is_some()
            && self.svc.store.operator_count().await.map_err(ae)? == 0)
    }

    async fn complete_setup(
        &self,
        token: &str,
        tenant_slug: &str,
        tenant_name: &str,
        username: &str,
        password: &str,
        origin: &Origin,
    ) -> AdminResult<Actor> {
        let svc = &self.svc;
        let username = crate::login::normalize_username(username);
        if username.is_empty() || username.len() > 128 || username.chars().any(char::is_whitespace)
        {
            return Err(AdminError::Invalid(
                "A username is 1-128 characters without spaces.".into(),
            ));
        }
        let pw = Secret::new(password);
        if password.chars().count() < 8 || password.len() > 1024 {
            return Err(AdminError::Invalid(
                "A password has 8 to 1024 characters.".into(),
            ));
        }
        let existing = if crate::services::valid_slug(tenant_slug) {
            svc.store.tenant_by_slug(tenant_slug).await.map_err(ae)?
        } else {
            return Err(AdminError::Invalid(
                "A tenant is 1-64 characters of a-z, 0-9 and '-', not starting with '-'.".into(),
            ));
        };
        let now = svc.now();
        let new_tenant = match &existing {
            Some(_) => None,
            None => {
                let name = tenant_name.trim();
                if name.is_empty() || name.len() > 200 {
                    return Err(AdminError::Invalid(
                        "A household name has 1-200 characters.".into(),
                    ));
                }
                Some(crate::services::new_tenant_model(tenant_slug, name, now))
            }
        };
        let t = existing
            .clone()
            .or_else(|| new_tenant.clone())
            .ok_or(AdminError::NotFound)?;
        if existing.is_some()
            && svc
                .store
                .user_by_username(&t.id, &username)
                .await
                .map_err(ae)?
                .is_some()
        {
            return Err(AdminError::Invalid(format!(
                "{username:?} already exists in {}: choose another username.",
                t.slug
            )));
        }
        let phc = svc.passwords.hash(&pw).await.map_err(ae)?;
        let u = user::Model {
            id: crate::store::new_id_pub(),
            tenant_id: t.id.clone(),
            username: username.clone(),
            display_name: None,
            email: None,
            role: "operator".into(),
            disabled: false,
            created_at: now,
        };
        if !svc
            .store
            .consume_setup_link(&token_hash(token), now, new_tenant.clone(), u.clone(), phc)
            .await
            .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        if new_tenant.is_some() {
            svc.keys.ensure_tenant_keys(&t.id).await.map_err(ae)?;
        }
        let actor = Actor {
            user_id: u.id.clone(),
            tenant_id: t.id.clone(),
            tenant_slug: t.slug.clone(),
            username: u.username.clone(),
            role: Role::Operator,
        };
        if new_tenant.is_some() {
            self.audit(
                self.event("tenant_created", &t.id, &actor, origin)
                    .detail(serde_json::json!({"slug": t.slug, "via": "setup link"})),
            )
            .await?;
        }
        self.audit(
            self.event("operator_setup", &t.id, &actor, origin)
                .user(&u.id)
                .detail(serde_json::json!({"username": u.username})),
        )
        .await?;
        Ok(actor)
    }

    async fn sign_in(
        &self,
        tenant_slug: &str,
        username: &str,
        password: &str,
        origin: &Origin,
    ) -> AdminResult<SignInResult> {
        let svc = &self.svc;
        let wrong = || {
            SignInResult::Refused(
                "Wrong tenant, username or password, or this account is not an admin.".into(),
                actix_web::http::StatusCode::UNAUTHORIZED,
            )
        };
        let ip = origin.ip.as_deref().and_then(|i| i.parse().ok());
        if !svc.ip_limits.check(Bucket::SignIn, ip) {
            return Ok(SignInResult::Refused(
                crate::http::TOO_MANY.into(),
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            ));
        }
        let tenant = match svc.tenant(tenant_slug).await {
            Ok(t) => t,
            Err(Error::Db(_)) => return Err(AdminError::Unavailable),
            Err(_) => {
                // Same work as a real attempt: the answer time does not tell which tenants exist.
                let _ = svc.passwords.verify(&Secret::new(password), None).await;
                return Ok(wrong());
            }
        };
        // Admin sign-in uses passwords even in a passkeys-only tenant: the admin UI has no
        // passkey ceremony yet, so the flag governs member sign-in only.
        let t = tenant::Model {
            passkeys_required: false,
            ..tenant.clone()
        };
        let outcome = svc
            .password_sign_in(&t, username, &Secret::new(password), &info(origin))
            .await
            .map_err(ae)?;
        if let PasswordOutcome::Ok(_, done) = &outcome {
            svc.record_sign_in(done).await.map_err(ae)?;
        }
        match outcome {
            PasswordOutcome::Ok(u, _) => match role_of(&u) {
                Some(role) => {
                    let actor = Actor {
                        user_id: u.id.clone(),
                        tenant_id: tenant.id.clone(),
                        tenant_slug: tenant.slug.clone(),
                        username: u.username.clone(),
                        role,
                    };
                    self.audit(
                        self.event("admin_sign_in", &tenant.id, &actor, origin)
                            .user(&u.id),
                    )
                    .await?;
                    Ok(SignInResult::Ok(actor))
                }
                None => {
                    self.audit(
                        AuditEvent::new("admin_sign_in", "denied", Some(&tenant.id), &info(origin))
                            .user(&u.id)
                            .detail(serde_json::json!({"reason": "not an admin"})),
                    )
                    .await?;
                    Ok(wrong())
                }
            },
            PasswordOutcome::Locked(_) => Ok(SignInResult::Refused(
                outcome.message(svc.now()).unwrap_or_default(),
                outcome.status(),
            )),
            _ => Ok(wrong()),
        }
    }

    async fn actor(&self, tenant_id: &str, user_id: &str) -> AdminResult<Option<Actor>> {
        let Some(u) = self
            .svc
            .store
            .user_by_id(tenant_id, user_id)
            .await
            .map_err(ae)?
        else {
            return Ok(None);
        };
        if u.disabled {
            return Ok(None);
        }
        let Some(role) = role_of(&u) else {
            return Ok(None);
        };
        let t = self.tenant(tenant_id).await?;
        Ok(Some(Actor {
            user_id: u.id,
            tenant_id: t.id,
            tenant_slug: t.slug,
            username: u.username,
            role,
        }))
    }

    async fn record_sign_out(&self, actor: &Actor, origin: &Origin) -> AdminResult<()> {
        self.audit(
            self.event("admin_sign_out", &actor.tenant_id, actor, origin)
                .user(&actor.user_id),
        )
        .await
    }

    async fn tenants(&self) -> AdminResult<Vec<TenantView>> {
        let d = self.default_slug().await?;
        let all = self.svc.store.tenants().await.map_err(ae)?;
        Ok(all
            .into_iter()
            .map(|t| self.tenant_view(t, d.as_deref()))
            .collect())
    }

    async fn tenant_by_slug(&self, slug: &str) -> AdminResult<Option<TenantView>> {
        if !crate::services::valid_slug(slug) {
            return Ok(None);
        }
        let Some(t) = self.svc.store.tenant_by_slug(slug).await.map_err(ae)? else {
            return Ok(None);
        };
        let d = self.default_slug().await?;
        Ok(Some(self.tenant_view(t, d.as_deref())))
    }

    async fn create_tenant(
        &self,
        actor: &Actor,
        slug: &str,
        name: &str,
        origin: &Origin,
    ) -> AdminResult<TenantView> {
        let name = Some(name).filter(|n| !n.trim().is_empty());
        let t = self
            .svc
            .create_tenant(slug, name, by(actor, origin))
            .await
            .map_err(ae)?;
        let d = self.default_slug().await?;
        Ok(self.tenant_view(t, d.as_deref()))
    }

    async fn update_tenant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        s: TenantSettings,
        origin: &Origin,
    ) -> AdminResult<()> {
        let t = self.tenant(tenant_id).await?;
        let name = s.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(AdminError::Invalid(
                "A tenant name has 1-200 characters.".into(),
            ));
        }
        if !(60..=86_400).contains(&s.access_token_ttl)
            || !(3600..=10 * 365 * 86_400).contains(&s.refresh_token_ttl)
            || !(0..=300).contains(&s.refresh_grace)
        {
            return Err(AdminError::Invalid("A lifetime is out of range.".into()));
        }
        self.svc
            .store
            .update_tenant_settings(
                &t.id,
                name,
                s.access_token_ttl,
                s.refresh_token_ttl,
                s.refresh_grace,
                s.passkeys_required,
                (s.fed_auto_create, s.fed_link_by_email),
            )
            .await
            .map_err(ae)?;
        self.audit(
            self.event("tenant_updated", &t.id, actor, origin)
                .detail(serde_json::json!({
                    "name": name,
                    "access_token_ttl": s.access_token_ttl,
                    "refresh_token_ttl": s.refresh_token_ttl,
                    "refresh_grace": s.refresh_grace,
                    "passkeys_required": s.passkeys_required,
                    "fed_auto_create": s.fed_auto_create,
                    "fed_link_by_email": s.fed_link_by_email,
                })),
        )
        .await
    }

    async fn set_default_tenant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        let t = self.tenant(tenant_id).await?;
        self.svc
            .store
            .set_setting(DEFAULT_TENANT_KEY, &t.slug, self.svc.now())
            .await
            .map_err(ae)?;
        self.audit(
            self.event("default_tenant_set", &t.id, actor, origin)
                .detail(serde_json::json!({"slug": t.slug})),
        )
        .await
    }

    async fn users(
        &self,
        tenant_id: &str,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> AdminResult<Page<UserView>> {
        let (users, total) = self
            .svc
            .store
            .search_users(tenant_id, search, offset, limit.min(200))
            .await
            .map_err(ae)?;
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let with_pw = self.svc.store.users_with_password(&ids).await.map_err(ae)?;
        Ok(Page {
            items: users
                .into_iter()
                .map(|u| {
                    let pw = with_pw.contains(&u.id);
                    Self::user_view(u, pw)
                })
                .collect(),
            total,
            offset,
            limit,
        })
    }

    async fn user(&self, tenant_id: &str, user_id: &str) -> AdminResult<Option<UserView>> {
        if !plausible_id(user_id) {
            return Ok(None);
        }
        let Some(u) = self
            .svc
            .store
            .user_by_id(tenant_id, user_id)
            .await
            .map_err(ae)?
        else {
            return Ok(None);
        };
        let pw = self
            .svc
            .store
            .password_hash(&u.id)
            .await
            .map_err(ae)?
            .is_some();
        Ok(Some(Self::user_view(u, pw)))
    }

    async fn create_user(
        &self,
        actor: &Actor,
        tenant_id: &str,
        n: NewUser,
        origin: &Origin,
    ) -> AdminResult<UserView> {
        let t = self.tenant(tenant_id).await?;
        let pw = (!n.password.is_empty()).then(|| Secret::new(&n.password));
        let has_pw = pw.is_some();
        let u = self
            .svc
            .create_user_with(
                &t,
                NewUserSpec {
                    username: n.username,
                    display_name: n.display_name,
                    email: n.email,
                    role: n.role,
                },
                pw.as_ref(),
                by(actor, origin),
            )
            .await
            .map_err(ae)?;
        Ok(Self::user_view(u, has_pw))
    }

    async fn set_user_disabled(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        disabled: bool,
        origin: &Origin,
    ) -> AdminResult<()> {
        let u = self.user_model(tenant_id, user_id).await?;
        if disabled && u.id == actor.user_id {
            return Err(AdminError::Invalid(
                "You cannot disable your own account.".into(),
            ));
        }
        if !self
            .svc
            .store
            .set_user_disabled(tenant_id, &u.id, disabled)
            .await
            .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        let kind = if disabled {
            "user_disabled"
        } else {
            "user_enabled"
        };
        self.audit(self.event(kind, tenant_id, actor, origin).user(&u.id))
            .await
    }

    async fn set_user_role(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        role: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        let u = self.user_model(tenant_id, user_id).await?;
        if !matches!(role, "member" | "admin" | "operator") {
            return Err(AdminError::Invalid(
                "A role is member, admin or operator.".into(),
            ));
        }
        if u.id == actor.user_id && role != u.role {
            return Err(AdminError::Invalid(
                "You cannot change your own role.".into(),
            ));
        }
        self.svc
            .store
            .set_user_role(tenant_id, &u.id, role)
            .await
            .map_err(ae)?;
        self.audit(
            self.event("user_role_changed", tenant_id, actor, origin)
                .user(&u.id)
                .detail(serde_json::json!({"from": u.role, "to": role})),
        )
        .await
    }

    async fn reset_password(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        password: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        let u = self.user_model(tenant_id, user_id).await?;
        if password.chars().count() < 8 || password.len() > 1024 {
            return Err(AdminError::Invalid(
                "A password has 8 to 1024 characters.".into(),
            ));
        }
        let phc = self
            .svc
            .passwords
            .hash(&Secret::new(password))
            .await
            .map_err(ae)?;
        if !self
            .svc
            .store
            .set_password(tenant_id, &u.id, phc, self.svc.now(), true)
            .await
            .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        self.audit(
            self.event("password_reset", tenant_id, actor, origin)
                .user(&u.id),
        )
        .await
    }

    async fn enrollment_link(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        origin: &Origin,
    ) -> AdminResult<String> {
        let t = self.tenant(tenant_id).await?;
        let u = self.user_model(tenant_id, user_id).await?;
        let (url, _) = self
            .svc
            .create_enrollment_link(&t, &u, by(actor, origin))
            .await
            .map_err(ae)?;
        Ok(url)
    }

    async fn passkeys(&self, tenant_id: &str, user_id: &str) -> AdminResult<Vec<PasskeyView>> {
        let u = self.user_model(tenant_id, user_id).await?;
        Ok(self
            .svc
            .store
            .passkeys_of_user(tenant_id, &u.id)
            .await
            .map_err(ae)?
            .into_iter()
            .map(|p| PasskeyView {
                id: p.id,
                name: p.name,
                created_at: p.created_at,
                last_used_at: p.last_used_at,
            })
            .collect())
    }

    async fn remove_passkey(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        passkey_id: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        let t = self.tenant(tenant_id).await?;
        let u = self.user_model(tenant_id, user_id).await?;
        if plausible_id(passkey_id)
            && self
                .svc
                .remove_passkey(
                    &t,
                    &u.id,
                    passkey_id,
                    Removal::Any,
                    &actor.label(),
                    &info(origin),
                )
                .await
                .map_err(ae)?
                == Removed::Done
        {
            Ok(())
        } else {
            Err(AdminError::NotFound)
        }
    }

    async fn identities(&self, tenant_id: &str, user_id: &str) -> AdminResult<Vec<IdentityView>> {
        let t = self.tenant(tenant_id).await?;
        let u = self.user_model(tenant_id, user_id).await?;
        Ok(self
            .svc
            .linked_identities(&t, &u.id)
            .await
            .map_err(ae)?
            .into_iter()
            .map(|(i, provider)| IdentityView {
                id: i.id,
                provider,
                subject: i.subject,
                created_at: i.created_at,
            })
            .collect())
    }

    async fn link_identity(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        provider_slug: &str,
        subject: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        let t = self.tenant(tenant_id).await?;
        let u = self.user_model(tenant_id, user_id).await?;
        let p = self
            .svc
            .store
            .provider_by_slug(&t.id, provider_slug)
            .await
            .map_err(ae)?
            .ok_or_else(|| AdminError::Invalid("Choose a provider.".into()))?;
        let subject = subject.trim();
        // As an upstream sign-in presents it (`plausible_subject`): a longer one would be
        // linked but never sign in.
        if !crate::federation::plausible_subject(subject) {
            return Err(AdminError::Invalid(
                "Enter the account's ID at the provider (1-255 bytes, no control characters)."
                    .into(),
            ));
        }
        let up = crate::federation::UpstreamUser {
            subject: subject.to_string(),
            email: None,
            email_verified: false,
            name: None,
            amr: Vec::new(),
            auth_time: None,
        };
        if self
            .svc
            .link_identity(&t, &p, &up, &u.id, &actor.label(), &info(origin))
            .await
            .map_err(ae)?
        {
            Ok(())
        } else {
            Err(AdminError::Invalid(
                "That account is already linked to a member of this tenant.".into(),
            ))
        }
    }

    async fn unlink_identity(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        identity_id: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        let t = self.tenant(tenant_id).await?;
        let u = self.user_model(tenant_id, user_id).await?;
        if !plausible_id(identity_id) {
            return Err(AdminError::NotFound);
        }
        if self
            .svc
            .unlink_identity(
                &t,
                &u.id,
                identity_id,
                Removal::Any,
                &actor.label(),
                &info(origin),
            )
            .await
            .map_err(ae)?
            == Removed::Done
        {
            Ok(())
        } else {
            Err(AdminError::NotFound)
        }
    }

    async fn providers(&self, tenant_id: &str) -> AdminResult<Vec<ProviderView>> {
        let t = self.tenant(tenant_id).await?;
        Ok(self
            .svc
            .store
            .providers_of_tenant(&t.id)
            .await
            .map_err(ae)?
            .into_iter()
            .map(|p| self.provider_view(&t, p))
            .collect())
    }

    async fn add_provider(
        &self,
        actor: &Actor,
        tenant_id: &str,
        p: NewProviderForm,
        origin: &Origin,
    ) -> AdminResult<ProviderView> {
        let t = self.tenant(tenant_id).await?;
        let amazon = p.kind == "amazon";
        let m = self
            .svc
            .add_provider(
                &t,
                crate::federation::NewProvider {
                    slug: p.slug,
                    kind: p.kind,
                    display_name: p.display_name,
                    client_id: p.client_id,
                    client_secret: (!p.client_secret.is_empty())
                        .then(|| Secret::new(&p.client_secret)),
                    scopes: p.scopes,
                    region: if amazon { p.region } else { None },
                    issuer: if amazon { None } else { p.issuer },
                    authorization_endpoint: None,
                    token_endpoint: None,
                    userinfo_endpoint: None,
                    jwks_uri: None,
                    auto_create: p.auto_create,
                    link_by_email: p.link_by_email,
                },
                by(actor, origin),
            )
            .await
            .map_err(ae)?;
        Ok(self.provider_view(&t, m))
    }

    async fn provider(&self, tenant_id: &str, slug: &str) -> AdminResult<Option<ProviderView>> {
        let t = self.tenant(tenant_id).await?;
        Ok(self
            .svc
            .store
            .provider_by_slug(&t.id, slug)
            .await
            .map_err(ae)?
            .map(|p| self.provider_view(&t, p)))
    }

    async fn update_provider(
        &self,
        actor: &Actor,
        tenant_id: &str,
        slug: &str,
        p: ProviderEditForm,
        origin: &Origin,
    ) -> AdminResult<(ProviderView, u64)> {
        use crate::federation::{ProviderChange, SecretChange};
        let t = self.tenant(tenant_id).await?;
        let m = self
            .svc
            .update_provider(
                &t,
                slug,
                ProviderChange {
                    display_name: Some(p.display_name),
                    client_id: Some(p.client_id),
                    client_secret: (!p.client_secret.is_empty())
                        .then(|| SecretChange::Replace(Secret::new(&p.client_secret))),
                    scopes: (!p.scopes.is_empty()).then_some(p.scopes),
                    region: p.region,
                    issuer: p.issuer,
                    auto_create: Some(p.auto_create),
                    link_by_email: Some(p.link_by_email),
                    enabled: Some(p.enabled),
                    seen_client_id: p.seen_client_id,
                    seen_issuer: p.seen_issuer,
                    ..ProviderChange::default()
                },
                by(actor, origin),
            )
            .await
            .map_err(ae)?
            .ok_or(AdminError::NotFound)?;
        Ok((self.provider_view(&t, m.provider), m.links_removed))
    }

    async fn remove_provider(
        &self,
        actor: &Actor,
        tenant_id: &str,
        slug: &str,
        origin: &Origin,
    ) -> AdminResult<u64> {
        let t = self.tenant(tenant_id).await?;
        self.svc
            .remove_provider(&t, slug, by(actor, origin))
            .await
            .map_err(ae)?
            .ok_or(AdminError::NotFound)
    }

    async fn sessions(&self, tenant_id: &str, f: &SessionFilter) -> AdminResult<Vec<SessionView>> {
        if f.session_id.as_deref().is_some_and(|s| !plausible_id(s)) {
            return Ok(Vec::new());
        }
        let rows = self
            .svc
            .store
            .sessions_of_tenant(
                tenant_id,
                f.user_id.as_deref(),
                f.session_id.as_deref(),
                self.svc.now(),
            )
            .await
            .map_err(ae)?;
        let mut out = Vec::with_capacity(rows.len());
        // (username, is an operator) of each member met.
        let mut names: std::collections::HashMap<String, Option<(String, bool)>> =
            Default::default();
        for s in rows {
            let owner = match &s.user_id {
                Some(uid) => {
                    if !names.contains_key(uid) {
                        let n = self
                            .svc
                            .store
                            .user_by_id(tenant_id, uid)
                            .await
                            .map_err(ae)?
                            .map(|u| (u.username, u.role == "operator"));
                        names.insert(uid.clone(), n);
                    }
                    names.get(uid).cloned().flatten()
                }
                None => None,
            };
            out.push(SessionView {
                id: s.id,
                user_id: s.user_id,
                owner_is_operator: owner.as_ref().is_some_and(|o| o.1),
                username: owner.map(|o| o.0),
                created_at: s.created_at,
                updated_at: s.updated_at,
                expires_at: s.expires_at,
            });
        }
        Ok(out)
    }

    async fn end_session(
        &self,
        actor: &Actor,
        tenant_id: &str,
        session_id: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        if !plausible_id(session_id)
            || !self
                .svc
                .store
                .end_tenant_session(tenant_id, session_id)
                .await
                .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        self.audit(self.event("session_ended", tenant_id, actor, origin))
            .await
    }

    async fn end_user_sessions(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        origin: &Origin,
    ) -> AdminResult<u64> {
        let u = self.user_model(tenant_id, user_id).await?;
        let n = self
            .svc
            .store
            .end_user_sessions(tenant_id, &u.id)
            .await
            .map_err(ae)?;
        self.audit(
            self.event("session_ended", tenant_id, actor, origin)
                .user(&u.id)
                .detail(serde_json::json!({"sessions": n})),
        )
        .await?;
        Ok(n)
    }

    async fn clients(&self, tenant_id: &str) -> AdminResult<Vec<ClientView>> {
        let mut out = Vec::new();
        for c in self
            .svc
            .store
            .clients_of_tenant(tenant_id)
            .await
            .map_err(ae)?
        {
            out.push(self.client_view(c).await?);
        }
        Ok(out)
    }

    async fn client(&self, tenant_id: &str, client_pk: &str) -> AdminResult<Option<ClientView>> {
        if !plausible_id(client_pk) {
            return Ok(None);
        }
        match self
            .svc
            .store
            .client_by_pk(tenant_id, client_pk)
            .await
            .map_err(ae)?
        {
            Some(c) => Ok(Some(self.client_view(c).await?)),
            None => Ok(None),
        }
    }

    async fn create_client(
        &self,
        actor: &Actor,
        tenant_id: &str,
        n: NewClient,
        origin: &Origin,
    ) -> AdminResult<CreatedClient> {
        let t = self.tenant(tenant_id).await?;
        if n.alexa_vendor_id.as_deref() == Some("") {
            return Err(AdminError::Invalid("Enter the skill's Vendor ID.".into()));
        }
        if n.alexa_vendor_id.is_none() && n.redirect_uris.is_empty() {
            return Err(AdminError::Invalid(
                "Enter at least one redirect URI.".into(),
            ));
        }
        // The same bound as editing a client.
        if n.redirect_uris.len() > 20 {
            return Err(AdminError::Invalid(
                "A client has 1 to 20 redirect URIs.".into(),
            ));
        }
        let scopes = n
            .scopes
            .as_ref()
            .map(|s| s.split_whitespace().map(str::to_string).collect());
        let created = self
            .svc
            .create_client(
                &t,
                ClientSpec {
                    name: n.name,
                    client_id: None,
                    redirect_uris: n.redirect_uris,
                    alexa_vendor_id: n.alexa_vendor_id,
                    public: n.public,
                    scopes,
                    audience: None,
                    client_credentials: false,
                },
                by(actor, origin),
            )
            .await
            .map_err(ae)?;
        let view = self.client_view(created.client).await?;
        Ok(CreatedClient {
            client: view,
            secret: created.secret.map(|s| s.expose().to_string()),
        })
    }

    async fn rotate_client_secret(
        &self,
        actor: &Actor,
        tenant_id: &str,
        client_pk: &str,
        origin: &Origin,
    ) -> AdminResult<String> {
        let c = self.client_model(tenant_id, client_pk).await?;
        if c.public {
            return Err(AdminError::Invalid("A public client has no secret.".into()));
        }
        let secret = random_token();
        let hash = self.svc.secret_hasher.hash(secret.expose());
        if !self
            .svc
            .store
            .set_client_secret(tenant_id, &c.id, hash)
            .await
            .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        self.audit(
            self.event("client_secret_rotated", tenant_id, actor, origin)
                .client(&c.client_id),
        )
        .await?;
        Ok(secret.expose().to_string())
    }

    async fn update_client(
        &self,
        actor: &Actor,
        tenant_id: &str,
        client_pk: &str,
        s: ClientSettings,
        origin: &Origin,
    ) -> AdminResult<()> {
        let c = self.client_model(tenant_id, client_pk).await?;
        let name = s.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(AdminError::Invalid(
                "A client needs a name of 1-200 characters.".into(),
            ));
        }
        let mut uris: Vec<String> = Vec::new();
        for u in s.redirect_uris {
            validate_redirect_uri(&u).map_err(|e| AdminError::Invalid(capitalize(&e)))?;
            if !uris.contains(&u) {
                uris.push(u);
            }
        }
        if uris.is_empty() || uris.len() > 20 {
            return Err(AdminError::Invalid(
                "A client has 1 to 20 redirect URIs.".into(),
            ));
        }
        let scopes: Vec<&str> = s.scopes.split_whitespace().collect();
        if scopes.is_empty()
            || scopes
                .iter()
                .any(|sc| !crate::oauth::scopes::valid_scope_token(sc))
        {
            return Err(AdminError::Invalid(
                "Scopes are space-separated scope names.".into(),
            ));
        }
        if scopes.join(" ").len() > 2000 {
            return Err(AdminError::Invalid(
                "A client's scopes are at most 2000 characters in all.".into(),
            ));
        }
        let auth_method = match (c.public, s.auth_method.as_str()) {
            (true, _) => "none".to_string(),
            (false, m @ ("client_secret_basic" | "client_secret_post" | "any")) => m.to_string(),
            (false, _) => {
                return Err(AdminError::Invalid(
                    "A confidential client authenticates with client_secret_basic, client_secret_post or either (any).".into(),
                ));
            }
        };
        let updated = entity::client::Model {
            name: name.to_string(),
            scopes: scopes.join(" "),
            access_token_ttl: s.access_token_ttl,
            refresh_token_ttl: s.refresh_token_ttl,
            require_pkce: c.public || s.require_pkce,
            auth_method,
            disabled: s.disabled,
            ..c.clone()
        };
        if !self
            .svc
            .store
            .update_client(updated.clone(), uris.clone())
            .await
            .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        self.audit(
            self.event("client_updated", tenant_id, actor, origin)
                .client(&c.client_id)
                .detail(serde_json::json!({
                    "name": updated.name,
                    "redirect_uris": uris,
                    "scopes": updated.scopes,
                    "access_token_ttl": updated.access_token_ttl,
                    "refresh_token_ttl": updated.refresh_token_ttl,
                    "require_pkce": updated.require_pkce,
                    "auth_method": updated.auth_method,
                    "disabled": updated.disabled,
                })),
        )
        .await
    }

    async fn alexa_values(&self, tenant_id: &str, client_pk: &str) -> AdminResult<AlexaValues> {
        let t = self.tenant(tenant_id).await?;
        let c = self.client_model(tenant_id, client_pk).await?;
        let uris = self.svc.store.redirect_uris_of(&c.id).await.map_err(ae)?;
        let issuer = self.svc.issuer(&t);
        let host = url::Url::parse(self.svc.settings.base_url())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        Ok(AlexaValues {
            authorization_uri: format!("{issuer}/authorize"),
            access_token_uri: format!("{issuer}/token"),
            client_id: c.client_id,
            authentication_scheme: if c.auth_method == "client_secret_post" {
                "Credentials in request body".into()
            } else {
                "HTTP Basic (Recommended)".into()
            },
            scopes: c.scopes.split_whitespace().map(str::to_string).collect(),
            domain_list: if host.is_empty() { vec![] } else { vec![host] },
            default_access_token_expiration: c.access_token_ttl.unwrap_or(t.access_token_ttl),
            redirect_uris: uris,
        })
    }

    async fn grants(&self, tenant_id: &str, f: &GrantFilter) -> AdminResult<Vec<GrantView>> {
        if f.grant_id.as_deref().is_some_and(|g| !plausible_id(g)) {
            return Ok(Vec::new());
        }
        let t = self.tenant(tenant_id).await?;
        let rows = self
            .svc
            .store
            .active_grants(
                tenant_id,
                f.user_id.as_deref(),
                f.client_pk.as_deref(),
                f.grant_id.as_deref(),
            )
            .await
            .map_err(ae)?;
        // (username, is an operator) of each member met.
        let mut users: std::collections::HashMap<String, (String, bool)> = Default::default();
        let mut clients: std::collections::HashMap<String, (String, i64)> = Default::default();
        let mut out = Vec::with_capacity(rows.len());
        for g in rows {
            if !users.contains_key(&g.user_id) {
                let n = self
                    .svc
                    .store
                    .user_by_id(tenant_id, &g.user_id)
                    .await
                    .map_err(ae)?
                    .map(|u| (u.username, u.role == "operator"))
                    .unwrap_or_else(|| ("(removed)".into(), false));
                users.insert(g.user_id.clone(), n);
            }
            if !clients.contains_key(&g.client_id) {
                let c = self
                    .svc
                    .store
                    .client_by_pk(tenant_id, &g.client_id)
                    .await
                    .map_err(ae)?;
                let v = match c {
                    Some(c) => (c.name, c.refresh_token_ttl.unwrap_or(t.refresh_token_ttl)),
                    None => ("(removed)".into(), t.refresh_token_ttl),
                };
                clients.insert(g.client_id.clone(), v);
            }
            let (client_name, ttl) = clients.get(&g.client_id).cloned().unwrap_or_default();
            let last = g.last_refreshed_at.unwrap_or(g.created_at);
            let (username, owner_is_operator) = users.get(&g.user_id).cloned().unwrap_or_default();
            out.push(GrantView {
                username,
                owner_is_operator,
                client_pk: g.client_id,
                client_name,
                expires_at: Some(last + ttl),
                id: g.id,
                user_id: g.user_id,
                scope: g.scope,
                created_at: g.created_at,
                last_refreshed_at: g.last_refreshed_at,
            });
        }
        Ok(out)
    }

    async fn revoke_grant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        grant_id: &str,
        origin: &Origin,
    ) -> AdminResult<()> {
        if !plausible_id(grant_id) {
            return Err(AdminError::NotFound);
        }
        let g = self
            .svc
            .store
            .active_grants(tenant_id, None, None, Some(grant_id))
            .await
            .map_err(ae)?
            .into_iter()
            .next();
        let Some(g) = g else {
            return Err(AdminError::NotFound);
        };
        if !self
            .svc
            .store
            .revoke_grant(tenant_id, &g.id, None, self.svc.now())
            .await
            .map_err(ae)?
        {
            return Err(AdminError::NotFound);
        }
        let client_id = self
            .svc
            .store
            .client_by_pk(tenant_id, &g.client_id)
            .await
            .map_err(ae)?
            .map(|c| c.client_id)
            .unwrap_or_default();
        self.audit(
            self.event("grant_revoked", tenant_id, actor, origin)
                .user(&g.user_id)
                .client(&client_id)
                .detail(serde_json::json!({"grant": g.id})),
        )
        .await
    }

    async fn revoke_grants(
        &self,
        actor: &Actor,
        tenant_id: &str,
        f: &GrantFilter,
        origin: &Origin,
    ) -> AdminResult<u64> {
        if f.user_id.is_none() && f.client_pk.is_none() {
            return Err(AdminError::Invalid("Choose a user or a client.".into()));
        }
        let mut ev = self.event("grant_revoked", tenant_id, actor, origin);
        if let Some(u) = &f.user_id {
            let u = self.user_model(tenant_id, u).await?;
            ev = ev.user(&u.id);
        }
        if let Some(c) = &f.client_pk {
            let c = self.client_model(tenant_id, c).await?;
            ev = ev.client(&c.client_id);
        }
        let n = self
            .svc
            .store
            .revoke_grants_where(
                tenant_id,
                f.user_id.as_deref(),
                f.client_pk.as_deref(),
                self.svc.now(),
            )
            .await
            .map_err(ae)?;
        self.audit(ev.detail(serde_json::json!({"grants": n})))
            .await?;
        Ok(n)
    }

    async fn keys(&self, tenant_id: &str) -> AdminResult<Vec<KeyView>> {
        Ok(self
            .svc
            .store
            .signing_keys(tenant_id)
            .await
            .map_err(ae)?
            .into_iter()
            .map(|k| KeyView {
                kid: k.kid,
                alg: k.alg,
                state: k.state,
                created_at: k.created_at,
                retire_at: k.publish_until,
            })
            .collect())
    }

    async fn rotate_keys(
        &self,
        actor: &Actor,
        tenant_id: &str,
        origin: &Origin,
        force: bool,
    ) -> AdminResult<()> {
        let t = self.tenant(tenant_id).await?;
        self.svc
            .rotate_keys(&t, by(actor, origin), force)
            .await
            .map_err(ae)?;
        Ok(())
    }

    async fn audit(
        &self,
        f: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> AdminResult<Page<AuditView>> {
        let q = AuditQuery {
            tenant_id: f.tenant_id.clone(),
            user_id: f.user_id.clone(),
            client: f.client.clone(),
            kind: f.kind.clone(),
            from: f.from,
            to: f.to,
        };
        let (rows, total) = self
            .svc
            .store
            .audit_page(&q, offset, limit.min(500))
            .await
            .map_err(ae)?;
        let mut tenants: std::collections::HashMap<String, String> = Default::default();
        let mut users: std::collections::HashMap<(String, String), Option<String>> =
            Default::default();
        let mut items = Vec::with_capacity(rows.len());
        for e in rows {
            let tenant = match &e.tenant_id {
                Some(tid) => {
                    if !tenants.contains_key(tid) {
                        let s = self
                            .svc
                            .store
                            .tenant_by_id(tid)
                            .await
                            .map_err(ae)?
                            .map(|t| t.slug)
                            .unwrap_or_default();
                        tenants.insert(tid.clone(), s);
                    }
                    tenants.get(tid).cloned()
                }
                None => None,
            };
            let username = match (&e.tenant_id, &e.user_id) {
                (Some(t), Some(u)) => {
                    let k = (t.clone(), u.clone());
                    if !users.contains_key(&k) {
                        let n = self
                            .svc
                            .store
                            .user_by_id(t, u)
                            .await
                            .map_err(ae)?
                            .map(|u| u.username);
                        users.insert(k.clone(), n);
                    }
                    users.get(&k).cloned().flatten()
                }
                _ => None,
            };
            items.push(AuditView {
                id: e.id,
                at: e.at,
                tenant,
                kind: e.kind,
                outcome: e.outcome,
                actor: e.actor,
                user_id: e.user_id,
                username,
                client_id: e.client_id,
                ip: e.ip,
                user_agent: e.user_agent,
                detail: e.detail,
            });
        }
        Ok(Page {
            items,
            total,
            offset,
            limit,
        })
    }

    async fn audit_kinds(&self) -> AdminResult<Vec<String>> {
        self.svc.store.audit_kinds().await.map_err(ae)
    }

    async fn dashboard(&self, tenant_id: Option<&str>, days: u32) -> AdminResult<Dashboard> {
        let days = days.clamp(1, 366) as i64;
        let today = self.svc.now().div_euclid(86_400);
        let first = today - days + 1;
        let rows = self
            .svc
            .store
            .audit_per_day(
                tenant_id,
                first * 86_400,
                &["sign_in", "token_granted", "token_refreshed"],
            )
            .await
            .map_err(ae)?;
        let n = days as usize;
        let mut d = Dashboard {
            days: (first..=today).collect(),
            sign_ins: vec![0; n],
            failed_sign_ins: vec![0; n],
            grants: vec![0; n],
            refreshes: vec![0; n],
            users: 0,
            clients: 0,
            active_grants: 0,
        };
        for r in rows {
            let Some(i) = usize::try_from(r.day - first).ok().filter(|i| *i < n) else {
                continue;
            };
            let v = r.n.max(0) as u64;
            match (r.kind.as_str(), r.outcome.as_str()) {
                ("sign_in", "ok") => d.sign_ins[i] += v,
                ("sign_in", _) => d.failed_sign_ins[i] += v,
                ("token_granted", "ok") => d.grants[i] += v,
                ("token_refreshed", "ok") => d.refreshes[i] += v,
                _ => {}
            }
        }
        if let Some(t) = tenant_id {
            d.users = self.svc.store.user_count(t).await.map_err(ae)?;
            d.clients = self.svc.store.client_count(t).await.map_err(ae)?;
            d.active_grants = self.svc.store.active_grant_count(t).await.map_err(ae)?;
        }
        Ok(d)
    }
}

impl Services {
    /// On start with no operator: a fresh one-time setup link (earlier unused ones stop working).
    /// Returns the path (`/admin/setup/{token}`), or None when an operator exists.
    pub async fn setup_link_if_needed(&self) -> crate::error::Result<Option<String>> {
        if self.store.operator_count().await? > 0 {
            return Ok(None);
        }
        let token = random_token();
        let now = self.now();
        self.store
            .replace_setup_link(entity::setup_link::Model {
                id: crate::store::new_id_pub(),
                token_hash: token_hash(token.expose()),
                created_at: now,
                expires_at: now + SETUP_LINK_TTL,
                used_at: None,
            })
            .await?;
        Ok(Some(format!("/admin/setup/{}", token.expose())))
    }
}
