use sea_orm::entity::prelude::*;

/// An upstream sign-in provider of one tenant: Login with Amazon or an OIDC provider.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "upstream_providers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    /// In URLs: `/t/{tenant}/federation/{slug}/...`.
    pub slug: String,
    /// `amazon` or `oidc`.
    pub kind: String,
    pub display_name: String,
    pub client_id: String,
    /// Sealed with the master key (AES-256-GCM), like signing keys.
    pub client_secret_enc: Option<Vec<u8>>,
    pub scopes: String,
    /// Amazon: NA, EU or FE.
    pub region: Option<String>,
    /// OIDC: the issuer, for discovery.
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    /// Create a member on the first sign-in of an unlinked identity.
    pub auto_create: bool,
    /// Link an unlinked identity to the member with the same e-mail, when the upstream says
    /// the e-mail is verified.
    pub link_by_email: bool,
    pub enabled: bool,
    pub created_at: i64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProvider")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("slug", &self.slug)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret_enc", &"[sealed]")
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
