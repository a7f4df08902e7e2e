//! A `deploy` stage attempt, carried out by the engine that claimed it: it writes its own log
//! lines (what kubectl would print) and ends its attempt as a runner would. After an engine
//! restart the attempt is started again from the top: setting an image that is already set
//! changes nothing, so it only waits for the rollout again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::DeployError;
use super::history;
use super::rollout::{self, Rollout};
use crate::engine::Engine;
use crate::spec::DeployRequest;
use crate::store::{self, StageRunId, StageStatus, stages};
use gantry_runner::wire::{Stream, encode_line};

/// The executor name deploy attempts are recorded under.
pub const EXECUTOR: &str = "deploy";
/// How often a waiting deploy checks for a cancel (and tells the database it is alive).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Appends lines to the attempt's log as a runner's batches would.
struct StageLog<'a> {
    engine: &'a Engine,
    id: StageRunId,
    attempt: i32,
    written: u64,
}

impl StageLog<'_> {
    async fn line(&mut self, stream: Stream, text: &str) {
        let mut body = String::new();
        let now = chrono::Utc::now().timestamp_millis();
        encode_line(&mut body, now, stream, text);
        let first = self.written + 1;
        let stored = async {
            let mut tx = self.engine.store.pool.begin().await?;
            let cap = self.engine.config.log_cap_bytes;
            store::logs::append(&mut tx, self.id, self.attempt, first, 1, &body, cap).await?;
            tx.commit().await?;
            Ok::<_, store::StoreError>(())
        }
        .await;
        match stored {
            Ok(()) => self.written += 1,
            Err(e) => {
                tracing::warn!(stage_run = self.id.0, error = %e, "cannot store a deploy log line")
            }
        }
    }
}

enum Ended {
    Done,
    Failed(String),
    TimedOut(String),
    Cancelled,
    /// The attempt is no longer current (ended elsewhere): write nothing more.
    Stale,
}

