//! Database migrations, one per change. A landed migration is never edited.
pub use sea_orm_migration::prelude::*;

mod m20261124_000001_core;
mod m20261124_000002_passkeys;
mod m20261124_000003_throttle;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_core::Migration),
            Box::new(m20261124_000002_passkeys::Migration),
            Box::new(m20261124_000003_throttle::Migration),
        ]
    }
}
