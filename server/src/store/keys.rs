use entity::signing_key;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::Store;
use crate::error::Result;
use crate::tokens::keys::NewKey;

fn active_model(tenant_id: &str, k: NewKey, state: &str, now: i64) -> signing_key::ActiveModel {
    signing_key::ActiveModel {
        id: Set(k.id),
        tenant_id: Set(tenant_id.to_string()),
        kid: Set(k.kid),
        alg: Set(k.alg.as_str().to_string()),
        state: Set(state.to_string()),
        private_enc: Set(k.private_enc),
        public_jwk: Set(k.public_jwk),
        created_at: Set(now),
        activated_at: Set(if state == "active" { Some(now) } else { None }),
        retired_at: Set(None),
        publish_until: Set(None),
    }
}

impl Store {
    pub async fn signing_keys(&self, tenant_id: &str) -> Result<Vec<signing_key::Model>> {
        Ok(signing_key::Entity::find()
            .filter(signing_key::Column::TenantId.eq(tenant_id))
            .order_by_asc(signing_key::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// One active signing key of any tenant (to check the master key against), if any.
    pub async fn any_active_signing_key(&self) -> Result<Option<signing_key::Model>> {
        Ok(signing_key::Entity::find()
            .filter(signing_key::Column::State.eq("active"))
            .one(&self.db)
            .await?)
    }

    pub async fn insert_signing_keys(
        &self,
        tenant_id: &str,
        keys: Vec<(NewKey, &str)>,
        now: i64,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        for (k, state) in keys {
            signing_key::Entity::insert(active_model(tenant_id, k, state, now))
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Retire the active keys, promote the next keys, add new next keys: one transaction.
    ///
    /// With `min_next_age`, a rotation that would promote a next key published less than
    /// that many seconds ago is refused: `Ok(Some(age))`, the youngest next key's age, and
    /// nothing changes. The check runs inside the transaction, after the lock, so of two
    /// rotations at once the second sees the next keys the first made.
    pub async fn rotate_signing_keys(
        &self,
        tenant_id: &str,
        now: i64,
        publish_until: i64,
        new_next: Vec<NewKey>,
        min_next_age: Option<i64>,
    ) -> Result<Option<i64>> {
        let txn = self.write_txn().await?;
        // Two rotations at once take turns (SQLite's write transaction already does): each
        // statement below reads the keys as the other left them, so a second rotation cannot
        // miss the key the first promoted and leave two active keys.
        if txn.get_database_backend() == DbBackend::Postgres {
            signing_key::Entity::find()
                .filter(signing_key::Column::TenantId.eq(tenant_id))
                .lock_exclusive()
                .all(&txn)
                .await?;
        }
        if let Some(min) = min_next_age {
            let youngest = signing_key::Entity::find()
                .filter(signing_key::Column::TenantId.eq(tenant_id))
                .filter(signing_key::Column::State.eq("next"))
                .all(&txn)
                .await?
                .iter()
                .map(|k| k.created_at)
                .max();
            if let Some(created) = youngest
                && now - created < min
            {
                return Ok(Some((now - created).max(0)));
            }
        }
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::State, Expr::value("retired"))
            .col_expr(signing_key::Column::RetiredAt, Expr::value(now))
            .col_expr(
                signing_key::Column::PublishUntil,
                Expr::value(publish_until),
            )
            .filter(signing_key::Column::TenantId.eq(tenant_id))
            .filter(signing_key::Column::State.eq("active"))
            .exec(&txn)
            .await?;
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::State, Expr::value("active"))
            .col_expr(signing_key::Column::ActivatedAt, Expr::value(now))
            .filter(signing_key::Column::TenantId.eq(tenant_id))
            .filter(signing_key::Column::State.eq("next"))
            .exec(&txn)
            .await?;
        for k in new_next {
            signing_key::Entity::insert(active_model(tenant_id, k, "next", now))
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(None)
    }
}
