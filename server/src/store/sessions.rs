use entity::{browser_session, user};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QueryTrait,
};

use super::{SignInSuccess, Store};
use crate::error::Result;

/// SQLite: a sign-in's writes (counters cleared, audit event) to run before a session's in
/// the same atomic call.
fn sign_in_statements(sign_in: Option<&SignInSuccess>) -> Vec<sea_orm::Statement> {
    sign_in.map_or_else(Vec::new, SignInSuccess::sqlite_statements)
}

/// PostgreSQL: a session's write with a sign-in's as CTEs: one statement, one commit.
fn with_sign_in(
    d: &SignInSuccess,
    main: impl Into<sea_orm::sea_query::SubQueryStatement>,
) -> sea_orm::sea_query::WithQuery {
    sea_orm::sea_query::WithQuery::new()
        .with_clause(d.pg_with())
        .query(main)
        .to_owned()
}

impl Store {
    /// A live session's state, and the member it is signed in to if any, read in the same
    /// statement: a page that needs both asks the database once.
    pub async fn session_load(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<(String, Option<user::Model>)>> {
        use sea_orm::sea_query::{Alias, Query};
        use sea_orm::{FromQueryResult, IdenStatic, Iterable};
        let (s, u) = (browser_session::Entity, user::Entity);
        let mut q = Query::select();
        q.column((s, browser_session::Column::State)).from(s);
        for c in user::Column::iter() {
            q.expr_as(Expr::col((u, c)), Alias::new(format!("u_{}", c.as_str())));
        }
        q.left_join(
            u,
            Expr::col((u, user::Column::Id))
                .equals((s, browser_session::Column::UserId))
                .and(
                    Expr::col((u, user::Column::TenantId))
                        .equals((s, browser_session::Column::TenantId)),
                ),
        )
        .and_where(Expr::col((s, browser_session::Column::Id)).eq(id_hash))
        .and_where(Expr::col((s, browser_session::Column::ExpiresAt)).gt(now));
        let Some(row) = self.db.query_one(&q).await? else {
            return Ok(None);
        };
        let state: String = row.try_get("", "state")?;
        let member = match row.try_get::<Option<String>>("u_", "id")? {
            Some(_) => Some(user::Model::from_query_result(&row, "u_")?),
            None => None,
        };
        Ok(Some((state, member)))
    }

    /// Live sessions nobody signed in to (`login::limits::AnonymousSessions`).
    pub async fn anonymous_sessions(&self, now: i64) -> Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(browser_session::Entity::find()
            .filter(browser_session::Column::UserId.is_null())
            .filter(browser_session::Column::ExpiresAt.gt(now))
            .count(&self.db)
            .await?)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn session_insert(
        &self,
        id_hash: &str,
        tenant_id: Option<String>,
        user_id: Option<String>,
        state: String,
        now: i64,
        expires_at: i64,
        sign_in: Option<&SignInSuccess>,
    ) -> Result<()> {
        let insert = browser_session::Entity::insert(browser_session::ActiveModel {
            id: Set(id_hash.to_string()),
            tenant_id: Set(tenant_id),
            user_id: Set(user_id),
            state: Set(state),
            created_at: Set(now),
            updated_at: Set(now),
            expires_at: Set(expires_at),
        });
        let insert = insert.into_query();
        if self.backend() == DbBackend::Sqlite {
            // A commit shared with the other writes waiting then (`sqlite_atomic`).
            let mut sts = sign_in_statements(sign_in);
            sts.push(DbBackend::Sqlite.build(&insert));
            super::sqlite_atomic(self, sts).await?;
        } else {
            match sign_in {
                Some(d) => self.w().execute(&with_sign_in(d, insert)).await?,
                None => self.w().execute(&insert).await?,
            };
        }
        Ok(())
    }

    /// Update a live session; false when it no longer exists (ended or expired). With
    /// `new_id_hash` the session also moves to that key and counts as created now (a sign-in).
    #[allow(clippy::too_many_arguments)]
    pub async fn session_update(
        &self,
        id_hash: &str,
        new_id_hash: Option<&str>,
        tenant_id: Option<String>,
        user_id: Option<String>,
        state: String,
        now: i64,
        expires_at: i64,
        sign_in: Option<&SignInSuccess>,
    ) -> Result<bool> {
        let mut q = browser_session::Entity::update_many();
        if let Some(new_id) = new_id_hash {
            q = q
                .col_expr(browser_session::Column::Id, Expr::value(new_id))
                .col_expr(browser_session::Column::CreatedAt, Expr::value(now));
        }
        let q = q
            .col_expr(browser_session::Column::State, Expr::value(state))
            .col_expr(browser_session::Column::TenantId, Expr::value(tenant_id))
            .col_expr(browser_session::Column::UserId, Expr::value(user_id))
            .col_expr(browser_session::Column::UpdatedAt, Expr::value(now))
            .col_expr(browser_session::Column::ExpiresAt, Expr::value(expires_at))
            .filter(browser_session::Column::Id.eq(id_hash))
            .filter(browser_session::Column::ExpiresAt.gt(now));
        let mut update = q.into_query();
        if self.backend() == DbBackend::Sqlite {
            // A commit shared with the other writes waiting then (`sqlite_atomic`); the row
            // it updated comes back (the sign-in's statements return none).
            update.returning_col(browser_session::Column::Id);
            let mut sts = sign_in_statements(sign_in);
            sts.push(DbBackend::Sqlite.build(&update));
            let rows = super::sqlite_atomic(self, sts).await?;
            return Ok(rows.len() == 1);
        }
        // The count is the main statement's, not its CTEs'.
        let n = match sign_in {
            Some(d) => self.w().execute(&with_sign_in(d, update)).await?,
            None => self.w().execute(&update).await?,
        }
        .rows_affected();
        Ok(n == 1)
    }

    /// Extend a session: to `expires_at`, or to `anonymous_expires_at` while nobody is signed
    /// in to it.
    pub async fn session_touch(
        &self,
        id_hash: &str,
        now: i64,
        expires_at: i64,
        anonymous_expires_at: i64,
    ) -> Result<()> {
        browser_session::Entity::update_many()
            .col_expr(browser_session::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                browser_session::Column::ExpiresAt,
                Expr::case(
                    Expr::col(browser_session::Column::UserId).is_null(),
                    anonymous_expires_at,
                )
                .finally(expires_at)
                .into(),
            )
            .filter(browser_session::Column::Id.eq(id_hash))
            .exec(&self.w())
            .await?;
        Ok(())
    }

    pub async fn session_delete(&self, id_hash: &str) -> Result<()> {
        browser_session::Entity::delete_by_id(id_hash.to_string())
            .exec(&self.w())
            .await?;
        Ok(())
    }

    pub async fn sessions_of_user(
        &self,
        tenant_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<browser_session::Model>> {
        Ok(browser_session::Entity::find()
            .filter(browser_session::Column::TenantId.eq(tenant_id))
            .filter(browser_session::Column::UserId.eq(user_id))
            .filter(browser_session::Column::ExpiresAt.gt(now))
            .order_by_desc(browser_session::Column::UpdatedAt)
            .all(&self.db)
            .await?)
    }

    /// End one session of a user (by the stored id, which is a hash of the cookie value).
    pub async fn end_user_session(
        &self,
        tenant_id: &str,
        user_id: &str,
        id_hash: &str,
    ) -> Result<bool> {
        let n = browser_session::Entity::delete_many()
            .filter(browser_session::Column::Id.eq(id_hash))
            .filter(browser_session::Column::TenantId.eq(tenant_id))
            .filter(browser_session::Column::UserId.eq(user_id))
            .exec(&self.w())
            .await?
            .rows_affected;
        Ok(n == 1)
    }
}
