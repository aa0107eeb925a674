//! Every query, for both databases. Services decide; the store only reads and writes, and
//! keeps each multi-step change in one transaction.
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

mod audit;
mod clients;
mod codes;
mod grants;
mod keys;
mod passkeys;
mod refresh;
mod sessions;
mod tenants;
mod users;

pub use clients::{ClientWithUris, NewClient};
pub use codes::{CodeOutcome, NewCode};
pub use refresh::{NewRefresh, RefreshOutcome};

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.db.get_database_backend())
    }
}

impl Store {
    /// Connect to SQLite (WAL, `synchronous=FULL`: a token is on disk before it is returned)
    /// or PostgreSQL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbErr> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        let db = Database::connect(opts).await?;
        Ok(Self { db })
    }

    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Database reachable and every migration applied.
    pub async fn ready(&self) -> Result<bool, DbErr> {
        self.db.ping().await?;
        Ok(Migrator::get_pending_migrations(&self.db).await?.is_empty())
    }

    pub async fn close(self) -> Result<(), DbErr> {
        self.db.close().await
    }
}

pub fn new_id_pub() -> String {
    new_id()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
