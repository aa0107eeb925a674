use entity::{client, client_redirect_uri};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::{SelectUnique, Store, new_id};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct ClientWithUris {
    pub client: client::Model,
    pub redirect_uris: Vec<String>,
}

pub struct NewClient {
    pub client: client::Model,
    pub redirect_uris: Vec<String>,
}

impl Store {
    /// `false` (nothing written): the `client_id` is taken in the tenant (by a client created
    /// since the caller looked).
    pub async fn insert_client(&self, c: NewClient) -> Result<bool> {
        let txn = self.write_txn().await?;
        let m = c.client;
        let pk = m.id.clone();
        let inserted = client::Entity::insert(client::ActiveModel {
            id: Set(m.id),
            tenant_id: Set(m.tenant_id),
            client_id: Set(m.client_id),
            name: Set(m.name),
            secret_hash: Set(m.secret_hash),
            public: Set(m.public),
            require_pkce: Set(m.require_pkce),
            scopes: Set(m.scopes),
            audience: Set(m.audience),
            access_token_ttl: Set(m.access_token_ttl),
            refresh_token_ttl: Set(m.refresh_token_ttl),
            access_token_alg: Set(m.access_token_alg),
            id_token_alg: Set(m.id_token_alg),
            auth_method: Set(m.auth_method),
            grant_types: Set(m.grant_types),
            disabled: Set(m.disabled),
            created_at: Set(m.created_at),
        })
        .exec_without_returning(&txn)
        .await;
        match inserted {
            Err(e) if super::unique_violation(&e) => {
                txn.rollback().await?;
                return Ok(false);
            }
            r => r?,
        };
        for uri in c.redirect_uris {
            client_redirect_uri::Entity::insert(client_redirect_uri::ActiveModel {
                id: Set(new_id()),
                client_id: Set(pk.clone()),
                uri: Set(uri),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        self.cache.clients_changed();
        Ok(true)
    }

    /// A client of this tenant by its public `client_id`, with its redirect URIs.
    pub async fn client_by_client_id(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<ClientWithUris>> {
        let key = (tenant_id.to_string(), client_id.to_string());
        if self.cache.enabled
            && let Some(c) = self.cache.clients.get(&key)
        {
            return Ok(Some(c));
        }
        let seen = self.cache.clients.generation();
        let Some(c) = client::Entity::find()
            .filter(client::Column::TenantId.eq(tenant_id))
            .filter(client::Column::ClientId.eq(client_id))
            .unique(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let uris = client_redirect_uri::Entity::find()
            .filter(client_redirect_uri::Column::ClientId.eq(c.id.clone()))
            .order_by_asc(client_redirect_uri::Column::Uri)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| u.uri)
            .collect();
        let found = ClientWithUris {
            client: c,
            redirect_uris: uris,
        };
        if self.cache.enabled {
            self.cache.clients.put(key, found.clone(), seen);
        }
        Ok(Some(found))
    }

    /// A client of this tenant by primary key.
    pub async fn client_by_pk(&self, tenant_id: &str, id: &str) -> Result<Option<client::Model>> {
        Ok(client::Entity::find_by_id(id.to_string())
            .filter(client::Column::TenantId.eq(tenant_id))
            .unique(&self.db)
            .await?)
    }

    pub async fn clients_of_tenant(&self, tenant_id: &str) -> Result<Vec<client::Model>> {
        Ok(client::Entity::find()
            .filter(client::Column::TenantId.eq(tenant_id))
            .order_by_asc(client::Column::Name)
            .all(&self.db)
            .await?)
    }
}
