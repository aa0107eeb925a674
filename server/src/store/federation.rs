//! Upstream providers and linked identities, always within one tenant.
use entity::{upstream_identity, upstream_provider, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::audit::insert_audit;
use super::users::{Removal, Removed, user_active};
use super::{SelectUnique, Store, WriteTxn};
use crate::audit::AuditEvent;
use crate::error::Result;

impl Store {
    /// `false` (nothing written): the slug is taken in the tenant (by a provider added since
    /// the caller looked).
    pub async fn insert_provider(&self, p: upstream_provider::Model) -> Result<bool> {
        match upstream_provider::Entity::insert(upstream_provider::ActiveModel {
            id: Set(p.id),
            tenant_id: Set(p.tenant_id),
            slug: Set(p.slug),
            kind: Set(p.kind),
            display_name: Set(p.display_name),
            client_id: Set(p.client_id),
            client_secret_enc: Set(p.client_secret_enc),
            scopes: Set(p.scopes),
            region: Set(p.region),
            issuer: Set(p.issuer),
            authorization_endpoint: Set(p.authorization_endpoint),
            token_endpoint: Set(p.token_endpoint),
            userinfo_endpoint: Set(p.userinfo_endpoint),
            jwks_uri: Set(p.jwks_uri),
            auto_create: Set(p.auto_create),
            link_by_email: Set(p.link_by_email),
            enabled: Set(p.enabled),
            created_at: Set(p.created_at),
        })
        .exec_without_returning(&self.w())
        .await
        {
            Err(e) if super::unique_violation(&e) => return Ok(false),
            r => r?,
        };
        Ok(true)
    }

    /// Write a provider's changeable settings (not its tenant, slug, kind or creation time)
    /// with the audit event of the change, in one transaction; with `unlink`, the identities
    /// linked through it go in the same transaction (the audit event learns how many).
    /// Returns how many links went; `None` when the provider is gone, or its client ID or
    /// issuer is no longer `old`'s (a concurrent change: the decision to unlink was made on
    /// `old`).
    pub async fn update_provider(
        &self,
        old: &upstream_provider::Model,
        p: &upstream_provider::Model,
        unlink: bool,
        audit: AuditEvent,
        now: i64,
    ) -> Result<Option<u64>> {
        let txn = self.write_txn().await?;
        let updated = upstream_provider::Entity::update_many()
            .col_expr(
                upstream_provider::Column::DisplayName,
                Expr::value(p.display_name.clone()),
            )
            .col_expr(
                upstream_provider::Column::ClientId,
                Expr::value(p.client_id.clone()),
            )
            .col_expr(
                upstream_provider::Column::ClientSecretEnc,
                Expr::value(p.client_secret_enc.clone()),
            )
            .col_expr(
                upstream_provider::Column::Scopes,
                Expr::value(p.scopes.clone()),
            )
            .col_expr(
                upstream_provider::Column::Region,
                Expr::value(p.region.clone()),
            )
            .col_expr(
                upstream_provider::Column::Issuer,
                Expr::value(p.issuer.clone()),
            )
            .col_expr(
                upstream_provider::Column::AuthorizationEndpoint,
                Expr::value(p.authorization_endpoint.clone()),
            )
            .col_expr(
                upstream_provider::Column::TokenEndpoint,
                Expr::value(p.token_endpoint.clone()),
            )
            .col_expr(
                upstream_provider::Column::UserinfoEndpoint,
                Expr::value(p.userinfo_endpoint.clone()),
            )
            .col_expr(
                upstream_provider::Column::JwksUri,
                Expr::value(p.jwks_uri.clone()),
            )
            .col_expr(
                upstream_provider::Column::AutoCreate,
                Expr::value(p.auto_create),
            )
            .col_expr(
                upstream_provider::Column::LinkByEmail,
                Expr::value(p.link_by_email),
            )
            .col_expr(upstream_provider::Column::Enabled, Expr::value(p.enabled))
            .filter(upstream_provider::Column::Id.eq(p.id.clone()))
            .filter(upstream_provider::Column::TenantId.eq(p.tenant_id.clone()))
            .filter(upstream_provider::Column::ClientId.eq(old.client_id.clone()))
            .filter(match &old.issuer {
                Some(iss) => upstream_provider::Column::Issuer.eq(iss.clone()),
                None => upstream_provider::Column::Issuer.is_null(),
            })
            .exec(&txn)
            .await?
            .rows_affected;
        if updated == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let mut links = 0;
        let mut audit = audit;
        if unlink {
            links = upstream_identity::Entity::delete_many()
                .filter(upstream_identity::Column::TenantId.eq(p.tenant_id.clone()))
                .filter(upstream_identity::Column::ProviderId.eq(p.id.clone()))
                .exec(&txn)
                .await?
                .rows_affected;
            add_detail(&mut audit, "links_removed", links);
        }
        insert_audit(&txn, audit, now).await?;
        txn.commit().await?;
        Ok(Some(links))
    }

    /// Delete a provider of this tenant and the identities linked through it, with the audit
    /// event (which learns how many links went), in one transaction. `None` when it is gone.
    pub async fn remove_provider(
        &self,
        tenant_id: &str,
        id: &str,
        audit: AuditEvent,
        now: i64,
    ) -> Result<Option<u64>> {
        let txn = self.write_txn().await?;
        // The provider's row first, as a link (`provider_unchanged`) and a change take it:
        // the same order everywhere, so a link under way and this removal cannot deadlock.
        if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
            upstream_provider::Entity::find_by_id(id.to_string())
                .filter(upstream_provider::Column::TenantId.eq(tenant_id))
                .lock_exclusive()
                .one(&txn)
                .await?;
        }
        let links = upstream_identity::Entity::delete_many()
            .filter(upstream_identity::Column::TenantId.eq(tenant_id))
            .filter(upstream_identity::Column::ProviderId.eq(id))
            .exec(&txn)
            .await?
            .rows_affected;
        let gone = upstream_provider::Entity::delete_many()
            .filter(upstream_provider::Column::Id.eq(id))
            .filter(upstream_provider::Column::TenantId.eq(tenant_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if gone == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let mut audit = audit;
        add_detail(&mut audit, "links_removed", links);
        insert_audit(&txn, audit, now).await?;
        txn.commit().await?;
        Ok(Some(links))
    }

    pub async fn providers_of_tenant(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<upstream_provider::Model>> {
        Ok(upstream_provider::Entity::find()
            .filter(upstream_provider::Column::TenantId.eq(tenant_id))
            .order_by_asc(upstream_provider::Column::DisplayName)
            .all(&self.db)
            .await?)
    }

    pub async fn provider_by_slug(
        &self,
        tenant_id: &str,
        slug: &str,
    ) -> Result<Option<upstream_provider::Model>> {
        Ok(upstream_provider::Entity::find()
            .filter(upstream_provider::Column::TenantId.eq(tenant_id))
            .filter(upstream_provider::Column::Slug.eq(slug))
            .unique(&self.db)
            .await?)
    }

    pub async fn provider_by_id(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<upstream_provider::Model>> {
        Ok(upstream_provider::Entity::find_by_id(id.to_string())
            .filter(upstream_provider::Column::TenantId.eq(tenant_id))
            .unique(&self.db)
            .await?)
    }

    pub async fn identity_by_subject(
        &self,
        tenant_id: &str,
        provider_id: &str,
        subject: &str,
    ) -> Result<Option<upstream_identity::Model>> {
        Ok(upstream_identity::Entity::find()
            .filter(upstream_identity::Column::TenantId.eq(tenant_id))
            .filter(upstream_identity::Column::ProviderId.eq(provider_id))
            .filter(upstream_identity::Column::Subject.eq(subject))
            .unique(&self.db)
            .await?)
    }

    pub async fn identities_of_user(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<Vec<upstream_identity::Model>> {
        Ok(upstream_identity::Entity::find()
            .filter(upstream_identity::Column::TenantId.eq(tenant_id))
            .filter(upstream_identity::Column::UserId.eq(user_id))
            .order_by_asc(upstream_identity::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// Create a member and link an upstream identity to it, with the audit events, in one
    /// transaction: a member created on a first upstream sign-in never exists without its
    /// link (two callbacks of one identity at once create one member, not an orphan).
    ///
    /// `provider` is the provider as the sign-in used it: when its client ID or issuer has
    /// changed since, nothing is written (see [`provider_unchanged`]).
    pub async fn insert_user_with_identity(
        &self,
        u: user::Model,
        i: upstream_identity::Model,
        provider: &upstream_provider::Model,
        audit: Vec<AuditEvent>,
        now: i64,
    ) -> Result<NewMember> {
        let txn = self.write_txn().await?;
        if !provider_unchanged(&txn, provider).await? {
            txn.rollback().await?;
            return Err(provider_changed());
        }
        let inserted = user::Entity::insert(user_active(u))
            .exec_without_returning(&txn)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if super::unique_violation(&e) => {
                txn.rollback().await?;
                return Ok(NewMember::UsernameTaken);
            }
            Err(e) => return Err(e.into()),
        }
        let linked = upstream_identity::Entity::insert(identity_active(i))
            .exec_without_returning(&txn)
            .await;
        match linked {
            Ok(_) => {}
            Err(e) if super::unique_violation(&e) => {
                txn.rollback().await?;
                return Ok(NewMember::IdentityTaken);
            }
            Err(e) => return Err(e.into()),
        }
        for ev in audit {
            insert_audit(&txn, ev, now).await?;
        }
        txn.commit().await?;
        Ok(NewMember::Created)
    }

    /// Link an identity; false when it is already linked (to anyone). `provider` is the
    /// provider as the sign-in (or the admin) used it: when its client ID or issuer has
    /// changed since, nothing is written (see [`provider_unchanged`]).
    pub async fn insert_identity(
        &self,
        i: upstream_identity::Model,
        provider: &upstream_provider::Model,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        if !provider_unchanged(&txn, provider).await? {
            txn.rollback().await?;
            return Err(provider_changed());
        }
        let taken = upstream_identity::Entity::find()
            .filter(upstream_identity::Column::ProviderId.eq(i.provider_id.clone()))
            .filter(upstream_identity::Column::Subject.eq(i.subject.clone()))
            .unique(&txn)
            .await?
            .is_some();
        if taken {
            txn.rollback().await?;
            return Ok(false);
        }
        let inserted = upstream_identity::Entity::insert(identity_active(i))
            .exec_without_returning(&txn)
            .await;
        match inserted {
            Ok(_) => {}
            // A concurrent link of the same identity committed first (PostgreSQL does not
            // serialize the check above): it is linked already.
            Err(e) if super::unique_violation(&e) => {
                txn.rollback().await?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        txn.commit().await?;
        Ok(true)
    }

    pub async fn touch_identity(&self, id: &str, now: i64) -> Result<()> {
        upstream_identity::Entity::update_many()
            .col_expr(upstream_identity::Column::LastUsedAt, Expr::value(now))
            .filter(upstream_identity::Column::Id.eq(id))
            .exec(&self.w())
            .await?;
        Ok(())
    }

    /// Unlink (only an identity of this user in this tenant), unless `removal` refuses to
    /// leave the member without a way to sign in (checked in the same transaction).
    pub async fn delete_identity(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        removal: Removal,
    ) -> Result<Removed> {
        self.remove_way_in(tenant_id, user_id, removal, async |txn| {
            Ok(upstream_identity::Entity::delete_many()
                .filter(upstream_identity::Column::Id.eq(id))
                .filter(upstream_identity::Column::TenantId.eq(tenant_id))
                .filter(upstream_identity::Column::UserId.eq(user_id))
                .exec(txn)
                .await?
                .rows_affected)
        })
        .await
    }

    /// The members of a tenant with this e-mail (case-insensitive, Unicode-aware). Compared
    /// here rather than with SQL `lower()`, which folds only ASCII on SQLite (and follows the
    /// collation on PostgreSQL): `Ä@x` must match `ä@x` on both. A household's members with an
    /// e-mail are few, and this runs only at an upstream sign-in that is not linked yet.
    pub async fn users_by_email(&self, tenant_id: &str, email: &str) -> Result<Vec<user::Model>> {
        let wanted = email.to_lowercase();
        Ok(user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant_id))
            .filter(user::Column::Email.is_not_null())
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|u| u.email.as_deref().map(str::to_lowercase).as_deref() == Some(&wanted))
            .collect())
    }
}

/// Within a write transaction that links an identity: whether the provider still has the
/// client ID and issuer the sign-in used. A change of either unlinks everyone linked through
/// the provider (`update_provider`), so a link made from a sign-in that began before the
/// change must not be written after it. On PostgreSQL the provider's row is locked for share:
/// a change waits for this link (and then removes it), and this link for a change (and then
/// finds it). SQLite's write transactions take turns.
async fn provider_unchanged(txn: &WriteTxn, p: &upstream_provider::Model) -> Result<bool> {
    let mut q = upstream_provider::Entity::find_by_id(p.id.clone())
        .filter(upstream_provider::Column::TenantId.eq(p.tenant_id.clone()))
        .filter(upstream_provider::Column::ClientId.eq(p.client_id.clone()));
    q = match &p.issuer {
        Some(iss) => q.filter(upstream_provider::Column::Issuer.eq(iss.clone())),
        None => q.filter(upstream_provider::Column::Issuer.is_null()),
    };
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        q = q.lock_shared();
    }
    Ok(q.one(txn).await?.is_some())
}

fn provider_changed() -> crate::error::Error {
    crate::error::Error::invalid_request(
        "The sign-in provider's client ID or issuer changed meanwhile. Start again.",
    )
}

/// A linked identity's row to insert.
fn identity_active(i: upstream_identity::Model) -> upstream_identity::ActiveModel {
    upstream_identity::ActiveModel {
        id: Set(i.id),
        tenant_id: Set(i.tenant_id),
        provider_id: Set(i.provider_id),
        subject: Set(i.subject),
        user_id: Set(i.user_id),
        email: Set(i.email),
        name: Set(i.name),
        created_at: Set(i.created_at),
        last_used_at: Set(i.last_used_at),
    }
}

/// What [`Store::insert_user_with_identity`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewMember {
    Created,
    /// Another member has this username; nothing was written.
    UsernameTaken,
    /// The identity is linked already (a concurrent first sign-in); nothing was written.
    IdentityTaken,
}

/// Add one field to an audit event's JSON detail (an object; made one when absent).
fn add_detail(audit: &mut AuditEvent, key: &str, value: impl Into<serde_json::Value>) {
    let mut detail = audit
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(d) = detail.as_object_mut() {
        d.insert(key.into(), value.into());
    }
    audit.detail = Some(detail.to_string());
}
