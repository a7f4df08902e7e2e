//! `gantry run FILE`: runs one pipeline from the current directory on an embedded engine,
//! prints stage headers and logs as they are written, and exits with the run's status.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;

use crate::cli::RunArgs;
use crate::run::{RunContext, TriggerRequest};
use crate::server::Server;
use crate::store::{RunStatus, StageStatus, logs, runs, stages};

const PROJECT: &str = "local";

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What a run of the current directory is about: its branch, its `HEAD` commit and that
/// commit's time (images are dated with it, as `SOURCE_DATE_EPOCH` would), from `git`.
fn local_context(git: impl Fn(&[&str]) -> Option<String>) -> RunContext {
    let commit_sha = git(&["rev-parse", "HEAD"]);
    let show = |format: &str| {
        commit_sha
            .as_ref()
            .and_then(|sha| git(&["show", "-s", &format!("--format={format}"), sha]))
    };
    let commit_time = show("%ct").and_then(|t| t.parse::<i64>().ok());
    RunContext {
        event: "manual".into(),
        branch: git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"),
        commit_message: show("%s").map(|s| gantry_runner::checkout::subject_line(&s)),
        commit_author: show("%an"),
        commit_sha,
        commit_time,
        ..RunContext::default()
    }
}

pub async fn run(args: RunArgs) -> ExitCode {
    if std::env::var_os("GANTRY_LOG").is_some() {
        crate::cli::init_tracing();
    }
    let yaml = match std::fs::read_to_string(&args.file) {
        Ok(y) => y,
        Err(e) => {
            eprintln!("gantry: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let file = args.file.display().to_string();
    if let Err(report) = crate::pipeline::parse(&file, &yaml) {
        eprint!("{}", report.render(&yaml));
        return ExitCode::from(2);
    }
    let mut config = args.engine.config();
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.source_dir = std::env::current_dir().ok();
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::from(2);
        }
    };
    for notice in server.engine.executors.values().filter_map(|e| e.notice()) {
        eprintln!("gantry: {notice}");
    }
    let code = drive(&server, &file, &yaml, args.params.into_iter().collect()).await;
    server.stop().await;
    code
}

async fn drive(
    server: &Server,
    file: &str,
    yaml: &str,
    params: BTreeMap<String, String>,
) -> ExitCode {
    let engine = &server.engine;
    let applied = match crate::run::apply(engine, PROJECT, file, yaml).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::from(2);
        }
    };
    let context = local_context(git);
    let triggered = match crate::run::trigger(
        engine,
        PROJECT,
        &applied.name,
        "manual",
        TriggerRequest {
            params,
            context: Some(context),
        },
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::from(2);
        }
    };
    println!("==> {} run #{}", applied.name, triggered.number);
    let mut printed: HashMap<(i64, i32), i64> = HashMap::new();
    let mut announced: HashMap<i64, StageStatus> = HashMap::new();
    let stdout = std::io::stdout();
    loop {
        let run = match runs::get(&engine.store.pool, triggered.run_id).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("gantry: {e}");
                return ExitCode::from(2);
            }
        };
        let rows = stages::for_run(&engine.store.pool, triggered.run_id)
            .await
            .unwrap_or_default();
        for row in &rows {
            // Logs first, then the stage's end, so a stage's lines come before its verdict.
            if row.attempt > 0 {
                let after = printed.get(&(row.id.0, row.attempt)).copied().unwrap_or(0);
                let mut chunks = logs::chunks_after(&engine.store.pool, row.id, row.attempt, after);
                let mut last = after;
                let mut out = stdout.lock();
                while let Some(Ok(chunk)) = chunks.next().await {
                    crate::http::logs::each_line(&chunk, last, |line| {
                        let _ = writeln!(out, "[{}] {}", row.key, line.text);
                    });
                    last = chunk.last_seq;
                }
                printed.insert((row.id.0, row.attempt), last);
            }
            if announced.get(&row.id.0) != Some(&row.status) {
                announced.insert(row.id.0, row.status);
                let mut out = stdout.lock();
                match row.status {
                    StageStatus::Running => {
                        let _ = writeln!(out, "--> {} (attempt {})", row.key, row.attempt);
                    }
                    StageStatus::WaitingApproval => {
                        let _ = writeln!(
                            out,
                            "--> {} waits for approval: gantry approve {} {}",
                            row.key, run.id, row.key
                        );
                    }
                    s if s.is_terminal() => {
                        let why = row
                            .error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default();
                        let _ = writeln!(out, "<-- {} {}{why}", row.key, s.as_str());
                    }
                    _ => {}
                }
            }
        }
        if run.status.is_terminal() {
            let why = run
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            println!("==> run #{} {}{why}", run.number, run.status.as_str());
            return if run.status == RunStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `git` in `dir` with a fixed identity and no user or system configuration.
    fn git_in(dir: &std::path::Path, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .env("GIT_AUTHOR_DATE", "2024-05-01T12:00:00+02:00")
            .env("GIT_COMMITTER_DATE", "2024-05-01T12:00:00+02:00")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    #[test]
    fn a_local_run_carries_the_commit_time_that_dates_its_images() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        git_in(path, &["init", "-q", "-b", "main"]);
        std::fs::write(path.join("a.txt"), "a").expect("file");
        git_in(path, &["add", "a.txt"]);
        git_in(path, &["commit", "-q", "-m", "one"]);
        let context = local_context(|args: &[&str]| git_in(path, args));
        assert_eq!(context.branch.as_deref(), Some("main"));
        assert!(context.commit_sha.is_some(), "{context:?}");
        assert_eq!(context.commit_time, Some(1_714_557_600));
        // What run lists show beside the short id.
        assert_eq!(context.commit_message.as_deref(), Some("one"));
        assert_eq!(context.commit_author.as_deref(), Some("t"));
        // What the image stage then dates the image with.
        let stored = serde_json::to_value(&context).expect("json");
        assert_eq!(crate::images::created_epoch(&stored), 1_714_557_600);

        let plain = tempfile::tempdir().expect("temp dir");
        let outside = local_context(|args: &[&str]| git_in(plain.path(), args));
        assert_eq!((outside.commit_sha, outside.commit_time), (None, None));
        assert_eq!(
            (outside.commit_message, outside.commit_author),
            (None, None)
        );
    }
}
