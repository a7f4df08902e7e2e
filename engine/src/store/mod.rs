//! PostgreSQL storage: every durable fact about projects, pipelines, runs, stages, logs,
//! artifacts and secrets. All SQL lives in this module's files, one function per query, each
//! taking `impl PgExecutor` so it runs on the pool or inside a caller's transaction.

pub mod access;
pub mod artifacts;
pub mod dashboard;
pub mod deliveries;
pub mod embedded;
pub mod engines;
pub mod events;
pub mod logs;
pub mod pipelines;
pub mod repos;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod settings;
pub mod stages;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The schema, from `migrations/` at the workspace root.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The channel that wakes schedulers: something may be ready to move.
pub const WAKE_CHANNEL: &str = "gantry_wake";
/// The channel that tells engines a webhook delivery is waiting to be processed.
pub const DELIVERIES_CHANNEL: &str = "gantry_deliveries";
/// The channel that tells log followers new lines were stored (payload: stage run id).
pub const LOGS_CHANNEL: &str = "gantry_logs";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

macro_rules! id_type {
    ($name:ident) => {
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            sqlx::Type,
            utoipa::ToSchema,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(ProjectId);
id_type!(PipelineId);
id_type!(VersionId);
id_type!(RunId);
id_type!(StageRunId);

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "run_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "stage_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
    WaitingApproval,
    TimedOut,
}

impl StageStatus {
    pub const ALL: [StageStatus; 9] = [
        StageStatus::Pending,
        StageStatus::Queued,
        StageStatus::Running,
        StageStatus::Succeeded,
        StageStatus::Failed,
        StageStatus::Cancelled,
        StageStatus::Skipped,
        StageStatus::WaitingApproval,
        StageStatus::TimedOut,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StageStatus::Succeeded
                | StageStatus::Failed
                | StageStatus::Cancelled
                | StageStatus::Skipped
                | StageStatus::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Queued => "queued",
            StageStatus::Running => "running",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
            StageStatus::Cancelled => "cancelled",
            StageStatus::Skipped => "skipped",
            StageStatus::WaitingApproval => "waiting_approval",
            StageStatus::TimedOut => "timed_out",
        }
    }
}

/// The shared handle to the database.
#[derive(Clone, Debug)]
pub struct Store {
    pub pool: PgPool,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // A PostgreSQL restart breaks pooled connections: test them before use so the
            // engine carries on with fresh ones instead of failing requests.
            .test_before_acquire(true)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Tells every engine's scheduler to look for work.
    pub async fn wake(&self) -> Result<()> {
        wake(&self.pool).await
    }
}

pub async fn wake(db: impl sqlx::PgExecutor<'_>) -> Result<()> {
    sqlx::query!("SELECT pg_notify($1, '')", WAKE_CHANNEL)
        .execute(db)
        .await?;
    Ok(())
}
