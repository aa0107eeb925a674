use entity::{passkey, password_credential, upstream_identity, upstream_provider, user};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, QueryTrait,
};

use super::{SelectUnique, Store, WriteTxn};
use crate::error::Result;

/// Which removals of a member's sign-in method (a passkey, a linked identity) may leave the
/// member with no way to sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Any (an admin's removal: the admin can give the member a password or an enrolment
    /// link again).
    Any,
    /// Not the last one (the member's own removal). A password counts unless the tenant
    /// requires passkeys; a linked identity only through an enabled provider.
    KeepOneWayIn { password_counts: bool },
}

/// What a removal of a sign-in method did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    Done,
    /// The member (of this tenant) has no such passkey or linked identity.
    NotFound,
    /// Refused: it was the member's last way to sign in; nothing changed.
    LastWayIn,
}

impl Store {
    /// Delete one of a member's sign-in methods with `delete` (which returns how many rows
    /// went), unless `removal` refuses to leave the member without a way to sign in: both
    /// in one transaction.
    pub(crate) async fn remove_way_in(
        &self,
        tenant_id: &str,
        user_id: &str,
        removal: Removal,
        delete: impl AsyncFnOnce(&WriteTxn) -> Result<u64>,
    ) -> Result<Removed> {
        let txn = self.write_txn().await?;
        if delete(&txn).await? != 1 {
            txn.rollback().await?;
            return Ok(Removed::NotFound);
        }
        if !removal_allowed(&txn, tenant_id, user_id, removal).await? {
            txn.rollback().await?;
            return Ok(Removed::LastWayIn);
        }
        txn.commit().await?;
        Ok(Removed::Done)
    }
}

/// A member's row to insert.
pub(crate) fn user_active(u: user::Model) -> user::ActiveModel {
    user::ActiveModel {
        id: Set(u.id),
        tenant_id: Set(u.tenant_id),
        username: Set(u.username),
        display_name: Set(u.display_name),
        email: Set(u.email),
        role: Set(u.role),
        disabled: Set(u.disabled),
        created_at: Set(u.created_at),
    }
}

/// Within a write transaction that just deleted one of a member's sign-in methods: whether
/// `removal` lets it stand. Locks the member's row first on PostgreSQL (SQLite's write
/// transaction holds the whole database), so two removals at once see each other's delete.
async fn removal_allowed(
    txn: &WriteTxn,
    tenant_id: &str,
    user_id: &str,
    removal: Removal,
) -> Result<bool> {
    let Removal::KeepOneWayIn { password_counts } = removal else {
        return Ok(true);
    };
    if txn.get_database_backend() == DbBackend::Postgres {
        user::Entity::find_by_id(user_id.to_string())
            .filter(user::Column::TenantId.eq(tenant_id))
            .lock_exclusive()
            .one(txn)
            .await?;
    }
    if password_counts
        && password_credential::Entity::find_by_id(user_id.to_string())
            .count(txn)
            .await?
            > 0
    {
        return Ok(true);
    }
    let passkeys = passkey::Entity::find()
        .filter(passkey::Column::TenantId.eq(tenant_id))
        .filter(passkey::Column::UserId.eq(user_id))
        .count(txn)
        .await?;
    // Linked through an enabled provider: a disabled one signs nobody in.
    let enabled_providers = upstream_provider::Entity::find()
        .select_only()
        .column(upstream_provider::Column::Id)
        .filter(upstream_provider::Column::TenantId.eq(tenant_id))
        .filter(upstream_provider::Column::Enabled.eq(true))
        .into_query();
    let identities = upstream_identity::Entity::find()
        .filter(upstream_identity::Column::TenantId.eq(tenant_id))
        .filter(upstream_identity::Column::UserId.eq(user_id))
        .filter(upstream_identity::Column::ProviderId.in_subquery(enabled_providers))
        .count(txn)
        .await?;
    Ok(passkeys + identities > 0)
}

impl Store {
    /// Insert a user and, when given, their password hash, in one transaction.
    /// Insert a member, with its password hash if any. `false` (nothing written): the username
    /// is taken in the tenant (by a member created since the caller looked).
    pub async fn insert_user(&self, u: user::Model, phc: Option<String>) -> Result<bool> {
        let txn = self.write_txn().await?;
        let id = u.id.clone();
        let created = u.created_at;
        match user::Entity::insert(user_active(u))
            .exec_without_returning(&txn)
            .await
        {
            Err(e) if super::unique_violation(&e) => return Ok(false),
            r => r?,
        };
        if let Some(phc) = phc {
            password_credential::Entity::insert(password_credential::ActiveModel {
                user_id: Set(id),
                phc: Set(phc),
                updated_at: Set(created),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    pub async fn user_by_username(
        &self,
        tenant_id: &str,
        username: &str,
    ) -> Result<Option<user::Model>> {
        Ok(user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant_id))
            .filter(user::Column::Username.eq(username))
            .unique(&self.db)
            .await?)
    }

    /// A user of this tenant by username, with their password hash if they have one: one
    /// query for a password sign-in.
    pub async fn user_with_password(
        &self,
        tenant_id: &str,
        username: &str,
    ) -> Result<Option<super::Member>> {
        use sea_orm::sea_query::{Expr, ExprTrait, Query};
        use sea_orm::{ConnectionTrait, FromQueryResult, Iterable};
        let mut q = Query::select();
        q.columns(user::Column::iter().map(|c| (user::Entity, c)))
            .expr_as(
                Expr::col((
                    password_credential::Entity,
                    password_credential::Column::Phc,
                )),
                "password_phc",
            )
            .from(user::Entity)
            .left_join(
                password_credential::Entity,
                Expr::col((
                    password_credential::Entity,
                    password_credential::Column::UserId,
                ))
                .equals((user::Entity, user::Column::Id)),
            )
            .and_where(Expr::col((user::Entity, user::Column::TenantId)).eq(tenant_id))
            .and_where(Expr::col((user::Entity, user::Column::Username)).eq(username));
        let Some(row) = self.db.query_one(&q).await? else {
            return Ok(None);
        };
        Ok(Some((
            user::Model::from_query_result(&row, "")?,
            row.try_get("", "password_phc")?,
        )))
    }

    /// A user of this tenant (never of another).
    pub async fn user_by_id(&self, tenant_id: &str, id: &str) -> Result<Option<user::Model>> {
        Ok(user::Entity::find_by_id(id.to_string())
            .filter(user::Column::TenantId.eq(tenant_id))
            .unique(&self.db)
            .await?)
    }

    pub async fn password_hash(&self, user_id: &str) -> Result<Option<String>> {
        Ok(password_credential::Entity::find_by_id(user_id.to_string())
            .unique(&self.db)
            .await?
            .map(|p| p.phc))
    }
}
