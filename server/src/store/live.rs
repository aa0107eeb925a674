//! Is an access token still live? Asked on every introspection and userinfo request, so the
//! checks that arrive while others are being answered are coalesced: whoever finds no query
//! running starts one for everything waiting, and whatever arrives meanwhile goes in the next
//! batch. One round trip then answers many tokens (measured on PostgreSQL: introspection went
//! from one query per request to one per batch).
//!
//! Revocation is never weakened by this: a check is answered only by a query that started
//! after the check was asked, so a revocation committed before an introspection request
//! arrived is always seen. Nothing is cached.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use entity::{client, refresh_family, revoked_access_token, user};
use sea_orm::sea_query::{Expr, ExprTrait, Query, UnionType};
use sea_orm::{ConnectionTrait, DbErr};
use tokio::sync::oneshot;

use super::Db;
use super::refresh::AccessLive;
use crate::error::{Error, Result};

/// Queries running at once, at most. More would only queue on the pool; fewer would make
/// requests wait for a batch when the database could take another.
const MAX_RUNNING: usize = 4;
/// Tokens answered by one query, at most (two bound values each).
const MAX_BATCH: usize = 64;

/// One access token to check.
struct Check {
    tenant_id: String,
    jti: String,
    /// The token's client, checked for a token without a family (`client_credentials`); a
    /// family's own client is checked with the family.
    client_id: String,
    family_id: Option<String>,
    answer: oneshot::Sender<std::result::Result<Option<AccessLive>, String>>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Check>,
    running: usize,
}

#[derive(Default)]
pub(crate) struct LiveChecks {
    state: Mutex<State>,
}

impl LiveChecks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `None` when the token is not live, else the username of its grant's member (none for a
    /// `client_credentials` token).
    pub(crate) async fn check(
        self: &Arc<Self>,
        db: &Db,
        tenant_id: &str,
        jti: &str,
        client_id: &str,
        family_id: Option<&str>,
    ) -> Result<Option<AccessLive>> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut st = self.state();
            st.waiting.push(Check {
                tenant_id: tenant_id.to_string(),
                jti: jti.to_string(),
                client_id: client_id.to_string(),
                family_id: family_id.map(str::to_string),
                answer,
            });
            let start = st.running < MAX_RUNNING;
            if start {
                st.running += 1;
            }
            start
        };
        if start {
            // Its own task: a request whose client goes away must not take the batch (and
            // everyone waiting on it) down with it.
            let (me, db) = (Arc::clone(self), db.clone());
            tokio::spawn(async move { me.drain(&db).await });
        }
        match answered.await {
            Ok(Ok(live)) => Ok(live),
            Ok(Err(e)) => Err(Error::Db(DbErr::Custom(e))),
            Err(_) => Err(Error::Internal("a token check was dropped".into())),
        }
    }

    /// Answer batches until nothing waits.
    async fn drain(&self, db: &Db) {
        /// Gives the running slot back if the task ends any other way (a panic).
        struct Slot<'a>(&'a LiveChecks, bool);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.state().running -= 1;
                }
            }
        }
        let mut slot = Slot(self, true);
        loop {
            let batch: Vec<Check> = {
                let mut st = self.state();
                if st.waiting.is_empty() {
                    st.running -= 1;
                    slot.1 = false;
                    return;
                }
                let n = st.waiting.len().min(MAX_BATCH);
                st.waiting.drain(..n).collect()
            };
            match query(db, &batch).await {
                Ok(Found {
                    revoked,
                    live,
                    clients,
                }) => {
                    for c in batch {
                        let answer = if revoked.contains(&c.jti) {
                            None
                        } else {
                            match &c.family_id {
                                None => clients
                                    .contains(&(c.tenant_id.clone(), c.client_id.clone()))
                                    .then_some(AccessLive { username: None }),
                                Some(f) => live
                                    .get(f)
                                    .filter(|(tenant, _)| *tenant == c.tenant_id)
                                    .map(|(_, username)| AccessLive {
                                        username: Some(username.clone()),
                                    }),
                            }
                        };
                        let _ = c.answer.send(Ok(answer));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for c in batch {
                        let _ = c.answer.send(Err(msg.clone()));
                    }
                }
            }
        }
    }
}

