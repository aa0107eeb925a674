//! Queries for the admin UI. Every one that reads or changes an object of a tenant filters by
//! that tenant: an id from another tenant matches nothing.
use entity::{
    audit_event, browser_session, client, client_redirect_uri, grant, password_credential,
    refresh_family, server_setting, setup_link, tenant, user,
};
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::{SelectUnique, Store, new_id};
use crate::error::Result;

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant_id: Option<String>,
    pub user_id: Option<String>,
    pub client: Option<String>,
    pub kind: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
pub struct DayCount {
    pub day: i64,
    pub kind: String,
    pub outcome: String,
    pub n: i64,
}

/// What a member search looks for: the query lowercased (Unicode), at most 100 characters.
fn search_term(s: &str) -> String {
    s.trim().to_lowercase().chars().take(100).collect()
}

/// A `LIKE` pattern that matches (at least) every value whose Unicode lowercase contains
/// `term`, compared against SQL `lower(value)`: ASCII characters stand for themselves, every
/// other character (which SQL `lower()` may not fold: SQLite folds only ASCII) and the
/// pattern's own `%`, `_` and `\` become `%`. `i` and `k` become `_`: each is also the
/// lowercase of one character outside ASCII (`İ`, U+0130, and the Kelvin sign, U+212A; there
/// are no others). The caller keeps only the exact matches ([`matches_search`]).
fn like_superset(term: &str) -> String {
    let mut p = String::from("%");
    for c in term.chars() {
        if matches!(c, 'i' | 'k') {
            p.push('_');
        } else if c.is_ascii() && !matches!(c, '%' | '_' | '\\') {
            p.push(c);
        } else if !p.ends_with('%') {
            p.push('%');
        }
    }
    if !p.ends_with('%') {
        p.push('%');
    }
    p
}

/// Whether a member's username, display name or e-mail contains `term` (lowercased), with
/// Unicode lowercasing on both sides.
fn matches_search(u: &user::Model, term: &str) -> bool {
    [Some(&u.username), u.display_name.as_ref(), u.email.as_ref()]
        .into_iter()
        .flatten()
        .any(|v| v.to_lowercase().contains(term))
}

impl Store {
    // Setup links and server settings.

    pub async fn operator_count(&self) -> Result<u64> {
        Ok(user::Entity::find()
            .filter(user::Column::Role.eq("operator"))
            .count(&self.db)
            .await?)
    }

