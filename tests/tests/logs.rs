//! Logs through the public API: a long log is stored whole and in order, a live follow over
//! Server-Sent Events resumes after `Last-Event-ID` and ends with an `end` event, and secret
//! values never reach the stored log.

use std::time::Duration;

use futures_util::StreamExt;
use gantry_tests::{TestEngine, assert_succeeded};

const WAIT: Duration = Duration::from_secs(120);
const LINES: usize = 50_000;

fn counting_pipeline() -> String {
    format!(
        "name: chatty\nstages:\n  - name: count\n    steps:\n      - name: count\n        run: seq 1 {LINES}\n"
    )
}

/// The stored log of the counting stage: the step header, the numbers, the exit code.
fn expected_count_log() -> Vec<String> {
    let mut lines = vec!["$ count".to_owned()];
    lines.extend((1..=LINES).map(|n| n.to_string()));
    lines.push("exit code 0".to_owned());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_is_stored_whole_and_in_order() {
    let app = TestEngine::start().await;
    let name = app.apply(&counting_pipeline()).await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, _) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    let stage = app.stage(run.run_id, "count").await;
    assert_eq!(stage.log_lines, i64::try_from(LINES + 2).expect("fits"));
    let lines = app.log_lines(run.run_id, "count").await;
    assert_eq!(lines.len(), LINES + 2);
    // Compare whole, but report the first difference rather than 50,000 lines.
    let expected = expected_count_log();
    if let Some(i) = (0..lines.len()).find(|&i| lines[i] != expected[i]) {
        panic!(
            "line {} is {:?}, expected {:?}",
            i + 1,
            lines[i],
            expected[i]
        );
    }
    app.stop().await;
}

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads events from an SSE response until an `end` event (included) or `limit` passes.
async fn read_events(response: reqwest::Response, limit: Duration) -> Vec<SseEvent> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no `end` event within {limit:?} ({} events)", events.len()))
            .unwrap_or_else(|| panic!("the stream ended without an `end` event"))
            .expect("read the stream");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        // Events end with a blank line; a chunk may hold several or part of one.
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent::default();
            let mut is_event = false;
            for line in block.lines() {
                if line.starts_with(':') {
                    continue; // keep-alive comment
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                is_event = true;
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "data" => {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                    }
                    _ => {}
                }
            }
            if is_event {
                let end = event.event.as_deref() == Some("end");
                events.push(event);
                if end {
                    return events;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_log_resumes_after_the_last_event_id_and_ends() {
    let app = TestEngine::start().await;
    let name = app.apply(&counting_pipeline()).await;
    let run = app.trigger(&name, &[]).await;
    // Follow at once, while the stage is still queued or running: the stream waits for lines.
    let url = format!(
        "{}/api/v1/runs/{}/stages/count/logs/stream",
        app.url(),
        run.run_id
    );
    let response = app
        .http()
        .get(&url)
        .header("Last-Event-ID", "25000")
        .send()
        .await
        .expect("GET the stream");
    assert!(response.status().is_success(), "{}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let events = read_events(response, WAIT).await;
    let (end, lines) = events.split_last().expect("at least the end event");
    assert_eq!(end.event.as_deref(), Some("end"));

    // Line 1 is the step header, so stored line n holds the number n - 1.
    let expected = expected_count_log();
    assert_eq!(
        lines.len(),
        expected.len() - 25_000,
        "events after line 25000"
    );
    for (i, event) in lines.iter().enumerate() {
        let n = 25_001 + i;
        assert_eq!(event.event, None, "line {n}");
        assert_eq!(
            event.id.as_deref(),
            Some(n.to_string().as_str()),
            "line {n}"
        );
        let line: serde_json::Value = serde_json::from_str(&event.data).expect("JSON line");
        assert_eq!(line["n"], n, "{line}");
        assert_eq!(line["text"], expected[n - 1].as_str(), "line {n}");
        let stream = if n == expected.len() {
            "system"
        } else {
            "stdout"
        };
        assert_eq!(line["stream"], stream, "line {n}");
    }
    assert_eq!(
        lines.first().map(|e| e.data.contains("\"text\":\"25000\"")),
        Some(true)
    );

    // After the end, a follow from the last line gets the end at once.
    let response = app
        .http()
        .get(&url)
        .header("Last-Event-ID", (LINES + 2).to_string())
        .send()
        .await
        .expect("GET the stream again");
    let events = read_events(response, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_are_masked_in_stored_logs() {
    let app = TestEngine::start().await;
    app.client()
        .set_secret("test", "token", "s3cr3t-value".to_owned())
        .await
        .expect("PUT the secret");
    // The raw answer, so that no field the client ignores could carry the value.
    let listed: serde_json::Value = app
        .http()
        .get(format!("{}/api/v1/projects/test/secrets", app.url()))
        .send()
        .await
        .expect("list secrets")
        .json()
        .await
        .expect("JSON");
    assert!(!listed.to_string().contains("s3cr3t-value"), "{listed}");

    let name = app
        .apply(
            r#"
name: secretive
stages:
  - name: publish
    secrets:
      TOKEN: token
    steps:
      - echo "token is $TOKEN"
      - echo "again $TOKEN" >&2
      - test "$TOKEN" = s3cr3t-value && echo "the step got the real value"
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, _) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    assert_eq!(
        app.log_lines(run.run_id, "publish").await,
        vec![
            "$ echo \"token is $TOKEN\"",
            "token is ***",
            "exit code 0",
            "$ echo \"again $TOKEN\" >&2",
            "again ***",
            "exit code 0",
            // The step's name is its command, masked like every line.
            "$ test \"$TOKEN\" = *** && echo \"the step got the real…",
            "the step got the real value",
            "exit code 0"
        ]
    );
    // Not in the database either, in any form the API could serve.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM log_chunks WHERE data LIKE '%s3cr3t-value%'")
            .fetch_one(app.pool())
            .await
            .expect("query");
    assert_eq!(stored, 0);
    let ciphertexts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM secrets WHERE position('s3cr3t-value'::bytea in ciphertext) > 0",
    )
    .fetch_one(app.pool())
    .await
    .expect("query");
    assert_eq!(ciphertexts, 0, "the secret is stored encrypted");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_its_cap_is_cut_with_a_notice_and_the_stage_judged_by_its_exit_code() {
    const CAP: u64 = 64 * 1024;
    let app = TestEngine::start_with(|c| c.log_cap_bytes = CAP).await;
    // About 600 KB of lines, then a step whose line is past the cap, then the verdict.
    let pipeline = |code: u8| {
        format!(
            "name: loud{code}\nstages:\n  - name: count\n    steps:\n      - name: flood\n        run: seq 100000 160000\n      - name: last\n        run: echo the end; exit {code}\n"
        )
    };
    for (code, expected) in [
        (0, gantry::store::RunStatus::Succeeded),
        (3, gantry::store::RunStatus::Failed),
    ] {
        let name = app.apply(&pipeline(code)).await;
        let run = app.trigger(&name, &[]).await;
        let (row, stages) = app.wait_for_run(run.run_id, WAIT).await;
        assert_eq!(row.status, expected, "{:?} {stages:?}", row.reason);
        if code != 0 {
            let reason = row.reason.unwrap_or_default();
            assert!(
                reason.contains("exited with 3"),
                "judged by the exit code: {reason}"
            );
        }
        let lines = app.log_lines(run.run_id, "count").await;
        let notice = format!(
            "log truncated at {CAP} bytes (the stage's log cap): later lines are not kept; the stage goes on"
        );
        assert_eq!(
            lines.last(),
            Some(&notice),
            "{:?}",
            &lines[lines.len().saturating_sub(3)..]
        );
        assert!(
            !lines.contains(&"the end".to_owned()),
            "nothing past the cap is kept"
        );
        let kept: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(
            kept < 2 * usize::try_from(CAP).unwrap_or(usize::MAX),
            "{kept} bytes kept"
        );
        // The lines kept are the first ones, in order.
        assert_eq!(lines.get(1).map(String::as_str), Some("100000"));
        // Every line was counted, stored or not.
        let stage = app.stage(run.run_id, "count").await;
        assert!(stage.log_lines > 60_000, "{}", stage.log_lines);
    }
    app.stop().await;
}
