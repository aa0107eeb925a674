//! Federation: per-tenant upstream providers (Login with Amazon, OIDC) and the upstream
//! identities linked to members.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("upstream_providers"))
                .if_not_exists()
                .col(string_len(Alias::new("id"), 64).primary_key())
                .col(string_len(Alias::new("tenant_id"), 64))
                .col(string_len(Alias::new("slug"), 64))
                .col(string_len(Alias::new("kind"), 16))
                .col(string_len(Alias::new("display_name"), 200))
                .col(string_len(Alias::new("client_id"), 400))
                .col(blob_null(Alias::new("client_secret_enc")))
                .col(string_len(Alias::new("scopes"), 400))
                .col(string_len_null(Alias::new("region"), 8))
                .col(string_len_null(Alias::new("issuer"), 2000))
                .col(string_len_null(Alias::new("authorization_endpoint"), 2000))
                .col(string_len_null(Alias::new("token_endpoint"), 2000))
                .col(string_len_null(Alias::new("userinfo_endpoint"), 2000))
                .col(string_len_null(Alias::new("jwks_uri"), 2000))
                .col(boolean(Alias::new("auto_create")))
                .col(boolean(Alias::new("link_by_email")))
                .col(boolean(Alias::new("enabled")))
                .col(big_integer(Alias::new("created_at")))
                .foreign_key(
                    ForeignKey::create()
                        .from(Alias::new("upstream_providers"), Alias::new("tenant_id"))
                        .to(Alias::new("tenants"), Alias::new("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_upstream_providers_tenant_slug")
                .table(Alias::new("upstream_providers"))
                .col(Alias::new("tenant_id"))
                .col(Alias::new("slug"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("upstream_identities"))
                .if_not_exists()
                .col(string_len(Alias::new("id"), 64).primary_key())
                .col(string_len(Alias::new("tenant_id"), 64))
                .col(string_len(Alias::new("provider_id"), 64))
                .col(string_len(Alias::new("subject"), 400))
                .col(string_len(Alias::new("user_id"), 64))
                .col(string_len_null(Alias::new("email"), 320))
                .col(string_len_null(Alias::new("name"), 200))
                .col(big_integer(Alias::new("created_at")))
                .col(big_integer_null(Alias::new("last_used_at")))
                .foreign_key(
                    ForeignKey::create()
                        .from(Alias::new("upstream_identities"), Alias::new("provider_id"))
                        .to(Alias::new("upstream_providers"), Alias::new("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Alias::new("upstream_identities"), Alias::new("user_id"))
                        .to(Alias::new("users"), Alias::new("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // An upstream identity belongs to at most one member (providers are per tenant).
        m.create_index(
            Index::create()
                .name("ux_upstream_identities_provider_subject")
                .table(Alias::new("upstream_identities"))
                .col(Alias::new("provider_id"))
                .col(Alias::new("subject"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_upstream_identities_user")
                .table(Alias::new("upstream_identities"))
                .col(Alias::new("user_id"))
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["upstream_identities", "upstream_providers"] {
            m.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
