//! How the client commands show runs and stages: aligned tables, short durations, local times.

use chrono::{DateTime, Local, Utc};

use super::{Run, Stage};

/// Left-aligned columns two spaces apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A stage table (a header, then one line per stage of `stages`, in order) with the image an
/// image stage pushed on a line of its own under the stage's: the digest is what a later
/// deploy or promotion names, too long for a column.
fn with_images(table: &str, stages: &[Stage]) -> String {
    let mut out = String::with_capacity(table.len());
    for (i, line) in table.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        let image = i
            .checked_sub(1)
            .and_then(|row| stages.get(row))
            .and_then(|s| s.image.as_deref());
        if let Some(image) = image {
            out.push_str(&format!("  image: {image}\n"));
        }
    }
    out
}

/// `0.4s`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    // Whole seconds from here on; a negative or NaN input was handled above.
    let whole = secs.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

/// How long something ran: until it finished, or until now while it still runs.
pub fn elapsed(
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    match started {
        None => "-".into(),
        Some(start) => {
            let end = finished.unwrap_or(now);
            let millis = (end - start).num_milliseconds().max(0);
            let secs = millis as f64 / 1000.0;
            duration(secs)
        }
    }
}

/// A moment in the local time zone, to the second.
pub fn moment(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".into(),
        |t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// `gantry runs`: one line per run.
pub fn runs_table(runs: &[Run], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.pipeline.clone(),
                format!("#{}", r.number),
                r.status.as_str().to_owned(),
                crate::store::runs::describe_trigger(&r.trigger, r.triggered_by.as_deref()),
                commit_text(&r.context),
                moment(r.started_at.or(Some(r.created_at))),
                elapsed(r.started_at, r.finished_at, now),
            ]
        })
        .collect();
    table(
        &[
            "ID", "PIPELINE", "#", "STATUS", "TRIGGER", "COMMIT", "STARTED", "DURATION",
        ],
        &rows,
    )
}

/// Longest commit subject a `gantry runs` row shows (the API has it whole).
const SUBJECT_COLUMN: usize = 40;

/// `0123abcd Fix the build`: the short commit and its subject, cut to fit a row.
fn commit_text(context: &serde_json::Value) -> String {
    let sha: String = context["commit_sha"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(8)
        .collect();
    let subject = context["commit_message"].as_str().unwrap_or_default();
    let subject = if subject.chars().count() > SUBJECT_COLUMN {
        let mut cut: String = subject.chars().take(SUBJECT_COLUMN - 1).collect();
        cut.push('…');
        cut
    } else {
        subject.to_owned()
    };
    match (sha.is_empty(), subject.is_empty()) {
        (true, _) => "-".to_owned(),
        (false, true) => sha,
        (false, false) => format!("{sha} {subject}"),
    }
}

/// What to say about a stage beyond its status: its error (a rejection names who rejected
/// it), who approved it, reuse.
fn stage_detail(stage: &Stage) -> String {
    let mut parts = Vec::new();
    if let Some(error) = &stage.error {
        parts.push(error.clone());
    }
    if let Some(who) = &stage.approved_by {
        parts.push(format!("approved by {who}"));
    }
    if let Some(from) = stage.reused_from {
        parts.push(format!("result reused from stage run {from}"));
    }
    if stage.allow_failure {
        parts.push("may fail".into());
    }
    if stage.finally {
        parts.push("finally".into());
    }
    parts.join("; ")
}

/// `gantry status RUN`: the run (`PROJECT/PIPELINE #N (id ID) STATUS`, the pipeline's
/// description), then a table of its stages.
pub fn run_status(run: &Run, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{}/{} {}\n",
        run.project,
        super::run_ref::label(run),
        run.status.as_str()
    );
    if let Some(description) = run.description.as_deref().filter(|d| !d.trim().is_empty()) {
        out.push_str(&format!("{}\n", description.trim()));
    }
    if let Some(reason) = &run.reason {
        out.push_str(&format!("reason: {reason}\n"));
    }
    out.push_str(&format!(
        "trigger: {}{}, created {}, started {}, duration {}\n\n",
        crate::store::runs::describe_trigger(&run.trigger, run.triggered_by.as_deref()),
        run.rerun_of
            .map(|r| format!(" (rerun of run {r})"))
            .unwrap_or_default(),
        moment(Some(run.created_at)),
        moment(run.started_at),
        elapsed(run.started_at, run.finished_at, now)
    ));
    let rows: Vec<Vec<String>> = run
        .stages
        .iter()
        .map(|s| {
            vec![
                s.key.clone(),
                s.status.as_str().to_owned(),
                format!("{}/{}", s.attempt, s.max_attempts),
                elapsed(s.started_at, s.finished_at, now),
                stage_detail(s),
            ]
        })
        .collect();
    out.push_str(&with_images(
        &table(&["STAGE", "STATUS", "ATTEMPT", "DURATION", "DETAIL"], &rows),
        &run.stages,
    ));
    for stage in &run.stages {
        out.push_str(&waiting_for_approval(run.id, stage));
    }
    out
}

