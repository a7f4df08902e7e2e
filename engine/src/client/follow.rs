//! Following live: one attempt's log (what is already stored through the plain download, as
//! fast as `gantry logs` without `-f`, then the rest over Server-Sent Events, resumed with
//! `Last-Event-ID` after a dropped connection), one stage across its retry attempts (`gantry
//! logs -f`), and a whole run with every stage's log (`gantry trigger --follow`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Client, ClientError, LogLine, Run, Stage, sse};
use crate::store::StageStatus;

/// Consecutive reconnections without a byte from the engine before following gives up
/// (enough to ride out an engine restart).
const RECONNECTS: u32 = 60;
/// A fixed delay, not an exponential backoff (`backon`): what is waited for is one engine
/// coming back, and a follower should see it within half a second rather than after a
/// doubled delay, and the give-up stays "about 30 s of silence". The load is a request every
/// 500 ms per follower (a few per `gantry` command), only while the engine cannot serve.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// How often run and stage states are polled while following.
const POLL: Duration = Duration::from_millis(500);

/// Writes whole lines of a log to `out`, each after `prefix`, in one write per batch: a
/// batch never interleaves with another follower's lines, and a 200,000-line log is not
/// 200,000 writes.
fn write_lines<'a>(out: &mut impl Write, prefix: &str, lines: impl IntoIterator<Item = &'a [u8]>) {
    let mut batch = Vec::new();
    for line in lines {
        batch.extend_from_slice(prefix.as_bytes());
        batch.extend_from_slice(line);
        batch.push(b'\n');
    }
    if !batch.is_empty() {
        // A closed pipe (`| head`) is the reader's choice, not an error to report.
        let _ = out.write_all(&batch);
    }
}

/// Catching up: the lines already stored, through the plain download (`gantry logs`' bulk
/// endpoint, no per-line event), written to `out` as they come. Returns how many whole lines
/// were written, which is the number of the last one (an attempt's lines are numbered from 1
/// without gaps), so the live stream can go on after it. A connection lost half-way is not an
/// error: the stream picks up after the last whole line.
async fn catch_up(
    client: &Client,
    run: i64,
    key: &str,
    attempt: i32,
    prefix: &str,
    out: &mut impl Write,
) -> Result<i64, ClientError> {
    let mut response = match client.log(run, key, Some(attempt)).await {
        Ok(response) => response,
        Err(e) if e.is_transient() => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut lines = 0i64;
    let mut partial: Vec<u8> = Vec::new();
    while let Ok(Some(bytes)) = client.next_chunk(&mut response).await {
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            partial.extend_from_slice(&bytes);
            continue;
        };
        partial.extend_from_slice(&bytes[..end]);
        let whole = std::mem::replace(&mut partial, bytes[end + 1..].to_vec());
        let count = whole.split(|&b| b == b'\n').count();
        if prefix.is_empty() {
            let _ = out.write_all(&whole);
            let _ = out.write_all(b"\n");
        } else {
            write_lines(out, prefix, whole.split(|&b| b == b'\n'));
        }
        lines += i64::try_from(count).unwrap_or(i64::MAX);
    }
    let _ = out.flush();
    Ok(lines)
}

