//! The admin UI: one-time operator setup links and server-wide settings (the default tenant).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("setup_links"))
                .if_not_exists()
                .col(string_len(Alias::new("id"), 64).primary_key())
                .col(string_len(Alias::new("token_hash"), 128).unique_key())
                .col(big_integer(Alias::new("created_at")))
                .col(big_integer(Alias::new("expires_at")))
                .col(big_integer_null(Alias::new("used_at")))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("server_settings"))
                .if_not_exists()
                .col(string_len(Alias::new("key"), 100).primary_key())
                .col(text(Alias::new("value")))
                .col(big_integer(Alias::new("updated_at")))
                .to_owned(),
        )
        .await?;
        // The audit log is read by time, within a tenant, newest first.
        m.create_index(
            Index::create()
                .name("idx_audit_events_tenant_at")
                .table(Alias::new("audit_events"))
                .col(Alias::new("tenant_id"))
                .col(Alias::new("at"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_audit_events_at")
                .table(Alias::new("audit_events"))
                .col(Alias::new("at"))
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["setup_links", "server_settings"] {
            m.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