/// For a stage waiting for approval: the question it asks, and how to answer it.
fn waiting_for_approval(run: i64, stage: &Stage) -> String {
    if stage.status != crate::store::StageStatus::WaitingApproval {
        return String::new();
    }
    let question = stage
        .approval_message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "\n{} waits for approval{question}\n  gantry approve {run} {}   (or: gantry reject {run} {})\n",
        stage.key, stage.key, stage.key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(0.04), "0.0s");
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(7380.0), "2h03m");
    }

    #[test]
    fn elapsed_counts_to_now_while_running() {
        let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let now = start + chrono::TimeDelta::seconds(90);
        assert_eq!(elapsed(Some(start), None, now), "1m30s");
        assert_eq!(
            elapsed(
                Some(start),
                Some(start + chrono::TimeDelta::milliseconds(1500)),
                now
            ),
            "1.5s"
        );
        assert_eq!(elapsed(None, None, now), "-");
    }

    #[test]
    fn a_stage_waiting_for_approval_shows_its_question_and_the_answers() {
        let stage = |status: &str| -> Stage {
            serde_json::from_value(serde_json::json!({
                "key": "deploy", "status": status, "attempt": 0, "max_attempts": 1,
                "error": null, "approved_by": null, "reused_from": null,
                "approval_message": "Ship build 12 to production?",
                "allow_failure": false, "finally": false, "started_at": null, "finished_at": null,
            }))
            .expect("a stage")
        };
        assert_eq!(
            waiting_for_approval(40, &stage("waiting_approval")),
            "\ndeploy waits for approval: Ship build 12 to production?\n  \
             gantry approve 40 deploy   (or: gantry reject 40 deploy)\n"
        );
        assert_eq!(waiting_for_approval(40, &stage("succeeded")), "");
    }

    #[test]
    fn a_stage_that_pushed_an_image_shows_it_under_its_row() {
        let stage = |key: &str, image: Option<&str>| -> Stage {
            serde_json::from_value(serde_json::json!({
                "key": key, "status": "succeeded", "attempt": 1, "max_attempts": 1,
                "error": null, "approved_by": null, "reused_from": null, "image": image,
                "allow_failure": false, "finally": false, "started_at": null, "finished_at": null,
            }))
            .expect("a stage")
        };
        let pinned = "127.0.0.1:5000/demo/hello@sha256:".to_owned() + &"a".repeat(64);
        let stages = [
            stage("build", None),
            stage("package", Some(&pinned)),
            stage("smoke", None),
        ];
        let rows: Vec<Vec<String>> = stages.iter().map(|s| vec![s.key.clone()]).collect();
        let text = with_images(&table(&["STAGE"], &rows), &stages);
        assert_eq!(
            text,
            format!("STAGE\nbuild\npackage\n  image: {pinned}\nsmoke\n")
        );
    }

    #[test]
    fn a_runs_row_shows_the_commit_and_its_subject() {
        let context = serde_json::json!({
            "commit_sha": "0123456789abcdef",
            "commit_message": "Make the footer readable on phones, with a longer subject than fits",
        });
        let text = commit_text(&context);
        assert!(text.starts_with("01234567 Make the footer"), "{text}");
        assert_eq!(text.chars().count(), 8 + 1 + SUBJECT_COLUMN, "{text}");
        assert!(text.ends_with('…'));
        assert_eq!(
            commit_text(&serde_json::json!({"commit_sha": "abc"})),
            "abc"
        );
        assert_eq!(commit_text(&serde_json::json!({})), "-");
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["ID", "NAME", "X"],
            &[
                vec!["1".into(), "a-long-name".into(), "x".into()],
                vec!["200".into(), "b".into(), String::new()],
            ],
        );
        assert_eq!(text, "ID   NAME         X\n1    a-long-name  x\n200  b\n");
    }
}
