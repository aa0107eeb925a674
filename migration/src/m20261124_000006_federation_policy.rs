//! Tenant-wide federation policy: create members on a first upstream sign-in, and link by a
//! verified e-mail. Both off by default; a provider can also turn either on for itself.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one column per ALTER TABLE.
        for col in ["fed_auto_create", "fed_link_by_email"] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("tenants"))
                    .add_column(boolean(Alias::new(col)).default(false))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in ["fed_auto_create", "fed_link_by_email"] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("tenants"))
                    .drop_column(Alias::new(col))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
