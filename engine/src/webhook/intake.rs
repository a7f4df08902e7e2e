//! Group commit for received deliveries: a delivery is stored before it is answered, and under
//! load many arrive at once, so the receivers hand theirs to a couple of writers that store
//! whatever has queued up in one multi-row INSERT (one round trip and one commit for the lot)
//! and answer each receiver with its row. A delivery arriving alone is written alone, at once.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::deliveries::{self, DeliveryStatus, NewDelivery};
use crate::store::repos::RepoId;

/// The most deliveries one INSERT stores.
const MAX_BATCH: usize = 64;
/// INSERTs in flight at once: while one commits, the next batch gathers and goes.
const WRITERS: usize = 2;
/// Deliveries waiting to be stored at most, by default. Past that the database is not keeping
/// up, and a receiver answers 503 with `Retry-After` (providers redeliver) instead of queueing
/// without bound in memory.
pub const QUEUE_LIMIT: usize = 4096;
/// What the 503 asks a provider to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Why a delivery was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{0} deliveries are waiting to be stored; try again in {RETRY_AFTER_SECS} s")]
    Busy(usize),
    #[error("storing the delivery failed: {0}")]
    Failed(String),
}

/// A delivery as received from a provider, to be stored.
pub struct Incoming {
    pub provider: &'static str,
    pub delivery_key: String,
    pub repository: RepoId,
    pub event: String,
    /// The body as received (shared, not copied).
    pub payload: bytes::Bytes,
    pub status: DeliveryStatus,
    pub summary: Option<&'static str>,
}

/// The stored delivery's id, `None` for a redelivery; the error text when storing failed.
type Reply = oneshot::Sender<Result<Option<i64>, String>>;

/// The engine's writers, started on first use (inside the server's runtime).
pub struct Intake {
    queue: OnceLock<mpsc::Sender<(Incoming, Reply)>>,
    limit: usize,
}

impl Intake {
    /// An intake that holds at most `limit` deliveries waiting to be stored.
    pub fn new(limit: usize) -> Intake {
        Intake {
            queue: OnceLock::new(),
            limit: limit.max(1),
        }
    }

    /// Stores `delivery` (with whatever else is waiting) and returns its id, or `None` when a
    /// delivery with the same provider and id was stored before.
    pub async fn store(
        &self,
        pool: &PgPool,
        delivery: Incoming,
    ) -> Result<Option<i64>, IntakeError> {
        let queue = self.queue.get_or_init(|| start(pool.clone(), self.limit));
        let (reply, answer) = oneshot::channel();
        let stopped = || IntakeError::Failed("the delivery writer has stopped".to_owned());
        queue.try_send((delivery, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => IntakeError::Busy(self.limit),
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(IntakeError::Failed)
    }
}

fn start(pool: PgPool, limit: usize) -> mpsc::Sender<(Incoming, Reply)> {
    let (queue, waiting) = mpsc::channel(limit);
    let waiting = Arc::new(Mutex::new(waiting));
    for _ in 0..WRITERS {
        tokio::spawn(writer(pool.clone(), Arc::clone(&waiting)));
    }
    queue
}

async fn writer(pool: PgPool, waiting: Arc<Mutex<mpsc::Receiver<(Incoming, Reply)>>>) {
    loop {
        let batch = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        write(&pool, batch).await;
    }
}

async fn write(pool: &PgPool, batch: Vec<(Incoming, Reply)>) {
    // The same delivery id twice in one batch (a sender retrying quickly): the first is
    // stored, the others are answered as the redeliveries they are.
    let mut unique: Vec<usize> = Vec::with_capacity(batch.len());
    for (i, (d, _)) in batch.iter().enumerate() {
        if !unique.iter().any(|&u| {
            batch[u].0.provider == d.provider && batch[u].0.delivery_key == d.delivery_key
        }) {
            unique.push(i);
        }
    }
    let rows: Vec<NewDelivery<'_>> = unique
        .iter()
        .map(|&i| {
            let d = &batch[i].0;
            NewDelivery {
                provider: d.provider,
                delivery_key: &d.delivery_key,
                repository: Some(d.repository),
                pipeline: None,
                event: &d.event,
                payload: &d.payload,
                status: d.status,
                summary: d.summary,
            }
        })
        .collect();
    let stored = deliveries::insert_many(pool, &rows).await;
    drop(rows);
    let mut ids = match stored {
        Ok(ids) => ids.into_iter(),
        Err(e) => {
            tracing::error!(error = %e, deliveries = batch.len(), "storing webhook deliveries failed");
            for (_, reply) in batch {
                let _ = reply.send(Err(e.to_string()));
            }
            return;
        }
    };
    for (i, (_, reply)) in batch.into_iter().enumerate() {
        let id = if unique.contains(&i) {
            ids.next().flatten()
        } else {
            None
        };
        // A receiver that went away (its client hung up) needs no answer.
        let _ = reply.send(Ok(id));
    }
}
