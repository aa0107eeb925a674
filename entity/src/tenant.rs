use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub slug: String,
    pub name: String,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub refresh_grace: i64,
    pub code_ttl: i64,
    pub passkeys_required: bool,
    /// Create a member on the first sign-in of an unlinked upstream identity (any provider).
    pub fed_auto_create: bool,
    /// Link an unlinked upstream identity to the member with the same, verified e-mail.
    pub fed_link_by_email: bool,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
