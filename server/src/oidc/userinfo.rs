//! OIDC Core §5.3 userinfo: claims about the user behind a live access token.
use entity::tenant;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::oauth::scopes;
use crate::services::Services;

impl Services {
    pub async fn userinfo(&self, tenant: &tenant::Model, token: &str) -> Result<Value> {
        let (claims, _) = self
            .live_access_token(tenant, token)
            .await?
            .ok_or_else(|| {
                Error::invalid_token("the access token is invalid, expired or revoked")
            })?;
        if claims.fam.is_none() {
            return Err(Error::invalid_token("this token does not belong to a user"));
        }
        let user = self
            .store
            .user_by_id(&tenant.id, &claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| Error::invalid_token("the user no longer exists"))?;
        let granted = scopes::split(&claims.scope);
        let mut out = Map::new();
        out.insert("sub".into(), json!(user.id));
        if granted.contains(&"profile") || granted.contains(&"user:read") {
            out.insert("preferred_username".into(), json!(user.username));
            if let Some(n) = &user.display_name {
                out.insert("name".into(), json!(n));
            }
        }
        if granted.contains(&"email")
            && let Some(e) = &user.email
        {
            out.insert("email".into(), json!(e));
        }
        Ok(Value::Object(out))
    }
}
