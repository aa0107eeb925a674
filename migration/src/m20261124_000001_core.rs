//! The core schema: tenants, users, credentials, clients, codes, grants, refresh-token
//! families, signing keys, browser sessions and the audit log.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id(name: &'static str) -> Alias {
    Alias::new(name)
}

/// A text primary key column (UUIDv7 or a hash).
fn pk_text(name: &'static str) -> ColumnDef {
    string_len(id(name), 128).primary_key().to_owned()
}

async fn create(
    manager: &SchemaManager<'_>,
    table: &'static str,
    cols: Vec<ColumnDef>,
) -> Result<(), DbErr> {
    let mut t = Table::create();
    t.table(id(table)).if_not_exists();
    for mut c in cols {
        t.col(&mut c);
    }
    manager.create_table(t).await
}

async fn index(
    manager: &SchemaManager<'_>,
    name: &'static str,
    table: &'static str,
    cols: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut i = Index::create();
    i.name(name).table(id(table)).if_not_exists();
    for c in cols {
        i.col(id(c));
    }
    if unique {
        i.unique();
    }
    manager.create_index(i).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create(
            m,
            "tenants",
            vec![
                pk_text("id"),
                string_len(id("slug"), 64),
                string_len(id("name"), 200),
                big_integer(id("access_token_ttl")),
                big_integer(id("refresh_token_ttl")),
                big_integer(id("refresh_grace")),
                big_integer(id("code_ttl")),
                boolean(id("passkeys_required")),
                big_integer(id("created_at")),
            ],
        )
        .await?;
        index(m, "ux_tenants_slug", "tenants", &["slug"], true).await?;

        create(
            m,
            "users",
            vec![
                pk_text("id"),
                string_len(id("tenant_id"), 64),
                string_len(id("username"), 128),
                string_len_null(id("display_name"), 200),
                string_len_null(id("email"), 320),
                string_len(id("role"), 16),
                boolean(id("disabled")),
                big_integer(id("created_at")),
            ],
        )
        .await?;
        index(
            m,
            "ux_users_tenant_username",
            "users",
            &["tenant_id", "username"],
            true,
        )
        .await?;

        create(
            m,
            "password_credentials",
            vec![
                pk_text("user_id"),
                string_len(id("phc"), 512),
                big_integer(id("updated_at")),
            ],
        )
        .await?;

        create(
            m,
            "clients",
            vec![
                pk_text("id"),
                string_len(id("tenant_id"), 64),
                string_len(id("client_id"), 128),
                string_len(id("name"), 200),
                string_len_null(id("secret_hash"), 128),
                boolean(id("public")),
                boolean(id("require_pkce")),
                string_len(id("scopes"), 2000),
                string_len(id("audience"), 500),
                big_integer_null(id("access_token_ttl")),
                big_integer_null(id("refresh_token_ttl")),
                string_len(id("access_token_alg"), 16),
                string_len(id("id_token_alg"), 16),
                string_len(id("auth_method"), 32),
                string_len(id("grant_types"), 200),
                boolean(id("disabled")),
                big_integer(id("created_at")),
            ],
        )
        .await?;
        index(
            m,
            "ux_clients_tenant_client_id",
            "clients",
            &["tenant_id", "client_id"],
            true,
        )
        .await?;

        create(
            m,
            "client_redirect_uris",
            vec![
                pk_text("id"),
                string_len(id("client_id"), 64),
                string_len(id("uri"), 2000),
            ],
        )
        .await?;
        index(
            m,
            "ix_client_redirect_uris_client",
            "client_redirect_uris",
            &["client_id"],
            false,
        )
        .await?;

        create(
            m,
            "grants",
            vec![
                pk_text("id"),
                string_len(id("tenant_id"), 64),
                string_len(id("user_id"), 64),
                string_len(id("client_id"), 64),
                string_len(id("scope"), 2000),
                big_integer(id("created_at")),
                big_integer(id("updated_at")),
                big_integer_null(id("last_refreshed_at")),
                big_integer_null(id("revoked_at")),
            ],
        )
        .await?;
        index(
            m,
            "ix_grants_user_client",
            "grants",
            &["user_id", "client_id"],
            false,
        )
        .await?;
        index(m, "ix_grants_client", "grants", &["client_id"], false).await?;

        create(
            m,
            "authorization_codes",
            vec![
                pk_text("id"),
                string_len(id("code_hash"), 128),
                string_len(id("tenant_id"), 64),
                string_len(id("client_id"), 64),
                string_len(id("user_id"), 64),
                string_len(id("grant_id"), 64),
                string_len(id("redirect_uri"), 2000),
                string_len(id("scope"), 2000),
                string_len_null(id("nonce"), 512),
                string_len_null(id("code_challenge"), 128),
                big_integer(id("auth_time")),
                string_len(id("amr"), 200),
                big_integer(id("created_at")),
                big_integer(id("expires_at")),
                big_integer_null(id("consumed_at")),
            ],
        )
        .await?;
        index(
            m,
            "ux_authorization_codes_hash",
            "authorization_codes",
            &["code_hash"],
            true,
        )
        .await?;
        index(
            m,
            "ix_authorization_codes_expires",
            "authorization_codes",
            &["expires_at"],
            false,
        )
        .await?;

        create(
            m,
            "refresh_families",
            vec![
                pk_text("id"),
                string_len(id("tenant_id"), 64),
                string_len(id("grant_id"), 64),
                string_len(id("client_id"), 64),
                string_len(id("user_id"), 64),
                string_len_null(id("code_id"), 64),
                string_len(id("scope"), 2000),
                big_integer(id("auth_time")),
                string_len(id("amr"), 200),
                big_integer(id("created_at")),
                big_integer_null(id("revoked_at")),
                string_len_null(id("revoked_reason"), 64),
            ],
        )
        .await?;
        index(
            m,
            "ix_refresh_families_grant",
            "refresh_families",
            &["grant_id"],
            false,
        )
        .await?;
        index(
            m,
            "ix_refresh_families_code",
            "refresh_families",
            &["code_id"],
            false,
        )
        .await?;

        create(
            m,
            "refresh_tokens",
            vec![
                pk_text("id"),
                string_len(id("family_id"), 64),
                string_len(id("token_hash"), 128),
                big_integer(id("created_at")),
                big_integer(id("expires_at")),
                big_integer_null(id("used_at")),
            ],
        )
        .await?;
        index(
            m,
            "ux_refresh_tokens_hash",
            "refresh_tokens",
            &["token_hash"],
            true,
        )
        .await?;
        index(
            m,
            "ix_refresh_tokens_family",
            "refresh_tokens",
            &["family_id"],
            false,
        )
        .await?;

        create(
            m,
            "revoked_access_tokens",
            vec![
                pk_text("jti"),
                string_len(id("tenant_id"), 64),
                big_integer(id("expires_at")),
            ],
        )
        .await?;

        create(
            m,
            "signing_keys",
            vec![
                pk_text("id"),
                string_len(id("tenant_id"), 64),
                string_len(id("kid"), 64),
                string_len(id("alg"), 16),
                string_len(id("state"), 16),
                var_binary(id("private_enc"), 8192),
                text(id("public_jwk")),
                big_integer(id("created_at")),
                big_integer_null(id("activated_at")),
                big_integer_null(id("retired_at")),
                big_integer_null(id("publish_until")),
            ],
        )
        .await?;
        index(m, "ux_signing_keys_kid", "signing_keys", &["kid"], true).await?;
        index(
            m,
            "ix_signing_keys_tenant",
            "signing_keys",
            &["tenant_id"],
            false,
        )
        .await?;

        create(
            m,
            "browser_sessions",
            vec![
                pk_text("id"),
                string_len_null(id("tenant_id"), 64),
                string_len_null(id("user_id"), 64),
                text(id("state")),
                big_integer(id("created_at")),
                big_integer(id("updated_at")),
                big_integer(id("expires_at")),
            ],
        )
        .await?;
        index(
            m,
            "ix_browser_sessions_user",
            "browser_sessions",
            &["user_id"],
            false,
        )
        .await?;
        index(
            m,
            "ix_browser_sessions_expires",
            "browser_sessions",
            &["expires_at"],
            false,
        )
        .await?;

        create(
            m,
            "audit_events",
            vec![
                pk_text("id"),
                string_len_null(id("tenant_id"), 64),
                big_integer(id("at")),
                string_len(id("kind"), 64),
                string_len(id("outcome"), 16),
                string_len_null(id("actor"), 200),
                string_len_null(id("user_id"), 64),
                string_len_null(id("client_id"), 128),
                string_len_null(id("ip"), 64),
                string_len_null(id("user_agent"), 512),
                text_null(id("detail")),
            ],
        )
        .await?;
        index(
            m,
            "ix_audit_events_tenant_at",
            "audit_events",
            &["tenant_id", "at"],
            false,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "audit_events",
            "browser_sessions",
            "signing_keys",
            "revoked_access_tokens",
            "refresh_tokens",
            "refresh_families",
            "authorization_codes",
            "grants",
            "client_redirect_uris",
            "clients",
            "password_credentials",
            "users",
            "tenants",
        ] {
            m.drop_table(Table::drop().table(id(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
