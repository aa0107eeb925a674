use entity::{enrollment_link, passkey, webauthn_ceremony};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};

use super::users::{Removal, Removed};
use super::{SelectUnique, Store};
use crate::error::Result;

impl Store {
    pub async fn insert_passkey(&self, p: passkey::Model) -> Result<()> {
        passkey::Entity::insert(passkey::ActiveModel {
            id: Set(p.id),
            tenant_id: Set(p.tenant_id),
            user_id: Set(p.user_id),
            cred_id: Set(p.cred_id),
            name: Set(p.name),
            passkey: Set(p.passkey),
            sign_count: Set(p.sign_count),
            backup_eligible: Set(p.backup_eligible),
            backup_state: Set(p.backup_state),
            created_at: Set(p.created_at),
            last_used_at: Set(p.last_used_at),
        })
        .exec_without_returning(&self.w())
        .await?;
        Ok(())
    }

    pub async fn passkeys_of_user(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<Vec<passkey::Model>> {
        Ok(passkey::Entity::find()
            .filter(passkey::Column::TenantId.eq(tenant_id))
            .filter(passkey::Column::UserId.eq(user_id))
            .order_by_asc(passkey::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// A passkey by credential id, in any tenant (the caller checks the tenant).
    pub async fn passkey_by_cred_id(&self, cred_id: &str) -> Result<Option<passkey::Model>> {
        Ok(passkey::Entity::find()
            .filter(passkey::Column::CredId.eq(cred_id))
            .unique(&self.db)
            .await?)
    }

    pub async fn record_passkey_use(
        &self,
        id: &str,
        passkey_json: String,
        sign_count: i64,
        backup_state: bool,
        now: i64,
    ) -> Result<()> {
        passkey::Entity::update_many()
            .col_expr(passkey::Column::Passkey, Expr::value(passkey_json))
            .col_expr(passkey::Column::SignCount, Expr::value(sign_count))
            .col_expr(passkey::Column::BackupState, Expr::value(backup_state))
            .col_expr(passkey::Column::LastUsedAt, Expr::value(now))
            .filter(passkey::Column::Id.eq(id))
            // Two sign-ins at once: the higher counter stays (one that never counts, 0, is
            // always written).
            .filter(
                Condition::any()
                    .add(passkey::Column::SignCount.lt(sign_count))
                    .add(Expr::val(sign_count).eq(0)),
            )
            .exec(&self.w())
            .await?;
        Ok(())
    }

    pub async fn rename_passkey(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        name: &str,
    ) -> Result<bool> {
        Ok(passkey::Entity::update_many()
            .col_expr(passkey::Column::Name, Expr::value(name))
            .filter(passkey::Column::Id.eq(id))
            .filter(passkey::Column::TenantId.eq(tenant_id))
            .filter(passkey::Column::UserId.eq(user_id))
            .exec(&self.w())
            .await?
            .rows_affected
            == 1)
    }

    /// Delete one of a member's passkeys, unless `removal` refuses to leave the member
    /// without a way to sign in (checked in the same transaction).
    pub async fn delete_passkey(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        removal: Removal,
    ) -> Result<Removed> {
        self.remove_way_in(tenant_id, user_id, removal, async |txn| {
            Ok(passkey::Entity::delete_many()
                .filter(passkey::Column::Id.eq(id))
                .filter(passkey::Column::TenantId.eq(tenant_id))
                .filter(passkey::Column::UserId.eq(user_id))
                .exec(txn)
                .await?
                .rows_affected)
        })
        .await
    }

    pub async fn insert_ceremony(&self, c: webauthn_ceremony::Model) -> Result<()> {
        webauthn_ceremony::Entity::insert(webauthn_ceremony::ActiveModel {
            id: Set(c.id),
            tenant_id: Set(c.tenant_id),
            kind: Set(c.kind),
            user_id: Set(c.user_id),
            state: Set(c.state),
            expires_at: Set(c.expires_at),
        })
        .exec_without_returning(&self.w())
        .await?;
        Ok(())
    }

    /// Take a ceremony: it is deleted by this call, so a challenge can be answered once.
    /// Expired or unknown ceremonies give `None`.
    pub async fn take_ceremony(
        &self,
        tenant_id: &str,
        id: &str,
        kind: &str,
        now: i64,
    ) -> Result<Option<webauthn_ceremony::Model>> {
        // An id no ceremony has (ours are short, plain ids): not looked up, so a NUL from a
        // request body never reaches PostgreSQL, which would fail the statement.
        if id.is_empty() || id.len() > 100 || id.contains('\0') {
            return Ok(None);
        }
        let Some(c) = webauthn_ceremony::Entity::find_by_id(id.to_string())
            .filter(webauthn_ceremony::Column::TenantId.eq(tenant_id))
            .filter(webauthn_ceremony::Column::Kind.eq(kind))
            .unique(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let taken = webauthn_ceremony::Entity::delete_many()
            .filter(webauthn_ceremony::Column::Id.eq(id))
            .exec(&self.w())
            .await?
            .rows_affected
            == 1;
        Ok((taken && c.expires_at > now).then_some(c))
    }

    pub async fn purge_ceremonies(&self, now: i64) -> Result<()> {
        webauthn_ceremony::Entity::delete_many()
            .filter(webauthn_ceremony::Column::ExpiresAt.lt(now))
            .exec(&self.w())
            .await?;
        Ok(())
    }

    pub async fn insert_enrollment_link(&self, l: enrollment_link::Model) -> Result<()> {
        enrollment_link::Entity::insert(enrollment_link::ActiveModel {
            id: Set(l.id),
            token_hash: Set(l.token_hash),
            tenant_id: Set(l.tenant_id),
            user_id: Set(l.user_id),
            created_at: Set(l.created_at),
            expires_at: Set(l.expires_at),
            used_at: Set(None),
        })
        .exec_without_returning(&self.w())
        .await?;
        Ok(())
    }

    /// A usable (unused, unexpired) enrollment link of this tenant.
    pub async fn enrollment_link(
        &self,
        tenant_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<enrollment_link::Model>> {
        Ok(enrollment_link::Entity::find()
            .filter(enrollment_link::Column::TokenHash.eq(token_hash))
            .filter(enrollment_link::Column::TenantId.eq(tenant_id))
            .filter(enrollment_link::Column::UsedAt.is_null())
            .filter(enrollment_link::Column::ExpiresAt.gt(now))
            .unique(&self.db)
            .await?)
    }

    /// Use a link up: true for exactly one caller.
    pub async fn consume_enrollment_link(&self, id: &str, now: i64) -> Result<bool> {
        Ok(enrollment_link::Entity::update_many()
            .col_expr(enrollment_link::Column::UsedAt, Expr::value(now))
            .filter(enrollment_link::Column::Id.eq(id))
            .filter(enrollment_link::Column::UsedAt.is_null())
            .filter(enrollment_link::Column::ExpiresAt.gt(now))
            .exec(&self.w())
            .await?
            .rows_affected
            == 1)
    }
}
