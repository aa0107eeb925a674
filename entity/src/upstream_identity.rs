use sea_orm::entity::prelude::*;

/// An upstream identity (provider + subject) linked to a member.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "upstream_identities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub provider_id: String,
    /// Amazon: the profile's `user_id` (`amzn1.account....`); OIDC: the ID token's `sub`.
    pub subject: String,
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
