//! Per-account sign-in failure counters, shared by every instance.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("login_throttle"))
                .if_not_exists()
                .col(string_len(Alias::new("key"), 200).primary_key())
                .col(big_integer(Alias::new("attempts")))
                .col(big_integer(Alias::new("lockouts")))
                .col(big_integer(Alias::new("locked_until")))
                .col(big_integer(Alias::new("updated_at")))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("login_throttle"))
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
