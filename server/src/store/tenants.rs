use entity::tenant;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};

use super::{SelectUnique, Store};
use crate::error::Result;

impl Store {
    /// `false` (nothing written): the slug is taken (by a tenant created since the caller
    /// looked).
    pub async fn insert_tenant(&self, t: tenant::Model) -> Result<bool> {
        let am = tenant::ActiveModel {
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
        };
        match tenant::Entity::insert(am)
            .exec_without_returning(&self.w())
            .await
        {
            Err(e) if super::unique_violation(&e) => return Ok(false),
            r => r?,
        };
        self.cache.tenants_changed();
        Ok(true)
    }

    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<tenant::Model>> {
        if self.cache.enabled
            && let Some(t) = self.cache.tenants.get(slug)
        {
            return Ok(Some(t));
        }
        let seen = self.cache.tenants.generation();
        let t = tenant::Entity::find()
            .filter(tenant::Column::Slug.eq(slug))
            .unique(&self.db)
            .await?;
        if self.cache.enabled
            && let Some(t) = &t
        {
            self.cache.tenants.put(slug.to_string(), t.clone(), seen);
        }
        Ok(t)
    }

    pub async fn tenants(&self) -> Result<Vec<tenant::Model>> {
        Ok(tenant::Entity::find()
            .order_by_asc(tenant::Column::Slug)
            .all(&self.db)
            .await?)
    }

    pub async fn tenant_count(&self) -> Result<u64> {
        Ok(tenant::Entity::find().count(&self.db).await?)
    }
}

impl Store {
    /// Change a tenant's name and passkey policy.
    pub async fn update_tenant(&self, id: &str, name: &str, passkeys_required: bool) -> Result<()> {
        use sea_orm::sea_query::Expr;
        tenant::Entity::update_many()
            .col_expr(tenant::Column::Name, Expr::value(name))
            .col_expr(
                tenant::Column::PasskeysRequired,
                Expr::value(passkeys_required),
            )
            .filter(tenant::Column::Id.eq(id))
            .exec(&self.w())
            .await?;
        self.cache.tenants_changed();
        Ok(())
    }
}
