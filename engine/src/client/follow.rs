//! Following live: one attempt's log over Server-Sent Events (resumed with `Last-Event-ID`
//! after a dropped connection), one stage across its retry attempts (`gantry logs -f`), and a
//! whole run with every stage's log (`gantry trigger --follow`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Client, ClientError, LogLine, Run, Stage, sse};
use crate::store::StageStatus;

/// Consecutive reconnections without a byte from the engine before following gives up
/// (enough to ride out an engine restart).
const RECONNECTS: u32 = 60;
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// How often run and stage states are polled while following.
const POLL: Duration = Duration::from_millis(500);

/// Follows one attempt's log until the engine's `end` event, calling `each` for every line.
/// A dropped connection is reopened from the last line received.
pub async fn attempt_log(
    client: &Client,
    run: i64,
    key: &str,
    attempt: i32,
    mut each: impl FnMut(&LogLine),
) -> Result<(), ClientError> {
    let mut last: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let error = match client.log_stream(run, key, attempt, last).await {
            Ok(mut response) => {
                let mut parser = sse::Parser::default();
                loop {
                    match client.next_chunk(&mut response).await {
                        Ok(Some(bytes)) => {
                            failures = 0;
                            for event in parser.push(&bytes) {
                                match event.event.as_str() {
                                    "end" => return Ok(()),
                                    "message" => {
                                        let line: LogLine = serde_json::from_str(&event.data)
                                            .map_err(|e| {
                                                ClientError::Protocol(format!(
                                                    "a log event from {} is not a line: {e}",
                                                    client.server()
                                                ))
                                            })?;
                                        last = Some(line.n);
                                        each(&line);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Ok(None) => {
                            break ClientError::Unreachable {
                                url: client.server(),
                                detail: "the log stream closed before its end".into(),
                            };
                        }
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        failures += 1;
        if !error.is_transient() || failures > RECONNECTS {
            return Err(error);
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Polls the stage until it has attempt `want` (or a later one), or has ended without it.
async fn wait_for_attempt(
    client: &Client,
    run: i64,
    key: &str,
    want: i32,
) -> Result<Stage, ClientError> {
    loop {
        let stage = client.stage(run, key).await?;
        if stage.attempt >= want || stage.status.is_terminal() {
            return Ok(stage);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `gantry logs -f`: prints a stage's log live, waiting for it to start and following it
/// through retries, until the stage ends. Returns the stage as it ended.
pub async fn stage_log(
    client: &Client,
    run: i64,
    key: &str,
    out: &mut impl Write,
) -> Result<Stage, ClientError> {
    let mut want = client.stage(run, key).await?.attempt.max(1);
    loop {
        let stage = wait_for_attempt(client, run, key, want).await?;
        if stage.attempt < want {
            return Ok(stage); // ended without (another) attempt: skipped, cancelled, rejected
        }
        if want > 1 {
            let _ = writeln!(out, "--- attempt {want} of {} ---", stage.max_attempts);
        }
        attempt_log(client, run, key, want, |line| {
            let _ = writeln!(out, "{}", line.text);
        })
        .await?;
        let _ = out.flush();
        let stage = client.stage(run, key).await?;
        if stage.status.is_terminal() && stage.attempt <= want {
            return Ok(stage);
        }
        want += 1;
    }
}

/// Prints one line of the run follower's output.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

type Follower = JoinHandle<Result<(), ClientError>>;

fn spawn_follower(client: &Client, run: i64, key: &str, attempt: i32) -> Follower {
    let client = client.clone();
    let key = key.to_owned();
    tokio::spawn(async move {
        attempt_log(&client, run, &key, attempt, |line| {
            say(&format!("[{key}] {}", line.text));
        })
        .await
    })
}

/// Waits for log followers to print everything, reporting those that failed.
async fn drain(followers: impl IntoIterator<Item = ((String, i32), Follower)>) {
    for ((key, attempt), follower) in followers {
        match follower.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("gantry: could not follow the log of {key} (attempt {attempt}): {e}");
            }
            Err(e) => eprintln!("gantry: following the log of {key} failed: {e}"),
        }
    }
}

/// What changed about a stage, as one line (or nothing worth a line).
fn announcement(run: i64, stage: &Stage) -> Option<String> {
    let why = stage
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match stage.status {
        StageStatus::Running if stage.attempt > 1 => Some(format!(
            "--> {} (attempt {} of {})",
            stage.key, stage.attempt, stage.max_attempts
        )),
        StageStatus::Running => Some(format!("--> {}", stage.key)),
        StageStatus::WaitingApproval => Some(format!(
            "--> {} waits for approval: gantry approve {run} {}",
            stage.key, stage.key
        )),
        StageStatus::Queued if stage.attempt > 0 => Some(format!(
            "<-- {} attempt {} failed, retrying{why}",
            stage.key, stage.attempt
        )),
        StageStatus::Succeeded => {
            let reused = stage
                .reused_from
                .map(|from| format!(" (reused from stage run {from})"))
                .unwrap_or_default();
            // An error on a stage that succeeded is what an earlier attempt ran into.
            let earlier = stage
                .error
                .as_deref()
                .map(|e| format!(" (after {e})"))
                .unwrap_or_default();
            Some(format!("<-- {} succeeded{reused}{earlier}", stage.key))
        }
        s if s.is_terminal() => Some(format!("<-- {} {}{why}", stage.key, s.as_str())),
        _ => None,
    }
}

/// `gantry trigger --follow`: prints stages as they start and end and every stage's log as it
/// is written, until the run ends. Returns the run as it ended.
pub async fn run(client: &Client, id: i64) -> Result<Run, ClientError> {
    let mut followers: HashMap<(String, i32), Follower> = HashMap::new();
    let mut followed: HashSet<(String, i32)> = HashSet::new();
    let mut announced: HashMap<String, (StageStatus, i32)> = HashMap::new();
    let mut failures = 0u32;
    loop {
        let run = match client.run(id).await {
            Ok(run) => {
                failures = 0;
                run
            }
            Err(e) if e.is_transient() && failures < RECONNECTS => {
                failures += 1;
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        for stage in &run.stages {
            let attempt = (stage.key.clone(), stage.attempt);
            if stage.attempt > 0 && stage.reused_from.is_none() && followed.insert(attempt.clone())
            {
                let follower = spawn_follower(client, id, &stage.key, stage.attempt);
                followers.insert(attempt, follower);
            }
            let state = (stage.status, stage.attempt);
            if announced.get(&stage.key) == Some(&state) {
                continue;
            }
            announced.insert(stage.key.clone(), state);
            // A stage's log comes before the line saying how it ended.
            if stage.status.is_terminal() {
                let done: Vec<(String, i32)> = followers
                    .keys()
                    .filter(|(key, _)| *key == stage.key)
                    .cloned()
                    .collect();
                drain(
                    done.into_iter()
                        .filter_map(|k| followers.remove(&k).map(|f| (k, f))),
                )
                .await;
            }
            if let Some(line) = announcement(id, stage) {
                say(&line);
            }
        }
        if run.status.is_terminal() {
            drain(followers).await;
            let why = run
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            say(&format!(
                "==> {} #{} {}{why}",
                run.pipeline,
                run.number,
                run.status.as_str()
            ));
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::get;

    use super::*;

    /// An engine stand-in whose log stream drops the connection after two lines; the client
    /// must come back with `Last-Event-ID: 2` and get the rest.
    #[tokio::test]
    async fn a_dropped_log_stream_resumes_after_the_last_line() {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let router = Router::new().route(
            "/api/v1/runs/{id}/stages/{key}/logs/stream",
            get({
                let seen = Arc::clone(&seen);
                move |headers: HeaderMap| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let last = headers
                            .get("last-event-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let first = last.is_none();
                        seen.lock().map(|mut s| s.push(last)).ok();
                        let line = |n: i64, text: &str| {
                            format!("id: {n}\ndata: {{\"n\":{n},\"ts_ms\":0,\"stream\":\"stdout\",\"text\":\"{text}\"}}\n\n")
                        };
                        let body = if first {
                            // Two lines, then the connection ends without an `end` event.
                            format!("{}{}", line(1, "one"), line(2, "two"))
                        } else {
                            format!("{}event: end\ndata: {{}}\n\n", line(3, "three"))
                        };
                        ([("content-type", "text/event-stream")], body)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let client = Client::new(&format!("http://{addr}")).expect("client");
        let mut lines = Vec::new();
        attempt_log(&client, 1, "build", 1, |l| lines.push(l.text.clone()))
            .await
            .expect("follows to the end");
        server.abort();
        assert_eq!(lines, ["one", "two", "three"]);
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, [None, Some("2".to_owned())]);
    }

    #[test]
    fn a_retried_attempt_is_announced_with_its_error() {
        let stage = Stage {
            key: "build".into(),
            status: StageStatus::Queued,
            attempt: 1,
            max_attempts: 2,
            error: Some("attempt 1 of 2: exit status 1".into()),
            approved_by: None,
            reused_from: None,
            allow_failure: false,
            finally: false,
            started_at: None,
            finished_at: None,
        };
        assert_eq!(
            announcement(7, &stage).as_deref(),
            Some("<-- build attempt 1 failed, retrying: attempt 1 of 2: exit status 1")
        );
        let waiting = Stage {
            status: StageStatus::WaitingApproval,
            attempt: 0,
            error: None,
            key: "deploy".into(),
            ..stage
        };
        assert_eq!(
            announcement(7, &waiting).as_deref(),
            Some("--> deploy waits for approval: gantry approve 7 deploy")
        );
    }
}
