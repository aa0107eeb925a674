use entity::audit_event;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

use super::{Store, new_id};
use crate::audit::AuditEvent;
use crate::error::Result;

pub(crate) async fn insert_audit<C: ConnectionTrait>(
    db: &C,
    ev: AuditEvent,
    now: i64,
) -> Result<()> {
    audit_event::Entity::insert(audit_model(ev, now))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The insert of one audit event, as a statement (for a PostgreSQL CTE).
pub(crate) fn audit_insert(ev: AuditEvent, now: i64) -> sea_orm::sea_query::InsertStatement {
    use sea_orm::QueryTrait;
    audit_event::Entity::insert(audit_model(ev, now)).into_query()
}

/// The audit event as `INSERT … SELECT`: one event per row that `source` (a `SELECT` with
/// its `FROM` and joins, no columns yet) yields, naming the member `user_id` of that row.
/// No row, no event.
pub(crate) fn audit_insert_select(
    ev: AuditEvent,
    now: i64,
    user_id: sea_orm::sea_query::Expr,
    mut source: sea_orm::sea_query::SelectStatement,
) -> std::result::Result<sea_orm::sea_query::InsertStatement, sea_orm::DbErr> {
    use audit_event::Column as C;
    use sea_orm::sea_query::{Expr, Query};
    source
        .expr(Expr::val(new_id()))
        .expr(Expr::val(ev.tenant_id))
        .expr(Expr::val(now))
        .expr(Expr::val(ev.kind))
        .expr(Expr::val(ev.outcome))
        .expr(Expr::val(ev.actor))
        .expr(user_id)
        .expr(Expr::val(ev.client_id))
        .expr(Expr::val(ev.ip))
        .expr(Expr::val(ev.user_agent))
        .expr(Expr::val(ev.detail));
    Ok(Query::insert()
        .into_table(audit_event::Entity)
        .columns([
            C::Id,
            C::TenantId,
            C::At,
            C::Kind,
            C::Outcome,
            C::Actor,
            C::UserId,
            C::ClientId,
            C::Ip,
            C::UserAgent,
            C::Detail,
        ])
        .select_from(source)
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
        .to_owned())
}

fn audit_model(ev: AuditEvent, now: i64) -> audit_event::ActiveModel {
    audit_event::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(ev.tenant_id),
        at: Set(now),
        kind: Set(ev.kind.to_string()),
        outcome: Set(ev.outcome.to_string()),
        actor: Set(ev.actor),
        user_id: Set(ev.user_id),
        client_id: Set(ev.client_id),
        ip: Set(ev.ip),
        user_agent: Set(ev.user_agent),
        detail: Set(ev.detail),
    }
}

impl Store {
    pub async fn insert_audit(&self, ev: AuditEvent, now: i64) -> Result<()> {
        insert_audit(&self.w(), ev, now).await
    }

    pub async fn audit_events(&self, tenant_id: &str) -> Result<Vec<audit_event::Model>> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        Ok(audit_event::Entity::find()
            .filter(audit_event::Column::TenantId.eq(tenant_id))
            .order_by_desc(audit_event::Column::At)
            .order_by_desc(audit_event::Column::Id)
            .all(&self.db)
            .await?)
    }
}