/// Runs one claimed deploy attempt to its end.
pub async fn run(engine: Arc<Engine>, id: StageRunId, attempt: i32) {
    let mut log = StageLog {
        engine: &engine,
        id,
        attempt,
        written: stages::get(&engine.store.pool, id)
            .await
            .map(|r| u64::try_from(r.log_lines).unwrap_or(0))
            .unwrap_or(0),
    };
    let ended = match crate::spec::deploy_request(&engine, id).await {
        Ok(request) => match &engine.kube {
            Some(client) => deploy(&engine, client, &request, &mut log).await,
            None => Ended::Failed(DeployError::NoCluster.to_string()),
        },
        Err(e) => Ended::Failed(e.to_string()),
    };
    let (status, error) = match ended {
        Ended::Done => (StageStatus::Succeeded, None),
        Ended::Failed(why) => (StageStatus::Failed, Some(why)),
        Ended::TimedOut(why) => (StageStatus::TimedOut, Some(why)),
        Ended::Cancelled => (StageStatus::Cancelled, Some("cancelled".to_owned())),
        Ended::Stale => return,
    };
    if let Some(why) = &error {
        log.line(Stream::System, &format!("error: {why}")).await;
    }
    let finished = async {
        let mut tx = engine.store.pool.begin().await?;
        stages::finish_attempt(&mut tx, id, attempt, status, error.as_deref()).await?;
        store::wake(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, store::StoreError>(())
    }
    .await;
    if let Err(e) = finished {
        tracing::warn!(stage_run = id.0, error = %e, "cannot record the end of a deploy");
    }
}

async fn deploy(
    engine: &Engine,
    client: &kube::Client,
    request: &DeployRequest,
    log: &mut StageLog<'_>,
) -> Ended {
    let (namespace, name) = (&request.namespace, &request.deployment);
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + request.timeout;
    let current = match api.get_opt(name).await {
        Ok(Some(d)) => d,
        Ok(None) => return Ended::Failed(format!("deployment {namespace}/{name} not found")),
        Err(e) => return Ended::Failed(format!("reading deployment {namespace}/{name}: {e}")),
    };
    let container = match rollout::pick_container(&current, request.container.as_deref()) {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    log.line(
        Stream::System,
        &format!(
            "$ kubectl set image deployment/{name} {container}={} -n {namespace}",
            request.image
        ),
    )
    .await;
    match rollout::set_image_patch(
        &current,
        &container,
        &request.image,
        request.change_cause.as_deref(),
    ) {
        Some(patch) => {
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                return Ended::Failed(format!("patching deployment {namespace}/{name}: {e}"));
            }
            log.line(
                Stream::Stdout,
                &format!("deployment.apps/{name} image updated"),
            )
            .await;
        }
        None => {
            log.line(
                Stream::Stdout,
                &format!(
                    "deployment.apps/{name}: {container} already runs {}; nothing to roll out",
                    request.image
                ),
            )
            .await;
        }
    }
    log.line(
        Stream::System,
        &format!(
            "$ kubectl rollout status deployment/{name} -n {namespace} --timeout={}s",
            request.timeout.as_secs()
        ),
    )
    .await;
    let failure = match wait(engine, &api, name, deadline, log).await {
        Ok(()) => return Ended::Done,
        Err(Waited::Ended(ended)) => return ended,
        Err(Waited::Failed(why)) => why,
        Err(Waited::TimedOut(why)) if !request.rollback_on_failure => return Ended::TimedOut(why),
        Err(Waited::TimedOut(why)) => why,
    };
    if !request.rollback_on_failure {
        return Ended::Failed(format!("the rollout failed: {failure}"));
    }
    log.line(
        Stream::System,
        &format!("$ kubectl rollout undo deployment/{name} -n {namespace}"),
    )
    .await;
    let undone = match history::undo(client, namespace, name, 0).await {
        Ok(u) => u,
        Err(e) => {
            return Ended::Failed(format!(
                "the rollout failed: {failure}; rolling back failed too: {e}"
            ));
        }
    };
    log.line(
        Stream::Stdout,
        &format!(
            "deployment.apps/{name} rolled back to revision {}",
            undone.to_revision
        ),
    )
    .await;
    // The old pods never went away, so the rollback is usually quick; wait for it a while.
    let rollback_deadline =
        tokio::time::Instant::now() + request.timeout.min(Duration::from_secs(300));
    let rolled_back = match wait(engine, &api, name, rollback_deadline, log).await {
        Ok(()) => "it is back and available".to_owned(),
        Err(Waited::Ended(ended)) => return ended,
        Err(Waited::Failed(why) | Waited::TimedOut(why)) => {
            format!("the rollback did not finish either: {why}")
        }
    };
    Ended::Failed(format!(
        "the rollout failed: {failure}; rolled back to revision {} ({rolled_back})",
        undone.to_revision
    ))
}

enum Waited {
    Failed(String),
    TimedOut(String),
    Ended(Ended),
}

/// kubectl's `rollout status`: watches the Deployment (a list, then a watch from its
/// resourceVersion; after 410 Gone or a broken connection the watcher lists again) and judges
/// each version it sees, checking for a cancel between events.
async fn wait(
    engine: &Engine,
    api: &Api<Deployment>,
    name: &str,
    deadline: tokio::time::Instant,
    log: &mut StageLog<'_>,
) -> Result<(), Waited> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api.clone(), config).default_backoff());
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    // Whether the (re-)list in progress has shown the Deployment: one ending without it means
    // the Deployment is gone.
    let mut listed = false;
    let timed_out = |last: &str| {
        Waited::TimedOut(format!(
            "timed out waiting for the rollout ({})",
            if last.is_empty() {
                "no status yet"
            } else {
                last
            }
        ))
    };
    loop {
        let deployment = tokio::select! {
            _ = check.tick() => {
                match stages::heartbeat(&engine.store.pool, log.id, log.attempt).await {
                    Ok(Some(true)) => return Err(Waited::Ended(Ended::Cancelled)),
                    Ok(None) => return Err(Waited::Ended(Ended::Stale)),
                    _ => {}
                }
                continue;
            }
            () = tokio::time::sleep_until(deadline) => return Err(timed_out(&last)),
            event = events.next() => match event {
                Some(Ok(Event::Apply(d) | Event::InitApply(d))) => {
                    listed = true;
                    d
                }
                Some(Ok(Event::Delete(_))) => {
                    return Err(Waited::Failed(format!("deployment {name:?} was deleted")));
                }
                Some(Ok(Event::Init)) => {
                    listed = false;
                    continue;
                }
                Some(Ok(Event::InitDone)) if !listed => {
                    return Err(Waited::Failed(format!("deployment {name:?} was deleted")));
                }
                Some(Ok(Event::InitDone)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(deployment = name, error = %e, "watching the deployment failed; listing again");
                    continue;
                }
                None => return Err(Waited::Failed("the deployment's watch ended".to_owned())),
            },
        };
        match rollout::status(&deployment) {
            Rollout::Done(message) => {
                log.line(Stream::Stdout, &message).await;
                return Ok(());
            }
            Rollout::Failed(message) => {
                log.line(Stream::Stdout, &message).await;
                return Err(Waited::Failed(message));
            }
            Rollout::Waiting(message) => {
                if message != last {
                    log.line(Stream::Stdout, &message).await;
                    last = message;
                }
            }
        }
    }
}
