//! Database migrations, one per change. A landed migration is never edited.
pub use sea_orm_migration::prelude::*;

mod m20261124_000001_core;
mod m20261124_000002_passkeys;
mod m20261124_000003_throttle;
mod m20261124_000004_admin;
mod m20261124_000005_federation;
mod m20261124_000006_federation_policy;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_core::Migration),
            Box::new(m20261124_000002_passkeys::Migration),
            Box::new(m20261124_000003_throttle::Migration),
            Box::new(m20261124_000004_admin::Migration),
            Box::new(m20261124_000005_federation::Migration),
            Box::new(m20261124_000006_federation_policy::Migration),
        ]
    }
}
