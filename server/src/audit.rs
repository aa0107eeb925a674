//! Audit events: who did what, to which tenant, user and client, from where.

/// `audit_events.actor` holds this many characters (migration `000001_core`).
const ACTOR_MAX: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub tenant_id: Option<String>,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Free-form JSON detail. Never a secret.
    pub detail: Option<String>,
}

/// Where a request came from, for audit events.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl AuditEvent {
    pub fn new(
        kind: &'static str,
        outcome: &'static str,
        tenant_id: Option<&str>,
        req: &RequestInfo,
    ) -> Self {
        Self {
            tenant_id: tenant_id.map(str::to_string),
            kind,
            outcome,
            ip: req.ip.clone(),
            user_agent: req
                .user_agent
                .as_ref()
                .map(|u| u.chars().take(500).collect()),
            ..Default::default()
        }
    }
    pub fn user(mut self, user_id: &str) -> Self {
        self.user_id = Some(user_id.to_string());
        self
    }
    pub fn client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_string());
        self
    }
    /// Who acted: an account's username, or the username someone typed (any length: a form
    /// field holds up to 4 KiB), kept to the column's 200 characters so that the event is
    /// always written (PostgreSQL refuses a longer value; SQLite would keep it whole).
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.chars().take(ACTOR_MAX).collect());
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}