/// What one query found for a batch.
struct Found {
    /// The revoked `jti`s among the batch's.
    revoked: HashSet<String>,
    /// Its live families: family → (tenant, username).
    live: HashMap<String, (String, String)>,
    /// The enabled clients, as (tenant, client_id), among those of its tokens without a family.
    clients: HashSet<(String, String)>,
}

/// The revoked `jti`s among the batch's, its live families and the enabled clients of its
/// tokens without a family: one query.
async fn query(db: &Db, batch: &[Check]) -> std::result::Result<Found, DbErr> {
    use refresh_family::Entity as F;
    let jtis = padded(batch.iter().map(|c| c.jti.as_str()).collect());
    let families = distinct_padded(batch.iter().filter_map(|c| c.family_id.as_deref()));
    let mut q = Query::select();
    q.expr_as(Expr::cust("0"), "kind")
        .expr_as(
            Expr::col((
                revoked_access_token::Entity,
                revoked_access_token::Column::Jti,
            )),
            "id",
        )
        .expr_as(Expr::cust("NULL"), "tenant_id")
        .expr_as(Expr::cust("NULL"), "username")
        .from(revoked_access_token::Entity)
        .and_where(
            Expr::col((
                revoked_access_token::Entity,
                revoked_access_token::Column::Jti,
            ))
            .is_in(jtis),
        );
    if !families.is_empty() {
        let mut f = Query::select();
        f.expr(Expr::cust("1"))
            .expr(Expr::col((F, refresh_family::Column::Id)))
            .expr(Expr::col((F, refresh_family::Column::TenantId)))
            .expr(Expr::col((user::Entity, user::Column::Username)));
        super::refresh::from_live_families(&mut f)
            .and_where(Expr::col((F, refresh_family::Column::Id)).is_in(families));
        q.union(UnionType::All, f);
    }
    let without_family = || batch.iter().filter(|c| c.family_id.is_none());
    let client_ids = distinct_padded(without_family().map(|c| c.client_id.as_str()));
    // By tenant too: the clients' index leads with it (a batch is almost always one tenant).
    let tenants = distinct_padded(without_family().map(|c| c.tenant_id.as_str()));
    if !client_ids.is_empty() {
        let mut c = Query::select();
        c.expr(Expr::cust("2"))
            .expr(Expr::col((client::Entity, client::Column::ClientId)))
            .expr(Expr::col((client::Entity, client::Column::TenantId)))
            .expr(Expr::cust("NULL"))
            .from(client::Entity)
            .and_where(Expr::col((client::Entity, client::Column::TenantId)).is_in(tenants))
            .and_where(Expr::col((client::Entity, client::Column::ClientId)).is_in(client_ids))
            .and_where(Expr::col((client::Entity, client::Column::Disabled)).eq(false));
        q.union(UnionType::All, c);
    }
    let mut found = Found {
        revoked: HashSet::new(),
        live: HashMap::new(),
        clients: HashSet::new(),
    };
    for row in db.query_all(&q).await? {
        let kind: i32 = row.try_get("", "kind")?;
        let id: String = row.try_get("", "id")?;
        match kind {
            0 => {
                found.revoked.insert(id);
            }
            1 => {
                let tenant: String = row.try_get("", "tenant_id")?;
                let username: String = row.try_get("", "username")?;
                found.live.insert(id, (tenant, username));
            }
            _ => {
                let tenant: String = row.try_get("", "tenant_id")?;
                found.clients.insert((tenant, id));
            }
        }
    }
    Ok(found)
}

/// The distinct items, padded (`padded`).
fn distinct_padded<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v.dedup();
    padded(v)
}

/// The list, its last item repeated up to the next power of two. Each length of an `IN`
/// list is another statement for the driver to prepare and cache (per connection, and on
/// PostgreSQL in each backend too): 64 lengths of this query held ~7 MiB of prepared
/// statements on SQLite's 16 connections. Seven lengths do not.
fn padded(mut items: Vec<&str>) -> Vec<&str> {
    if let Some(last) = items.last().copied() {
        items.resize(items.len().next_power_of_two(), last);
    }
    items
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_are_padded_to_powers_of_two() {
        assert_eq!(super::padded(vec![]), Vec::<&str>::new());
        assert_eq!(super::padded(vec!["a"]), vec!["a"]);
        assert_eq!(super::padded(vec!["a", "b", "c"]), vec!["a", "b", "c", "c"]);
        assert_eq!(super::padded(vec!["x"; 33]).len(), 64);
    }
}
