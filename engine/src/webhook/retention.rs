//! Delivery payloads are not kept forever: a payload older than the retention (30 days by
//! default, `--delivery-payload-days`) is emptied, in the background, a bounded batch of rows
//! per short transaction so no long lock is ever held. The delivery — provider, event, status,
//! summary, and the runs it started — stays. Deliveries still waiting to be processed keep
//! their payload whatever their age.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::store::{Result, deliveries};

/// How often the engine looks for payloads to prune.
const EVERY: Duration = Duration::from_secs(3600);
/// Rows emptied per transaction.
const BATCH: i64 = 500;

pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let days = i64::from(engine.config.delivery_payload_days);
        let before = Utc::now() - chrono::TimeDelta::days(days);
        match prune(&engine.store.pool, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(payloads = n, days, "pruned old webhook delivery payloads"),
            Err(e) => tracing::warn!(error = %e, "pruning webhook delivery payloads failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Empties the payloads of processed deliveries received before `before`, batch by batch;
/// returns how many.
pub async fn prune(pool: &sqlx::PgPool, before: DateTime<Utc>) -> Result<u64> {
    let mut pruned = 0;
    loop {
        let n = deliveries::prune_payloads(pool, before, BATCH).await?;
        pruned += n;
        if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
            return Ok(pruned);
        }
    }
}
