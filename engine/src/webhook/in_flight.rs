//! The deliveries one engine's processors have taken up and not yet finished. Processors read
//! what is waiting without locks (network work comes before any row is locked), so without
//! this they would all read the same oldest batch, one would win the claim and the others find
//! nothing to do. A processor therefore reads its next batch passing over what its siblings
//! hold, one processor at a time (the read is one short query). Between engines, `SKIP
//! LOCKED` claims still decide.

use crate::store::deliveries;

/// The deliveries this engine's processors have taken up and not yet finished: a processor
/// skips them when it reads what is waiting.
#[derive(Default)]
pub struct InFlight {
    ids: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// Held by the processor reading its next batch: two siblings reading at once would read
    /// the same one.
    reading: tokio::sync::Mutex<()>,
}

/// The deliveries one processor took up; given back when dropped (finished or failed alike).
pub struct Taken<'a> {
    in_flight: &'a InFlight,
    ids: Vec<i64>,
}

impl InFlight {
    /// Up to `limit` deliveries that `read` returns when given the ids this engine's
    /// processors hold, marked as taken. One processor reads at a time.
    pub async fn next<F, Fut, E>(
        &self,
        limit: i64,
        read: F,
    ) -> Result<(Vec<deliveries::Pending>, Taken<'_>), E>
    where
        F: FnOnce(Vec<i64>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<deliveries::Pending>, E>>,
    {
        let _turn = self.reading.lock().await;
        let held: Vec<i64> = match self.ids.lock() {
            Ok(ids) => ids.iter().copied().collect(),
            Err(_) => Vec::new(),
        };
        let peeked = read(held).await?;
        Ok(self.take(peeked, limit))
    }

    /// The first `limit` of `peeked` (in their order) that no other processor of this engine
    /// has, marked as taken.
    fn take(
        &self,
        peeked: Vec<deliveries::Pending>,
        limit: i64,
    ) -> (Vec<deliveries::Pending>, Taken<'_>) {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut taken = Vec::new();
        if let Ok(mut ids) = self.ids.lock() {
            for pending in peeked {
                if taken.len() == limit {
                    break;
                }
                if ids.insert(pending.id) {
                    taken.push(pending);
                }
            }
        }
        let ids = taken.iter().map(|p| p.id).collect();
        (
            taken,
            Taken {
                in_flight: self,
                ids,
            },
        )
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.in_flight.ids.lock() {
            for id in &self.ids {
                ids.remove(id);
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn pending(ids: &[i64]) -> Vec<deliveries::Pending> {
        ids.iter()
            .map(|&id| deliveries::Pending {
                id,
                provider: "github".into(),
                repository_id: None,
                event: "push".into(),
                payload: Vec::new(),
                attempts: 0,
            })
            .collect()
    }

    fn ids(taken: &[deliveries::Pending]) -> Vec<i64> {
        taken.iter().map(|p| p.id).collect()
    }

    #[test]
    fn processors_take_distinct_deliveries_in_the_order_read_and_give_them_back() {
        let in_flight = InFlight::default();
        // Read in turns between repositories (7 is another repository's oldest).
        let (first, first_taken) = in_flight.take(pending(&[1, 7, 2, 3]), 2);
        assert_eq!(ids(&first), [1, 7]);
        // A sibling reading the same skips what the first holds.
        let (second, second_taken) = in_flight.take(pending(&[1, 7, 2, 3]), 2);
        assert_eq!(ids(&second), [2, 3]);
        let (third, _third_taken) = in_flight.take(pending(&[1, 7, 2, 3]), 2);
        assert!(third.is_empty());
        // Finished (or failed): free for whoever reads them next, if still waiting.
        drop(first_taken);
        drop(second_taken);
        let (again, _) = in_flight.take(pending(&[1, 7, 2, 3]), 3);
        assert_eq!(ids(&again), [1, 7, 2]);
    }

    #[tokio::test]
    async fn a_processor_reads_its_batch_passing_over_what_its_siblings_hold() {
        let in_flight = InFlight::default();
        let read = |held: Vec<i64>| async move {
            let waiting: Vec<i64> = [1, 7, 2, 3, 4]
                .into_iter()
                .filter(|id| !held.contains(id))
                .collect();
            Ok::<_, ()>(pending(&waiting))
        };
        let (first, first_taken) = in_flight.next(2, read).await.expect("read");
        assert_eq!(ids(&first), [1, 7]);
        let (second, _second_taken) = in_flight.next(2, read).await.expect("read");
        assert_eq!(ids(&second), [2, 3]);
        drop(first_taken);
        let (third, _) = in_flight.next(3, read).await.expect("read");
        assert_eq!(ids(&third), [1, 7, 4]);
    }
}
