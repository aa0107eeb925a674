//! Who may do what: decided here, and only here.
//!
//! - An operator may act on every tenant and on server-wide settings.
//! - A tenant admin may act on their own tenant only. Any other tenant does not exist for
//!   them: its pages and objects answer 404, like an id that was never issued.
//! - Members and strangers never get an admin session (the sign-in form refuses them), and
//!   a session whose account stopped being an admin is ended on its next request.
use crate::port::{Actor, Role, TenantView};

pub fn may_access_tenant(actor: &Actor, tenant: &TenantView) -> bool {
    match actor.role {
        Role::Operator => true,
        Role::TenantAdmin => actor.tenant_id == tenant.id,
    }
}

/// Create tenants, choose the default tenant for `/alexa/*`, read every tenant's audit log.
pub fn is_operator(actor: &Actor) -> bool {
    actor.role == Role::Operator
}

/// Roles an admin may give: a tenant admin cannot make operators.
pub fn may_assign_role(actor: &Actor, role: &str) -> bool {
    match role {
        "member" | "admin" => true,
        "operator" => is_operator(actor),
        _ => false,
    }
}

/// Changing an operator's account (role, password, disabling) needs an operator.
pub fn may_manage_user(actor: &Actor, target_role: &str) -> bool {
    target_role != "operator" || is_operator(actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role) -> Actor {
        Actor {
            user_id: "u".into(),
            tenant_id: "a".into(),
            tenant_slug: "a".into(),
            username: "x".into(),
            role,
        }
    }

    fn tenant(id: &str) -> TenantView {
        TenantView {
            id: id.into(),
            slug: id.into(),
            name: id.into(),
            issuer: String::new(),
            access_token_ttl: 0,
            refresh_token_ttl: 0,
            refresh_grace: 0,
            passkeys_required: false,
            fed_auto_create: false,
            fed_link_by_email: false,
            is_default: false,
            created_at: 0,
        }
    }

    #[test]
    fn tenant_admin_sees_only_their_tenant() {
        let a = actor(Role::TenantAdmin);
        assert!(may_access_tenant(&a, &tenant("a")));
        assert!(!may_access_tenant(&a, &tenant("b")));
        let o = actor(Role::Operator);
        assert!(may_access_tenant(&o, &tenant("b")));
    }

    #[test]
    fn tenant_admin_cannot_make_or_manage_operators() {
        let a = actor(Role::TenantAdmin);
        assert!(may_assign_role(&a, "admin"));
        assert!(!may_assign_role(&a, "operator"));
        assert!(!may_assign_role(&a, "root"));
        assert!(!may_manage_user(&a, "operator"));
        assert!(may_manage_user(&actor(Role::Operator), "operator"));
    }
}