    /// Replace every unused setup link with this one.
    pub async fn replace_setup_link(&self, l: setup_link::Model) -> Result<()> {
        let txn = self.write_txn().await?;
        setup_link::Entity::delete_many()
            .filter(setup_link::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        setup_link::Entity::insert(setup_link::ActiveModel {
            id: Set(l.id),
            token_hash: Set(l.token_hash),
            created_at: Set(l.created_at),
            expires_at: Set(l.expires_at),
            used_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn setup_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<setup_link::Model>> {
        Ok(setup_link::Entity::find()
            .filter(setup_link::Column::TokenHash.eq(token_hash))
            .filter(setup_link::Column::UsedAt.is_null())
            .filter(setup_link::Column::ExpiresAt.gt(now))
            .unique(&self.db)
            .await?)
    }

    /// Use a setup link and create the operator (and the tenant, if new) in one transaction:
    /// false when the link was used meanwhile.
    pub async fn consume_setup_link(
        &self,
        token_hash: &str,
        now: i64,
        new_tenant: Option<tenant::Model>,
        operator: user::Model,
        phc: String,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let n = setup_link::Entity::update_many()
            .col_expr(setup_link::Column::UsedAt, Expr::value(now))
            .filter(setup_link::Column::TokenHash.eq(token_hash))
            .filter(setup_link::Column::UsedAt.is_null())
            .filter(setup_link::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?
            .rows_affected;
        // A setup link makes the first operator only: once one exists (made on the command
        // line, or through another link meanwhile), an unused link is worth nothing.
        let operators = user::Entity::find()
            .filter(user::Column::Role.eq("operator"))
            .count(&txn)
            .await?;
        if n != 1 || operators > 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        if let Some(t) = new_tenant {
            tenant::Entity::insert(tenant::ActiveModel {
                id: Set(t.id),
                slug: Set(t.slug),
                name: Set(t.name),
                access_token_ttl: Set(t.access_token_ttl),
                refresh_token_ttl: Set(t.refresh_token_ttl),
                refresh_grace: Set(t.refresh_grace),
                code_ttl: Set(t.code_ttl),
                passkeys_required: Set(t.passkeys_required),
                fed_auto_create: Set(t.fed_auto_create),
                fed_link_by_email: Set(t.fed_link_by_email),
                created_at: Set(t.created_at),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        let uid = operator.id.clone();
        user::Entity::insert(user::ActiveModel {
            id: Set(operator.id),
            tenant_id: Set(operator.tenant_id),
            username: Set(operator.username),
            display_name: Set(operator.display_name),
            email: Set(operator.email),
            role: Set(operator.role),
            disabled: Set(false),
            created_at: Set(operator.created_at),
        })
        .exec_without_returning(&txn)
        .await?;
        password_credential::Entity::insert(password_credential::ActiveModel {
            user_id: Set(uid),
            phc: Set(phc),
            updated_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        self.cache.tenants_changed();
        Ok(true)
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        if self.cache.enabled
            && let Some(v) = self.cache.settings.get(key)
        {
            return Ok(Some(v));
        }
        let seen = self.cache.settings.generation();
        let v = server_setting::Entity::find_by_id(key.to_string())
            .unique(&self.db)
            .await?
            .map(|s| s.value);
        if self.cache.enabled
            && let Some(v) = &v
        {
            self.cache.settings.put(key.to_string(), v.clone(), seen);
        }
        Ok(v)
    }

    pub async fn set_setting(&self, key: &str, value: &str, now: i64) -> Result<()> {
        server_setting::Entity::insert(server_setting::ActiveModel {
            key: Set(key.to_string()),
            value: Set(value.to_string()),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(server_setting::Column::Key)
                .update_columns([
                    server_setting::Column::Value,
                    server_setting::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.w())
        .await?;
        self.cache.settings_changed();
        Ok(())
    }

    // Tenants.

    pub async fn tenant_by_id(&self, id: &str) -> Result<Option<tenant::Model>> {
        Ok(tenant::Entity::find_by_id(id.to_string())
            .unique(&self.db)
            .await?)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn update_tenant_settings(
        &self,
        id: &str,
        name: &str,
        access_ttl: i64,
        refresh_ttl: i64,
        grace: i64,
        passkeys_required: bool,
        fed_policy: (bool, bool),
    ) -> Result<()> {
        tenant::Entity::update_many()
            .col_expr(tenant::Column::Name, Expr::value(name))
            .col_expr(tenant::Column::AccessTokenTtl, Expr::value(access_ttl))
            .col_expr(tenant::Column::RefreshTokenTtl, Expr::value(refresh_ttl))
            .col_expr(tenant::Column::RefreshGrace, Expr::value(grace))
            .col_expr(
                tenant::Column::PasskeysRequired,
                Expr::value(passkeys_required),
            )
            .col_expr(tenant::Column::FedAutoCreate, Expr::value(fed_policy.0))
            .col_expr(tenant::Column::FedLinkByEmail, Expr::value(fed_policy.1))
            .filter(tenant::Column::Id.eq(id))
            .exec(&self.w())
            .await?;
        self.cache.tenants_changed();
        Ok(())
    }

    // Users.

    /// A page of a tenant's members (by username), and how many there are; with a search,
    /// those whose username, display name or e-mail contains it, case-insensitively in any
    /// script. SQL narrows the candidates (a superset: its `lower()` folds only ASCII on
    /// SQLite); the exact match, the count and the page are made here.
    pub async fn search_users(
        &self,
        tenant_id: &str,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<user::Model>, u64)> {
        let q = user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant_id))
            .order_by_asc(user::Column::Username);
        let term = search_term(search);
        if term.is_empty() {
            let total = q.clone().count(&self.db).await?;
            let items = q.offset(offset).limit(limit).all(&self.db).await?;
            return Ok((items, total));
        }
        let pat = like_superset(&term);
        let lower = |c: user::Column| Expr::expr(Func::lower(Expr::col(c)));
        let found: Vec<user::Model> = q
            .filter(
                Condition::any()
                    .add(lower(user::Column::Username).like(pat.clone()))
                    .add(lower(user::Column::DisplayName).like(pat.clone()))
                    .add(lower(user::Column::Email).like(pat)),
            )
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|u| matches_search(u, &term))
            .collect();
        let total = found.len() as u64;
        let items = found
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((items, total))
    }

    pub async fn users_with_password(&self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(password_credential::Entity::find()
            .filter(password_credential::Column::UserId.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|p| p.user_id)
            .collect())
    }

    pub async fn set_user_disabled(
        &self,
        tenant_id: &str,
        id: &str,
        disabled: bool,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let n = user::Entity::update_many()
            .col_expr(user::Column::Disabled, Expr::value(disabled))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::TenantId.eq(tenant_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if n == 1 && disabled {
            delete_user_sessions(&txn, tenant_id, id).await?;
        }
        txn.commit().await?;
        Ok(n == 1)
    }

    pub async fn set_user_role(&self, tenant_id: &str, id: &str, role: &str) -> Result<bool> {
        let n = user::Entity::update_many()
            .col_expr(user::Column::Role, Expr::value(role))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::TenantId.eq(tenant_id))
            .exec(&self.w())
            .await?
            .rows_affected;
        Ok(n == 1)
    }

    /// Set a member's password hash (the member must belong to the tenant). With `end_sessions` (an admin's reset, perhaps because
    /// the password leaked) the member's browser sessions end in the same transaction: no
    /// browser stays signed in on the strength of the old password.
    pub async fn set_password(
        &self,
        tenant_id: &str,
        id: &str,
        phc: String,
        now: i64,
        end_sessions: bool,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let exists = user::Entity::find()
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::TenantId.eq(tenant_id))
            .unique(&txn)
            .await?
            .is_some();
        if exists {
            password_credential::Entity::insert(password_credential::ActiveModel {
                user_id: Set(id.to_string()),
                phc: Set(phc),
                updated_at: Set(now),
            })
            .on_conflict(
                OnConflict::column(password_credential::Column::UserId)
                    .update_columns([
                        password_credential::Column::Phc,
                        password_credential::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            if end_sessions {
                delete_user_sessions(&txn, tenant_id, id).await?;
            }
        }
        txn.commit().await?;
        Ok(exists)
    }

    pub async fn user_count(&self, tenant_id: &str) -> Result<u64> {
        Ok(user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant_id))
            .count(&self.db)
            .await?)
    }

    // Sessions.

    pub async fn sessions_of_tenant(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        session_id: Option<&str>,
        now: i64,
    ) -> Result<Vec<browser_session::Model>> {
        let mut q = browser_session::Entity::find()
            .filter(browser_session::Column::TenantId.eq(tenant_id))
            .filter(browser_session::Column::UserId.is_not_null())
            .filter(browser_session::Column::ExpiresAt.gt(now));
        if let Some(u) = user_id {
            q = q.filter(browser_session::Column::UserId.eq(u));
        }
        if let Some(id) = session_id {
            q = q.filter(browser_session::Column::Id.eq(id));
        }
        Ok(q.order_by_desc(browser_session::Column::UpdatedAt)
            .limit(500)
            .all(&self.db)
            .await?)
    }

    pub async fn end_tenant_session(&self, tenant_id: &str, id_hash: &str) -> Result<bool> {
        let n = browser_session::Entity::delete_many()
            .filter(browser_session::Column::Id.eq(id_hash))
            .filter(browser_session::Column::TenantId.eq(tenant_id))
            .exec(&self.w())
            .await?
            .rows_affected;
        Ok(n == 1)
    }

    pub async fn end_user_sessions(&self, tenant_id: &str, user_id: &str) -> Result<u64> {
        delete_user_sessions(&self.w(), tenant_id, user_id).await
    }

    // Clients.

    pub async fn redirect_uris_of(&self, client_pk: &str) -> Result<Vec<String>> {
        Ok(client_redirect_uri::Entity::find()
            .filter(client_redirect_uri::Column::ClientId.eq(client_pk))
            .order_by_asc(client_redirect_uri::Column::Uri)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| u.uri)
            .collect())
    }

    /// Change a client's settings and replace its redirect URIs, in one transaction.
    pub async fn update_client(
        &self,
        c: client::Model,
        redirect_uris: Vec<String>,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let n = client::Entity::update_many()
            .col_expr(client::Column::Name, Expr::value(c.name))
            .col_expr(client::Column::Scopes, Expr::value(c.scopes))
            .col_expr(
                client::Column::AccessTokenTtl,
                Expr::value(c.access_token_ttl),
            )
            .col_expr(
                client::Column::RefreshTokenTtl,
                Expr::value(c.refresh_token_ttl),
            )
            .col_expr(client::Column::RequirePkce, Expr::value(c.require_pkce))
            .col_expr(client::Column::AuthMethod, Expr::value(c.auth_method))
            .col_expr(client::Column::Disabled, Expr::value(c.disabled))
            .filter(client::Column::Id.eq(c.id.clone()))
            .filter(client::Column::TenantId.eq(c.tenant_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if n == 1 {
            client_redirect_uri::Entity::delete_many()
                .filter(client_redirect_uri::Column::ClientId.eq(c.id.clone()))
                .exec(&txn)
                .await?;
            for uri in redirect_uris {
                client_redirect_uri::Entity::insert(client_redirect_uri::ActiveModel {
                    id: Set(new_id()),
                    client_id: Set(c.id.clone()),
                    uri: Set(uri),
                })
                .exec_without_returning(&txn)
                .await?;
            }
        }
        txn.commit().await?;
        self.cache.clients_changed();
        Ok(n == 1)
    }

    pub async fn set_client_secret(
        &self,
        tenant_id: &str,
        pk: &str,
        secret_hash: String,
    ) -> Result<bool> {
        let n = client::Entity::update_many()
            .col_expr(client::Column::SecretHash, Expr::value(secret_hash))
            .filter(client::Column::Id.eq(pk))
            .filter(client::Column::TenantId.eq(tenant_id))
            .filter(client::Column::Public.eq(false))
            .exec(&self.w())
            .await?
            .rows_affected;
        self.cache.clients_changed();
        Ok(n == 1)
    }

    pub async fn client_count(&self, tenant_id: &str) -> Result<u64> {
        Ok(client::Entity::find()
            .filter(client::Column::TenantId.eq(tenant_id))
            .count(&self.db)
            .await?)
    }

    // Grants.

    pub async fn active_grants(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        client_pk: Option<&str>,
        grant_id: Option<&str>,
    ) -> Result<Vec<grant::Model>> {
        let mut q = grant::Entity::find()
            .filter(grant::Column::TenantId.eq(tenant_id))
            .filter(grant::Column::RevokedAt.is_null());
        if let Some(g) = grant_id {
            q = q.filter(grant::Column::Id.eq(g));
        }
        if let Some(u) = user_id {
            q = q.filter(grant::Column::UserId.eq(u));
        }
        if let Some(c) = client_pk {
            q = q.filter(grant::Column::ClientId.eq(c));
        }
        Ok(q.order_by_desc(grant::Column::CreatedAt)
            .limit(1000)
            .all(&self.db)
            .await?)
    }

    pub async fn active_grant_count(&self, tenant_id: &str) -> Result<u64> {
        Ok(grant::Entity::find()
            .filter(grant::Column::TenantId.eq(tenant_id))
            .filter(grant::Column::RevokedAt.is_null())
            .count(&self.db)
            .await?)
    }

    /// Revoke every active grant of a user or a client, and their refresh families.
    pub async fn revoke_grants_where(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        client_pk: Option<&str>,
        now: i64,
    ) -> Result<u64> {
        let txn = self.write_txn().await?;
        let mut ids = grant::Entity::find()
            .select_only()
            .column(grant::Column::Id)
            .filter(grant::Column::TenantId.eq(tenant_id))
            .filter(grant::Column::RevokedAt.is_null());
        if let Some(u) = user_id {
            ids = ids.filter(grant::Column::UserId.eq(u));
        }
        if let Some(c) = client_pk {
            ids = ids.filter(grant::Column::ClientId.eq(c));
        }
        let ids: Vec<String> = ids.into_tuple().all(&txn).await?;
        if !ids.is_empty() {
            grant::Entity::update_many()
                .col_expr(grant::Column::RevokedAt, Expr::value(now))
                .filter(grant::Column::Id.is_in(ids.clone()))
                .filter(grant::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
            refresh_family::Entity::update_many()
                .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
                .col_expr(
                    refresh_family::Column::RevokedReason,
                    Expr::value("grant_revoked"),
                )
                .filter(refresh_family::Column::GrantId.is_in(ids.clone()))
                .filter(refresh_family::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(ids.len() as u64)
    }

    // Audit log.

    fn audit_condition(q: &AuditQuery) -> Condition {
        let mut c = Condition::all();
        if let Some(t) = &q.tenant_id {
            c = c.add(audit_event::Column::TenantId.eq(t.clone()));
        }
        if let Some(u) = &q.user_id {
            c = c.add(audit_event::Column::UserId.eq(u.clone()));
        }
        if let Some(cl) = &q.client {
            c = c.add(audit_event::Column::ClientId.eq(cl.clone()));
        }
        if let Some(k) = &q.kind {
            c = c.add(audit_event::Column::Kind.eq(k.clone()));
        }
        if let Some(f) = q.from {
            c = c.add(audit_event::Column::At.gte(f));
        }
        if let Some(t) = q.to {
            c = c.add(audit_event::Column::At.lte(t));
        }
        c
    }

    pub async fn audit_page(
        &self,
        q: &AuditQuery,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<audit_event::Model>, u64)> {
        let base = audit_event::Entity::find().filter(Self::audit_condition(q));
        let total = base.clone().count(&self.db).await?;
        let items = base
            .order_by_desc(audit_event::Column::At)
            .order_by_desc(audit_event::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok((items, total))
    }

    pub async fn audit_kinds(&self) -> Result<Vec<String>> {
        Ok(audit_event::Entity::find()
            .select_only()
            .column(audit_event::Column::Kind)
            .distinct()
            .order_by_asc(audit_event::Column::Kind)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Events per day, kind and outcome since `since` (for the dashboard).
    pub async fn audit_per_day(
        &self,
        tenant_id: Option<&str>,
        since: i64,
        kinds: &[&str],
    ) -> Result<Vec<DayCount>> {
        let mut q = audit_event::Entity::find()
            .select_only()
            .column_as(Expr::col(audit_event::Column::At).div(86_400), "day")
            .column(audit_event::Column::Kind)
            .column(audit_event::Column::Outcome)
            .column_as(Expr::col(audit_event::Column::Id).count(), "n")
            .filter(audit_event::Column::At.gte(since))
            .filter(audit_event::Column::Kind.is_in(kinds.iter().map(|k| k.to_string())));
        if let Some(t) = tenant_id {
            q = q.filter(audit_event::Column::TenantId.eq(t));
        }
        // Group by the output column: PostgreSQL does not match `at / $1` to `at / $2`.
        Ok(q.group_by(Expr::col(sea_orm::sea_query::Alias::new("day")))
            .group_by(audit_event::Column::Kind)
            .group_by(audit_event::Column::Outcome)
            .into_model::<DayCount>()
            .all(&self.db)
            .await?)
    }
}

/// End every browser session of a member (on `db`: the store, or a transaction that also
/// disables the member or changes their password). Returns how many ended.
async fn delete_user_sessions<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    user_id: &str,
) -> Result<u64> {
    Ok(browser_session::Entity::delete_many()
        .filter(browser_session::Column::TenantId.eq(tenant_id))
        .filter(browser_session::Column::UserId.eq(user_id))
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite's `lower()` does: ASCII only.
    fn sqlite_lower(s: &str) -> String {
        s.chars().map(|c| c.to_ascii_lowercase()).collect()
    }

    /// SQL `LIKE` without an escape character, `%` and `_` over characters.
    fn like(value: &[char], pattern: &[char]) -> bool {
        match pattern.split_first() {
            None => value.is_empty(),
            Some(('%', rest)) => (0..=value.len()).any(|i| like(&value[i..], rest)),
            Some(('_', rest)) => !value.is_empty() && like(&value[1..], rest),
            Some((c, rest)) => value.first() == Some(c) && like(&value[1..], rest),
        }
    }

    #[test]
    fn the_sql_pattern_finds_every_exact_match() {
        let values = [
            "Émile Özdemir",
            "İpek",
            "\u{212A}elvin",
            "user_0 100%",
            "back\\slash",
            "ÆSIR",
        ];
        let terms = [
            "özdemir", "ÉMILE", "zdem", "İPEK", "ipek", "kelvin", "user_0", "0 100%", "\\s", "æs",
            "x",
        ];
        for v in values {
            let lowered: Vec<char> = sqlite_lower(v).chars().collect();
            for t in terms {
                let term = search_term(t);
                let exact = v.to_lowercase().contains(&term);
                let pattern: Vec<char> = like_superset(&term).chars().collect();
                if exact {
                    assert!(like(&lowered, &pattern), "{v:?} must pass {t:?}");
                }
            }
        }
        // Wildcards in a search are text: the exact match decides.
        assert_eq!(like_superset("user_0"), "%user%0%");
        assert_eq!(like_superset("kelvin"), "%_elv_n%");
        assert_eq!(search_term("  ÉMILE "), "émile");
    }
}
