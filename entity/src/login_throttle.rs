use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_throttle")]
pub struct Model {
    /// An account's counter: `{tenant_id}:{normalized username}` (existing or not); the
    /// account's counter for one client network: `net:{network}/{account's key}`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Attempts since the last success or the end of the last lockout.
    pub attempts: i64,
    /// Lockouts in a row: the next one lasts twice as long.
    pub lockouts: i64,
    pub locked_until: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
