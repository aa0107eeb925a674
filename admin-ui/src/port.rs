//! The port: everything an admin can do, as the server implements it with its services.
//! The admin UI never reaches around it into the database.
use serde::Serialize;

/// A provider's page was opened before its client ID or issuer changed: the save is refused.
pub const PROVIDER_CHANGED: &str = "Someone changed this provider's client ID or issuer after \
     you opened this page, so nothing was saved. The page now shows its settings as they are; \
     make your change again.";

/// Why an admin action failed. `NotFound` also answers objects of another tenant.
#[derive(Debug, Clone)]
pub enum AdminError {
    NotFound,
    /// Bad input: the message is shown beside the form.
    Invalid(String),
    /// The database is unreachable.
    Unavailable,
    Internal(String),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::NotFound => f.write_str("not found"),
            AdminError::Invalid(m) => f.write_str(m),
            AdminError::Unavailable => f.write_str("the database is unavailable"),
            AdminError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every tenant, and the server's settings.
    Operator,
    /// One tenant.
    TenantAdmin,
}

/// The signed-in admin.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub user_id: String,
    pub tenant_id: String,
    pub tenant_slug: String,
    pub username: String,
    pub role: Role,
}

impl Actor {
    /// How the audit log names this admin.
    pub fn label(&self) -> String {
        format!("admin:{}/{}", self.tenant_slug, self.username)
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub enum SignInResult {
    Ok(Actor),
    /// The message to show (wrong password, locked, not an admin: one message for the last
    /// two so the form does not tell who is an admin), and the status to answer with.
    Refused(String, actix_web::http::StatusCode),
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub issuer: String,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub refresh_grace: i64,
    pub passkeys_required: bool,
    pub fed_auto_create: bool,
    pub fed_link_by_email: bool,
    pub is_default: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub name: String,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub refresh_grace: i64,
    pub passkeys_required: bool,
    /// Federation: create members on a first upstream sign-in (every provider).
    pub fed_auto_create: bool,
    /// Federation: link by an e-mail the upstream says is verified (every provider).
    pub fed_link_by_email: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// member, admin or operator
    pub role: String,
    pub disabled: bool,
    pub has_password: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentityView {
    pub id: String,
    pub provider: String,
    pub subject: String,
    pub created_at: i64,
}

/// An upstream sign-in provider of a tenant (federation).
#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    pub slug: String,
    pub kind: String,
    pub display_name: String,
    pub client_id: String,
    pub region: Option<String>,
    pub issuer: Option<String>,
    pub scopes: String,
    /// The redirect URI to register at the upstream.
    pub redirect_uri: String,
    pub auto_create: bool,
    pub link_by_email: bool,
    pub enabled: bool,
    /// A client secret is stored (sealed; never shown).
    pub has_secret: bool,
    pub created_at: i64,
}

pub struct NewProviderForm {
    pub kind: String,
    pub slug: String,
    pub display_name: String,
    pub client_id: String,
    /// Empty: none (a public upstream client).
    pub client_secret: String,
    pub region: Option<String>,
    pub issuer: Option<String>,
    pub scopes: Option<String>,
    pub auto_create: bool,
    pub link_by_email: bool,
}

/// The edit form of a provider: every field it shows. The kind and slug do not change.
pub struct ProviderEditForm {
    pub display_name: String,
    pub client_id: String,
    /// Empty: keep the stored secret.
    pub client_secret: String,
    pub scopes: String,
    /// Amazon only.
    pub region: Option<String>,
    /// OIDC only.
    pub issuer: Option<String>,
    pub auto_create: bool,
    pub link_by_email: bool,
    pub enabled: bool,
    /// The client ID and issuer the form was made from: when either has changed since, the
    /// save is refused (a change of either unlinks every account; one admin's page opened
    /// before another admin's change must not undo it unseen). `None`: not checked.
    pub seen_client_id: Option<String>,
    pub seen_issuer: Option<String>,
}

/// Which browser sessions to list (signed-in, unexpired ones of a tenant).
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user_id: Option<String>,
    /// One session, by its stored id (for checking it before ending it).
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    /// The member signed in is an operator (only an operator may end it).
    pub owner_is_operator: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

pub struct NewUser {
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Empty: no password (the member enrolls a passkey from a link).
    pub password: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    pub id: String,
    pub client_id: String,
    pub name: String,
    pub public: bool,
    pub require_pkce: bool,
    pub scopes: String,
    pub audience: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: String,
    pub grant_types: String,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub disabled: bool,
    pub created_at: i64,
    /// The Alexa vendor ID when the client was made by "Add Alexa skill".
    pub alexa_vendor_id: Option<String>,
}

pub struct NewClient {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Option<String>,
    pub public: bool,
    /// Alexa: the Vendor ID; the three regional redirect URIs are registered.
    pub alexa_vendor_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub require_pkce: bool,
    /// client_secret_basic, client_secret_post or none (public clients only)
    pub auth_method: String,
    pub disabled: bool,
}

/// A client just created or given a new secret: the secret is shown this once.
pub struct CreatedClient {
    pub client: ClientView,
    pub secret: Option<String>,
}

/// What Alexa's account-linking console asks for, ready to copy.
#[derive(Debug, Clone, Serialize)]
pub struct AlexaValues {
    pub authorization_uri: String,
    pub access_token_uri: String,
    pub client_id: String,
    pub authentication_scheme: String,
    pub scopes: Vec<String>,
    pub domain_list: Vec<String>,
    pub default_access_token_expiration: i64,
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantView {
    pub id: String,
    pub user_id: String,
    pub username: String,
    /// The grant's member is an operator (only an operator may revoke it).
    pub owner_is_operator: bool,
    pub client_pk: String,
    pub client_name: String,
    pub scope: String,
    pub created_at: i64,
    pub last_refreshed_at: Option<i64>,
    /// When the refresh tokens of this grant stop working unless used (sliding).
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user_id: Option<String>,
    pub client_pk: Option<String>,
    /// One grant, by id (for listing; revoking one grant is `revoke_grant`).
    pub grant_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created_at: i64,
    pub retire_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// None: every tenant (operators only).
    pub tenant_id: Option<String>,
    pub user_id: Option<String>,
    pub client: Option<String>,
    pub kind: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub id: String,
    pub at: i64,
    pub tenant: Option<String>,
    pub kind: String,
    pub outcome: String,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// Counts per day (oldest first) for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub days: Vec<i64>,
    pub sign_ins: Vec<u64>,
    pub failed_sign_ins: Vec<u64>,
    pub grants: Vec<u64>,
    pub refreshes: Vec<u64>,
    pub users: u64,
    pub clients: u64,
    pub active_grants: u64,
}

/// Every admin action. Each takes the tenant the object must belong to: the server loads
/// objects only through tenant-scoped queries, so an id of another tenant is `NotFound`.
#[async_trait::async_trait]
pub trait AdminPort: Send + Sync + 'static {
    fn now(&self) -> i64;
    /// The client address (behind trusted proxies) and user agent of a request.
    fn origin(&self, req: &actix_web::HttpRequest) -> Origin;
    /// The base URL of public pages (issuers, Alexa's URIs).
    fn public_url(&self) -> String;

    // Bootstrap and sign-in.
    async fn setup_link_valid(&self, token: &str) -> AdminResult<bool>;
    /// Use a setup link: create (or reuse) the tenant and create the operator account.
    async fn complete_setup(
        &self,
        token: &str,
        tenant_slug: &str,
        tenant_name: &str,
        username: &str,
        password: &str,
        origin: &Origin,
    ) -> AdminResult<Actor>;
    async fn sign_in(
        &self,
        tenant_slug: &str,
        username: &str,
        password: &str,
        origin: &Origin,
    ) -> AdminResult<SignInResult>;
    /// The admin behind a session, if the account still exists, is enabled and is an admin.
    async fn actor(&self, tenant_id: &str, user_id: &str) -> AdminResult<Option<Actor>>;
    async fn record_sign_out(&self, actor: &Actor, origin: &Origin) -> AdminResult<()>;

    // Tenants.
    async fn tenants(&self) -> AdminResult<Vec<TenantView>>;
    async fn tenant_by_slug(&self, slug: &str) -> AdminResult<Option<TenantView>>;
    async fn create_tenant(
        &self,
        actor: &Actor,
        slug: &str,
        name: &str,
        origin: &Origin,
    ) -> AdminResult<TenantView>;
    async fn update_tenant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        settings: TenantSettings,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn set_default_tenant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        origin: &Origin,
    ) -> AdminResult<()>;

    // Users.
    async fn users(
        &self,
        tenant_id: &str,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> AdminResult<Page<UserView>>;
    async fn user(&self, tenant_id: &str, user_id: &str) -> AdminResult<Option<UserView>>;
    async fn create_user(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user: NewUser,
        origin: &Origin,
    ) -> AdminResult<UserView>;
    async fn set_user_disabled(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        disabled: bool,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn set_user_role(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        role: &str,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn reset_password(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        password: &str,
        origin: &Origin,
    ) -> AdminResult<()>;
    /// A one-time passkey enrollment link (URL).
    async fn enrollment_link(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        origin: &Origin,
    ) -> AdminResult<String>;
    async fn passkeys(&self, tenant_id: &str, user_id: &str) -> AdminResult<Vec<PasskeyView>>;
    async fn remove_passkey(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        passkey_id: &str,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn identities(&self, tenant_id: &str, user_id: &str) -> AdminResult<Vec<IdentityView>>;
    /// Link an upstream identity (provider slug + the upstream's subject) to a user.
    async fn link_identity(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        provider_slug: &str,
        subject: &str,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn unlink_identity(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        identity_id: &str,
        origin: &Origin,
    ) -> AdminResult<()>;

    // Upstream sign-in providers (federation).
    async fn providers(&self, tenant_id: &str) -> AdminResult<Vec<ProviderView>>;
    async fn add_provider(
        &self,
        actor: &Actor,
        tenant_id: &str,
        p: NewProviderForm,
        origin: &Origin,
    ) -> AdminResult<ProviderView>;
    /// One provider of this tenant, by slug.
    async fn provider(&self, tenant_id: &str, slug: &str) -> AdminResult<Option<ProviderView>>;
    /// Change a provider. When its issuer or client ID changes, the identities linked
    /// through it are unlinked (a subject is unique only per issuer and client): returns the
    /// provider and how many links went.
    async fn update_provider(
        &self,
        actor: &Actor,
        tenant_id: &str,
        slug: &str,
        p: ProviderEditForm,
        origin: &Origin,
    ) -> AdminResult<(ProviderView, u64)>;
    /// Remove a provider and the identities linked through it; returns how many links went.
    async fn remove_provider(
        &self,
        actor: &Actor,
        tenant_id: &str,
        slug: &str,
        origin: &Origin,
    ) -> AdminResult<u64>;

    // Sessions.
    async fn sessions(
        &self,
        tenant_id: &str,
        filter: &SessionFilter,
    ) -> AdminResult<Vec<SessionView>>;
    async fn end_session(
        &self,
        actor: &Actor,
        tenant_id: &str,
        session_id: &str,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn end_user_sessions(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        origin: &Origin,
    ) -> AdminResult<u64>;

    // Clients.
    async fn clients(&self, tenant_id: &str) -> AdminResult<Vec<ClientView>>;
    async fn client(&self, tenant_id: &str, client_pk: &str) -> AdminResult<Option<ClientView>>;
    async fn create_client(
        &self,
        actor: &Actor,
        tenant_id: &str,
        client: NewClient,
        origin: &Origin,
    ) -> AdminResult<CreatedClient>;
    async fn rotate_client_secret(
        &self,
        actor: &Actor,
        tenant_id: &str,
        client_pk: &str,
        origin: &Origin,
    ) -> AdminResult<String>;
    async fn update_client(
        &self,
        actor: &Actor,
        tenant_id: &str,
        client_pk: &str,
        settings: ClientSettings,
        origin: &Origin,
    ) -> AdminResult<()>;
    async fn alexa_values(&self, tenant_id: &str, client_pk: &str) -> AdminResult<AlexaValues>;

    // Grants.
    async fn grants(&self, tenant_id: &str, filter: &GrantFilter) -> AdminResult<Vec<GrantView>>;
    async fn revoke_grant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        grant_id: &str,
        origin: &Origin,
    ) -> AdminResult<()>;
    /// Revoke every active grant matching the filter (a user's, or a client's).
    async fn revoke_grants(
        &self,
        actor: &Actor,
        tenant_id: &str,
        filter: &GrantFilter,
        origin: &Origin,
    ) -> AdminResult<u64>;

    // Signing keys.
    async fn keys(&self, tenant_id: &str) -> AdminResult<Vec<KeyView>>;
    /// `force`: even if the next keys were published moments ago (a key is compromised).
    async fn rotate_keys(
        &self,
        actor: &Actor,
        tenant_id: &str,
        origin: &Origin,
        force: bool,
    ) -> AdminResult<()>;

    // Audit log and dashboard.
    async fn audit(
        &self,
        filter: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> AdminResult<Page<AuditView>>;
    async fn audit_kinds(&self) -> AdminResult<Vec<String>>;
    async fn dashboard(&self, tenant_id: Option<&str>, days: u32) -> AdminResult<Dashboard>;
}
