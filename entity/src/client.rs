use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub public: bool,
    pub require_pkce: bool,
    pub scopes: String,
    pub audience: String,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub access_token_alg: String,
    pub id_token_alg: String,
    pub auth_method: String,
    pub grant_types: String,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
