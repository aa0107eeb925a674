use entity::{password_credential, user};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::{SelectUnique, Store};
use crate::error::Result;

impl Store {
    /// Insert a user and, when given, their password hash, in one transaction.
    pub async fn insert_user(&self, u: user::Model, phc: Option<String>) -> Result<()> {
        let txn = self.write_txn().await?;
        let id = u.id.clone();
        let created = u.created_at;
        user::Entity::insert(user::ActiveModel {
            id: Set(u.id),
            tenant_id: Set(u.tenant_id),
            username: Set(u.username),
            display_name: Set(u.display_name),
            email: Set(u.email),
            role: Set(u.role),
            disabled: Set(u.disabled),
            created_at: Set(u.created_at),
        })
        .exec_without_returning(&txn)
        .await?;
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
        Ok(())
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
