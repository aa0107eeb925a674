//! Passkeys (WebAuthn credentials), server-side ceremony state and one-time enrollment links.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id(name: &'static str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("passkeys"))
                .if_not_exists()
                .col(string_len(id("id"), 64).primary_key())
                .col(string_len(id("tenant_id"), 64))
                .col(string_len(id("user_id"), 64))
                .col(string_len(id("cred_id"), 1400))
                .col(string_len(id("name"), 100))
                .col(text(id("passkey")))
                .col(big_integer(id("sign_count")))
                .col(boolean(id("backup_eligible")))
                .col(boolean(id("backup_state")))
                .col(big_integer(id("created_at")))
                .col(big_integer_null(id("last_used_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_passkeys_cred")
                .table(id("passkeys"))
                .col(id("cred_id"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_passkeys_user")
                .table(id("passkeys"))
                .col(id("user_id"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("webauthn_ceremonies"))
                .if_not_exists()
                .col(string_len(id("id"), 64).primary_key())
                .col(string_len(id("tenant_id"), 64))
                .col(string_len(id("kind"), 16))
                .col(string_len_null(id("user_id"), 64))
                .col(text(id("state")))
                .col(big_integer(id("expires_at")))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("enrollment_links"))
                .if_not_exists()
                .col(string_len(id("id"), 64).primary_key())
                .col(string_len(id("token_hash"), 128))
                .col(string_len(id("tenant_id"), 64))
                .col(string_len(id("user_id"), 64))
                .col(big_integer(id("created_at")))
                .col(big_integer(id("expires_at")))
                .col(big_integer_null(id("used_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_enrollment_links_hash")
                .table(id("enrollment_links"))
                .col(id("token_hash"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["enrollment_links", "webauthn_ceremonies", "passkeys"] {
            m.drop_table(Table::drop().table(id(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