/// Follows one attempt's log until the engine's `end` event, writing every line to `out`
/// after `prefix`: first what is stored (at download speed), then new lines as they come. A
/// dropped connection is reopened from the last line received.
pub async fn attempt_log(
    client: &Client,
    run: i64,
    key: &str,
    attempt: i32,
    prefix: &str,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let caught_up = catch_up(client, run, key, attempt, prefix, out).await?;
    let mut last: Option<i64> = (caught_up > 0).then_some(caught_up);
    let mut failures = 0u32;
    loop {
        let error = match client.log_stream(run, key, attempt, last).await {
            Ok(mut response) => {
                let mut parser = sse::Parser::default();
                loop {
                    match client.next_chunk(&mut response).await {
                        Ok(Some(bytes)) => {
                            failures = 0;
                            let mut batch: Vec<LogLine> = Vec::new();
                            let events = parser.push(&bytes);
                            if let Some(why) = parser.error() {
                                return Err(ClientError::Protocol(format!(
                                    "the log stream from {} is not an event stream: {why}",
                                    client.server()
                                )));
                            }
                            let ended = events.iter().any(|e| e.event == "end");
                            for event in events {
                                if event.event != "message" {
                                    continue;
                                }
                                let line: LogLine =
                                    serde_json::from_str(&event.data).map_err(|e| {
                                        ClientError::Protocol(format!(
                                            "a log event from {} is not a line: {e}",
                                            client.server()
                                        ))
                                    })?;
                                // Lines the catch-up already wrote (none, unless the engine
                                // ignored Last-Event-ID) are not written twice.
                                if last.is_none_or(|l| line.n > l) {
                                    last = Some(line.n);
                                    batch.push(line);
                                }
                            }
                            write_lines(out, prefix, batch.iter().map(|l| l.text.as_bytes()));
                            let _ = out.flush();
                            if ended {
                                return Ok(());
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
        attempt_log(client, run, key, want, "", out).await?;
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
        // `Stdout`, not a lock held across awaits: each batch of whole lines is one write, so
        // stages' lines interleave by line, never within one.
        let prefix = format!("[{key}] ");
        attempt_log(&client, run, &key, attempt, &prefix, &mut std::io::stdout()).await
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
                "==> {} {}{why}",
                super::run_ref::label(&run),
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

    /// Serves `router` on a free port until the returned task is aborted.
    async fn stand_in(router: Router) -> (Client, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (
            Client::new(&format!("http://{addr}")).expect("client"),
            server,
        )
    }

    const PLAIN: &str = "/api/v1/runs/{id}/stages/{key}/logs";
    const STREAM: &str = "/api/v1/runs/{id}/stages/{key}/logs/stream";

    fn last_event_id(headers: &HeaderMap) -> Option<String> {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn event(n: i64, text: &str) -> String {
        format!(
            "id: {n}\ndata: {{\"n\":{n},\"ts_ms\":0,\"stream\":\"stdout\",\"text\":\"{text}\"}}\n\n"
        )
    }

    /// A stand-in whose stored log is long: following it must take what is stored from the
    /// plain download, in bulk, and open the live stream only after its last line (the stream
    /// here would repeat every line from the start otherwise).
    #[tokio::test]
    async fn following_catches_up_through_the_plain_download_then_streams_after_it() {
        const STORED: i64 = 20_000;
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let router = Router::new()
            .route(
                PLAIN,
                get(|| async {
                    (1..=STORED)
                        .map(|n| format!("line {n}\n"))
                        .collect::<String>()
                }),
            )
            .route(
                STREAM,
                get({
                    let seen = Arc::clone(&seen);
                    move |headers: HeaderMap| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let last = last_event_id(&headers);
                            let after: i64 =
                                last.as_deref().and_then(|l| l.parse().ok()).unwrap_or(0);
                            seen.lock().map(|mut s| s.push(last)).ok();
                            let mut body: String = (after + 1..=STORED)
                                .map(|n| event(n, &format!("line {n}")))
                                .collect();
                            body.push_str(&event(STORED + 1, "live"));
                            body.push_str("event: end\ndata: {}\n\n");
                            ([("content-type", "text/event-stream")], body)
                        }
                    }
                }),
            );
        let (client, server) = stand_in(router).await;
        let mut out = Vec::new();
        attempt_log(&client, 1, "build", 1, "", &mut out)
            .await
            .expect("follows to the end");
        server.abort();
        let text = String::from_utf8(out).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_001, "every line once");
        assert_eq!(lines[0], "line 1");
        assert_eq!(lines[19_999], "line 20000");
        assert_eq!(lines[20_000], "live");
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, [Some(STORED.to_string())]);
    }

    /// An engine stand-in whose log stream drops the connection after a line; the client
    /// must come back with `Last-Event-ID: 2` and get the rest.
    #[tokio::test]
    async fn a_dropped_log_stream_resumes_after_the_last_line() {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let router = Router::new().route(PLAIN, get(|| async { "one\n" })).route(
            "/api/v1/runs/{id}/stages/{key}/logs/stream",
            get({
                let seen = Arc::clone(&seen);
                move |headers: HeaderMap| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let last = last_event_id(&headers);
                        let first = last.as_deref() == Some("1");
                        seen.lock().map(|mut s| s.push(last)).ok();
                        let body = if first {
                            // A line, then the connection ends without an `end` event.
                            event(2, "two")
                        } else {
                            format!("{}event: end\ndata: {{}}\n\n", event(3, "three"))
                        };
                        ([("content-type", "text/event-stream")], body)
                    }
                }
            }),
        );
        let (client, server) = stand_in(router).await;
        let mut out = Vec::new();
        attempt_log(&client, 1, "build", 1, "[build] ", &mut out)
            .await
            .expect("follows to the end");
        server.abort();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "[build] one\n[build] two\n[build] three\n"
        );
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, [Some("1".to_owned()), Some("2".to_owned())]);
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
            approval_message: None,
            image: None,
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
